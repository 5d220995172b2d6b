"""torch.export's archive (``NAME.pt2``): the network in eval mode as an ``ExportedProgram`` with a
dynamic batch dimension, loaded back with ``torch.export.load`` and run as ``.module()(x)`` with no
Python class of ours. Input (N, C, S, S) float32, already preprocessed; output logits (N, classes).
The preprocessing, class names and settings are an extra file in the archive, ``alexnet.json``
(read it with ``torch.export.load(path, extra_files={"alexnet.json": ""})``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from alexnet.formats.network import ModelFile, describe
from alexnet.system.files import atomic_write, output_path

SUFFIXES = (".pt2",)
PT2_FORMAT = "alexnet-pt2/1"
EXTRA_FILE = "alexnet.json"


def write(model: ModelFile, out: str | Path | None, *, checkpoint: Path, force: bool = False) -> tuple[Path]:
    """Write ``model`` as ``<name>.pt2`` (``out``: a ``.pt2`` name or a folder; default next to
    ``checkpoint``); an existing file is kept unless ``force``."""
    path = output_path(checkpoint, out, ".pt2", force=force)
    program = to_exported(model)
    meta = json.dumps(describe(model, PT2_FORMAT, str(checkpoint)))
    atomic_write(path, lambda tmp: _save(program, tmp, meta), overwrite=force)
    return (path,)


def _save(program: torch.export.ExportedProgram, tmp: Path, meta: str) -> None:
    # through a Python file: torch warns about a path not ending in .pt2 (the temporary file's),
    # and reports a full disk only as "unexpected pos"
    with open(tmp, "wb") as f:
        torch.export.save(program, f, extra_files={EXTRA_FILE: meta})


def to_exported(model: ModelFile) -> torch.export.ExportedProgram:
    """``model`` in fp32 eval mode through ``torch.export.export``, any batch size from 1."""
    net = model.network().float().eval()
    size, channels = model.preprocess.image_size, model.preprocess.channels
    batch = torch.export.Dim("batch", min=1, max=65536)
    return torch.export.export(net, (torch.zeros(2, channels, size, size),), dynamic_shapes={"x": {0: batch}})
