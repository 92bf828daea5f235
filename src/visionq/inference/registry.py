"""The per-process cache of loaded models: each model is loaded once, on first use or by `warm`.

The backends (and with them torch and onnxruntime) are imported only when a model is loaded, so
building a registry is cheap. `get` is thread-safe: concurrent first calls for one model load it
once (a lock per model, double-checked), while different models load in parallel.

>>> registry = ModelRegistry(catalog, device="cpu", threads=4)      # doctest: +SKIP
>>> registry.warm(["latest"])                                        # doctest: +SKIP
>>> registry.get(catalog.resolve("efficientnet-lite0")).predict(batch)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from visionq.errors import ModelNotFound
from visionq.inference.catalog import Catalog
from visionq.inference.classifier import Classifier
from visionq.inference.export import Verification
from visionq.inference.receipts import ModelIdentity, file_sha256, identify
from visionq.inference.repository import check_digest
from visionq.inference.spec import ModelSpec, Precision, Runtime

__all__ = ["ALL_MODELS", "ModelRegistry", "onnx_runs_on"]

logger = logging.getLogger(__name__)

#: The `warm` ref that means every model of the catalog.
ALL_MODELS = "*"


def onnx_runs_on(device: str, providers: list[str]) -> bool:
    """Whether an ONNX Runtime with `providers` runs models on `device` ("cpu", "cuda", "cuda:1")."""
    return not device.startswith("cuda") or "CUDAExecutionProvider" in providers


def _check_in_place(spec: ModelSpec) -> None:
    """Raise `WeightsMismatch` unless `spec`'s weights file has the SHA-256 its manifest gives."""
    assert spec.weights_sha256 is not None
    check_digest(file_sha256(Path(spec.weights)), spec.weights_sha256, spec.weights)


class ModelRegistry:
    """Loads the catalog's models on demand and keeps them for the life of the process.

    `device` is where models run ("cpu", "cuda", "cuda:1"); `threads` > 0 sets torch's intra-op
    threads (once, before the first torch model loads) and each ONNX session's intra-op threads.
    `cache` is where exports of the built-in models are kept: with `builtin_onnx`, the exact built-ins run
    from their verified ONNX export; the int8 builds always need it. `weights` is called before a model whose
    spec gives a `weights_sha256` loads, to fetch its file if need be and check its digest (a worker passes
    `ModelSources.ensure_weights`); without it the file is checked where it is. A file that fails is never loaded.
    """

    def __init__(
        self,
        catalog: Catalog,
        *,
        device: str = "cpu",
        threads: int = 0,
        cache: Path | None = None,
        builtin_onnx: bool = True,
        weights: Callable[[ModelSpec], None] | None = None,
    ) -> None:
        if threads < 0:
            raise ValueError("threads must be >= 0")
        self.catalog = catalog
        self.device = device
        self.threads = threads
        self.cache = cache
        self.builtin_onnx = builtin_onnx
        self.weights = weights or _check_in_place
        #: The export check of each built-in model served by ONNX Runtime, by ref.
        self.exports: dict[str, Verification] = {}
        #: Seconds each model took to load, by ref.
        self.load_seconds: dict[str, float] = {}
        #: What each model loaded as (weights file and its digest, runtime), by ref; its last load's after an unload.
        self.identities: dict[str, ModelIdentity] = {}
        self._models: dict[str, Classifier] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._torch_configured = False

    def get(self, spec: ModelSpec) -> Classifier:
        """The loaded classifier of `spec`, loading it first if this process has not yet."""
        model = self._models.get(spec.ref)
        if model is not None:
            return model
        if spec not in self.catalog:
            raise ModelNotFound(f"Model {spec.ref} is not in the catalog.")
        with self._lock_for(spec.ref):
            model = self._models.get(spec.ref)
            if model is None:
                model = self._load(spec)
                self._models[spec.ref] = model
        return model

    def warm(
        self, refs: list[str], *, failed: Callable[[ModelSpec, Exception], object] | None = None
    ) -> list[ModelSpec]:
        """Resolve and load each ref (`latest`, a name, `name@version`, or `*` for every model this machine
        serves: not the int8 builds on a CPU that cannot run them, see `not_served_here`).

        Returns the specs loaded (each once). Raises `ModelNotFound` for an unknown ref before loading any. A
        model that fails to load raises too, or with `failed`, is handed to it and skipped.
        """
        specs: list[ModelSpec] = []
        for ref in refs:
            if ref.strip() == ALL_MODELS:
                matches = [spec for spec in self.catalog.specs() if self.not_served_here(spec) is None]
            else:
                matches = [self.catalog.resolve(ref)]
            for spec in matches:
                if spec not in specs:
                    specs.append(spec)
        self._ready_torch()
        loaded = []
        for spec in specs:
            try:
                self.get(spec)
            except Exception as exc:
                if failed is None:
                    raise
                failed(spec, exc)
                continue
            loaded.append(spec)
        return loaded

    @staticmethod
    def not_served_here(spec: ModelSpec) -> str | None:
        """Why this machine does not serve `spec` (an int8 build on a CPU without VNNI), or None if it does."""
        if spec.precision is not Precision.INT8:
            return None
        from visionq.inference.quantize import int8_unsupported

        return int8_unsupported()

    def unload(self, ref: str) -> bool:
        """Forget the loaded model `ref` (its memory goes once no job still holds it); False if not loaded.
        A later job for it loads it again."""
        with self._lock_for(ref):
            return self._models.pop(ref, None) is not None

    def loaded(self) -> list[str]:
        """The refs of the models loaded in this process, sorted."""
        return sorted(self._models)

    def is_loaded(self, spec: ModelSpec) -> bool:
        return spec.ref in self._models

    def identity(self, spec: ModelSpec) -> ModelIdentity:
        """What `spec` runs as in this process: the weights file that runs (a built-in's ONNX export or int8 build
        on ONNX Runtime, its state dict on PyTorch, a user's file), that file's SHA-256, the runtime. Hashed once
        per load; the model is loaded first if it is not."""
        identity = self.identities.get(spec.ref)
        if identity is None:
            self.get(spec)
            identity = self.identities[spec.ref]
        return identity

    def _export(self, spec: ModelSpec) -> Classifier | None:
        """A built-in model on ONNX Runtime from its checked export or int8 build; None (PyTorch then) if an
        exact model's export was refused. An int8 build that was refused, or no cache, fails the load."""
        from visionq.inference.export import ExportRefused, ensure_onnx
        from visionq.inference.onnx_backend import OnnxClassifier
        from visionq.inference.quantize import ensure_int8

        int8 = spec.precision is Precision.INT8
        if self.cache is None:
            if int8:
                raise ValueError(f"{spec.ref}: an int8 build needs a model cache to be made in")
            return None
        try:
            path, verification = (ensure_int8 if int8 else ensure_onnx)(spec, self.cache, threads=self.threads)
        except ExportRefused as refused:
            if int8 or isinstance(refused.__cause__, ModuleNotFoundError):  # no PyTorch to fall back on
                raise
            logger.exception("serving %s with PyTorch instead of ONNX Runtime", spec.ref)
            return None
        self.exports[spec.ref] = verification
        return OnnxClassifier(
            spec.model_copy(update={"runtime": Runtime.ONNX, "weights": str(path)}), threads=self.threads
        )

    def _onnx_on_device(self) -> bool:
        """Whether ONNX Runtime can run on this registry's device (on a GPU, only with onnxruntime-gpu)."""
        import onnxruntime as ort

        if onnx_runs_on(self.device, list(ort.get_available_providers())):
            return True
        logger.warning("onnxruntime has no CUDA provider: the exact built-in models run on PyTorch on %s", self.device)
        return False

    def _lock_for(self, ref: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(ref, threading.Lock())

    def _ready_torch(self) -> None:
        """Import PyTorch now if a model of the catalog runs on it (a TorchScript file, or built-ins served on
        PyTorch): it takes seconds, which the first job that loads such a model would otherwise pay inside its time
        limit. A catalog served on ONNX Runtime alone never imports it."""
        on_torch = any(
            spec.runtime is Runtime.TORCHSCRIPT or (spec.runtime is Runtime.TORCH and not self.builtin_onnx)
            for spec in self.catalog.specs()
        )
        if not on_torch:
            return
        try:
            self._configure_torch()
            import visionq.inference.torch_backend  # noqa: F401  (PyTorch itself, and its backend)
        except ModuleNotFoundError as missing:  # those models' jobs fail when they load, saying so
            logger.warning("the catalog has models that run on PyTorch, which is not installed here: %s", missing)

    def _configure_torch(self) -> None:
        with self._guard:
            if self._torch_configured:
                return
            if self.threads > 0:
                import torch

                torch.set_num_threads(self.threads)
            self._torch_configured = True

    def _load(self, spec: ModelSpec) -> Classifier:
        started = time.perf_counter()
        if spec.weights_sha256 is not None:
            self.weights(spec)
        model: Classifier
        if spec.runtime == Runtime.ONNX:
            from visionq.inference.onnx_backend import OnnxClassifier

            model = OnnxClassifier(spec, threads=self.threads)
        elif spec.runtime == Runtime.TORCH and (
            ((self.builtin_onnx and self._onnx_on_device()) or spec.precision is Precision.INT8)
            and (exported := self._export(spec))
        ):
            model = exported
        else:
            self._configure_torch()
            from visionq.inference.torch_backend import TorchClassifier

            model = TorchClassifier(spec)
        model.setup(self.device)
        self.identities[spec.ref] = identify(model)
        seconds = time.perf_counter() - started
        self.load_seconds[spec.ref] = seconds
        runtime = "onnx" if spec.ref in self.exports else spec.runtime.value
        logger.info("loaded model %s (%s) on %s in %.2fs", spec.ref, runtime, self.device, seconds)
        return model
