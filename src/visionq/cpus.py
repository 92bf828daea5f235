"""How many CPUs this process may use: its affinity, capped by its cgroup's CPU quota.

`os.cpu_count()` counts the node's CPUs, so a container limited to 2 CPUs on a 64-core node would start 64
worker processes that share 2 CPUs of time, each with threads of its own. Worker concurrency and inference
threads are sized from `available_cpus()` instead (issue 12).

The parsers are pure functions of the files' text; anything unreadable or malformed means "no limit", so a
strange kernel or mount never makes the service refuse to start.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")
#: Where cgroup v1 mounts the `cpu` controller, by distribution: separately or joined with `cpuacct`.
V1_CPU_MOUNTS = ("cpu", "cpu,cpuacct")


def quota_cpus(quota: str, period: str) -> int | None:
    """CPUs a quota of `quota` µs per `period` µs amounts to, rounded up (1.5 CPUs of time keep 2 busy);
    None for no limit: `max`, -1, or anything that is not two positive integers."""
    try:
        used, per = int(quota), int(period)
    except ValueError:
        return None
    if used <= 0 or per <= 0:
        return None
    return -(-used // per)


def parse_cpu_max(text: str) -> int | None:
    """cgroup v2 `cpu.max`: "200000 100000", or "max 100000" for no limit."""
    fields = text.split()
    return quota_cpus(fields[0], fields[1]) if len(fields) == 2 else None


def own_cgroups(text: str) -> dict[str, PurePosixPath]:
    """/proc/self/cgroup ("0::/a/b", "4:cpu,cpuacct:/a/b") as each controller's path relative to its mount;
    "" is the cgroup v2 hierarchy. A path that climbs out of the namespace ("/..") counts as the root."""
    paths: dict[str, PurePosixPath] = {}
    for line in text.splitlines():
        _, sep, rest = line.partition(":")
        controllers, sep2, path = rest.partition(":")
        if not (sep and sep2 and path.startswith("/")):
            continue
        relative = PurePosixPath(path.lstrip("/"))
        if ".." in relative.parts:
            relative = PurePosixPath()
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = relative
    return paths


def _with_ancestors(mount: Path, relative: PurePosixPath) -> Iterator[Path]:
    # A parent's quota bounds its children too; the root is always tried, since a container often mounts its
    # own cgroup there while /proc/self/cgroup still names the host's path for it.
    yield mount / relative
    yield from (mount / parent for parent in relative.parents)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return ""


def cgroup_cpus(root: Path, own: dict[str, PurePosixPath]) -> int | None:
    """The tightest CPU quota of this process's cgroup and its ancestors, v2 and v1 alike; None: no limit."""
    limits: list[int | None] = [
        parse_cpu_max(_read(directory / "cpu.max")) for directory in _with_ancestors(root, own.get("", PurePosixPath()))
    ]
    for mount in V1_CPU_MOUNTS:
        for directory in _with_ancestors(root / mount, own.get("cpu", PurePosixPath())):
            limits.append(quota_cpus(_read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us")))
    found = [limit for limit in limits if limit is not None]
    return min(found) if found else None


def affinity_cpus() -> int:
    """CPUs the scheduler may run this process on (`taskset`, a cpuset); all of them where the platform
    cannot say (macOS, Windows)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def available_cpus(
    cgroup_root: Path = CGROUP_ROOT, *, affinity: int | None = None, self_cgroup: Path = SELF_CGROUP
) -> int:
    """CPUs this process may use: its affinity (`affinity` overrides it, for tests), capped by its cgroup's CPU
    quota rounded up; never below 1."""
    cpus = affinity_cpus() if affinity is None else affinity
    quota = cgroup_cpus(cgroup_root, own_cgroups(_read(self_cgroup)))
    return max(1, min(cpus, quota) if quota is not None else cpus)
