"""Which CPUs the int8 builds are refused on: x86-64 without VNNI, judged from Linux's /proc/cpuinfo; and the
CPU feature `/models` says they need is the one judged."""

from __future__ import annotations

import pytest

from visionq.inference.quantize import CPU_FEATURE, judge_cpu

AVX2_ONLY = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma bmi2\n"


@pytest.mark.parametrize("flag", ["avx512_vnni", "avx_vnni"])
def test_an_x86_cpu_with_vnni_runs_the_int8_builds(flag: str) -> None:
    assert judge_cpu("x86_64", AVX2_ONLY.replace("avx2", f"avx2 avx512f {flag}")) is None


def test_an_x86_cpu_without_vnni_is_refused_with_why() -> None:
    why = judge_cpu("x86_64", AVX2_ONLY)

    assert why is not None
    assert "no VNNI" in why
    assert judge_cpu("AMD64", AVX2_ONLY) == why


def test_a_flag_is_matched_whole_not_as_part_of_another() -> None:
    assert judge_cpu("x86_64", AVX2_ONLY.replace("avx2", "avx2 avx512_vnnix")) is not None


@pytest.mark.parametrize(("machine", "cpuinfo"), [("aarch64", AVX2_ONLY), ("arm64", None), ("x86_64", None)])
def test_elsewhere_the_agreement_check_decides(machine: str, cpuinfo: str | None) -> None:
    assert judge_cpu(machine, cpuinfo) is None


def test_the_cpu_feature_listed_names_the_flags_that_are_judged() -> None:
    flags = CPU_FEATURE.split(" or ")

    assert flags == ["avx512_vnni", "avx_vnni"]
    for flag in flags:
        assert judge_cpu("x86_64", AVX2_ONLY.replace("avx2", f"avx2 {flag}")) is None
