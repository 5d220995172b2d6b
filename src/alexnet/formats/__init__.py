"""Files that hold a trained network, each format with its reader and writer side by side, behind
one registry (:data:`FORMATS`):

=============== ================================= ======================== =========================
format          files                              read by                  written by
=============== ================================= ======================== =========================
``checkpoint``  ``*.pt`` (training state too)      predict, evaluate, export ``alexnet train``
``safetensors`` ``*.safetensors`` + ``*.json``     predict, evaluate         ``alexnet export``
``torchvision`` ``alexnet-owt-*.pth``              predict ``--weights``     (torchvision)
=============== ================================= ======================== =========================

Every reader returns a :class:`~alexnet.formats.network.ModelFile`; every writer takes one. A new
format (ONNX, torch.export, Caffe's ``.caffemodel``) is a module here and one entry in FORMATS.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from alexnet.errors import CheckpointError, ConfigError
from alexnet.formats import checkpoint, safetensors, torchvision
from alexnet.formats.checkpoint import FORMAT, Resume, load_checkpoint, read_resume, save_checkpoint
from alexnet.formats.files import atomic_write, link_file, load_torch_file
from alexnet.formats.network import ModelFile, check_weights, identify_weights, model_from_checkpoint
from alexnet.formats.safetensors import WEIGHTS_FORMAT, sidecar_path


@dataclass(frozen=True)
class Format:
    """A file format: how to read a trained network from it and/or write one to it."""

    name: str
    suffixes: tuple[str, ...]
    read: Callable[[Path, str], ModelFile] | None  # (path, how messages name it) -> ModelFile
    write: Callable[..., tuple[Path, ...]] | None  # (ModelFile, out, *, checkpoint, force) -> paths written
    description: str


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("checkpoint", checkpoint.SUFFIXES, checkpoint.read, None, "a training checkpoint written by alexnet train"),
        Format("safetensors", safetensors.SUFFIXES, safetensors.read, safetensors.write, "weights as safetensors plus a JSON sidecar (no pickle)"),
        Format("torchvision", torchvision.SUFFIXES, torchvision.read, None, "torchvision's AlexNet weights (alexnet-owt-*.pth)"),
    )
}  # fmt: skip
EXPORTERS = {name: f for name, f in FORMATS.items() if f.write is not None}


def read_model(path: str | Path, format: str | None = None, *, source: str | None = None) -> ModelFile:
    """Read a trained network from ``path``: in ``format``, or by its suffix (``.safetensors`` is an
    export, anything else a training checkpoint). ``source`` names the file in messages."""
    path = Path(path)
    if format is None:
        format = "safetensors" if path.suffix in safetensors.SUFFIXES else "checkpoint"
    if format not in FORMATS or FORMATS[format].read is None:
        readable = [n for n, f in FORMATS.items() if f.read is not None]
        raise ConfigError(f"cannot read format {format!r}; readable: {', '.join(readable)}")
    return FORMATS[format].read(path, source or str(path))


def export(checkpoint: str | Path, *, format: str = "safetensors", out: str | Path | None = None, force: bool = False) -> tuple[Path, ...]:
    """Write ``checkpoint`` (any readable model file) in ``format``; returns the paths written."""
    if format not in EXPORTERS:
        raise ConfigError(f"unknown export format {format!r}; choose one of: {', '.join(EXPORTERS)}")
    checkpoint = Path(checkpoint)
    model = read_model(checkpoint)
    model.network()  # refuse to export weights that do not load
    return EXPORTERS[format].write(model, out, checkpoint=checkpoint, force=force)


__all__ = [
    "FORMATS", "EXPORTERS", "Format", "ModelFile", "FORMAT", "WEIGHTS_FORMAT", "CheckpointError",
    "read_model", "export", "load_checkpoint", "read_resume", "Resume", "save_checkpoint", "atomic_write", "link_file", "load_torch_file",
    "check_weights", "identify_weights", "model_from_checkpoint", "sidecar_path",
]  # fmt: skip
