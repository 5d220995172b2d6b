"""Data: Fashion-MNIST (or any IDX set) batched on the device, or any folder of images.

* :mod:`~alexnet.data.idx` - IDX files in memory, augmented on the device (``TensorBatches``);
* :mod:`~alexnet.data.folder` - ImageFolder layouts: listing, the bad-file scan, loaders;
* :mod:`~alexnet.data.shards` / :mod:`~alexnet.data.shardloader` - prepared WebDataset tar shards
  (``alexnet prepare``), read by offset, cut exactly across ranks and workers;
* :mod:`~alexnet.data.images` - decoding one untrusted image file;
* :mod:`~alexnet.data.sampling` - the seeded, resumable order of an epoch;
* :mod:`~alexnet.data.transforms` - the typed ``Preprocess`` record and the transforms made from it.

:func:`build_data` gives a training run its training and validation batches;
:func:`build_eval_data` gives an evaluation its batches and never touches the training split.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from alexnet.data.base import Data, EvalData
from alexnet.data.folder import folder_classes, folder_data, folder_eval_data
from alexnet.data.idx import TensorBatches, idx_class_names, idx_data, idx_eval_data, is_idx_folder, read_idx
from alexnet.data.images import open_image
from alexnet.data.shardloader import shards_data, shards_eval_data
from alexnet.data.shards import is_shards
from alexnet.data.transforms import Preprocess
from alexnet.errors import DataError, ImageError
from alexnet.system.distributed import SINGLE, World


def _folder(data: str) -> Path:
    root = Path(data)
    if not root.is_dir():
        raise DataError(f"--data {root}: no such folder; give an image folder or a folder of IDX files")
    return root


def build_data(
    cfg, device: torch.device, stats: Mapping | None = None, world: World = SINGLE, decode: str | None = None
) -> Data:
    """Build the train and validation batches for ``cfg`` (a TrainConfig): with several processes
    (``world``), this process's share of every batch (``--batch-size`` is the global batch).

    A folder (or fsspec URL) holding ``alexnet prepare``'s index is read as shards.
    ``stats`` (``{"mean": [...], "std": [...]}``, e.g. a checkpoint's ``Preprocess.stats``) reuses
    stored normalization instead of recomputing it, and ``decode`` (a checkpoint's
    ``Preprocess.decode``) its JPEG decode, so a resumed model sees exactly the inputs it was
    trained on.
    """
    if is_shards(cfg.data):
        return shards_data(cfg, cfg.data, device, stats, world, decode)
    if cfg.data is None or is_idx_folder(cfg.data):
        return idx_data(cfg, device, stats, world)
    return folder_data(cfg, _folder(cfg.data), device, stats, world, decode)


def build_eval_data(
    data: str | None,
    preprocess: Preprocess,
    classes: list[str],
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    exclude: set[str] = frozenset(),
    skip_bad_images: bool = False,
    batch_size: int = 128,
    workers: int = 2,
    device: torch.device | str = "cpu",
    ten_crop: bool = False,
    chosen: bool = False,
) -> EvalData:
    """The images a model trained with ``preprocess`` on ``classes`` is evaluated on: an IDX set's
    test split, an image folder's ``val/``, or the seeded hold-out of a plain folder (``seed``,
    ``val_fraction`` and the training run's skipped files ``exclude`` redraw it exactly), or the
    val split of prepared shards. ``ten_crop``: each batch holds (N, 10, C, S, S) views, the
    paper's ten crops (data/transforms.py), view 4 being the single-crop input. ``chosen``: the
    model was trained on ``classes`` chosen out of the data's (``--classes``): only those are
    read, picked by name and numbered in the model's order."""
    device = torch.device(device)
    if is_shards(data):
        return shards_eval_data(
            data,
            preprocess,
            list(classes),
            batch_size=batch_size,
            workers=workers,
            device=device,
            ten_crop=ten_crop,
            chosen=chosen,
        )
    if check_eval_data(data, preprocess, classes, chosen=chosen):
        return idx_eval_data(
            data,
            preprocess,
            len(classes),
            batch_size=batch_size,
            device=device,
            ten_crop=ten_crop,
            chosen=list(classes) if chosen else None,
        )
    return folder_eval_data(
        _folder(data),
        preprocess,
        classes,
        seed=seed,
        val_fraction=val_fraction,
        exclude=set(exclude),
        skip_bad_images=skip_bad_images,
        batch_size=batch_size,
        workers=workers,
        device=device,
        ten_crop=ten_crop,
        chosen=chosen,
    )


def check_eval_data(data: str | None, preprocess: Preprocess, classes: list[str], *, chosen: bool = False) -> bool:
    """Whether ``data`` (not shards) is an IDX set (else an image folder), once it is known to be
    of the kind the model was trained on (``preprocess.kind``) with the model's ``classes`` (with
    ``chosen``, among them: the readers pick them by name)."""
    idx = data is None or is_idx_folder(data)
    if preprocess.kind != ("tensor" if idx else "folder"):  # each pipeline needs its own fields (source_size, resize)
        kinds = {"tensor": "IDX files", "folder": "an image folder"}
        raise DataError(
            f"--data {data}: the model was trained on {kinds[preprocess.kind]}, this is "
            f"{kinds['tensor' if idx else 'folder']}; evaluate it on data of its kind"
        )
    if chosen:
        return idx
    found = idx_class_names(data, len(classes)) if idx else folder_classes(_folder(data))
    if found != list(classes):
        raise DataError(f"--data {data}: its classes {found[:5]}... differ from the model's {list(classes)[:5]}...")
    return idx


def preprocess_image(path: str | Path, preprocess: Preprocess) -> torch.Tensor:
    """One image file -> (C, S, S) model input, exactly as evaluation batches are made."""
    return preprocess(open_image(path, preprocess.mode, decode_side=preprocess.decode_side))


__all__ = [
    "Data",
    "EvalData",
    "DataError",
    "ImageError",
    "Preprocess",
    "TensorBatches",
    "build_data",
    "build_eval_data",
    "check_eval_data",
    "preprocess_image",
    "read_idx",
]
