"""The workers' half of the GPU-fed folder loader (:mod:`alexnet.data.gpudecode`): each image as
its JPEG's bytes, header size and crop box, or cut on the CPU when it is not a plain JPEG, and a
batch of them as one :class:`JpegBatch` that crosses to the main process in one transfer.

**The crops are the CPU path's.** Each image's crop box and flip are drawn from its seed with the
calls, in the order, that :meth:`Preprocess.folder_transform` makes them (:func:`crop_for`), on
the size the CPU path resizes the image to (its reduced-size decode, then the shorter side to
``resize``). Given the same seed a run cuts the same boxes whichever path decodes it, and a resumed
run continues them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch.utils.data import Dataset, default_collate

from alexnet.data.images import MIN_IMAGE_SIDE, read_jpeg, reduced_size, resized_size
from alexnet.data.loader import ImageList
from alexnet.data.transforms import Preprocess, seeded
from alexnet.errors import ImageError


@dataclass(frozen=True)
class Crop:
    """Where one image's input is cut: the size the CPU path resizes it to, the box's top-left
    corner there (the box is ``image_size`` square), and whether it is mirrored."""

    height: int
    width: int
    top: int
    left: int
    flip: bool


def crop_for(width: int, height: int, preprocess: Preprocess, train: bool, seed: int) -> Crop:
    """The crop :meth:`Preprocess.folder_transform` cuts from a JPEG of (``width``, ``height``)
    given ``seed``: resized as the CPU path resizes its (reduced-size) decode, then v2.RandomCrop's
    two draws and v2.RandomHorizontalFlip's one under :func:`seeded` (train), or v2.CenterCrop's box."""
    w, h = reduced_size(width, height, preprocess.decode_side)
    w, h = (
        resized_size(w, h, preprocess.resize)
        if preprocess.resize_to == "shorter"
        else (preprocess.resize, preprocess.resize)
    )
    s = preprocess.image_size
    if not train:
        return Crop(h, w, int(round((h - s) / 2.0)), int(round((w - s) / 2.0)), False)
    with seeded(seed):
        top = int(torch.randint(0, h - s + 1, size=())) if h > s else 0
        left = int(torch.randint(0, w - s + 1, size=())) if w > s else 0
        flip = bool(torch.rand(1) < 0.5)  # RandomHorizontalFlip leaves the image when rand >= p
    return Crop(h, w, top, left, flip)


class JpegFiles(Dataset):
    """Each image of ``samples`` ((path, label) pairs) as ``((bytes, width, height, Crop), index,
    seed), label)`` when it is a plain JPEG (:func:`read_jpeg`; its crop drawn here by
    :func:`crop_for`, in parallel, not in the process that feeds the GPU), else cut on the CPU here
    as ``(uint8 crop, label)`` exactly as :class:`ImageList` cuts it, or ``(ImageError, label)``.
    Indexed by (index, seed)."""

    def __init__(self, samples, preprocess: Preprocess, train: bool):
        self.samples, self.preprocess, self.train = samples, preprocess, train
        self.cpu = ImageList(samples, preprocess.mode, preprocess.folder_transform(train), preprocess.decode_side)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item: tuple[int, int]):
        path, label = self.samples[item[0]]
        try:
            jpeg = read_jpeg(path, min_side=MIN_IMAGE_SIDE)
        except ImageError as e:
            return e, label
        if jpeg is None:
            return self.cpu[item]
        data, w, h = jpeg
        return ((data, w, h, crop_for(w, h, self.preprocess, self.train, item[1])), *item), label


class JpegBatch(NamedTuple):
    """A batch as it crosses from a worker: the plain JPEGs' bytes end to end in one tensor (one
    shared-memory transfer), and the crops the workers cut on the CPU."""

    data: torch.Tensor  # (total bytes,) uint8: the JPEG files, end to end
    lengths: torch.Tensor  # (J,) bytes of each file
    sizes: torch.Tensor  # (J, 2) width and height from each header
    boxes: torch.Tensor  # (J, 5) each Crop: height, width, top, left, flip
    sample: torch.Tensor  # (J,) sample index (names the file in an error)
    seeds: torch.Tensor  # (J,) augmentation seed
    at: torch.Tensor  # (J,) position in the batch
    cpu: torch.Tensor  # (M, C, S, S) uint8: cut in the worker
    cpu_at: torch.Tensor  # (M,) positions in the batch
    labels: torch.Tensor  # (N,)


def collate_jpegs(batch, empty: tuple[int, int] = (3, 0)) -> JpegBatch | ImageError:
    """:class:`JpegFiles` items -> a :class:`JpegBatch`, or the first :class:`ImageError` among them."""
    for x, _ in batch:
        if isinstance(x, ImageError):
            return x
    jpegs = [(n, x) for n, (x, _) in enumerate(batch) if isinstance(x, tuple)]
    crops = [(n, x) for n, (x, _) in enumerate(batch) if not isinstance(x, tuple)]
    blobs = [blob for _, ((blob, _, _, _), _, _) in jpegs]
    channels, size = empty
    return JpegBatch(
        data=torch.frombuffer(bytearray(b"".join(blobs)), dtype=torch.uint8)
        if blobs
        else torch.empty(0, dtype=torch.uint8),
        lengths=torch.tensor([len(b) for b in blobs], dtype=torch.long),
        sizes=torch.tensor([[w, h] for _, ((_, w, h, _), _, _) in jpegs], dtype=torch.long).view(-1, 2),
        boxes=torch.tensor(
            [[c.height, c.width, c.top, c.left, int(c.flip)] for _, ((_, _, _, c), _, _) in jpegs], dtype=torch.long
        ).view(-1, 5),
        sample=torch.tensor([i for _, (_, i, _) in jpegs], dtype=torch.long),
        seeds=torch.tensor([seed for _, (_, _, seed) in jpegs], dtype=torch.long),
        at=torch.tensor([n for n, _ in jpegs], dtype=torch.long),
        cpu=torch.stack([x for _, x in crops]) if crops else torch.empty(0, channels, size, size, dtype=torch.uint8),
        cpu_at=torch.tensor([n for n, _ in crops], dtype=torch.long),
        labels=default_collate([y for _, y in batch]) if batch else torch.empty(0, dtype=torch.long),
    )


__all__ = ["Crop", "JpegBatch", "JpegFiles", "collate_jpegs", "crop_for"]
