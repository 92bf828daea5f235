"""A tiny, deterministic 3-class model that tests build and save as a user model (ONNX, TorchScript)."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import torch
from torch import nn

from visionq.inference.onnx_backend import export_module_onnx

SIZE = 32
LABELS = "red\ngreen\nblue\n"
RED, GREEN, BLUE = 0, 1, 2


class TinyColourNet(nn.Module):
    """conv 3x3 (3 -> 4 channels) + ReLU + global mean + linear (4 -> 3): which colour dominates.

    Weights are fixed (a channel-picking conv, a diagonal classifier) plus seeded noise, so the
    answer is known in advance and the same on every machine.
    """

    def __init__(self, *, probabilities: bool) -> None:
        super().__init__()
        self.probabilities = probabilities
        self.conv = nn.Conv2d(3, 4, kernel_size=3, padding=1)
        self.fc = nn.Linear(4, 3)
        generator = torch.Generator().manual_seed(1234)
        with torch.no_grad():
            self.conv.weight.copy_(torch.rand(self.conv.weight.shape, generator=generator) * 0.02 - 0.01)
            assert self.conv.bias is not None
            self.conv.bias.zero_()
            for channel in range(3):
                self.conv.weight[channel, channel, 1, 1] += 1.0
            self.conv.weight[3] += 0.05  # a fourth channel: overall brightness
            self.fc.weight.copy_(torch.tensor([[4.0, 0, 0, 0.5], [0, 4.0, 0, 0.5], [0, 0, 4.0, 0.5]]))
            self.fc.bias.copy_(torch.tensor([0.1, 0.0, -0.1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.conv(x)).mean((2, 3))
        logits = self.fc(features)
        return torch.softmax(logits, dim=1) if self.probabilities else logits


class DropsRows(nn.Module):
    """A broken model: whatever the batch, it answers for the first image only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:1].mean((2, 3))


def save_torchscript(module: nn.Module, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated upstream, still works
        traced = torch.jit.trace(module.eval(), torch.zeros(2, 3, SIZE, SIZE))  # type: ignore[no-untyped-call]
        traced.save(str(path))


def manifest(name: str, version: int, runtime: str, weights: str, *, input_size: int = SIZE) -> str:
    return (
        f'name = "{name}"\nversion = {version}\nruntime = "{runtime}"\nweights = "{weights}"\n'
        f'labels = "labels.txt"\ninput_size = {input_size}\ndescription = "which colour dominates"\n'
    )


def model_folder(root: Path, name: str, manifest: str, labels: str = LABELS) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "manifest.toml").write_text(manifest, encoding="utf-8")
    (folder / "labels.txt").write_text(labels, encoding="utf-8")
    return folder


def tiny_model_dir(root: Path) -> Path:
    """A VISIONQ_MODEL_DIR with `tiny@1` (ONNX, red/green/blue) and `broken@1` (weights that are not a model)."""
    export_module_onnx(
        TinyColourNet(probabilities=True),
        SIZE,
        model_folder(root, "tiny", manifest("tiny", 1, "onnx", "model.onnx")) / "model.onnx",
    )
    broken = model_folder(root, "broken", manifest("broken", 1, "onnx", "model.onnx"))
    (broken / "model.onnx").write_bytes(b"these bytes are not an ONNX model")
    return root


class Spins(nn.Module):
    """A model that is busy in native code for `steps` steps (TorchScript's interpreter loop, which no Python
    signal handler interrupts), then answers by the mean of each colour: a slow or stuck model."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.steps = steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for _ in range(self.steps):
            y = y * 1.0
        return y.mean((2, 3))


def save_spinning(steps: int, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(Spins(steps)).save(str(path))  # type: ignore[no-untyped-call]


def spin_steps_per_second() -> float:
    """How many `Spins` steps this machine runs in a second (measured, so that tests ask for seconds)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        probe = torch.jit.script(Spins(20_000))
    batch = torch.zeros(1, 3, SIZE, SIZE)
    probe(batch)  # the first call compiles
    started = time.perf_counter()
    probe(batch)
    return 20_000 / (time.perf_counter() - started)
