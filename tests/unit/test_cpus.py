"""CPUs available to the process: cgroup v2 and v1 quotas read from files laid out as the kernel lays them out."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from visionq.cpus import available_cpus, cgroup_cpus, own_cgroups, parse_cpu_max, quota_cpus

V2_SELF = "0::/\n"
V1_SELF = "4:cpu,cpuacct:/\n3:memory:/\n1:name=systemd:/\n"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def cpus_under(root: Path, *, affinity: int, membership: str = V2_SELF) -> int:
    self_cgroup = root.parent / "self-cgroup"
    self_cgroup.write_text(membership)
    return available_cpus(root, affinity=affinity, self_cgroup=self_cgroup)


@pytest.mark.parametrize(
    ("text", "cpus"),
    [
        ("200000 100000\n", 2),
        ("150000 100000\n", 2),
        ("50000 100000\n", 1),
        ("100000 100000", 1),
        ("max 100000\n", None),
        ("", None),
        ("200000\n", None),
        ("two 100000\n", None),
        ("200000 0\n", None),
        ("200000 100000 7\n", None),
    ],
)
def test_cgroup_v2_cpu_max_is_parsed_and_rounded_up(text: str, cpus: int | None) -> None:
    assert parse_cpu_max(text) == cpus


@pytest.mark.parametrize(
    ("quota", "period", "cpus"),
    [("400000\n", "100000\n", 4), ("150000", "100000", 2), ("-1\n", "100000\n", None), ("", "", None)],
)
def test_cgroup_v1_cfs_quota_is_parsed_and_rounded_up(quota: str, period: str, cpus: int | None) -> None:
    assert quota_cpus(quota, period) == cpus


def test_own_cgroups_maps_each_controller_to_its_path() -> None:
    text = "0::/kubepods/pod1/c1\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/x\nnot a line\n2:pids:/../outside\n"
    own = own_cgroups(text)
    assert own[""] == PurePosixPath("kubepods/pod1/c1")
    assert own["cpu"] == own["cpuacct"] == PurePosixPath("docker/abc")
    assert own["pids"] == PurePosixPath()


def test_a_v2_quota_caps_the_affinity(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    write(root / "cpu.max", "200000 100000\n")
    assert cpus_under(root, affinity=64) == 2
    assert cpus_under(root, affinity=1) == 1


def test_a_fractional_quota_rounds_up(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    write(root / "cpu.max", "150000 100000\n")
    assert cpus_under(root, affinity=64) == 2


def test_no_quota_leaves_the_affinity(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    write(root / "cpu.max", "max 100000\n")
    assert cpus_under(root, affinity=8) == 8
    assert cpus_under(tmp_path / "no-cgroup-fs", affinity=8) == 8


def test_a_malformed_quota_means_no_limit(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    write(root / "cpu.max", "garbage\n")
    write(root / "cpu" / "cpu.cfs_quota_us", "\xff not a number")
    write(root / "cpu" / "cpu.cfs_period_us", "100000\n")
    assert cpus_under(root, affinity=8) == 8


def test_the_result_is_never_below_one(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    write(root / "cpu.max", "1000 100000\n")
    assert cpus_under(root, affinity=8) == 1
    assert cpus_under(tmp_path / "empty", affinity=0) == 1


@pytest.mark.parametrize("mount", ["cpu", "cpu,cpuacct"])
def test_a_v1_quota_caps_the_affinity(tmp_path: Path, mount: str) -> None:
    root = tmp_path / "cgroup"
    write(root / mount / "cpu.cfs_quota_us", "300000\n")
    write(root / mount / "cpu.cfs_period_us", "100000\n")
    assert cpus_under(root, affinity=64, membership=V1_SELF) == 3


def test_a_v1_quota_of_minus_one_is_no_limit(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    write(root / "cpu" / "cpu.cfs_quota_us", "-1\n")
    write(root / "cpu" / "cpu.cfs_period_us", "100000\n")
    assert cpus_under(root, affinity=6, membership=V1_SELF) == 6


def test_the_process_own_cgroup_and_its_parents_are_read(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    write(root / "cpu.max", "max 100000\n")
    write(root / "kubepods" / "cpu.max", "800000 100000\n")
    write(root / "kubepods" / "pod1" / "cpu.max", "300000 100000\n")
    assert cpus_under(root, affinity=64, membership="0::/kubepods/pod1\n") == 3
    assert cpus_under(root, affinity=64, membership="0::/kubepods\n") == 8
    # The tightest of the cgroup and its ancestors wins, as the kernel enforces them all.
    write(root / "kubepods" / "pod1" / "cpu.max", "max 100000\n")
    assert cpus_under(root, affinity=64, membership="0::/kubepods/pod1\n") == 8


def test_a_host_path_missing_from_the_mount_falls_back_to_the_root(tmp_path: Path) -> None:
    # Without a cgroup namespace a container sees its host path in /proc/self/cgroup, but its own cgroup at
    # the root of /sys/fs/cgroup.
    root = tmp_path / "cgroup"
    write(root / "cpu.max", "200000 100000\n")
    assert cpus_under(root, affinity=64, membership="0::/system.slice/docker-abc.scope\n") == 2


def test_v1_and_v2_limits_together_take_the_tightest(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    write(root / "cpu.max", "400000 100000\n")
    write(root / "cpu,cpuacct" / "cpu.cfs_quota_us", "200000\n")
    write(root / "cpu,cpuacct" / "cpu.cfs_period_us", "100000\n")
    assert cgroup_cpus(root, own_cgroups(V2_SELF + V1_SELF)) == 2
