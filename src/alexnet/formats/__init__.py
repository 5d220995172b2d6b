"""Files that hold a trained network, each format with its reader and writer side by side, behind
one registry (:data:`FORMATS`):

=============== ================================= ======================== =========================
format          files                              read by                  written by
=============== ================================= ======================== =========================
``checkpoint``  ``*.pt`` (training state too)      predict, evaluate, export ``alexnet train``, convert
``safetensors`` ``*.safetensors`` + ``*.json``     predict, evaluate         export, convert
``torchvision`` ``alexnet-owt-*.pth``              predict ``--weights``,    (torchvision)
                                                   convert
``caffe``       ``bvlc_alexnet.caffemodel``        convert, predict          (Caffe)
``onnx``        ``*.onnx``                         (onnxruntime)             export, convert
``pt2``         ``*.pt2`` (torch.export)           (torch.export.load)       export, convert
=============== ================================= ======================== =========================

Every reader returns a :class:`~alexnet.formats.network.ModelFile`; every writer takes one. A new
format is a module here and one entry in FORMATS. ``alexnet convert`` is :func:`read_model` and a
writer (:func:`convert`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from alexnet.errors import CheckpointError, ConfigError
from alexnet.formats import caffe, checkpoint, onnx, pt2, safetensors, torchvision
from alexnet.formats.checkpoint import FORMAT, Resume, Totals, load_checkpoint, read_resume, save_checkpoint
from alexnet.formats.network import ModelFile, check_weights, identify_weights, model_from_checkpoint
from alexnet.formats.safetensors import WEIGHTS_FORMAT, sidecar_path
from alexnet.system.files import atomic_write, link_file, load_torch_file


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
        Format(
            "checkpoint",
            checkpoint.SUFFIXES,
            checkpoint.read,
            checkpoint.write,
            "a checkpoint (.pt); alexnet train writes them, convert and export the network alone",
        ),
        Format(
            "safetensors",
            safetensors.SUFFIXES,
            safetensors.read,
            safetensors.write,
            "weights as safetensors plus a JSON sidecar (no pickle)",
        ),
        Format(
            "torchvision",
            torchvision.SUFFIXES,
            torchvision.read,
            None,
            "torchvision's AlexNet weights (alexnet-owt-*.pth)",
        ),
        Format("caffe", caffe.SUFFIXES, caffe.read, None, "Caffe's bvlc_alexnet.caffemodel, into alexnet2012"),
        Format(
            "onnx",
            onnx.SUFFIXES,
            None,
            onnx.write,
            "ONNX with a dynamic batch, metadata_props holding preprocessing and classes (run it with onnxruntime)",
        ),
        Format(
            "pt2",
            pt2.SUFFIXES,
            None,
            pt2.write,
            "torch.export's .pt2 archive, dynamic batch, alexnet.json inside (load with torch.export.load)",
        ),
    )
}
EXPORTERS = {name: f for name, f in FORMATS.items() if f.write is not None}


def read_model(path: str | Path, format: str | None = None, *, source: str | None = None) -> ModelFile:
    """Read a trained network from ``path``: in ``format``, or by its suffix (``.safetensors`` is an
    export, ``.caffemodel`` Caffe's, ``.onnx`` and ``.pt2`` are refused, anything else a training
    checkpoint). ``source`` names the file in messages."""
    path = Path(path)
    if format is None:
        format = next(
            (name for name in ("safetensors", "caffe", "onnx", "pt2") if path.suffix in FORMATS[name].suffixes),
            "checkpoint",
        )
    if format not in FORMATS or FORMATS[format].read is None:
        readable = [n for n, f in FORMATS.items() if f.read is not None]
        if format in FORMATS:  # a file we write for other runtimes
            raise CheckpointError(
                f"{source or path}: an {format} export, for other runtimes; this reads {', '.join(readable)} (keep "
                "the checkpoint it came from)"
            )
        raise ConfigError(f"cannot read format {format!r}; readable: {', '.join(readable)}")
    return FORMATS[format].read(path, source or str(path))


def convert(
    path: str | Path, out: str | Path, *, force: bool = False, mean_file: str | Path | None = None
) -> tuple[Path, ...]:
    """``alexnet convert``: read weights trained elsewhere (``.caffemodel``: Caffe's; anything else:
    torchvision's) and write them in the format ``out``'s suffix names (``.pt``, ``.safetensors``,
    ``.onnx``, ``.pt2``); returns the paths written. ``mean_file``: a Caffe mean image
    (``.binaryproto``) whose per-channel mean replaces ilsvrc_2012_mean's (Caffe's weights only)."""
    path, out = Path(path), Path(out)
    if mean_file is not None and path.suffix not in caffe.SUFFIXES:
        raise ConfigError(f"--mean-file {mean_file}: only Caffe's weights (.caffemodel) take a Caffe mean file")
    writer = next((f for f in EXPORTERS.values() if out.suffix in f.suffixes), None)
    if writer is None:
        suffixes = ", ".join(s for f in EXPORTERS.values() for s in f.suffixes[:1])
        raise ConfigError(f"--to {out}: name a file ending in one of {suffixes} (the suffix picks the format)")
    if out.exists() and not force:  # before the slow read
        raise FileExistsError(f"{out} already exists; pass --force to replace it")
    mean = caffe.read_mean(Path(mean_file), f"--mean-file {mean_file}") if mean_file is not None else None
    format = "caffe" if path.suffix in caffe.SUFFIXES else "torchvision"
    try:
        model = read_model(path, format, source=str(path))
        model.network()  # refuse weights that do not load, before anything is written
    except CheckpointError as e:
        raise CheckpointError(f"{e} (convert reads torchvision's alexnet-owt-*.pth and Caffe's *.caffemodel)") from None
    if mean is not None:
        model.preprocess = replace(model.preprocess, mean=mean)
    return writer.write(model, out, checkpoint=path, force=force)


def export(
    checkpoint: str | Path, *, format: str = "safetensors", out: str | Path | None = None, force: bool = False
) -> tuple[Path, ...]:
    """Write ``checkpoint`` (any readable model file) in ``format``; returns the paths written."""
    if format not in EXPORTERS:
        raise ConfigError(f"unknown export format {format!r}; choose one of: {', '.join(EXPORTERS)}")
    checkpoint = Path(checkpoint)
    model = read_model(checkpoint)
    model.network()  # refuse to export weights that do not load
    return EXPORTERS[format].write(model, out, checkpoint=checkpoint, force=force)


__all__ = [
    "FORMATS",
    "EXPORTERS",
    "Format",
    "ModelFile",
    "FORMAT",
    "WEIGHTS_FORMAT",
    "CheckpointError",
    "read_model",
    "export",
    "convert",
    "load_checkpoint",
    "read_resume",
    "Resume",
    "Totals",
    "save_checkpoint",
    "atomic_write",
    "link_file",
    "load_torch_file",
    "check_weights",
    "identify_weights",
    "model_from_checkpoint",
    "sidecar_path",
]
