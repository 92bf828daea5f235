"""The package's layering, read from the source: the API never imports the worker package (it writes the task
message itself, jobs/queue.py), the image stores and the queue format import nothing server-side above them, and
the SDK nothing but itself and the wire shapes. And, in a fresh interpreter, that a server process starts without
the SDK's transport or the tracing SDK."""

from __future__ import annotations

import ast
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

ROOT = Path(str(resources.files("visionq")))


def _module_path(name: str) -> Path | None:
    relative = Path(*name.split(".")[1:])
    if name == "visionq":
        return ROOT / "__init__.py"
    for candidate in (ROOT / relative / "__init__.py", ROOT / relative.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imports(name: str) -> set[str]:
    """The visionq modules `name` imports, anywhere in its source (functions included)."""
    path = _module_path(name)
    if path is None:
        return set()
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("visionq"):
            found.add(node.module)
            found.update(
                f"{node.module}.{alias.name}" for alias in node.names if _module_path(f"{node.module}.{alias.name}")
            )
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("visionq"))
    return found


def _reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(_imports(name) - seen)
    return seen


@pytest.mark.parametrize("start", ["visionq.api.app", "visionq.jobs.queue", "visionq.images"])
def test_the_worker_package_is_out_of_reach(start: str) -> None:
    assert sorted(m for m in _reachable(start) if m.startswith("visionq.worker")) == []


def test_the_check_sees_an_import_that_is_there() -> None:
    assert "visionq.jobs.queue" in _reachable("visionq.worker.celery_app")


def test_the_client_imports_only_itself_and_the_wire_shapes() -> None:
    # The SDK is installed without the server (`pip install visionq`): nothing server-side may be in its reach.
    reachable = _reachable("visionq.client")

    assert sorted(m for m in reachable if not m.startswith(("visionq.client", "visionq.wire"))) == []
    assert "visionq.wire.jobs" in reachable


#: The modules that may talk to Redis themselves: the jobs package (every key, Lua script and TTL, in typed
#: services), the clients' construction, the embedded server, and kombu's transport that Celery consumes with.
SPEAKS_REDIS = ("visionq.jobs", "visionq.connections", "visionq.embedded", "visionq.worker.broker")


def _redis_talk(path: Path) -> list[str]:
    """Where the module at `path` talks to Redis itself: a method called on something named like a Redis client
    or pipeline (`self.redis.get(...)`, `state.redis.zcard(...)`, `pipe.set(...)`), or Lua for Redis."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            receiver = ast.unparse(node.func.value)
            closing = node.func.attr in {"close", "aclose"}  # whoever made a client closes it
            if receiver.rpartition(".")[2] in {"redis", "pipe", "pipeline"} and not closing:
                found.append((node.lineno, f"{ast.unparse(node.func)}(...)"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "redis.call(" in node.value:
            found.append((node.lineno, "a Lua script"))
    return [f"{path.name}:{line} {what}" for line, what in sorted(found)]


def test_only_the_jobs_package_speaks_redis() -> None:
    talk = []
    for path in sorted(ROOT.rglob("*.py")):
        module = ".".join(("visionq", *path.relative_to(ROOT).with_suffix("").parts))
        if not module.startswith(SPEAKS_REDIS):
            talk += [f"{module}: {where}" for where in _redis_talk(path)]
    assert talk == []


def test_the_redis_check_sees_redis_talk(tmp_path: Path) -> None:
    module = tmp_path / "talks.py"
    module.write_text('def f(state, pipe):\n    state.redis.zcard("k")\n    pipe.set("a", 1)\nLUA = "redis.call(1)"\n')
    assert _redis_talk(module) == [
        "talks.py:2 state.redis.zcard(...)",
        "talks.py:3 pipe.set(...)",
        "talks.py:4 a Lua script",
    ]


def test_a_server_process_starts_without_the_sdks_transport_or_the_tracing_sdk() -> None:
    # What a worker or an API process imports to start (a third of a second less CPU each): the server's settings
    # build on the client's, and tracing is off unless it is configured.
    probe = (
        "import sys, visionq.settings, visionq.telemetry, visionq.cli.options; "
        "print(sorted(m for m in ('websockets', 'visionq.client.aio', 'opentelemetry.sdk', "
        "'opentelemetry.exporter.otlp') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)

    assert loaded.stdout.strip() == "[]"
