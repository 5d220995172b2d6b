"""Training settings: one typed dataclass whose defaults are the project's fast recipe.

Precedence: these defaults < a named recipe (``--recipe paper``, :data:`RECIPES`) < a JSON file
(``--config FILE``) < command-line flags. Unknown keys and
values of the wrong type are rejected with a message that names them. Every rule about a setting
lives here: its type and choices (the annotations, ``Literal`` for a fixed set), its range
(``__post_init__``), its help text; the command line's flags are derived from them
(:func:`setting_types`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import types
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from alexnet.errors import ConfigError, brief, printable
from alexnet.layers import LRN_K, Activation, Init, Pooling
from alexnet.models import ModelName, check_image_size
from alexnet.system.files import read_json
from alexnet.system.runtime import parse_device, parse_devices

Schedule = Literal["onecycle", "plateau", "cosine", "constant"]
Recipe = Literal["fast", "augmented", "paper"]
Optimizer = Literal["sgd", "paper"]
# The layers transfer learning names (--freeze, --copy-up-to), bottom to top, as summary.py names
# them; "features" is conv5, the top of the convolutional part. FC8 is the head: never frozen.
Layer = Literal["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "features"]
LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")
SCHEDULES = get_args(Schedule)
# Schedules whose shape does not depend on the run's length: such a run can be extended with
# `--resume RUN --epochs N`. onecycle and cosine are laid out over all steps from the start.
EXTENDABLE_SCHEDULES = ("plateau", "constant")


_BUDGET = re.compile(r"([0-9]*\.?[0-9]+)([smh])")


# The longest --time-budget: ten years (a number of 400 digits is a typo, and not a float).
MAX_BUDGET_SECONDS = 10 * 365 * 86400


def budget_seconds(text: str) -> float:
    """``90s``, ``15m``, ``1.5h`` -> seconds; anything else is a ConfigError naming the flag."""
    match = _BUDGET.fullmatch(text.strip()) if isinstance(text, str) else None
    if not match or float(match[1]) <= 0:
        raise ConfigError(f"--time-budget {brief(text)}: give a duration such as 90s, 15m or 1.5h")
    seconds = float(match[1]) * {"s": 1, "m": 60, "h": 3600}[match[2]]
    if seconds > MAX_BUDGET_SECONDS:
        raise ConfigError(f"--time-budget {brief(text)}: at most {MAX_BUDGET_SECONDS // 3600}h (ten years)")
    return seconds


# The largest batch: AlexNet has been trained with batches of 32K (You et al. 2017, LARS); twice
# that still leaves room, and anything larger is a typo (it would also only ever be one batch of
# a data set that size).
MAX_BATCH_SIZE = 65536
# torch.manual_seed and torch.Generator.manual_seed take an unsigned 64-bit seed (a negative one
# is folded onto it, a larger one overflows), so that is the range a seed can name.
SEED_RANGE = range(0, 2**64)
# The paper trained for 90 epochs; schedules lay out epochs x steps as floats, which a run of 10**400
# epochs overflows, and a million epochs is longer than any run anyone waits for.
MAX_EPOCHS = 1_000_000
MAX_SUBSET = 2**63 - 1  # an index torch can hold
# A settings file holds a few dozen short values.
MAX_CONFIG_BYTES = 1 << 20
# A folder name's longest on Linux and macOS file systems (NAME_MAX), in bytes.
MAX_NAME_BYTES = 255
# Loader processes each import torch (a few hundred MB): more than any machine has cores is a typo.
MAX_WORKERS = 256


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
                    f"--{_flag(key)} {value!r} is not one of: {', '.join(a for a in allowed if a is not None)}"
                )
        for key in ("epochs", "batch_size", "image_size", "eval_every", "save_every"):
            if getattr(self, key) < 1:
                raise ConfigError(f"--{_flag(key)} must be a positive integer, got {getattr(self, key)}")
        for key in ("subset", "subset_per_class"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ConfigError(f"--{_flag(key)} must be a positive integer, got {getattr(self, key)}")
        if self.subset is not None and self.subset_per_class is not None:
            raise ConfigError(
                f"--subset {self.subset} and --subset-per-class {self.subset_per_class} both choose the training "
                "images; give one"
            )
        if self.classes is not None:
            class_list(self.classes)
        if self.eval_every > 1 and self.schedule == "plateau":
            raise ConfigError(
                f"--eval-every {self.eval_every}: the plateau schedule divides the rate when validation stops "
                "improving, so it evaluates every epoch; give --eval-every 1 or another --schedule"
            )
        if self.step_log < 0:
            raise ConfigError(f"--step-log must be 0 (off) or a number of steps, got {self.step_log}")
        if self.workers < 0:
            raise ConfigError(f"--workers must be 0 or more, got {self.workers}")
        for key in ("lr", "momentum", "weight_decay", "label_smoothing", "dropout", "warmup", "val_fraction"):
            if not is_number(getattr(self, key)):
                raise ConfigError(f"--{_flag(key)} must be a finite number, got {getattr(self, key)}")
            if getattr(self, key) < 0:
                raise ConfigError(f"--{_flag(key)} must not be negative, got {getattr(self, key)}")
        if self.lr == 0:
            raise ConfigError("--lr must be positive, got 0")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ConfigError(
                "--nesterov needs --optimizer sgd and a positive --momentum (the paper's rule has no Nesterov form)"
            )
        if not is_number(self.lrn_k) or self.lrn_k <= 0:
            raise ConfigError(f"--lrn-k must be a positive number, got {self.lrn_k}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.checkpoint_every is not None:
            every = re.fullmatch(r"[1-9][0-9]*|([0-9]*\.?[0-9]+)m", self.checkpoint_every)
            if not every or (every[1] is not None and not 0 < float(every[1]) < math.inf):
                raise ConfigError(
                    f"--checkpoint-every {brief(self.checkpoint_every)}: give steps (500) or minutes (10m), above 0"
                )
        if self.time_budget is not None:
            budget_seconds(self.time_budget)
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"--val-fraction must be between 0 and 1, got {self.val_fraction}")
        self._check_upper_bounds()
        parse_device(self.device)
        self._check_model_parallel()
        self._check_transfer()
        check_image_size(self.image_size, self.model, self.pooling)
        self._check_name()

    def _check_name(self) -> None:
        """A plain folder name inside --out, printable (it is in every later message and in the
        printed --resume command), short enough for a file system's name (255 bytes)."""
        if self.name is None:
            return
        if self.name in ("", ".", "..") or "/" in self.name or "\\" in self.name:
            raise ConfigError(
                f"--name {brief(self.name)} must be a plain folder name (no / or ..): the run folder is made inside "
                "--out"
            )
        if printable(self.name) != self.name:
            raise ConfigError(
                f"--name {printable(self.name)!r} holds control characters (a newline, an escape, ...); use letters, "
                "digits, - and _"
            )
        if len(self.name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
            raise ConfigError(
                f"--name is {len(self.name.encode('utf-8', 'surrogateescape'))} bytes long; a folder "
                f"name may have at most {MAX_NAME_BYTES}"
            )

    def _check_upper_bounds(self) -> None:
        """The ranges the libraries underneath take, refused here rather than mid-run."""
        if self.epochs > MAX_EPOCHS:
            raise ConfigError(f"--epochs {self.epochs} is above the maximum {MAX_EPOCHS:,}")
        if self.subset is not None and self.subset > MAX_SUBSET:
            raise ConfigError(
                f"--subset {brief(self.subset)} is above the maximum 2**63-1 (give all images: leave it out)"
            )
        if self.workers > MAX_WORKERS:
            raise ConfigError(f"--workers {self.workers} is above the maximum {MAX_WORKERS}")
        if self.batch_size > MAX_BATCH_SIZE:
            raise ConfigError(f"--batch-size {self.batch_size} is above the maximum {MAX_BATCH_SIZE}")
        if self.warmup >= 1:  # OneCycleLR divides by the length of the decay that follows the warm-up
            raise ConfigError(f"--warmup is the share of steps spent warming up and must be below 1, got {self.warmup}")
        if self.label_smoothing >= 1:  # 1 makes every target uniform: nothing is left to learn
            raise ConfigError(f"--label-smoothing must be below 1, got {self.label_smoothing}")
        if self.seed not in SEED_RANGE:
            raise ConfigError(f"--seed must be in 0 .. 2**64-1 (what torch takes), got {self.seed}")

    def _check_model_parallel(self) -> None:
        """Two devices of one kind (runtime.parse_devices), for the two-tower network only."""
        if self.model_parallel is None:
            return
        if self.model != "alexnet2012":
            raise ConfigError(
                f"--model-parallel splits alexnet2012's two towers; it does not apply to --model {self.model} (add "
                "--model alexnet2012)"
            )
        parse_devices(self.model_parallel)
        if self.device != "auto":
            raise ConfigError(
                f"--model-parallel {self.model_parallel} places the towers itself; leave out --device {self.device}"
            )

    def _check_transfer(self) -> None:
        """The transfer settings (training/transfer.py) need a source and agree with each other."""
        if not is_number(self.transfer_lr_mult) or self.transfer_lr_mult <= 0:
            raise ConfigError(
                f"--transfer-lr-mult must be a positive number, got {self.transfer_lr_mult} (to keep layers as they "
                "are, use --freeze)"
            )
        if self.freeze_epochs < 0:
            raise ConfigError(f"--freeze-epochs must be 0 or more, got {self.freeze_epochs}")
        if self.init_sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", self.init_sha256):
            raise ConfigError(f"--init-sha256 {self.init_sha256!r}: give the 64 lower-case hex digits of a SHA-256")
        if self.init_from is None:
            given = [
                f"--{_flag(k)} {getattr(self, k)}"
                for k, unset in (("freeze", None), ("copy_up_to", None), ("init_sha256", None))
                if getattr(self, k) is not unset
            ]
            given += [f"--freeze-epochs {self.freeze_epochs}"] if self.freeze_epochs else []
            given += [f"--transfer-lr-mult {self.transfer_lr_mult}"] if self.transfer_lr_mult != 1 else []
            if given:
                raise ConfigError(
                    f"{given[0]} is about copied layers: give --init-from FILE (the weights to start from)"
                )
            return
        if not self.init_from.strip():
            raise ConfigError("--init-from: give the path of a model file")
        top = layer_index(self.copy_up_to or "fc7")
        if self.freeze is not None and layer_index(self.freeze) > top:
            raise ConfigError(
                f"--freeze {self.freeze} would keep layers that --copy-up-to {self.copy_up_to} does not copy; freeze "
                f"at most {LAYERS[top]}"
            )
        if self.freeze_epochs and self.freeze is not None and layer_index(self.freeze) == top:
            raise ConfigError(
                f"--freeze-epochs {self.freeze_epochs}: --freeze {self.freeze} already keeps every copied layer "
                "frozen; drop one of them"
            )

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
        ``recipe`` (:data:`RECIPES`) fill in what the mapping leaves out, over the defaults."""
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


def layer_index(name: str) -> int:
    """The place of a transfer layer name in :data:`LAYERS` (0 = conv1); ``features`` is conv5."""
    return LAYERS.index("conv5" if name == "features" else name)


def class_list(text: str) -> list[str]:
    """``--classes``' items (``5,6,7`` or ``Sandal,Bag``), stripped: each given once, none empty.
    Which class each names is for the data to say (data/classes.py)."""
    items = [c.strip() for c in text.split(",")] if isinstance(text, str) else []
    if not items or not all(items) or len(set(items)) != len(items):
        raise ConfigError(
            f"--classes {text!r}: give class indices or names separated by commas, each once (e.g. 5,6,7 or Sandal,Bag)"
        )
    return items


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON settings file into a dict (checked later by :meth:`TrainConfig.from_dict`): a
    regular file of at most MAX_CONFIG_BYTES, else one line naming it."""
    values = read_json(path, limit=MAX_CONFIG_BYTES, error=ConfigError, source=f"--config {path}")
    if not isinstance(values, dict):
        raise ConfigError(f"--config {path}: expected a JSON object of settings")
    return values


def is_number(x) -> bool:
    """A finite int or float, not a bool, that a float can hold (JSON has integers beyond that)."""
    if not isinstance(x, (int, float)) or isinstance(x, bool):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:  # an int beyond 1.8e308
        return False


def _flag(key: str) -> str:
    return key.replace("_", "-")


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

# Named settings over the defaults; each value with where it comes from (docs/paper.md).
RECIPES: dict[str, dict[str, Any]] = {
    # the defaults: kaiming init, one-cycle at lr 0.02, Nesterov momentum, 67x67 inputs, 2 epochs
    # without crops or flips, label smoothing 0.1: the most accuracy measured in about six minutes of
    # a 2-core CPU (docs/performance.md)
    "fast": {},
    # the earlier default, four epochs at 99 px with the paper's crops and flips: slower, and the
    # augmentation pays only as runs grow long enough to overfit (docs/performance.md)
    "augmented": {"image_size": 99, "epochs": 4, "augment": True, "label_smoothing": 0.0, "nesterov": False},
    "paper": {
        "model": "alexnet2012",  # two towers (groups=2), dropout after FC6/FC7 (figure 2, section 4.2)
        "lrn": True,  # section 3.3: after the ReLUs of conv1 and conv2
        "image_size": 227,  # photos: shorter side 256, random 227 crops and flips (section 4.1)
        "augment": True,  # section 4.1: random 224 crops (here 227) and horizontal flips
        "lighting": True,  # section 4.1: PCA colour augmentation
        "optimizer": "paper",  # section 5: v <- 0.9v - 0.0005*eps*w - eps*grad; w <- w + v
        "nesterov": False,  # the paper's heavy-ball momentum
        "batch_size": 128,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "dropout": 0.5,
        "lr": 0.01,
        "schedule": "plateau",  # /10 when validation stops improving, three times at most
        "epochs": 90,  # "roughly 90 cycles through the training set"
        "label_smoothing": 0.0,
        # the one departure (docs/paper.md): He-normal weights and zero biases. The paper's init and
        # Caffe's bias 0.1 both sat at chance in the measured budget; --init paper is the faithful form
        "init": "kaiming",
    },
}
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
    "RECIPES",
    "recipe_settings",
    "MAX_BATCH_SIZE",
    "MAX_WORKERS",
    "MAX_EPOCHS",
    "SEED_RANGE",
    "LAYERS",
    "is_number",
    "layer_index",
    "class_list",
]
