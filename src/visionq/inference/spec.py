"""Model metadata: what a model is, apart from its loaded weights.

The API imports this to resolve and describe models; it never imports a runtime. Only the worker
turns a `ModelSpec` into a loaded `Classifier` (see `registry.py`).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from visionq.imaging.transforms import ChannelOrder, Interpolation, Resize, Transform

#: The alias of the default model; no model may be named so.
LATEST = "latest"
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
    resize: Resize = Resize.SQUASH
    crop_fraction: float = 1.0
    interpolation: Interpolation = Interpolation.BILINEAR
    channel_order: ChannelOrder = ChannelOrder.RGB
    runtime: Runtime
    weights: str
    """For `torch`: the built-in architecture name; otherwise the path of the weights file."""
    labels: str = "imagenet"
    """`imagenet` for the 1,000 ImageNet-1k names; otherwise the path of a labels file, one name per line."""
    num_classes: int = 1000
    description: str = ""
    source: Path | None = None
    """Folder of a user model's manifest; None for built-ins."""
    weights_sha256: str | None = None
    """The SHA-256 the weights file must have (a user model whose manifest gives `sha256`, as every model of the
    model repository does); checked before the file is loaded."""
    precision: Precision = Precision.FP32

    @model_validator(mode="after")
    def _check_transform(self) -> Self:
        _ = self.transform  # raises ValueError for a contradictory transform
        return self

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def transform(self) -> Transform:
        """The whole preprocessing this model's input gets."""
        return Transform(
            input_size=self.input_size,
            resize=self.resize,
            crop_fraction=self.crop_fraction,
            interpolation=self.interpolation,
            mean=self.mean,
            std=self.std,
            channel_order=self.channel_order,
        )
