"""What every sub-command of ``alexnet`` shares: the flag types (argparse's one-line usage errors),
train's flags derived from :class:`TrainConfig`, and :func:`say` for results that hold names from files."""

from __future__ import annotations

import argparse
import dataclasses

from alexnet.config import TrainConfig, setting_types
from alexnet.errors import ConfigError, printable
from alexnet.ranges import MAX_BATCH_SIZE, SEED_RANGE


def say(text: str) -> None:
    """Print a result whose names come from files (class names, paths) line by line, each escaped
    by :func:`printable`: a name cannot add lines or send the terminal escape sequences."""
    print("\n".join(printable(line) for line in str(text).split("\n")))


def positive_int(text: str) -> int:
    """Flag type: an integer of at least 1."""
    value = bounded_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def batch_size(text: str) -> int:
    """Flag type: a batch size, 1 .. MAX_BATCH_SIZE."""
    value = positive_int(text)
    if value > MAX_BATCH_SIZE:  # train's bound: a batch of 10**17 images overflows torch's storage size
        raise argparse.ArgumentTypeError(f"{value} is above the maximum {MAX_BATCH_SIZE}")
    return value


def count(text: str) -> int:
    """Flag type: an integer of 0 or more."""
    value = bounded_int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def seed(text: str) -> int:
    """Flag type: a seed torch takes (0 .. 2**64-1)."""
    value = bounded_int(text, 20)
    if value not in SEED_RANGE:
        raise argparse.ArgumentTypeError(f"must be in 0 .. 2**64-1 (what torch takes), got {text}")
    return value


def bounded_int(text: str, most: int = 18) -> int:
    """An integer flag of at most 18 digits: larger is a typo, and Python refuses to read one of
    over 4300 digits with a ValueError that argparse would show as "invalid value"."""
    digits = text.strip().lstrip("+-").lstrip("0")
    if len(digits) > most:
        raise argparse.ArgumentTypeError(f"{text[:20]}... has {len(digits)} digits; give at most {most}")
    return int(text)


def positive_flag(flag: str, text: str) -> int:
    """A positive integer flag, or a one-line ConfigError naming it (not argparse's usage text)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{flag} must be a positive integer, got {text!r}")
    return value


def add_config_flags(p: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field: its type from config.setting_types (TrainConfig checks the
    choices, in one line), its help from the field. Absent flags stay absent (SUPPRESS), so a
    settings file or the default decides."""
    types = setting_types()
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = types[f.name][0]
        help_text = f"{f.metadata['help']} (default: {f.default})"
        if kind is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        else:
            p.add_argument(flag, type=kind, default=argparse.SUPPRESS, metavar=f.name.upper(), help=help_text)
