"""What every data source hands a run (:class:`Data`) and an evaluation (:class:`EvalData`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from alexnet.data.transforms import Preprocess
from alexnet.errors import printable


@dataclass
class Data:
    """What a training run needs from its data set."""

    train: Any  # iterable of (images, labels) batches with __len__ and set_epoch(epoch, start)
    val: Any
    classes: list[str]
    preprocess: Preprocess  # how to turn one image into model input; stored in every checkpoint
    num_train: int
    num_val: int
    source: str
    split: dict | None = field(default=None)  # the hold-out split made for a plain folder
    bad_files: list[dict] = field(default_factory=list)  # {"path", "reason"} skipped by --skip-bad-images
    decode_on: str = (
        "cpu"  # where an image folder's JPEGs are decoded: cpu (loader workers) or gpu (gpudecode.resolve_decode)
    )


@dataclass
class EvalData:
    """What an evaluation needs: the batches of the evaluated images and nothing of the training set."""

    batches: Any  # iterable of (images, labels) batches with __len__
    classes: list[str]
    num_images: int
    source: str


def class_names_problem(names: object) -> str | None:
    """Why ``names`` cannot be a model's class names, or None: every model file keeps them and
    every answer names one, so they are a non-empty list of distinct, non-empty strings of text (a
    folder name in another encoding than UTF-8 reaches Python as lone surrogates, which no JSON
    answer or UTF-8 terminal can carry). Data sources ask it before training, model files when read."""
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        return "must be a non-empty list of distinct names"
    seen = set()
    for name in names:
        if name in seen:
            return f"must be a non-empty list of distinct names; '{printable(name)}' is there twice"
        seen.add(name)
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            return f"must be text: '{printable(name)}' is not UTF-8 (a name in another encoding); rename it"
    return None
