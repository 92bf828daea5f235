"""A tiny, deterministic 3-class model that tests build and save as a user model (ONNX, TorchScript)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
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
    broken_model(root)
    return root


def broken_model(root: Path, name: str = "broken") -> None:
    """`name@1` in the model dir `root`: an ONNX model whose weights are not a model, so it never loads."""
    folder = model_folder(root, name, manifest(name, 1, "onnx", "model.onnx"))
    (folder / "model.onnx").write_bytes(b"these bytes are not an ONNX model")


class Spins(nn.Module):
    """A model that is busy in native code for `steps` steps (TorchScript's interpreter loop, which no Python
    signal handler interrupts), then answers by the mean of each colour: given steps enough, a stuck model."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.steps = steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for _ in range(self.steps):
            y = y * 1.0
        return y.mean((2, 3))


class Gated(nn.Module):
    """A model that answers by the mean of each colour once its gate is open (`Gate`), and until then waits,
    busy in native code: a job held mid-inference for exactly as long as a test needs, on any machine."""

    def __init__(self, gate: Path) -> None:
        super().__init__()
        self.gate = str(gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        opened = 0
        while opened == 0:
            # Read afresh each time: TorchScript would take repeated reads of one mapping for the same value.
            opened = int(torch.from_file(self.gate, False, 1, dtype=torch.uint8)[0])
        return x.mean((2, 3)) * opened  # 1 once open; used, so that TorchScript keeps the loop


class Hangs(nn.Module):
    """A model stuck in a blocking call, as one waiting on a device or a socket that never answers would be: it
    opens a FIFO that nobody writes to. It uses no CPU, and only a signal gets it out (its call then fails)."""

    def __init__(self, fifo: Path) -> None:
        super().__init__()
        self.fifo = str(fifo)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        never = torch.from_file(self.fifo, False, 1, dtype=torch.uint8)  # a size, so that it opens the file
        return x.mean((2, 3)) + never.sum()  # used, so that TorchScript keeps the call


class Gate:
    """The flag that `Gated` models wait on: a one-byte file, open (1) from the start."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.write_bytes(b"\x01")

    def open(self) -> None:
        self._set(b"\x01")

    def close(self) -> None:
        self._set(b"\x00")

    def _set(self, flag: bytes) -> None:
        # In place: a truncating write leaves the file empty for a moment, and a model reading it then would fail.
        with self.path.open("r+b") as file:
            file.write(flag)

    @contextmanager
    def closed(self) -> Iterator[Gate]:
        """Closed for the block, unless the test opens it sooner; open again after it, even when the test failed,
        so that no job of the model is left waiting (nor the warm shutdown of its worker)."""
        self.close()
        try:
            yield self
        finally:
            self.open()


def scripted_model(root: Path, name: str, module: nn.Module) -> None:
    """`name@1` in the model dir `root`: `module`, scripted, on the red/green/blue labels."""
    weights = model_folder(root, name, manifest(name, 1, "torchscript", "m.pt")) / "m.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(module).save(str(weights))  # type: ignore[no-untyped-call]


#: Settings for a stack whose jobs a test holds in a gated model: each stage written as it begins, so that the test
#: sees a job reach the model (by default a worker writes a stage it has seen pass in milliseconds with the next).
STAGES_AS_THEY_BEGIN = {"stage_window": 0}


def gated_model(root: Path, name: str = "gated") -> Gate:
    """`name@1`, a `Gated` model, in the model dir `root`; its gate, open."""
    gate = Gate(root / f"{name}.gate")
    scripted_model(root, name, Gated(gate.path))
    return gate


def hanging_model(root: Path, name: str = "hangs") -> None:
    """`name@1`, a `Hangs` model, in the model dir `root`."""
    fifo = root / f"{name}.fifo"
    os.mkfifo(fifo)
    scripted_model(root, name, Hangs(fifo))
