"""What a setting's value may be beyond its type and choices: the bounds (``MAX_*``), the
readers of values given as text (``--time-budget``, ``--classes``), the transfer layers' order,
and :func:`check_ranges`, the rules :class:`~alexnet.config.TrainConfig` applies to every
instance (ranges, the bounds of the libraries underneath, settings that must agree). Each
refusal is one :class:`ConfigError` line naming the flag and what to give instead.
"""

from __future__ import annotations

import math
import re
from typing import Literal

from alexnet.errors import ConfigError, brief, printable
from alexnet.models import check_image_size
from alexnet.system.runtime import parse_device, parse_devices

# The layers transfer learning names (--freeze, --copy-up-to), bottom to top, as summary.py names
# them; "features" is conv5, the top of the convolutional part. FC8 is the head: never frozen.
Layer = Literal["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "features"]
LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")

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
# A folder name's longest on Linux and macOS file systems (NAME_MAX), in bytes.
MAX_NAME_BYTES = 255
# Loader processes each import torch (a few hundred MB): more than any machine has cores is a typo.
MAX_WORKERS = 256

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


def is_number(x) -> bool:
    """A finite int or float, not a bool, that a float can hold (JSON has integers beyond that)."""
    if not isinstance(x, (int, float)) or isinstance(x, bool):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:  # an int beyond 1.8e308
        return False


def flag(key: str) -> str:
    """A setting's command-line flag, without the dashes: ``batch_size`` -> ``batch-size``."""
    return key.replace("_", "-")


def check_ranges(cfg) -> None:
    """Every rule of :class:`~alexnet.config.TrainConfig`'s values beyond their types and choices
    (``cfg`` is one: its ``__post_init__`` calls this): ranges, the bounds of the libraries
    underneath, and the settings that must agree with each other. Each a one-line ConfigError
    naming the flag."""
    for key in ("epochs", "batch_size", "image_size", "eval_every", "save_every"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"--{flag(key)} must be a positive integer, got {getattr(cfg, key)}")
    for key in ("subset", "subset_per_class"):
        if getattr(cfg, key) is not None and getattr(cfg, key) < 1:
            raise ConfigError(f"--{flag(key)} must be a positive integer, got {getattr(cfg, key)}")
    if cfg.subset is not None and cfg.subset_per_class is not None:
        raise ConfigError(
            f"--subset {cfg.subset} and --subset-per-class {cfg.subset_per_class} both choose the training "
            "images; give one"
        )
    if cfg.classes is not None:
        class_list(cfg.classes)
    if cfg.eval_every > 1 and cfg.schedule == "plateau":
        raise ConfigError(
            f"--eval-every {cfg.eval_every}: the plateau schedule divides the rate when validation stops "
            "improving, so it evaluates every epoch; give --eval-every 1 or another --schedule"
        )
    if cfg.step_log < 0:
        raise ConfigError(f"--step-log must be 0 (off) or a number of steps, got {cfg.step_log}")
    if cfg.workers < 0:
        raise ConfigError(f"--workers must be 0 or more, got {cfg.workers}")
    for key in ("lr", "momentum", "weight_decay", "label_smoothing", "dropout", "warmup", "val_fraction"):
        if not is_number(getattr(cfg, key)):
            raise ConfigError(f"--{flag(key)} must be a finite number, got {getattr(cfg, key)}")
        if getattr(cfg, key) < 0:
            raise ConfigError(f"--{flag(key)} must not be negative, got {getattr(cfg, key)}")
    if cfg.lr == 0:
        raise ConfigError("--lr must be positive, got 0")
    if cfg.nesterov and (cfg.optimizer != "sgd" or cfg.momentum == 0):
        raise ConfigError(
            "--nesterov needs --optimizer sgd and a positive --momentum (the paper's rule has no Nesterov form)"
        )
    if not is_number(cfg.lrn_k) or cfg.lrn_k <= 0:
        raise ConfigError(f"--lrn-k must be a positive number, got {cfg.lrn_k}")
    if not 0 <= cfg.dropout < 1:
        raise ConfigError(f"--dropout must be in [0, 1), got {cfg.dropout}")
    if cfg.checkpoint_every is not None:
        every = re.fullmatch(r"[1-9][0-9]*|([0-9]*\.?[0-9]+)m", cfg.checkpoint_every)
        if not every or (every[1] is not None and not 0 < float(every[1]) < math.inf):
            raise ConfigError(
                f"--checkpoint-every {brief(cfg.checkpoint_every)}: give steps (500) or minutes (10m), above 0"
            )
    if cfg.time_budget is not None:
        budget_seconds(cfg.time_budget)
    if not 0 < cfg.val_fraction < 1:
        raise ConfigError(f"--val-fraction must be between 0 and 1, got {cfg.val_fraction}")
    _check_upper_bounds(cfg)
    parse_device(cfg.device)
    _check_model_parallel(cfg)
    _check_transfer(cfg)
    check_image_size(cfg.image_size, cfg.model, cfg.pooling)
    _check_name(cfg)


def _check_name(cfg) -> None:
    """A plain folder name inside --out, printable (it is in every later message and in the
    printed --resume command), short enough for a file system's name (255 bytes)."""
    if cfg.name is None:
        return
    if cfg.name in ("", ".", "..") or "/" in cfg.name or "\\" in cfg.name:
        raise ConfigError(
            f"--name {brief(cfg.name)} must be a plain folder name (no / or ..): the run folder is made inside --out"
        )
    if printable(cfg.name) != cfg.name:
        raise ConfigError(
            f"--name {printable(cfg.name)!r} holds control characters (a newline, an escape, ...); use letters, "
            "digits, - and _"
        )
    if len(cfg.name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise ConfigError(
            f"--name is {len(cfg.name.encode('utf-8', 'surrogateescape'))} bytes long; a folder "
            f"name may have at most {MAX_NAME_BYTES}"
        )


def _check_upper_bounds(cfg) -> None:
    """The ranges the libraries underneath take, refused here rather than mid-run."""
    if cfg.epochs > MAX_EPOCHS:
        raise ConfigError(f"--epochs {cfg.epochs} is above the maximum {MAX_EPOCHS:,}")
    if cfg.subset is not None and cfg.subset > MAX_SUBSET:
        raise ConfigError(f"--subset {brief(cfg.subset)} is above the maximum 2**63-1 (give all images: leave it out)")
    if cfg.workers > MAX_WORKERS:
        raise ConfigError(f"--workers {cfg.workers} is above the maximum {MAX_WORKERS}")
    if cfg.batch_size > MAX_BATCH_SIZE:
        raise ConfigError(f"--batch-size {cfg.batch_size} is above the maximum {MAX_BATCH_SIZE}")
    if cfg.warmup >= 1:  # OneCycleLR divides by the length of the decay that follows the warm-up
        raise ConfigError(f"--warmup is the share of steps spent warming up and must be below 1, got {cfg.warmup}")
    if cfg.label_smoothing >= 1:  # 1 makes every target uniform: nothing is left to learn
        raise ConfigError(f"--label-smoothing must be below 1, got {cfg.label_smoothing}")
    if cfg.seed not in SEED_RANGE:
        raise ConfigError(f"--seed must be in 0 .. 2**64-1 (what torch takes), got {cfg.seed}")


def _check_model_parallel(cfg) -> None:
    """Two devices of one kind (runtime.parse_devices), for the two-tower network only."""
    if cfg.model_parallel is None:
        return
    if cfg.model != "alexnet2012":
        raise ConfigError(
            f"--model-parallel splits alexnet2012's two towers; it does not apply to --model {cfg.model} (add "
            "--model alexnet2012)"
        )
    parse_devices(cfg.model_parallel)
    if cfg.device != "auto":
        raise ConfigError(
            f"--model-parallel {cfg.model_parallel} places the towers itself; leave out --device {cfg.device}"
        )


def _check_transfer(cfg) -> None:
    """The transfer settings (training/transfer.py) need a source and agree with each other."""
    if not is_number(cfg.transfer_lr_mult) or cfg.transfer_lr_mult <= 0:
        raise ConfigError(
            f"--transfer-lr-mult must be a positive number, got {cfg.transfer_lr_mult} (to keep layers as they "
            "are, use --freeze)"
        )
    if cfg.freeze_epochs < 0:
        raise ConfigError(f"--freeze-epochs must be 0 or more, got {cfg.freeze_epochs}")
    if cfg.init_sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", cfg.init_sha256):
        raise ConfigError(f"--init-sha256 {cfg.init_sha256!r}: give the 64 lower-case hex digits of a SHA-256")
    if cfg.init_from is None:
        given = [
            f"--{flag(k)} {getattr(cfg, k)}"
            for k, unset in (("freeze", None), ("copy_up_to", None), ("init_sha256", None))
            if getattr(cfg, k) is not unset
        ]
        given += [f"--freeze-epochs {cfg.freeze_epochs}"] if cfg.freeze_epochs else []
        given += [f"--transfer-lr-mult {cfg.transfer_lr_mult}"] if cfg.transfer_lr_mult != 1 else []
        if given:
            raise ConfigError(f"{given[0]} is about copied layers: give --init-from FILE (the weights to start from)")
        return
    if not cfg.init_from.strip():
        raise ConfigError("--init-from: give the path of a model file")
    top = layer_index(cfg.copy_up_to or "fc7")
    if cfg.freeze is not None and layer_index(cfg.freeze) > top:
        raise ConfigError(
            f"--freeze {cfg.freeze} would keep layers that --copy-up-to {cfg.copy_up_to} does not copy; freeze "
            f"at most {LAYERS[top]}"
        )
    if cfg.freeze_epochs and cfg.freeze is not None and layer_index(cfg.freeze) == top:
        raise ConfigError(
            f"--freeze-epochs {cfg.freeze_epochs}: --freeze {cfg.freeze} already keeps every copied layer "
            "frozen; drop one of them"
        )
