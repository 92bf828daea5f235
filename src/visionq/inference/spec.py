"""Model metadata: what a model is, apart from its loaded weights.

The API imports this to resolve and describe models; it never imports a runtime. Only the worker
turns a `ModelSpec` into a loaded `Classifier` (see `registry.py`).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

#: Mean and std of EfficientNet-Lite's training input ((x - 127) / 128 on 0..255 pixels), on a 0..1 scale.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3


class Runtime(StrEnum):
    TORCH = "torch"
    """A built-in PyTorch architecture with a state dict (the EfficientNet-Lite packages)."""
    TORCHSCRIPT = "torchscript"
    """A user's TorchScript file (`torch.jit.save`)."""
    ONNX = "onnx"
    """An ONNX file run by ONNX Runtime."""


class Precision(StrEnum):
    FP32 = "fp32"
    """Exact: the model as trained (or a runtime whose answers agree with it on at least 99% of a sample)."""
    INT8 = "int8"
    """A built-in model's static int8 build on ONNX Runtime: about twice as fast on a CPU, less exact (its
    measured agreement with the exact model is listed in `/models`)."""


class ModelSpec(BaseModel):
    """One version of one model.

    >>> spec = ModelSpec(name="efficientnet-lite0", version=1, input_size=224, runtime=Runtime.TORCH,
    ...                  weights="efficientnet-lite0", labels="imagenet")
    >>> spec.ref
    'efficientnet-lite0@1'
    """

    model_config = ConfigDict(frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    version: int = Field(ge=1)
    input_size: int = Field(gt=0, le=2048)
    mean: tuple[float, float, float] = LITE_MEAN
    std: tuple[float, float, float] = LITE_STD
    runtime: Runtime
    weights: str
    """For `torch`: the built-in architecture name; otherwise the path of the weights file."""
    labels: str = "imagenet"
    """`imagenet` for the 1,000 ImageNet-1k names; otherwise the path of a labels file, one name per line."""
    num_classes: int = 1000
    description: str = ""
    source: Path | None = None
    """Folder of a user model's manifest; None for built-ins."""
    precision: Precision = Precision.FP32

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"
