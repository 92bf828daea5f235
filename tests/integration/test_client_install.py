"""Plain `pip install visionq` is the client alone: the wheel built from this checkout, installed into a fresh
virtual environment, holds none of the server's libraries, and its `visionq classify` and `import visionq.client`
work against the real stack. A server command there names the extra to install."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from factories import chelsea
from integration.stack import ApiServer, WorkerProcess
from tests_support import CAT_CLASSES
from visionq.settings import Settings

Stack = tuple[Settings, WorkerProcess, ApiServer]
ROOT = Path(__file__).parents[2]
#: Seconds to build the wheel and install it with its five dependencies into a fresh environment (about 20 alone).
INSTALL_TIMEOUT = 300
#: The server's libraries, none of which a client install may hold.
SERVER_LIBRARIES = ("fastapi", "starlette", "uvicorn", "celery", "kombu", "redis", "sqlalchemy", "onnxruntime", "torch")

pytestmark = pytest.mark.timeout(INSTALL_TIMEOUT + 120)


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel of this checkout installed, no extra."""
    root = tmp_path_factory.mktemp("client-install")
    wheels, environment = root / "wheels", root / "venv"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    _run([*pip, "wheel", "--no-deps", "--wheel-dir", str(wheels), str(ROOT)])
    venv.create(environment, with_pip=True)
    (wheel,) = wheels.glob("visionq-*.whl")
    python = environment / "bin" / "python"
    _run([str(python), *pip[1:], "install", "--constraint", str(ROOT / "requirements.lock"), str(wheel)])
    return environment


def test_the_client_install_holds_none_of_the_server(client_venv: Path) -> None:
    found = _run(
        [
            str(client_venv / "bin" / "python"),
            "-c",
            "import importlib.util, sys; import visionq.client, visionq.cli.main; "
            f"print(','.join(name for name in {SERVER_LIBRARIES!r} if importlib.util.find_spec(name)))",
        ]
    )

    assert found.stdout.strip() == ""


def test_the_client_install_classifies_against_the_stack(client_venv: Path, stack: Stack, tmp_path: Path) -> None:
    image = tmp_path / "chelsea.jpg"
    chelsea().save(image)
    env = {**_clean_environ(), "VISIONQ_URL": stack[2].url}

    classified = _run([str(client_venv / "bin" / "visionq"), "classify", "--json", str(image)], env=env)

    (line,) = [json.loads(line) for line in classified.stdout.splitlines()]
    assert line["status"] == "completed", line
    assert line["predictions"][0]["class_id"] in CAT_CLASSES, line


def test_a_server_command_names_the_extra_to_install(client_venv: Path) -> None:
    serve = subprocess.run(
        [str(client_venv / "bin" / "visionq"), "serve"],
        env=_clean_environ(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert serve.returncode == 2
    assert "pip install 'visionq[server]'" in " ".join(serve.stderr.split()), serve.stderr
    assert "Traceback" not in serve.stderr


def _clean_environ() -> dict[str, str]:
    """The environment without this test run's virtual environment (so nothing leaks in from it)."""
    return {name: value for name, value in os.environ.items() if name not in ("VIRTUAL_ENV", "PYTHONPATH")}


def _run(command: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False, cwd=ROOT
    )
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    return done
