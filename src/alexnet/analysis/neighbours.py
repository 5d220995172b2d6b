"""The images figures are drawn from, their FC7 features, and the nearest-neighbour search of the
paper's figure 4 (right).

:class:`Images` is a list of images of one split - uint8 tensors of an IDX split, or image files -
that gives the network its input in batches (made as :class:`~alexnet.inference.predict.Predictor` makes it)
and the figures a picture of each. :func:`split_images` finds a model file's own test/validation or
training images, as evaluation and training drew them. :func:`fc7_features` computes FC7's output
(N, 4096, after its ReLU; :meth:`alexnet.models.AlexNet.embed`) in batches without gradients, and
:func:`nearest` finds each query's nearest keys by Euclidean distance, as the paper compares images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from PIL import Image

from alexnet.config import TrainConfig
from alexnet.data import check_eval_data
from alexnet.data.folder import listed_samples
from alexnet.data.idx import check_image_side, check_labels, find_idx_files, load_idx_split
from alexnet.data.images import open_image
from alexnet.data.shards import is_shards
from alexnet.errors import DataError
from alexnet.formats.network import ModelFile
from alexnet.inference.predict import Predictor
from alexnet.training.rundir import RunFolder

PICTURE_SIDE = 160  # photos are shown at most this many pixels a side


@dataclass
class Images:
    """Images to show and to feed the network: ``tensors`` (an IDX split, (N, 1, H, W) uint8) or
    ``paths`` (image files). ``labels`` are class indices into ``classes``, or None when unknown
    (files named on the command line)."""

    tensors: torch.Tensor | None
    paths: list[str] | None
    labels: list[int] | None
    classes: list[str]
    mode: str  # "L" or "RGB": how a file is opened for the model and for its picture

    def __len__(self) -> int:
        return len(self.tensors) if self.tensors is not None else len(self.paths)

    def take(self, indices: Sequence[int]) -> Images:
        """The images at ``indices``, in that order."""
        idx = list(indices)
        return replace(
            self,
            tensors=self.tensors[idx] if self.tensors is not None else None,
            paths=[self.paths[i] for i in idx] if self.paths is not None else None,
            labels=[self.labels[i] for i in idx] if self.labels is not None else None,
        )

    def item(self, i: int) -> Image.Image | str:
        """Image ``i`` as :class:`Predictor` takes it: a PIL image of an IDX split, or a path."""
        if self.tensors is not None:
            return Image.fromarray(self.tensors[i, 0].numpy(), "L")
        return self.paths[i]

    def inputs(self, predictor: Predictor, start: int, stop: int) -> torch.Tensor:
        """Model input (n, C, S, S) of images ``start:stop``, what :meth:`Predictor.inputs` makes
        of each of them (an IDX batch resized at once rather than one image at a time)."""
        if self.tensors is not None:
            x = self.tensors[start:stop].float().div(255)  # (n, 1, h, w) in [0, 1], as a PIL image is read
            return predictor.preprocess.tensor_batch(x).to(predictor.device)
        return predictor.inputs(self.paths[start:stop])

    def picture(self, i: int) -> Image.Image:
        """Image ``i`` to show: an IDX image at its own size, a photo at most PICTURE_SIDE a side."""
        if self.tensors is not None:
            return self.item(i)
        image = open_image(self.paths[i], self.mode)
        image.thumbnail((PICTURE_SIDE, PICTURE_SIDE))
        return image

    def true_class(self, i: int) -> str | None:
        return self.classes[self.labels[i]] if self.labels is not None else None

    def caption(self, i: int) -> str:
        """The true class when known, else the file's name."""
        return self.true_class(i) or Path(self.paths[i]).name


def file_images(paths: Sequence[str | Path], mode: str) -> Images:
    """Image files named by the user: no labels."""
    return Images(None, [str(p) for p in paths], None, [], mode)


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
    classes, preprocess = model_file.classes, model_file.preprocess
    if check_eval_data(source, preprocess, classes):  # an IDX set
        name = "test" if split == "test" else "train"
        files = find_idx_files(source, splits=(name,))
        tensors, labels = load_idx_split(files, name)
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
    )
    if not samples:
        raise DataError(f"--data {source}: no {'validation' if split == 'test' else 'training'} images listed")
    return Images(None, [p for p, _ in samples], [label for _, label in samples], classes, preprocess.mode)


def sample(total: int, count: int, seed: int) -> list[int]:
    """``count`` distinct indices of ``total`` (all when fewer), drawn with ``seed``, ascending."""
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    return sorted(order[:count].tolist())


@torch.no_grad()
def fc7_features(predictor: Predictor, images: Images, batch_size: int = 128) -> torch.Tensor:
    """FC7's output (N, FC7's width: 4096) after its ReLU for every image, in batches of ``batch_size``, on the
    CPU in float32 (the predictor's network is in eval mode: dropout is the identity)."""
    chunks = [
        predictor.embed([images.inputs(predictor, a, a + batch_size)]).cpu() for a in range(0, len(images), batch_size)
    ]
    return torch.cat(chunks) if chunks else torch.zeros(0, predictor.model.classifier[-1].in_features)


def nearest(queries: torch.Tensor, keys: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` keys (N, D) nearest to each query (Q, D) in Euclidean distance: distances and
    indices (Q, k), nearest first. The distances are computed directly, not through the
    |q|^2 + |k|^2 - 2 q.k expansion that loses precision between near neighbours."""
    d = torch.cdist(queries[None].float(), keys[None].float(), compute_mode="donot_use_mm_for_euclid_dist")[0]  # (Q, N)
    return d.topk(min(k, keys.shape[0]), dim=1, largest=False, sorted=True)
