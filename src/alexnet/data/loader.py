"""The loader pieces every image-file source shares: a list of files decoded in DataLoader
workers (:class:`ImageList`), this process's seeded batches of an epoch (:class:`EpochBatches`),
the collate that hands a bad file's error on, and :class:`EpochLoader`, which puts the batches on
the device. :func:`folder_loader` puts them together for an image folder on the CPU path; the
GPU-fed loader (gpudecode.py) builds on the same pieces.
"""

from __future__ import annotations

import functools

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from alexnet.data.images import MIN_IMAGE_SIDE, open_image
from alexnet.data.sampling import EpochOrder
from alexnet.data.transforms import Preprocess, seeded
from alexnet.errors import ImageError
from alexnet.system.distributed import SINGLE, World
from alexnet.system.signals import held, ignore_in_worker


class ImageList(Dataset):
    """A list of (path, label) pairs decoded with :func:`open_image` and a transform.

    A file that has gone bad since :func:`scan_images` comes back as ``(ImageError, label)``
    instead of raising: an exception raised in a loader worker reaches the main process wrapped in
    the worker's traceback. Load it with :func:`collate_images`, which hands the error on, and
    :class:`EpochLoader` raises it there as one line.
    """

    def __init__(self, samples, mode: str, transform=None, decode_side: int | None = None):
        self.samples, self.mode, self.transform, self.decode_side = samples, mode, transform, decode_side

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item: int | tuple[int, int]):
        # (index, seed) from EpochBatches: the random crop and flip are a function of the seed
        # alone, not of which worker process loads the image or what it loaded before
        i, seed = item if isinstance(item, tuple) else (item, None)
        path, label = self.samples[i]
        try:
            img = open_image(path, self.mode, min_side=MIN_IMAGE_SIDE, decode_side=self.decode_side)
        except ImageError as e:
            return e, label
        if self.transform is None:
            return img, label
        if seed is None:
            return self.transform(img), label
        with seeded(seed):
            return self.transform(img), label


class EpochBatches(Sampler):
    """This process's batches of one epoch, each a list of (index, augmentation seed) pairs, in the
    :class:`EpochOrder` of (seed, epoch).

    ``set_epoch(epoch, start)`` skips the first ``start`` batches, so a resumed epoch continues
    with exactly the images and the random crops it would have had. With several processes
    (``world``) each batch is this process's share of the global batch (:meth:`World.part`), and
    the seeds belong to the images, not to the process, so the crops do not depend on the world size.
    """

    def __init__(self, n: int, *, batch_size: int, shuffle: bool, seed: int, world: World = SINGLE):
        self.order, self.world = EpochOrder(n, batch_size=batch_size, shuffle=shuffle, seed=seed), world

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.order.set_epoch(epoch, start)

    def __len__(self) -> int:
        return max(0, len(self.order) - self.order.start)

    def __iter__(self):
        g, order = self.order.draw()
        seeds = torch.randint(0, 2**62, (self.order.n,), generator=g)
        for b, idx in self.order.batches(order):
            if b < self.order.start:
                continue
            first = b * self.order.batch_size
            part = self.world.part(len(idx))
            yield [(int(order[p]), int(seeds[p])) for p in range(first + part.start, first + part.stop)]


def collate_images(batch, empty: tuple[int, int] = (3, 0)):
    """``default_collate`` of (image, label) pairs, or the first :class:`ImageError` among them.
    No pairs (a process's empty share of a last batch) give an empty batch of ``empty`` =
    (channels, size) uint8 images, as the transforms make them."""
    if not batch:
        channels, size = empty
        return torch.empty(0, channels, size, size, dtype=torch.uint8), torch.empty(0, dtype=torch.long)
    for x, _ in batch:
        if isinstance(x, ImageError):
            return x
    return default_collate(batch)


class EpochLoader:
    """A DataLoader over :class:`EpochBatches`: the same interface as TensorBatches. Its uint8
    batches come out on ``device`` as model input (:meth:`Preprocess.to_input`)."""

    def __init__(
        self,
        loader: DataLoader,
        preprocess: Preprocess,
        device,
        changed: str = "it was readable when the run started, so it changed since",
    ):
        self.loader, self.preprocess, self.device, self.changed = loader, preprocess, torch.device(device), changed

    def __len__(self) -> int:  # batches in a whole epoch, also while resuming part-way
        return len(self.loader.batch_sampler.order)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.loader.batch_sampler.set_epoch(epoch, start)

    def __iter__(self):
        with held():  # the workers start here (once, when they persist)
            batches = iter(self.loader)
        for batch in batches:
            if isinstance(batch, ImageError):
                self.end_workers()
                raise ImageError(batch.path, f"{batch.reason}; {self.changed}")
            x, y = batch
            yield self.preprocess.to_input(x.to(self.device, non_blocking=True)), y

    def end_workers(self) -> None:
        """End the loader's worker processes now (an epoch stopped by a file gone bad).

        They persist between epochs and would otherwise wait for work until the loader is freed; a
        caller that keeps the error (its traceback holds the loader) leaves that to the garbage
        collector, and a DataLoader freed by it cannot reach its workers any more: it waits 5 s for
        each, and they stay. PyTorch has no public call for this; ``_shutdown_workers`` is what its
        own iterator runs when it is freed. The next epoch starts new workers."""
        iterator = getattr(self.loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
            self.loader._iterator = None


def folder_loader(
    samples,
    preprocess: Preprocess,
    *,
    train: bool,
    batch_size: int,
    workers: int,
    seed: int,
    device,
    world: World = SINGLE,
    ten_crop: bool = False,
    augment: bool = True,
) -> EpochLoader:
    """Batches of ``samples`` as ``preprocess`` makes them (the ten crops of each with
    ``ten_crop``), normalized on ``device``: what training, evaluation and the benchmarks read an
    image folder with."""
    ds = ImageList(
        samples, preprocess.mode, preprocess.folder_transform(train, ten_crop, augment), preprocess.decode_side
    )
    batches = EpochBatches(len(ds), batch_size=batch_size, shuffle=train, seed=seed, world=world)
    # its own generator: each iter() draws the workers' base seed from it, not from the global
    # RNG that dropout uses (that draw would shift dropout's stream on a resume)
    return EpochLoader(
        DataLoader(
            ds,
            batch_sampler=batches,
            num_workers=workers,
            generator=torch.Generator().manual_seed(seed),
            pin_memory=device.type == "cuda",
            persistent_workers=workers > 0,
            collate_fn=functools.partial(collate_images, empty=(preprocess.channels, preprocess.image_size)),
            worker_init_fn=ignore_in_worker,
        ),
        preprocess,
        device,
    )
