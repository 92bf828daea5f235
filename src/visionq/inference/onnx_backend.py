"""ONNX Runtime backend for `runtime = "onnx"` models, the ONNX export of torch models, and the
output rules every backend shares (`check_batch`, `to_probabilities`).

Neither torch nor onnxruntime is imported at module level: onnxruntime is imported by `setup`,
torch only by the export functions.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from visionq.inference.classifier import Batch, Probabilities, check_batch, to_probabilities
from visionq.inference.spec import ModelSpec, Runtime

if TYPE_CHECKING:
    import torch

    from visionq.inference.torch_backend import TorchClassifier

__all__ = [
    "DEFAULT_OPSET",
    "OnnxClassifier",
    "export_module_onnx",
    "export_onnx",
]

logger = logging.getLogger(__name__)

#: ONNX opset of exported models (supported by every onnxruntime >= 1.14).
DEFAULT_OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"


# --- ONNX Runtime --------------------------------------------------------------------------------


def _providers(device: str, available: list[str]) -> list[Any]:
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" in available:
            _, _, index = device.partition(":")
            return [("CUDAExecutionProvider", {"device_id": int(index or 0)}), "CPUExecutionProvider"]
        logger.warning("device %s requested, but onnxruntime has no CUDA provider; running ONNX models on CPU", device)
    return ["CPUExecutionProvider"]


def _static(dim: object) -> int | None:
    return dim if isinstance(dim, int) else None


class OnnxClassifier:
    """A `Classifier` running an ONNX file with ONNX Runtime.

    `threads` > 0 sets the session's intra-op threads; 0 keeps onnxruntime's default (all cores).
    Output rows go through `to_probabilities` with the softmax rule of user models.
    """

    def __init__(self, spec: ModelSpec, *, threads: int = 0) -> None:
        if spec.runtime != Runtime.ONNX:
            raise ValueError(f"{spec.ref}: OnnxClassifier cannot run runtime {spec.runtime.value!r}")
        if threads < 0:
            raise ValueError("threads must be >= 0")
        self.spec = spec
        self.threads = threads
        self._session: Any = None
        self._input_name = ""
        self._fixed_batch: int | None = None

    @property
    def providers(self) -> list[str]:
        """The execution providers of the loaded session, preferred first."""
        if self._session is None:
            return []
        providers: list[str] = self._session.get_providers()
        return providers

    def setup(self, device: str) -> None:
        """Create the inference session; later calls do nothing. Raises `ValueError` when the
        model's declared input or output shape contradicts the spec."""
        if self._session is not None:
            return
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: no provider chatter on stderr
        if self.threads > 0:
            options.intra_op_num_threads = self.threads
        providers = _providers(device, list(ort.get_available_providers()))
        session = ort.InferenceSession(self.spec.weights, sess_options=options, providers=providers)
        self._check_signature(session)
        self._input_name = session.get_inputs()[0].name
        self._fixed_batch = _static(session.get_inputs()[0].shape[0])
        self._session = session

    def _check_signature(self, session: Any) -> None:
        ref, size = self.spec.ref, self.spec.input_size
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1:
            raise ValueError(f"{ref}: an ONNX model must have exactly one input, this one has {len(inputs)}")
        shape = list(inputs[0].shape)
        declared = [_static(d) for d in shape[1:]]
        if len(shape) != 4 or any(
            d is not None and d != want for d, want in zip(declared, (3, size, size), strict=True)
        ):
            raise ValueError(f"{ref}: the model's input shape is {shape}, but the manifest says (N, 3, {size}, {size})")
        classes = _static(outputs[0].shape[-1]) if outputs and outputs[0].shape else None
        if classes is not None and classes != self.spec.num_classes:
            raise ValueError(f"{ref}: the model outputs {classes} classes, but its labels name {self.spec.num_classes}")

    def predict(self, batch: Batch) -> Probabilities:
        """Probabilities, shape (N, num_classes), float32, for a (N, 3, S, S) float32 batch."""
        if self._session is None:
            raise RuntimeError(f"{self.spec.ref}: setup() has not been called")
        check_batch(self.spec, batch)
        batch = np.ascontiguousarray(batch)
        if self._fixed_batch is not None and self._fixed_batch != batch.shape[0]:
            if self._fixed_batch != 1:
                raise ValueError(f"{self.spec.ref}: the model takes batches of exactly {self._fixed_batch}")
            scores = np.concatenate([self._run(batch[i : i + 1]) for i in range(batch.shape[0])])
        else:
            scores = self._run(batch)
        return to_probabilities(self.spec, scores, rows=batch.shape[0], auto_softmax=True)

    def _run(self, batch: Batch) -> npt.NDArray[np.float32]:
        outputs = self._session.run(None, {self._input_name: batch})
        return np.asarray(outputs[0], dtype=np.float32)


# --- export --------------------------------------------------------------------------------------


def export_module_onnx(
    module: torch.nn.Module,
    input_size: int,
    path: Path,
    *,
    device: str | torch.device = "cpu",
    opset_version: int = DEFAULT_OPSET,
) -> None:
    """Export `module` ((N, 3, S, S) -> (N, C)) to an ONNX file with a dynamic batch axis.

    Uses the TorchScript-based exporter (`dynamo=False`): the default torch.export-based exporter
    needs the `onnxscript` package, which visionq does not depend on. Its deprecation and
    constant-folding warnings are silenced here.
    """
    import torch

    example = torch.zeros(1, 3, input_size, input_size, device=device)
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset_version,
            dynamo=False,
        )


def export_onnx(classifier: TorchClassifier, path: Path) -> None:
    """Export a loaded built-in model (`runtime = "torch"`) to `path` as ONNX; its output is probabilities.

    The file can be served as a user model: `runtime = "onnx"`, `labels = "imagenet"` and the
    built-in's `input_size`, `mean` and `std` (see docs/models.md).
    """
    if classifier.spec.runtime != Runtime.TORCH:
        raise ValueError(
            f"{classifier.spec.ref}: only built-in torch models can be exported, not {classifier.spec.runtime}"
        )
    export_module_onnx(classifier.module, classifier.spec.input_size, path, device=classifier.device)
