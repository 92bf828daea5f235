"""Where the registry runs the built-in models: ONNX Runtime only where it can reach the device."""

from __future__ import annotations

import pytest

from visionq.inference.registry import onnx_runs_on

CPU_ONLY = ["CPUExecutionProvider"]
WITH_CUDA = ["CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.mark.parametrize(
    ("device", "providers", "runs"),
    [
        ("cpu", CPU_ONLY, True),
        ("cpu", WITH_CUDA, True),
        ("cuda", CPU_ONLY, False),  # the onnxruntime package from PyPI: a GPU worker serves PyTorch instead
        ("cuda:1", CPU_ONLY, False),
        ("cuda", WITH_CUDA, True),  # onnxruntime-gpu
        ("cuda:1", WITH_CUDA, True),
    ],
)
def test_onnx_runtime_serves_a_device_only_with_a_provider_for_it(
    device: str, providers: list[str], runs: bool
) -> None:
    assert onnx_runs_on(device, providers) is runs
