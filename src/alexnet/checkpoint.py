"""Checkpoints: written atomically, read without running any code from the file.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(weights_only=True)``: a file crafted to run code when unpickled is refused.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path

import torch

from alexnet.models import AlexNet, build_model

FORMAT = "alexnet-checkpoint/1"


class CheckpointError(Exception):
    """A checkpoint or weights file that cannot be used; the message names it and why."""


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write ``state`` to ``path`` so that a crash at any instant leaves the old file loadable:
    write a temporary file in the same folder, flush and fsync it, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def link_checkpoint(src: str | Path, dst: str | Path) -> None:
    """Make ``dst`` the same file as ``src`` (a hard link, atomically replacing ``dst``), so that
    ``best.pt`` costs no second write; falls back to an atomic copy where links are not allowed."""
    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(f".{dst.name}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        save_checkpoint(torch.load(src, map_location="cpu", weights_only=True), dst)
        return
    os.replace(tmp, dst)


def load_file(path: str | Path) -> object:
    """``torch.load(path, weights_only=True)`` with one-line errors for missing, corrupt and unsafe files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path}: refused to load - it holds Python objects that could run code "
            f"(only tensors and plain data are accepted): {first}"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable PyTorch file ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def load_checkpoint(path: str | Path) -> dict:
    """Load a training checkpoint written by :func:`save_checkpoint` (see train.py for its keys)."""
    state = load_file(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not an alexnet training checkpoint (for torchvision weights use --weights)"
        )
    return state


def model_from_checkpoint(state: dict) -> AlexNet:
    """Rebuild the trained network from a checkpoint's settings and load its weights (strict)."""
    cfg = state["config"]
    model = build_model(
        cfg["model"],
        num_classes=len(state["classes"]),
        in_channels=len(state["preprocess"]["mean"]),
        activation=cfg["activation"],
        lrn=cfg["lrn"],
        pooling=cfg["pooling"],
        dropout=cfg["dropout"],
        init="torch",  # about to be overwritten
    )
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint weights do not fit model {cfg['model']!r}: {str(e).splitlines()[0]}") from None
    return model
