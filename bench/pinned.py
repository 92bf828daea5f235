"""The service under test: `visionq serve` pinned to one core, and what its processes and Redis use.

`PinnedService` runs `taskset -c CORE visionq serve` on a free loopback port; its embedded Redis, its worker
with the worker's pool processes, and its callbacks worker inherit the pin. It stops the whole process tree on
exit, whatever happened. `usage()` reads each process's CPU seconds (by role), Redis's counters and the
machine's busy time per core, so a measurement window is the difference of two samples (`Spent.between`).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis

from visionq.embedded import free_port

#: The service's processes by what they do, in the order the report lists them.
ROLES = ("api", "worker main", "worker pool", "callbacks", "redis")
#: Redis's counters read at each sample (`INFO stats`).
REDIS_COUNTERS = ("total_net_input_bytes", "total_net_output_bytes", "total_commands_processed")
#: Seconds `visionq serve` may take to be ready (Redis, the worker, the model loaded in each pool process).
READY_TIMEOUT = 180.0
#: Seconds `visionq serve` gets to stop after SIGINT (it gives its worker 15 s) before what is left is killed.
STOP_TIMEOUT = 60.0


@dataclass(frozen=True)
class Counts:
    """What processes have used so far: CPU seconds (user + system) and context switches, voluntary (waits: I/O,
    round trips) and involuntary (preempted by another process of the core)."""

    cpu: float = 0.0
    voluntary: int = 0
    involuntary: int = 0

    @classmethod
    def of(cls, process: psutil.Process) -> Counts:
        """`process`'s counts, its threads' switches summed (psutil's are its main thread's alone)."""
        times = process.cpu_times()
        switches = {"voluntary_ctxt_switches": 0, "nonvoluntary_ctxt_switches": 0}
        for status in Path(f"/proc/{process.pid}/task").glob("*/status"):
            with suppress(OSError):  # a thread that ends meanwhile
                for name, value in (line.split(":") for line in status.read_text().splitlines() if "ctxt" in line):
                    switches[name] += int(value)
        return cls(
            times.user + times.system, switches["voluntary_ctxt_switches"], switches["nonvoluntary_ctxt_switches"]
        )

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.cpu + other.cpu, self.voluntary + other.voluntary, self.involuntary + other.involuntary)

    def __sub__(self, other: Counts) -> Counts:
        return Counts(self.cpu - other.cpu, self.voluntary - other.voluntary, self.involuntary - other.involuntary)


@dataclass(frozen=True)
class Usage:
    """A sample: each service process's role and counts by process id, Redis's counters, busy seconds by core, and
    this process's own CPU seconds (the load generator's)."""

    at: float
    processes: dict[int, tuple[str, Counts]]
    redis: dict[str, int]
    cores: list[float]
    here: float


@dataclass(frozen=True)
class Spent:
    """What was used between two samples."""

    seconds: float
    roles: dict[str, Counts]
    """What each role's processes used."""
    redis: dict[str, int]
    cores: list[float]
    """Busy seconds of each core, whoever used them (the rest of the machine included)."""
    here: float
    vanished: int
    """Service processes that ended inside the window (their last CPU seconds are missing)."""

    @classmethod
    def between(cls, before: Usage, after: Usage) -> Spent:
        roles = {role: Counts() for role in ROLES}
        for pid, (role, counts) in after.processes.items():
            roles[role] = roles.get(role, Counts()) + counts - before.processes.get(pid, (role, Counts()))[1]
        return cls(
            seconds=after.at - before.at,
            roles=roles,
            redis={name: after.redis[name] - before.redis[name] for name in REDIS_COUNTERS},
            cores=[end - start for start, end in zip(before.cores, after.cores, strict=True)],
            here=after.here - before.here,
            vanished=len(before.processes.keys() - after.processes.keys()),
        )

    def __add__(self, other: Spent) -> Spent:
        return Spent(
            seconds=self.seconds + other.seconds,
            roles={r: self.roles.get(r, Counts()) + other.roles.get(r, Counts()) for r in self.roles | other.roles},
            redis={name: self.redis[name] + other.redis[name] for name in REDIS_COUNTERS},
            cores=[a + b for a, b in zip(self.cores, other.cores, strict=True)],
            here=self.here + other.here,
            vanished=self.vanished + other.vanished,
        )

    @property
    def service_cpu(self) -> float:
        return sum(counts.cpu for counts in self.roles.values())

    def per_job(self, jobs: int) -> dict[str, Any]:
        """The window's figures for `jobs` jobs completed in it: rate, CPU and Redis traffic per job, core use."""
        return {
            "jobs": jobs,
            "window_s": self.seconds,
            "jobs_per_s": jobs / self.seconds,
            "cpu_per_job_ms": {role: 1000 * counts.cpu / jobs for role, counts in self.roles.items()},
            "service_cpu_per_job_ms": 1000 * self.service_cpu / jobs,
            "switches_per_job": {
                role: {"voluntary": counts.voluntary / jobs, "involuntary": counts.involuntary / jobs}
                for role, counts in self.roles.items()
            },
            "redis_per_job": {name: count / jobs for name, count in self.redis.items()},
            "load_generator_cpu_per_job_ms": 1000 * self.here / jobs,
            "service_cpu_share": self.service_cpu / self.seconds,
            "core_busy": [busy / self.seconds for busy in self.cores],
            "vanished_processes": self.vanished,
        }


class PinnedService:
    """`visionq serve` on `core`, configured by `env`, logging to `log`.

    >>> with PinnedService(env, core=0, log=tmp / "serve.log") as service:   # doctest: +SKIP
    ...     before = service.usage(); ...; spent = Spent.between(before, service.usage())
    """

    def __init__(
        self,
        env: dict[str, str],
        *,
        core: int,
        log: Path,
        broker_pid: int | None = None,
        command: list[str] | None = None,
    ) -> None:
        self.env = env
        self.command = command or [sys.executable, "-m", "visionq", "serve"]
        """What runs the service (`--host` and `--port` are added): `visionq serve`, or the floor of
        `bench/floor.py`, whose processes have the same roles."""
        self.core = core
        self.log = log
        self.broker_pid = broker_pid
        """A broker apart from the service (RabbitMQ), counted as the role `broker`; not pinned."""
        self.url = f"http://127.0.0.1:{free_port()}"
        self._serve: subprocess.Popen[bytes] | None = None
        self._redis: redis.Redis | None = None
        self._seen: dict[int, psutil.Process] = {}

    def __enter__(self) -> PinnedService:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        port = self.url.rsplit(":", 1)[1]
        command = ["taskset", "-c", str(self.core), *self.command]
        with self.log.open("wb") as log:
            # Its own session: a Ctrl-C at the terminal reaches the bench, which then stops the service in order.
            self._serve = subprocess.Popen(
                [*command, "--host", "127.0.0.1", "--port", port],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_until_ready()
        self._check_pinned()
        self._redis = redis.Redis.from_url(self.redis_url, socket_timeout=5)

    def stop(self) -> None:
        """SIGINT, as a user stops it; then whatever of its tree is left is killed."""
        if self._redis is not None:
            self._redis.close()
        if self._serve is None:
            return
        self._remember_tree()
        if self._serve.poll() is None:
            self._serve.send_signal(signal.SIGINT)
            with suppress(subprocess.TimeoutExpired):
                self._serve.wait(STOP_TIMEOUT)
        for process in self._seen.values():
            if process.pid != self.broker_pid:  # the machine's, not the service's
                with suppress(psutil.NoSuchProcess):
                    process.kill()
        self._serve.wait()
        self._serve = None

    def usage(self) -> Usage:
        assert self._redis is not None
        processes: dict[int, tuple[str, Counts]] = {}
        for process, role in self._roles():
            with suppress(psutil.NoSuchProcess):
                processes[process.pid] = (role, Counts.of(process))
        stats = self._redis.info("stats")
        cores = [core.user + core.nice + core.system + core.irq + core.softirq for core in psutil.cpu_times(True)]
        return Usage(
            time.monotonic(), processes, {name: int(stats[name]) for name in REDIS_COUNTERS}, cores, time.process_time()
        )

    def log_tail(self, characters: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-characters:]

    def _wait_until_ready(self) -> None:
        assert self._serve is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self._serve.poll() is not None:
                raise RuntimeError(f"visionq serve exited with {self._serve.returncode}:\n{self.log_tail()}")
            with suppress(httpx.HTTPError, ValueError):
                if httpx.get(f"{self.url}/health/ready", timeout=2).json().get("status") == "ok":
                    return
            time.sleep(0.5)
        raise RuntimeError(f"visionq serve was not ready in {READY_TIMEOUT:.0f} s:\n{self.log_tail()}")

    def _check_pinned(self) -> None:
        """Refuse to measure if a process of the service escaped the pin (one that sets its own affinity)."""
        stray = [
            (role, p.pid, p.cpu_affinity())
            for p, role in self._roles()
            if role != "broker" and p.cpu_affinity() != [self.core]
        ]
        if stray:
            raise RuntimeError(f"processes of the service not on core {self.core} alone (role, pid, CPUs): {stray}")

    def _roles(self) -> list[tuple[psutil.Process, str]]:
        """The service's processes with their roles: the API is `serve` itself; its children are Redis, the
        worker and the callbacks worker; the worker's children are its pool."""
        assert self._serve is not None
        serve = self._process(self._serve.pid)
        roles = [(serve, "api")]
        for child in serve.children():
            with suppress(psutil.NoSuchProcess):  # a process that ends while it is looked at is left out
                role = _role(child)
                roles.append((self._process(child.pid), role))
                for grandchild in child.children(recursive=True):
                    roles.append((self._process(grandchild.pid), "worker pool" if role == "worker main" else role))
        if self.broker_pid is not None:
            roles.append((self._process(self.broker_pid), "broker"))
        return roles

    def _process(self, pid: int) -> psutil.Process:
        """One psutil handle per process, kept: it can still kill the process after its parent is gone."""
        return self._seen.setdefault(pid, psutil.Process(pid))

    def _remember_tree(self) -> None:
        with suppress(psutil.NoSuchProcess):
            self._roles()

    @property
    def redis_url(self) -> str:
        """The URL of the service's embedded Redis: the Unix socket it listens on (`visionq serve`'s), or else
        its loopback port."""
        for process, role in self._roles():
            if role == "redis":
                sockets = {c.laddr for c in process.net_connections("unix") if c.laddr}
                if sockets:
                    return f"unix://{min(sockets)}?db=0"
                listening = [c for c in process.net_connections("tcp") if c.status == psutil.CONN_LISTEN]
                return f"redis://127.0.0.1:{listening[0].laddr.port}/0"
        raise RuntimeError("visionq serve has no embedded Redis: is VISIONQ_REDIS_URL set?")


def _role(child: psutil.Process) -> str:
    if child.name() == "redis-server":
        return "redis"
    arguments = child.cmdline()
    if "--callbacks" in arguments:
        return "callbacks"
    return "worker main" if "worker" in arguments else "other"
