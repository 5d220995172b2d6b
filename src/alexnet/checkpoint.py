"""Checkpoints and exported weights: written atomically, read without running any code from the file.

Two kinds of file hold a trained network:

* a training checkpoint (``*.pt``, written by train.py): a plain dict of tensors, numbers, strings,
  lists and dicts, so it loads with ``torch.load(weights_only=True)``; a file crafted to run code
  when unpickled is refused before anything in it runs;
* an export (``*.safetensors`` plus a ``*.json`` sidecar, written by export.py): raw tensors and
  JSON, formats that cannot hold code at all.

:func:`load_checkpoint` reads either into the same dict (``model``, ``config``, ``classes``,
``preprocess``, ...), so everything downstream has one code path.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Callable

import torch

from alexnet.config import ConfigError, TrainConfig
from alexnet.models import AlexNet, build_model

FORMAT = "alexnet-checkpoint/1"
WEIGHTS_FORMAT = "alexnet-weights/1"  # an export: .safetensors weights + .json sidecar
# The settings an export keeps (the rest of TrainConfig only matters to training): those that
# rebuild the network, and those that rebuild its validation set for `alexnet evaluate`.
MODEL_SETTINGS = ("model", "activation", "lrn", "pooling", "dropout")
DATA_SETTINGS = ("data", "image_size", "val_fraction", "seed", "batch_size")


class CheckpointError(Exception):
    """A checkpoint or weights file that cannot be used; the message names it and why."""


# --------------------------------------------------------------------------------------------
# Writing


def atomic_write(path: str | Path, write: Callable[[Path], None], *, overwrite: bool = True) -> Path:
    """Call ``write(tmp)`` on a temporary file next to ``path``, fsync it, then move it to ``path``,
    so that a crash at any instant leaves either the old file or the new one, never half of one.

    With ``overwrite=False`` an existing ``path`` is never replaced: :class:`FileExistsError`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, path)
        else:
            _create_from(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)
    return path


def _create_from(tmp: Path, path: Path) -> None:
    # link() fails if `path` exists, so no check-then-write race can clobber a file
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(f"{path} already exists; pass --force to replace it") from None
    except OSError:  # a file system without hard links
        if path.exists():
            raise FileExistsError(f"{path} already exists; pass --force to replace it") from None
        os.replace(tmp, path)


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


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


# --------------------------------------------------------------------------------------------
# Reading


def load_file(path: str | Path) -> object:
    """``torch.load(path, weights_only=True)`` with one-line errors for missing, corrupt and unsafe files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: an empty file, not a checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: refused to load - {_unpickle_reason(str(e))}; nothing in it was run") from None
    except Exception as e:  # damaged bytes reach the unpickler, which then fails with any exception type
        raise CheckpointError(f"{path}: not a readable PyTorch file, truncated or damaged ({type(e).__name__}: {_first_line(e)})") from None


def _unpickle_reason(message: str) -> str:
    """Why torch's weights-only unpickler stopped, without its advice to load the file unsafely."""
    found = re.search(r"GLOBAL (\S+) (?:was not an allowed global|whose module)", message)
    if found:
        return f"it asks for the Python object {found[1]}, which could run code (only tensors and plain data are accepted)"
    for line in message.splitlines():
        line = line.strip().removeprefix("WeightsUnpickler error:").strip()
        if line and not re.search(r"weights_only|Weights only|Please file an issue|documentation of torch.load|\(1\)|\(2\)", line):
            return f"not a PyTorch file of only tensors and plain data ({line})"
    return "not a PyTorch file of only tensors and plain data"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def load_checkpoint(path: str | Path) -> dict:
    """Load a training checkpoint (``*.pt``, see train.py for its keys) or an export
    (``*.safetensors`` with its ``*.json`` sidecar) into the same dict: ``model`` (the state_dict),
    ``config``, ``classes``, ``preprocess``, ``epoch``, ``metrics``; only a training checkpoint has
    ``optimizer``, ``scheduler`` and ``rng``."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_export(path)
    state = load_file(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not an alexnet training checkpoint (for torchvision weights use --weights)"
        )
    missing = [k for k in ("model", "config", "classes", "preprocess") if not isinstance(state.get(k), (list, dict))]
    if missing:
        raise CheckpointError(f"{path}: a damaged checkpoint, it lacks {', '.join(missing)}")
    return state


def sidecar_path(weights: str | Path) -> Path:
    """The JSON file that describes ``weights``: same folder, same stem, ``.json``."""
    return Path(weights).with_suffix(".json")


def load_export(path: str | Path) -> dict:
    """Read a ``.safetensors`` export and its JSON sidecar (see export.py) as :func:`load_checkpoint` does."""
    from safetensors import safe_open

    path, side = Path(path), sidecar_path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if not side.is_file():
        raise CheckpointError(f"{path}: its sidecar {side} is missing (alexnet export writes both; keep them together)")
    try:
        meta = json.loads(side.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{side}: not a readable JSON file ({_first_line(e)})") from None
    if not isinstance(meta, dict) or meta.get("format") != WEIGHTS_FORMAT:
        raise CheckpointError(f"{side}: not an alexnet export sidecar (expected \"format\": \"{WEIGHTS_FORMAT}\")")
    _check_sidecar(meta, side)
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            weights = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # damaged bytes fail in safetensors' header parser (SafetensorError) or in torch
        raise CheckpointError(f"{path}: not a readable safetensors file ({_first_line(e)})") from None
    if metadata.get("format") != WEIGHTS_FORMAT:
        raise CheckpointError(f"{path}: not an alexnet export (its metadata lacks format {WEIGHTS_FORMAT})")
    return {
        "format": WEIGHTS_FORMAT,
        "model": weights,
        "config": meta["config"],
        "classes": meta["classes"],
        "preprocess": meta["preprocess"],
        "epoch": meta.get("epoch"),
        "metrics": meta.get("metrics"),
    }


def _check_sidecar(meta: dict, side: Path) -> None:
    """The sidecar is untrusted input too: the keys and types downstream code relies on."""
    for key, kind in (("config", dict), ("classes", list), ("preprocess", dict)):
        if not isinstance(meta.get(key), kind):
            raise CheckpointError(f"{side}: {key!r} must be a JSON {'object' if kind is dict else 'array'}")
    if not meta["classes"] or not all(isinstance(c, str) for c in meta["classes"]):
        raise CheckpointError(f"{side}: 'classes' must be a non-empty list of names")
    missing = [k for k in MODEL_SETTINGS if k not in meta["config"]]
    if missing:
        raise CheckpointError(f"{side}: 'config' lacks {', '.join(missing)}")
    try:
        TrainConfig.from_dict({**TrainConfig().to_dict(), **meta["config"]}, source="config")
    except ConfigError as e:
        raise CheckpointError(f"{side}: {e}") from None
    pre = meta["preprocess"]
    needed = {"kind", "mode", "image_size", "mean", "std"} | ({"source_size"} if pre.get("kind") == "tensor" else set())
    if pre.get("kind") not in ("tensor", "folder") or not needed <= set(pre):
        raise CheckpointError(f"{side}: 'preprocess' must hold kind (tensor or folder), {', '.join(sorted(needed - {'kind'}))}")
    numbers = lambda v: isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)  # noqa: E731
    if not (numbers(pre["mean"]) and numbers(pre["std"]) and len(pre["mean"]) == len(pre["std"]) >= 1):
        raise CheckpointError(f"{side}: 'preprocess' mean and std must be lists of one number per channel")


# --------------------------------------------------------------------------------------------
# Which network a state_dict is for


def identify_weights(state_dict: dict) -> dict:
    """Read the variant, class count and input channels off a state_dict's shapes.

    conv1 has 96 filters in ``alexnet`` and ``alexnet2012`` and 64 in ``alexnet_owt``; the 2012
    paper's conv2 is grouped (two towers), so its weight is 256 x 48 x 5 x 5 instead of 256 x 96 x
    5 x 5. The class count is the last Linear layer's out_features. Unknown shapes give None.
    """
    def layers(prefix: str, dim: int) -> list[torch.Tensor]:
        found = []
        for key, value in state_dict.items():
            m = re.fullmatch(rf"{prefix}\.(\d+)\.weight", key)
            if m and isinstance(value, torch.Tensor) and value.dim() == dim:
                found.append((int(m[1]), value.shape))
        return [shape for _, shape in sorted(found)]

    convs, linears = layers("features", 4), layers("classifier", 2)
    variant = None
    if len(convs) >= 2:
        if convs[0][0] == 64 and convs[1][1] == 64:
            variant = "alexnet_owt"
        elif convs[0][0] == 96 and convs[1][1] == 96:
            variant = "alexnet"
        elif convs[0][0] == 96 and convs[1][1] == 48:
            variant = "alexnet2012"
    return {
        "variant": variant,
        "num_classes": int(linears[-1][0]) if linears else None,
        "in_channels": int(convs[0][1]) if convs else None,
    }


_LOOKS = {  # what tells the variants apart, as a reader of the shapes sees it
    "alexnet": ("conv1 has 96 filters", "conv2 sees all 96 maps"),
    "alexnet2012": ("conv1 has 96 filters", "conv2 is grouped, 48 maps per filter"),
    "alexnet_owt": ("conv1 has 64 filters", "conv2 sees all 64 maps"),
}


def check_weights(state_dict: dict, variant: str, num_classes: int, in_channels: int, source: str) -> None:
    """Raise :class:`CheckpointError` saying which, when ``state_dict`` is not for this network."""
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"{source}: its weights are not a state_dict of tensors")
    found = identify_weights(state_dict)
    if found["variant"] is not None and found["variant"] != variant and variant in _LOOKS:
        part = 0 if _LOOKS[found["variant"]][0] != _LOOKS[variant][0] else 1
        raise CheckpointError(
            f"{source}: weights are {found['variant']}'s ({_LOOKS[found['variant']][part]}), "
            f"not {variant}'s ({_LOOKS[variant][part]})"
        )
    if found["num_classes"] is not None and found["num_classes"] != num_classes:
        raise CheckpointError(f"{source}: weights are for {found['num_classes']} classes, the checkpoint says {num_classes}")
    if found["in_channels"] is not None and found["in_channels"] != in_channels:
        raise CheckpointError(f"{source}: weights have {found['in_channels']} input channels, expected {in_channels}")


def model_from_checkpoint(state: dict, *, source: str = "checkpoint") -> AlexNet:
    """Rebuild the trained network from a checkpoint's settings and load its weights (strict).

    A state_dict of another variant, class count or channel count is refused with a message that
    says which (``source`` names the file in it).
    """
    cfg = state["config"]
    num_classes, in_channels = len(state["classes"]), len(state["preprocess"]["mean"])
    check_weights(state["model"], cfg["model"], num_classes, in_channels, source)
    model = build_model(
        cfg["model"],
        num_classes=num_classes,
        in_channels=in_channels,
        activation=cfg["activation"],
        lrn=cfg["lrn"],
        pooling=cfg["pooling"],
        dropout=cfg["dropout"],
        init="torch",  # about to be overwritten
    )
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        hint = _lrn_hint(state["model"], model.state_dict(), cfg)
        raise CheckpointError(f"{source}: weights do not fit model {cfg['model']!r}{hint}: {_first_line(e)}") from None
    return model


def _lrn_hint(weights: dict, expected: dict, cfg: dict) -> str:
    # LRN layers have no weights but shift the indices of every later layer in `features`
    if set(weights) != set(expected) and len(weights) == len(expected):
        return f" (its layers are numbered as with lrn={not _has_lrn(cfg)}, the checkpoint says lrn={cfg['lrn']})"
    return ""


def _has_lrn(cfg: dict) -> bool:
    return cfg["lrn"] if cfg["lrn"] is not None else cfg["model"] == "alexnet2012"
