"""Our training checkpoint (``*.pt``): its writer and its reader side by side.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(weights_only=True)``; a file crafted to run code when unpickled is refused before
anything in it runs. Keys: ``format``, ``model`` (the state_dict), ``optimizer``, ``scheduler``,
``epoch``, ``totals`` (running sums mid-epoch, else None), ``best_top1``, ``rollbacks``,
``metrics``, ``rng``, ``preprocess`` (:class:`~alexnet.data.transforms.Preprocess` as a dict),
``classes`` and ``config`` (the run's resolved settings). The run writes it (train.py); resume,
evaluate, predict and export read it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from alexnet.errors import CheckpointError
from alexnet.formats.files import atomic_write, load_torch_file
from alexnet.formats.network import ModelFile

FORMAT = "alexnet-checkpoint/1"
SUFFIXES = (".pt", ".pth")


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically (see :func:`~alexnet.formats.files.atomic_write`)."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | Path) -> dict:
    """Read a training checkpoint into its dict, checking its format and the keys everything needs."""
    path = Path(path)
    state = load_torch_file(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an alexnet training checkpoint (for torchvision weights use --weights)")
    missing = [k for k in ("model", "config", "classes", "preprocess") if not isinstance(state.get(k), (list, dict))]
    if missing:
        raise CheckpointError(f"{path}: a damaged checkpoint, it lacks {', '.join(missing)}")
    return state


def read(path: Path, source: str) -> ModelFile:
    """A training checkpoint as a :class:`ModelFile` (the network and what it needs, no training state)."""
    return ModelFile.from_state(load_checkpoint(path), source)
