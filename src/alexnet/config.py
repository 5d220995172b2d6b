"""Training settings: one typed dataclass whose defaults are the project's recipe.

Precedence: these defaults < a JSON file (``--config FILE``) < command-line flags. Unknown keys and
values of the wrong type are rejected with a message that names them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from alexnet.models import ACTIVATIONS, INITS, MODELS, POOLING

SCHEDULES = ("onecycle", "plateau", "cosine", "constant")


class ConfigError(ValueError):
    """A setting that cannot be used; the message names it and says what to do."""


def _f(default, help: str):
    """A field whose help text the command line shows."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Everything that defines a training run. Stored in the run folder and in every checkpoint."""

    # -- model (models.py) --
    model: str = _f("alexnet", "variant: alexnet (the source document's), alexnet2012 (the paper's), alexnet_owt (torchvision's)")
    activation: str = _f("relu", "relu, or tanh for the paper's figure-1 ablation")
    lrn: bool | None = _f(None, "local response normalization after conv1/conv2; None = the variant's own (on for alexnet2012)")
    pooling: str = _f("overlap", "overlap (3x3 stride 2, the paper's) or plain (2x2 stride 2)")
    dropout: float = _f(0.5, "dropout probability in FC6 and FC7 (the paper: 0.5)")
    init: str | None = _f(None, "paper, kaiming or torch; None = the variant's default (kaiming for alexnet, see models.py)")

    # -- data (data.py) --
    data: str | None = _f(None, "None = Fashion-MNIST from Debian's dataset-fashion-mnist; or a folder of IDX files; or an ImageFolder-style folder of images (one sub-folder per class, optionally train/ and val/)")
    image_size: int = _f(99, "input height and width: 99 = 32k+35 gives whole-number maps (final 2x2); 227 is the document's input; 67 the smallest")
    val_fraction: float = _f(0.1, 'hold-out share for an image folder without train/ and val/ sub-folders')
    workers: int = _f(2, 'data-loader worker processes (image folders only; Fashion-MNIST is augmented on tensors)')
    skip_bad_images: bool = _f(False, "train on the readable images of a folder and list the bad ones in the run folder's bad_images.json")

    # -- optimization (train.py); the paper's section 5 recipe --
    epochs: int = _f(4, "passes over the training set")
    batch_size: int = _f(128, "images per SGD step (the paper: 128)")
    lr: float = _f(0.02, 'peak learning rate (the paper: 0.01, constant until validation error stops improving)')
    momentum: float = _f(0.9, "SGD momentum (the paper: 0.9)")
    weight_decay: float = _f(5e-4, "L2 weight decay (the paper: 0.0005)")
    schedule: str = _f("onecycle", "onecycle (warm-up then cosine decay, per step), plateau (the paper's /10 on a plateau), cosine (per step, no warm-up), constant")
    warmup: float = _f(0.15, 'onecycle: fraction of all steps spent warming up')
    label_smoothing: float = _f(0.0, "label smoothing of the cross-entropy loss (not in the paper)")

    # -- run --
    seed: int = _f(0, "seeds the init, the data order, the augmentation and the hold-out split")
    device: str = _f("auto", 'auto (CUDA when present, else CPU), cpu, cuda, cuda:N')
    precision: str = _f("auto", 'auto (bf16 autocast where the hardware runs it fast), fp32, bf16')
    checkpoint_every: str | None = _f(None, "also save last.pt during an epoch: every N steps (500) or minutes (10m)")
    on_nan: str = _f("stop", "on a NaN or infinite loss: stop (keeping the last good checkpoint), or rollback to it with half the learning rate (at most 3 times)")
    channels_last: bool = _f(True, "NHWC memory format (faster convolutions on CPU and GPU)")
    out: str = _f("runs", 'parent folder of run folders')
    name: str | None = _f(None, 'run folder name; None = model and a timestamp')

    def __post_init__(self) -> None:
        choices = {
            "model": tuple(MODELS),
            "activation": tuple(ACTIVATIONS),
            "pooling": tuple(POOLING),
            "schedule": SCHEDULES,
            "precision": ("auto", "fp32", "bf16"),
            "on_nan": ("stop", "rollback"),
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"--{_flag(key)} {getattr(self, key)!r} is not one of: {', '.join(allowed)}")
        if self.init is not None and self.init not in INITS:
            raise ConfigError(f"--init {self.init!r} is not one of: {', '.join(INITS)}")
        for key in ("epochs", "batch_size", "image_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"--{_flag(key)} must be a positive integer, got {getattr(self, key)}")
        if self.workers < 0:
            raise ConfigError(f"--workers must be 0 or more, got {self.workers}")
        for key in ("lr", "momentum", "weight_decay", "label_smoothing", "dropout", "warmup", "val_fraction"):
            if not math.isfinite(getattr(self, key)):
                raise ConfigError(f"--{_flag(key)} must be a finite number, got {getattr(self, key)}")
            if getattr(self, key) < 0:
                raise ConfigError(f"--{_flag(key)} must not be negative, got {getattr(self, key)}")
        if self.lr == 0:
            raise ConfigError("--lr must be positive, got 0")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.checkpoint_every is not None and not re.fullmatch(r"[1-9][0-9]*m?|[0-9]*\.[0-9]+m", self.checkpoint_every):
            raise ConfigError(f"--checkpoint-every {self.checkpoint_every!r}: give steps (500) or minutes (10m)")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"--val-fraction must be between 0 and 1, got {self.val_fraction}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "settings") -> "TrainConfig":
        """Build from a mapping, rejecting unknown keys and wrong types."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"{source}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(known)}")
        for key, value in values.items():
            _check_type(key, value, known[key].type, source)
        return cls(**values)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON settings file into a dict (checked later by :meth:`TrainConfig.from_dict`)."""
    path = Path(path)
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: no such file") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"--config {path}: not a readable JSON file ({e})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"--config {path}: expected a JSON object of settings")
    return values


def _flag(key: str) -> str:
    return key.replace("_", "-")


_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def _check_type(key: str, value: Any, annotation: str, source: str) -> None:
    # annotations are strings here (from __future__ import annotations): "int", "bool | None", ...
    names = [a.strip() for a in str(annotation).split("|")]
    if value is None and "None" in names:
        return
    allowed = tuple(t for n in names if n != "None" for t in _TYPES[n])
    ok = isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
    if not ok:
        raise ConfigError(f"{source}: {key} must be {' or '.join(names)}, got {value!r}")


DEFAULTS = TrainConfig()
"""The recipe, for reference from other modules and the docs."""

__all__ = ["TrainConfig", "ConfigError", "load_config_file", "SCHEDULES", "DEFAULTS"]
