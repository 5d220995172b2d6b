"""The images figures are drawn from, their FC7 features, and the nearest-neighbour search of the
paper's figure 4 (right).

:func:`split_images` finds a model file's own test/validation or training images, as evaluation
and training drew them, as an :class:`~alexnet.inference.embed.Images` (the list of images the
network gets in batches, and the figures a picture of each). :func:`fc7_features` is
:func:`alexnet.inference.embed.features`: FC7's output (N, 4096, after its ReLU) in batches
without gradients. :func:`nearest` finds each query's nearest keys by Euclidean distance, as the
paper compares images.
"""

from __future__ import annotations

from pathlib import Path

import torch

from alexnet.config import TrainConfig
from alexnet.data import check_eval_data
from alexnet.data.classes import by_names, relabel
from alexnet.data.folder import listed_samples
from alexnet.data.idx import check_image_side, check_labels, find_idx_files, idx_class_names, load_idx_split
from alexnet.data.shards import is_shards
from alexnet.errors import DataError
from alexnet.formats.network import ModelFile
from alexnet.inference.embed import Images, file_images
from alexnet.inference.embed import features as fc7_features
from alexnet.training.rundir import RunFolder

__all__ = ["Images", "file_images", "fc7_features", "split_images", "sample", "nearest"]


def split_images(model_file: ModelFile, split: str, *, checkpoint: str | Path, data: str | None = None) -> Images:
    """A model file's ``test`` images (an IDX set's test split, an image folder's ``val/`` or its
    seeded hold-out: what ``alexnet evaluate`` reads) or its ``train`` images (the rest), from its
    own data or ``data`` of the same kind. A plain folder's hold-out is redrawn from the run's
    seed and fraction, less the files the run in ``checkpoint``'s folder skipped as bad."""
    cfg = TrainConfig.from_dict({**TrainConfig().to_dict(), **model_file.config}, source=str(checkpoint))
    source = data if data is not None else cfg.data
    if is_shards(source):
        raise DataError(
            f"--data {source}: prepared shards; figures read an IDX set or an image folder (give --data, or image "
            "files to predict)"
        )
    classes, preprocess, chosen = model_file.classes, model_file.preprocess, cfg.classes is not None
    if check_eval_data(source, preprocess, classes, chosen=chosen):  # an IDX set
        name = "test" if split == "test" else "train"
        files = find_idx_files(source, splits=(name,))
        tensors, labels = load_idx_split(files, name)
        if chosen:  # trained with --classes: those classes, by name, numbered as the model numbers them
            names = idx_class_names(source, int(labels.max()) + 1)
            keep, labels = relabel(labels, by_names(classes, names, f"--data {source}"))
            tensors = tensors[keep]
        check_image_side(tensors, preprocess.source_size, files[f"{name}_images"], "the model's training images")
        check_labels(labels, len(classes), files[f"{name}_labels"], "the model's")
        return Images(tensors, None, labels.tolist(), classes, preprocess.mode)
    exclude = RunFolder.of_checkpoint(checkpoint).read_bad_files() if data is None else set()
    samples = listed_samples(
        Path(source),
        classes,
        "val" if split == "test" else "train",
        seed=cfg.seed,
        val_fraction=cfg.val_fraction,
        exclude=exclude,
        chosen=chosen,
    )
    if not samples:
        raise DataError(f"--data {source}: no {'validation' if split == 'test' else 'training'} images listed")
    return Images(None, [p for p, _ in samples], [label for _, label in samples], classes, preprocess.mode)


def sample(total: int, count: int, seed: int) -> list[int]:
    """``count`` distinct indices of ``total`` (all when fewer), drawn with ``seed``, ascending."""
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    return sorted(order[:count].tolist())


def nearest(queries: torch.Tensor, keys: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` keys (N, D) nearest to each query (Q, D) in Euclidean distance: distances and
    indices (Q, k), nearest first. The distances are computed directly, not through the
    |q|^2 + |k|^2 - 2 q.k expansion that loses precision between near neighbours."""
    d = torch.cdist(queries[None].float(), keys[None].float(), compute_mode="donot_use_mm_for_euclid_dist")[0]  # (Q, N)
    return d.topk(min(k, keys.shape[0]), dim=1, largest=False, sorted=True)
