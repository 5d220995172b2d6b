"""What every data source hands a run (:class:`Data`) and an evaluation (:class:`EvalData`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from alexnet.data.transforms import Preprocess


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
