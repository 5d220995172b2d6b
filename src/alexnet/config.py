"""Training settings: one typed dataclass whose defaults are the project's fast recipe.

Precedence: these defaults < a named recipe (``--recipe paper``, :mod:`alexnet.recipes`) < a JSON
file (``--config FILE``) < command-line flags. Unknown keys and
values of the wrong type are rejected with a message that names them. Every setting is declared
here: its type and choices (the annotations, ``Literal`` for a fixed set), its default and its help
text; the command line's flags are derived from them (:func:`setting_types`). Its range and the
rules between settings are :func:`alexnet.ranges.check_ranges`, which ``__post_init__`` applies.
"""

from __future__ import annotations

import dataclasses
import functools
import types
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from alexnet.errors import ConfigError, brief
from alexnet.layers import LRN_K, Activation, Init, Pooling
from alexnet.models import ModelName
from alexnet.ranges import Layer, check_ranges, flag
from alexnet.recipes import RECIPES
from alexnet.system.files import read_json

Schedule = Literal["onecycle", "plateau", "cosine", "constant"]
Recipe = Literal["fast", "augmented", "paper"]
Optimizer = Literal["sgd", "paper"]
SCHEDULES = get_args(Schedule)
# Schedules whose shape does not depend on the run's length: such a run can be extended with
# `--resume RUN --epochs N`. onecycle and cosine are laid out over all steps from the start.
EXTENDABLE_SCHEDULES = ("plateau", "constant")
# A settings file holds a few dozen short values.
MAX_CONFIG_BYTES = 1 << 20


def _f(default, help: str):
    """A field whose help text the command line shows."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Everything that defines a training run. Stored in the run folder and in every checkpoint."""

    recipe: Recipe = _f(
        "fast",
        (
            "named settings under --config and the flags (alexnet recipes lists them): fast (these defaults), "
            "augmented (the paper's crops and flips, 99 px, 4 epochs: the earlier default) or paper (the 2012 paper's, "
            "docs/paper.md)"
        ),
    )

    # -- model (models.py) --
    model: ModelName = _f(
        "alexnet",
        (
            "variant: alexnet (the source document's), alexnet2012 (the paper's), alexnet2012_half (its one-GPU "
            "baseline), alexnet_owt (torchvision's), alexnet_tiny (the document's layers at a test size), convnet4 "
            "(figure 1's four-layer CNN, not an AlexNet)"
        ),
    )
    activation: Activation = _f("relu", "relu, or tanh for the paper's figure-1 ablation")
    lrn: bool | None = _f(
        None, "local response normalization after conv1/conv2; None = the variant's own (on for alexnet2012)"
    )
    lrn_k: float = _f(LRN_K, "LRN's additive constant k (the paper: 2; Caffe's bvlc_alexnet was trained with 1)")
    pooling: Pooling = _f("overlap", "overlap (3x3 stride 2, the paper's) or plain (2x2 stride 2)")
    dropout: float = _f(0.5, "dropout probability in FC6 and FC7 (the paper: 0.5)")
    init: Init | None = _f(
        None,
        (
            "paper, caffe (the paper's with Caffe's bias 0.1), kaiming or torch; None = the variant's default (kaiming "
            "for alexnet, see models.py)"
        ),
    )

    # -- data (data/) --
    data: str | None = _f(
        None,
        (
            "None = Fashion-MNIST from Debian's dataset-fashion-mnist; or a folder of IDX files; or an "
            "ImageFolder-style folder of images (one sub-folder per class, optionally train/ and val/); or shards "
            "from alexnet prepare (a folder or fsspec URL holding index.json)"
        ),
    )
    image_size: int = _f(
        67,
        (
            "input height and width: 67 (the smallest) and 99 = 32k+35 give whole-number maps (final 1x1, 2x2); 227 is "
            "the document's input"
        ),
    )
    val_fraction: float = _f(0.1, "hold-out share for an image folder without train/ and val/ sub-folders")
    workers: int = _f(2, "data-loader worker processes (image folders only; Fashion-MNIST is augmented on tensors)")
    augment: bool = _f(
        False,
        (
            "the paper's random crops and horizontal flips of the training images (section 4.1): they pay once a run "
            "is long enough to overfit (--recipe augmented, paper); off: the images are only resized (centre crop), "
            "as evaluation's are"
        ),
    )
    lighting: bool = _f(
        False,
        (
            "the paper's PCA colour (lighting) augmentation, from the training images' RGB covariance; skipped on "
            "grayscale data"
        ),
    )
    decode: Literal["auto", "cpu", "gpu"] = _f(
        "auto",
        (
            "image folders: where JPEGs are decoded, cropped and flipped: auto (on the GPU with nvJPEG when training "
            "on CUDA and torchvision's decoder works there, else cpu), cpu (in the loader workers), gpu (refused "
            "without a working nvJPEG)"
        ),
    )
    subset: int | None = _f(
        None,
        (
            "train on a seeded random N of the training images (the whole set when N is larger); None = all. The "
            "validation/test images stay whole"
        ),
    )
    subset_per_class: int | None = _f(
        None,
        (
            "train on a seeded random N of each class's training images (all of a class that has fewer); None = all. "
            "Not with --subset"
        ),
    )
    classes: str | None = _f(
        None,
        (
            "train on these classes only, by index or name, comma-separated (5,6,7,8,9 or Sandal,Bag); labels are "
            "renumbered 0..K-1 in this order and the names kept in the model file; None = every class"
        ),
    )
    skip_bad_images: bool = _f(
        False, "train on the readable images of a folder and list the bad ones in the run folder's bad_images.json"
    )

    # -- optimization (optim.py); the paper's values are named where they differ --
    optimizer: Optimizer = _f(
        "sgd", "sgd (PyTorch's, fused) or paper (the paper's update rule exactly, also when the rate changes)"
    )
    epochs: int = _f(2, "passes over the training set")
    time_budget: str | None = _f(
        None,
        (
            "as many epochs as fit this wall-clock budget here (90s, 15m, 1.5h), measured on the run's own data before "
            "it starts; sets --epochs (budget.py)"
        ),
    )
    batch_size: int = _f(128, "images per SGD step (the paper: 128)")
    lr: float = _f(0.02, "peak learning rate (the paper: 0.01, constant until validation error stops improving)")
    momentum: float = _f(0.9, "SGD momentum (the paper: 0.9)")
    nesterov: bool | None = _f(
        None,
        (
            "Nesterov's momentum (Sutskever et al. 2013) instead of the paper's heavy ball; None = on for --optimizer "
            "sgd with momentum, off for the paper's rule (which has no Nesterov form)"
        ),
    )
    weight_decay: float = _f(5e-4, "L2 weight decay (the paper: 0.0005)")
    schedule: Schedule = _f(
        "onecycle",
        (
            "onecycle (warm-up then cosine decay, per step), plateau (the paper's /10 on a plateau), cosine (per step, "
            "no warm-up), constant"
        ),
    )
    warmup: float = _f(0.15, "onecycle: fraction of all steps spent warming up")
    label_smoothing: float = _f(0.1, "label smoothing of the cross-entropy loss (not in the paper)")

    # -- transfer learning (training/transfer.py, docs/transfer.md) --
    init_from: str | None = _f(
        None,
        (
            "start from the weights of a model file: a checkpoint (last.pt, best.pt), an export (.safetensors with its "
            "sidecar), torchvision's alexnet-owt-*.pth or a converted Caffe model. Every layer whose shape fits is "
            "copied; FC8 is re-initialised when the classes differ; the file's network settings and preprocessing "
            "are the run's defaults"
        ),
    )
    init_sha256: str | None = _f(
        None, "the --init-from file's SHA-256: recorded by the run, and when given, a file with another is refused"
    )
    copy_up_to: Layer | None = _f(
        None,
        "copy conv1 .. this layer from --init-from and initialise the layers above it afresh; None = every layer",
    )
    freeze: Layer | None = _f(
        None,
        (
            "keep this layer and every one below it at --init-from's weights (no gradient, no weight decay): conv1 .. "
            "conv5, fc6, fc7 (a linear probe), features = conv5"
        ),
    )
    freeze_epochs: int = _f(
        0, "train with the copied layers frozen for N epochs, then unfreeze them (fastai's fine_tune)"
    )
    transfer_lr_mult: float = _f(
        1.0, "learning rate of the copied layers that are not frozen, as a multiple of --lr (discriminative rates)"
    )

    # -- run --
    seed: int = _f(0, "seeds the init, the data order, the augmentation and the hold-out split")
    device: str = _f("auto", "auto (CUDA when present, else Apple MPS, else CPU), cpu, cuda, cuda:N, mps")
    model_parallel: str | None = _f(
        None,
        (
            "alexnet2012 only: the paper's two towers on two devices, e.g. cuda:0,cuda:1 (cpu,cpu runs the same code "
            "on the CPU); None = one device (--device)"
        ),
    )
    precision: Literal["auto", "fp32", "bf16"] = _f(
        "auto", "auto (bf16 autocast where the hardware runs it fast), fp32, bf16"
    )
    eval_every: int = _f(
        1,
        (
            "evaluate on the validation/test images every N epochs and after the last one; the epochs between have "
            "no validation numbers in metrics.jsonl (the plateau schedule needs 1)"
        ),
    )
    save_every: int = _f(
        1,
        (
            "write the end-of-epoch checkpoint every N epochs, after the last and after a new best validation "
            "top-1; a stopped run still saves where it is, a killed one resumes from the last checkpoint"
        ),
    )
    step_log: int = _f(
        20,
        "every N steps, append the training loss and error of those N steps to the run folder's steps.jsonl (0 = off)",
    )
    checkpoint_every: str | None = _f(
        "30m",
        (
            "also save last.pt during an epoch: every N steps (500) or minutes (10m); the 30-minute default only "
            "matters when epochs are long"
        ),
    )
    on_nan: Literal["stop", "rollback"] = _f(
        "stop",
        (
            "on a NaN or infinite loss: stop (keeping the last good checkpoint), or rollback to it with half the "
            "learning rate (at most 3 times)"
        ),
    )
    channels_last: bool = _f(True, "NHWC memory format (faster convolutions on CPU and GPU)")
    out: str = _f("runs", "parent folder of run folders")
    name: str | None = _f(None, "run folder name; None = model and a timestamp")

    def __post_init__(self) -> None:
        for key, allowed in _choices().items():
            value = getattr(self, key)
            if value not in allowed and not (value is None and None in allowed):
                raise ConfigError(
                    f"--{flag(key)} {value!r} is not one of: {', '.join(a for a in allowed if a is not None)}"
                )
        check_ranges(self)

    def checkpoint_interval(self) -> tuple[int, float]:
        """``checkpoint_every`` as (steps, seconds), 0 = off: "500" is 500 steps, "10m" ten minutes."""
        every = self.checkpoint_every
        if not every:
            return 0, 0.0
        return (0, float(every[:-1]) * 60) if every.endswith("m") else (int(every), 0.0)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "settings") -> TrainConfig:
        """Build from a mapping, rejecting unknown keys and wrong types; the settings of its
        ``recipe`` (:data:`alexnet.recipes.RECIPES`) fill in what the mapping leaves out, over the defaults."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"{source}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(known)}")
        for key, value in values.items():
            _check_type(key, value, source)
        recipe = values.get("recipe", "fast")
        if recipe not in RECIPES:
            raise ConfigError(f"{source}: recipe {recipe!r} is not one of: {', '.join(RECIPES)}")
        return cls(**{**RECIPES[recipe], **values})


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON settings file into a dict (checked later by :meth:`TrainConfig.from_dict`): a
    regular file of at most MAX_CONFIG_BYTES, else one line naming it."""
    values = read_json(path, limit=MAX_CONFIG_BYTES, error=ConfigError, source=f"--config {path}")
    if not isinstance(values, dict):
        raise ConfigError(f"--config {path}: expected a JSON object of settings")
    return values


@functools.cache
def setting_types() -> dict[str, tuple[type, tuple | None, bool]]:
    """Each setting's (value type, allowed choices or None, may be None), read from the annotations:
    what the command line builds its flags from and what :meth:`TrainConfig.from_dict` checks."""
    out = {}
    for name, hint in get_type_hints(TrainConfig).items():
        args = get_args(hint) if get_origin(hint) in (Union, types.UnionType) else (hint,)
        optional = type(None) in args
        (inner,) = [a for a in args if a is not type(None)]
        if get_origin(inner) is Literal:
            choices = get_args(inner)
            out[name] = (type(choices[0]), choices, optional)
        else:
            out[name] = (inner, None, optional)
    return out


def _choices() -> dict[str, tuple]:
    return {k: (*c, None) if opt else c for k, (_, c, opt) in setting_types().items() if c is not None}


def _check_type(key: str, value: Any, source: str) -> None:
    kind, _, optional = setting_types()[key]
    if value is None and optional:
        return
    allowed = (int, float) if kind is float else (kind,)  # a JSON 1 is a fine float
    if not isinstance(value, allowed) or (isinstance(value, bool) and kind is not bool):
        names = kind.__name__ + (" or None" if optional else "")
        raise ConfigError(f"{source}: {key} must be {names}, got {brief(value)}")


DEFAULTS = TrainConfig()
"""The fast recipe (not the paper's: see the help of lr, schedule and init), for reference from
other modules and the docs."""

assert all(TrainConfig(**r) for r in RECIPES.values())


def recipe_settings(name: str) -> dict[str, Any]:
    """What ``--recipe name`` sets: the settings it changes from the defaults, and every setting
    any recipe changes (so that ``alexnet recipes`` shows the fast recipe's values beside the paper's)."""
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; choose one of: {', '.join(RECIPES)}")
    keys = [f.name for f in fields(TrainConfig) if any(f.name in r for r in RECIPES.values())]
    resolved = TrainConfig(**RECIPES[name])
    return {k: getattr(resolved, k) for k in keys}


__all__ = [
    "TrainConfig",
    "ConfigError",
    "load_config_file",
    "setting_types",
    "SCHEDULES",
    "EXTENDABLE_SCHEDULES",
    "DEFAULTS",
    "recipe_settings",
    "MAX_CONFIG_BYTES",
]
