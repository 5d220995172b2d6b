"""Training and validation batches from prepared shards (:mod:`alexnet.data.shards`), for one
process of a run of ``world.size`` processes.

Every sample is read by seeking to its offset in its shard (the index says where), so an epoch
can be cut exactly:

* **Order.** Seeded per (seed, epoch) by :func:`epoch_order`: the shards are shuffled, then the
  samples of each window of :data:`WINDOW` consecutive shards are shuffled together. A reader thus
  only ever has a window's shards open (cheap over a network), and since ``alexnet prepare``
  writes the training images in a seeded random order, every shard already mixes the classes.
  Validation keeps the stored order.
* **Ranks.** ``--batch-size`` is the global batch. Global batch b is positions
  [b*B, min((b+1)*B, N)) of the order; rank r takes the r-th of ``world.size`` contiguous chunks
  of it, their sizes differing by at most one (:meth:`alexnet.system.distributed.World.part`). Every rank yields
  ceil(N / B) batches an epoch (a chunk of the last batch may be empty when it holds fewer than
  ``world.size`` images), and every image is in exactly one rank's batch.
* **Workers.** The rank's batches are handed out whole to its loader workers (a batch sampler), so
  each image is read by exactly one worker.
* **Resuming.** ``set_epoch(epoch, start)`` skips the first ``start`` global batches; the random
  crop and flip of an image are drawn from a seed fixed by its position in the epoch, so a
  resumed epoch replays exactly, whatever the number of ranks or workers.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from alexnet.data.base import Data, EvalData
from alexnet.data.classes import by_names, choose
from alexnet.data.loader import EpochLoader, collate_images
from alexnet.data.sampling import epoch_generator
from alexnet.data.shards import Shard, ShardIndex, ShardReader, decode_jpeg, file_size, join
from alexnet.data.stats import STATS_IMAGES, PixelMoments, is_imagenet_like, lighting_stats, stats_transform
from alexnet.data.transforms import Preprocess, seeded
from alexnet.errors import DataError, ImageError
from alexnet.system.distributed import SINGLE, World
from alexnet.system.signals import ignore_in_worker

WINDOW = 16  # shards whose samples are shuffled together (16 shards of 1 GB: ~150,000 ImageNet images)
# A run checks each shard's size against its index, not every image in it (that is prepare's scan):
# an image that does not decode now was damaged after alexnet prepare wrote and checked it.
CHANGED = "the shard has the size its index gives, but was damaged after alexnet prepare wrote it; prepare it again"


def epoch_order(counts: list[int], g: torch.Generator, shuffle: bool, window: int = WINDOW) -> torch.Tensor:
    """Sample numbers (0..N-1, shard by shard) in the order of one epoch: shards shuffled, then the
    samples of every ``window`` consecutive shards shuffled together; 0..N-1 without ``shuffle``."""
    n = sum(counts)
    if not shuffle:
        return torch.arange(n)
    starts = np.concatenate([[0], np.cumsum(counts)])
    shards = torch.randperm(len(counts), generator=g).tolist()
    parts = []
    for w in range(0, len(shards), window):
        ids = torch.cat([torch.arange(int(starts[s]), int(starts[s + 1])) for s in shards[w : w + window]])
        parts.append(ids[torch.randperm(len(ids), generator=g)])
    return torch.cat(parts)


class RankBatches(Sampler):
    """This rank's chunk of every global batch of an epoch, as lists of (sample, augmentation seed)."""

    def __init__(self, counts: list[int], *, batch_size: int, shuffle: bool, seed: int, world: World = SINGLE):
        self.counts, self.n, self.batch_size, self.shuffle, self.seed = counts, sum(counts), batch_size, shuffle, seed
        self.world = world
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        """Batches in a whole epoch (the same on every rank), also while resuming part-way."""
        return math.ceil(self.n / self.batch_size)

    def __iter__(self):
        g = epoch_generator(self.seed, self.epoch)
        order = epoch_order(self.counts, g, self.shuffle).tolist()
        seeds = torch.randint(0, 2**62, (self.n,), generator=g).tolist()  # after the order, as EpochBatches draws them
        for b in range(self.start, len(self)):
            first = b * self.batch_size
            part = self.world.part(min(self.batch_size, self.n - first))
            lo, hi = first + part.start, first + part.stop
            yield list(zip(order[lo:hi], seeds[lo:hi]))


class ShardSamples(Dataset):
    """Sample i of a split's shards (in shard order) as (image tensor, label): read by offset,
    decoded with the checks of ``open_image``, then ``transform``; a sample that cannot be read or
    decoded comes back as (ImageError, label), as :class:`alexnet.data.loader.ImageList` does."""

    def __init__(self, location: str, shards: list[Shard], mode: str, transform, decode_side: int | None = None):
        self.location, self.mode, self.transform, self.decode_side = location, mode, transform, decode_side
        self.files = [s.file for s in shards]
        # flat arrays, not lists of Python ints: a million-image split stays small in every worker
        self.shard = np.concatenate([np.full(s.count, k, dtype=np.int32) for k, s in enumerate(shards)])
        self.offset = np.concatenate([np.asarray(s.jpg_offset, dtype=np.int64) for s in shards])
        self.size = np.concatenate([np.asarray(s.jpg_size, dtype=np.int64) for s in shards])
        self.labels = np.concatenate([np.asarray(s.labels, dtype=np.int64) for s in shards])
        self.reader = ShardReader(location)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, item: tuple[int, int]):
        i, seed = item
        label, file, offset = int(self.labels[i]), self.files[self.shard[i]], int(self.offset[i])
        name = f"{join(self.location, file)} at byte {offset}"
        try:
            img = decode_jpeg(self.reader.read(file, offset, int(self.size[i])), self.mode, name, self.decode_side)
        except ImageError as e:
            return e, label
        except OSError as e:
            return ImageError(name, f"cannot read it ({e})"), label
        with seeded(seed):  # the crop and flip: a function of the seed alone
            return self.transform(img), label


class ShardBatches(EpochLoader):
    """A DataLoader over :class:`RankBatches`: the interface of the other sources' batches."""

    def __len__(self) -> int:
        return len(self.loader.batch_sampler)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.loader.batch_sampler.set_epoch(epoch, start)


def _batches(
    location,
    shards,
    preprocess: Preprocess,
    *,
    train: bool,
    batch_size: int,
    workers: int,
    seed: int,
    device,
    world: World,
    ten_crop: bool = False,
    augment: bool = True,
) -> ShardBatches:
    ds = ShardSamples(
        location, shards, preprocess.mode, preprocess.folder_transform(train, ten_crop, augment), preprocess.decode_side
    )
    sampler = RankBatches([s.count for s in shards], batch_size=batch_size, shuffle=train, seed=seed, world=world)
    return ShardBatches(
        DataLoader(
            ds,
            batch_sampler=sampler,
            num_workers=workers,
            collate_fn=functools.partial(collate_images, empty=(preprocess.channels, preprocess.image_size)),
            generator=torch.Generator().manual_seed(seed),  # not the global RNG that dropout uses (see folder._loader)
            pin_memory=device.type == "cuda",
            persistent_workers=workers > 0,
            worker_init_fn=ignore_in_worker,
        ),
        preprocess,
        device,
        changed=CHANGED,
    )


def _check_files(location: str, index: ShardIndex, splits) -> None:
    """Every shard the index lists is there, whole: a missing or cut one is named before training."""
    for split in splits:
        for s in index.splits[split]:
            where = join(location, s.file)
            try:
                size = file_size(where)
            except (OSError, ValueError) as e:
                raise DataError(
                    f"--data {location}: cannot read shard {s.file} ({type(e).__name__}: {e}); prepare the shards again"
                ) from None
            if size != s.bytes:
                raise DataError(
                    f"--data {location}: shard {s.file} has {size} "
                    "bytes, its index says "
                    f"{s.bytes}; prepare the "
                    "shards again"
                )


def _preprocess(location: str, index: ShardIndex, image_size: int, stats, decode: str | None = None) -> Preprocess:
    preprocess = Preprocess.for_folder(
        image_size=image_size, stats=stats or index.stats, mode=index.mode, decode=decode
    )
    if preprocess.resize > index.resize:
        raise DataError(
            f"--data {location}: its images were stored with a shorter side of {index.resize}, "
            "--image-size "
            f"{image_size} "
            f"needs {preprocess.resize}; prepare them again with --resize {preprocess.resize}"
        )
    return preprocess


def _lighting(location: str, index: ShardIndex, seed: int) -> dict:
    """PCA lighting's ``stats`` entries for shards (:func:`alexnet.data.stats.lighting_stats`): the
    RGB covariance of up to STATS_IMAGES seeded training images at STATS_SIDE, as for a folder."""
    if is_imagenet_like(index.classes):
        return lighting_stats(index.classes, None)
    ds = ShardSamples(location, index.splits["train"], index.mode, stats_transform())
    g = torch.Generator().manual_seed(seed)
    moments = PixelMoments()
    for i in torch.randperm(len(ds), generator=g)[:STATS_IMAGES].tolist():
        x, _ = ds[(i, 0)]
        if isinstance(x, ImageError):
            raise DataError(f"--data {location}: {x.path}: {x.reason}")
        moments.add(x)
    return lighting_stats(index.classes, moments)


def _choose(index: ShardIndex, chosen: list[int] | None, location: str) -> ShardIndex:
    """The index as if it held only the ``chosen`` classes, relabelled 0..K-1 in their order (every
    shard keeps its file, with the entries of the other classes left out)."""
    if chosen is None:
        return index
    new = {old: i for i, old in enumerate(chosen)}

    def only(shard: Shard) -> Shard:
        keep = [i for i, label in enumerate(shard.labels) if label in new]
        pick = lambda values: [values[i] for i in keep]  # noqa: E731
        return dataclasses.replace(
            shard,
            keys=pick(shard.keys),
            labels=[new[shard.labels[i]] for i in keep],
            jpg_offset=pick(shard.jpg_offset),
            jpg_size=pick(shard.jpg_size),
            cls_offset=pick(shard.cls_offset),
            cls_size=pick(shard.cls_size),
        )

    splits = {name: [t for t in map(only, shards) if t.count] for name, shards in index.splits.items()}
    empty = [name for name, shards in splits.items() if not shards]
    if empty:
        raise DataError(f"--data {location}: no {empty[0]} images of the chosen classes")
    classes = [index.classes[i] for i in chosen]
    return dataclasses.replace(index, classes=classes, splits=splits)


def shards_data(cfg, location: str, device, stats=None, world: World = SINGLE, decode: str | None = None) -> Data:
    """Train and validation batches of the prepared folder at ``location``, this process's share of
    each (see :func:`alexnet.data.build_data`); the statistics stored in its index unless
    ``stats`` are given (PCA lighting's computed here when on, for RGB shards). ``cfg.classes``
    keeps the chosen classes' samples (the stored statistics stay those of every class)."""
    if cfg.subset is not None or cfg.subset_per_class is not None:
        # shards are read in their stored order, shard by shard: no cheap random subset
        raise DataError(
            f"--data {location}: --subset and --subset-per-class are for IDX sets and "
            "image folders, not prepared shards; prepare a smaller folder instead"
        )
    index = ShardIndex.read(location)
    _check_files(location, index, ("train", "val"))
    index = _choose(index, choose(cfg.classes, index.classes, f"--data {location}"), location)
    if cfg.lighting and index.mode == "RGB" and not (stats and stats.get("eigval")):
        stats = {**(stats or index.stats), **_lighting(location, index, cfg.seed)}
    preprocess = _preprocess(location, index, cfg.image_size, stats, decode)
    common = dict(batch_size=cfg.batch_size, workers=cfg.workers, seed=cfg.seed, device=device, world=world)
    return Data(
        train=_batches(location, index.splits["train"], preprocess, train=True, augment=cfg.augment, **common),
        val=_batches(location, index.splits["val"], preprocess, train=False, **common),
        classes=index.classes,
        preprocess=preprocess,
        num_train=index.count("train"),
        num_val=index.count("val"),
        source=location,
    )


def shards_eval_data(
    location: str,
    preprocess: Preprocess,
    classes: list[str],
    *,
    batch_size: int,
    workers: int,
    device,
    ten_crop: bool = False,
    chosen: bool = False,
) -> EvalData:
    """The val split of the prepared folder at ``location`` as evaluation batches (``ten_crop``:
    (N, 10, C, S, S) views; ``chosen``: ``classes`` were chosen out of the index's by name)."""
    index = ShardIndex.read(location)
    if chosen:
        index = _choose(index, by_names(classes, index.classes, f"--data {location}"), location)
    if preprocess.kind != "folder":
        raise DataError(
            f"--data {location}: the model was trained on "
            "IDX files, these are prepared image shards; evaluate it on data of its kind"
        )
    if preprocess.mode != index.mode:
        raise DataError(
            f"--data {location}: the model takes {preprocess.mode} images, these shards hold {index.mode} ones; "
            "evaluate it on data of its kind"
        )
    if index.classes != list(classes):
        raise DataError(
            f"--data {location}: its classes {index.classes[:5]}... differ from the model's {list(classes)[:5]}..."
        )
    _check_files(location, index, ("val",))
    _preprocess(location, index, preprocess.image_size, preprocess.stats)
    batches = _batches(
        location,
        index.splits["val"],
        preprocess,
        train=False,
        batch_size=batch_size,
        workers=workers,
        seed=0,
        device=device,
        world=SINGLE,
        ten_crop=ten_crop,
    )
    return EvalData(batches, list(classes), index.count("val"), location)
