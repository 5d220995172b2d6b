"""Folders of image files (torchvision's ImageFolder layout): decoding, checking, loading.

Every image is decoded by PIL in DataLoader workers and goes through the paper's transforms:
shorter side to 256 (scaled with ``image_size``), random crop and horizontal flip for training,
centre crop for evaluation. Before training, every file is decoded once (:func:`scan_images`) so a
bad file stops the run at its start with a list of all of them, or is skipped on request.
"""

from __future__ import annotations

import math
import os
import random
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from alexnet.data import Data, DataError, ImageError, epoch_generator


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


# Smallest side of a training image, in pixels. Below it a file is a tracking pixel, an icon or a
# scraper's placeholder rather than a photo: upscaled to the 256-pixel shorter side it is a flat
# patch with nothing to learn, so an image folder's scan lists it as bad.
MIN_IMAGE_SIDE = 8


def open_image(path: str | Path, mode: str, *, min_side: int = 1) -> Image.Image:
    """Decode any PIL-readable image and convert it to ``mode`` ('RGB' or 'L').

    Palette images with transparency and RGBA are composited on white first, so transparent
    pixels do not turn into arbitrary colours; CMYK, 16-bit and others go through PIL's convert.

    A file that cannot be used raises :class:`ImageError` (a :class:`DataError`) and nothing else:
    missing or unreadable, empty, not an image, truncated or corrupt, a side below ``min_side``,
    or more pixels than ``PIL.Image.MAX_IMAGE_PIXELS`` (PIL's decompression-bomb limit; training
    shrinks every image to a 256-pixel side, and a damaged header often claims a huge size).
    """
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise ImageError(path, "no such image file") from None
    except OSError as e:
        raise ImageError(path, f"cannot read file ({e.strerror or e})") from None
    with f:
        if os.fstat(f.fileno()).st_size == 0:
            raise ImageError(path, "empty file (0 bytes)")
        try:
            with Image.open(f) as img:
                w, h = img.size
                if min(w, h) < min_side:
                    raise ImageError(path, f"image of {w}x{h} pixels is too small (minimum {min_side}x{min_side})")
                if Image.MAX_IMAGE_PIXELS and w * h > Image.MAX_IMAGE_PIXELS:
                    raise ImageError(path, f"image of {w}x{h} pixels is too large (PIL's limit: {Image.MAX_IMAGE_PIXELS} pixels)")
                img.load()
                return _convert(img, mode)
        except ImageError:
            raise
        except Image.UnidentifiedImageError:
            raise ImageError(path, "not a readable image (no image format recognized)") from None
        except Exception as e:
            # Pillow's decoders raise OSError, SyntaxError, ValueError, EOFError, struct.error,
            # IndexError, ... on damaged files (Pillow's own fuzz harness accepts any Exception),
            # so every one of them means "this file is bad".
            detail = " ".join(f"{type(e).__name__}: {e}".split())[:200]  # one line, however PIL words it
            what = "too large to decode" if isinstance(e, Image.DecompressionBombError) else "truncated or corrupt image"
            raise ImageError(path, f"{what} ({detail})") from None


def _convert(img: Image.Image, mode: str) -> Image.Image:
    """A loaded image in ``mode``: transparency composited on white, 16-bit scaled to 8."""
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA"):
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    if img.mode == "I;16" or img.mode == "I":
        img = img.point(lambda v: v / 256).convert("L")
    return img.convert(mode)


def scan_images(samples, mode: str, workers: int = 0) -> list[dict]:
    """Decode every image of ``samples`` ((path, label) pairs) as training will, in ``workers``
    processes (0: in this one), and list each file that cannot be used as ``{"path", "reason"}``,
    in the order of ``samples``. A folder's bad files are found at once, before any training."""
    paths = [str(p) for p, _ in samples]
    chunk = max(1, min(64, len(paths) // (4 * max(1, workers))))  # a few chunks per worker
    loader = DataLoader(_ImageProblems(paths, mode), batch_size=chunk, num_workers=workers, collate_fn=list)
    reasons = [r for batch in loader for r in batch]
    return [{"path": p, "reason": r} for p, r in zip(paths, reasons) if r is not None]


class _ImageProblems(Dataset):
    """The reason each file is bad, or None: returned, not raised, so workers never fail."""

    def __init__(self, paths: list[str], mode: str):
        self.paths, self.mode = paths, mode

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> str | None:
        try:
            open_image(self.paths[i], self.mode, min_side=MIN_IMAGE_SIDE)
        except ImageError as e:
            return e.reason
        return None


def bad_images_message(root: str | Path, bad: list[dict]) -> str:
    """The error for a folder with bad files: one summary line, then one line per file."""
    lines = [f"{len(bad)} bad image file(s) in {root}; fix or remove them, or pass --skip-bad-images to train on the rest:"]
    return "\n".join(lines + [f"  {b['path']}: {b['reason']}" for b in bad])


def scan_folder(root: Path, classes: list[str] | None = None) -> tuple[list[tuple[str, int]], list[str]]:
    """(path, class index) for every image below ``root``/<class>/, and the sorted class names."""
    found = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if classes is None:
        classes = found
        if not classes:
            raise DataError(f"{root}: no class sub-folders; expected {root}/<class name>/<image files>")
    elif set(found) - set(classes):
        extra = ", ".join(sorted(set(found) - set(classes)))
        raise DataError(f"{root}: class folder(s) {extra} are not among the training classes; add them to train/ or remove them")
    samples = []
    for i, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
                samples.append((str(path), i))
    if not samples:
        raise DataError(f"{root}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in its class sub-folders")
    return samples, classes


def resize_size(image_size: int) -> int:
    """Shorter side before cropping: the paper's 256 for 224-227 crops, scaled for other sizes."""
    return 256 if 224 <= image_size <= 256 else max(image_size, round(image_size * 256 / 224))


def folder_transform(image_size: int, mean, std, train: bool):
    """The paper's photo pipeline: resize shorter side, random (train) or centre (eval) crop."""
    from torchvision.transforms import v2

    crop = [v2.RandomCrop(image_size), v2.RandomHorizontalFlip()] if train else [v2.CenterCrop(image_size)]
    return v2.Compose([
        v2.PILToTensor(),
        v2.Resize(resize_size(image_size), antialias=True),
        *crop,
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean, std),
    ])  # fmt: skip


class ImageList(Dataset):
    """A list of (path, label) pairs decoded with :func:`open_image` and a transform.

    A file that has gone bad since :func:`scan_images` comes back as ``(ImageError, label)``
    instead of raising: an exception raised in a loader worker reaches the main process wrapped in
    the worker's traceback. Load it with :func:`collate_images`, which hands the error on, and
    :class:`_EpochLoader` raises it there as one line.
    """

    def __init__(self, samples, mode: str, transform=None):
        self.samples, self.mode, self.transform = samples, mode, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item: int | tuple[int, int]):
        # (index, seed) from EpochSampler: the random crop and flip are a function of the seed
        # alone, not of which worker process loads the image or what it loaded before
        i, seed = item if isinstance(item, tuple) else (item, None)
        path, label = self.samples[i]
        try:
            img = open_image(path, self.mode, min_side=MIN_IMAGE_SIDE)
        except ImageError as e:
            return e, label
        if self.transform is None:
            return img, label
        if seed is None:
            return self.transform(img), label
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(img), label


class EpochSampler(Sampler):
    """(index, augmentation seed) pairs of one epoch, in an order fixed by (seed, epoch).

    ``set_epoch(epoch, start)`` skips the first ``start`` batches, so a resumed epoch continues
    with exactly the images and the random crops it would have had.
    """

    def __init__(self, n: int, *, batch_size: int, shuffle: bool, seed: int):
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return max(0, self.n - self.start * self.batch_size)

    def __iter__(self):
        g = epoch_generator(self.seed, self.epoch)
        order = torch.randperm(self.n, generator=g) if self.shuffle else torch.arange(self.n)
        seeds = torch.randint(0, 2**62, (self.n,), generator=g)
        for pos in range(self.start * self.batch_size, self.n):
            yield int(order[pos]), int(seeds[pos])


def collate_images(batch):
    """``default_collate`` of (image, label) pairs, or the first :class:`ImageError` among them."""
    for x, _ in batch:
        if isinstance(x, ImageError):
            return x
    return default_collate(batch)


def channel_stats(samples, mode: str, limit: int = 2000, size: int = 64, seed: int = 0):
    """Per-channel mean and std of pixel values in [0, 1] over up to ``limit`` training images.

    Each image is resized to ``size`` x ``size`` first: the statistics barely change and a
    million-image set is summarized in seconds.
    """
    from torchvision.transforms import v2

    chosen = random.Random(seed).sample(samples, min(limit, len(samples)))
    prep = v2.Compose([v2.PILToTensor(), v2.Resize((size, size), antialias=True), v2.ToDtype(torch.float64, scale=True)])
    total = sq = None
    for path, _ in chosen:
        x = prep(open_image(path, mode)).flatten(1)
        s, q = x.sum(1), (x * x).sum(1)
        total, sq = (s, q) if total is None else (total + s, sq + q)
    count = len(chosen) * size * size
    mean = total / count
    std = (sq / count - mean**2).clamp_min(1e-12).sqrt()
    return mean.tolist(), std.tolist()


class _EpochLoader:
    """A DataLoader over an :class:`EpochSampler`: the same interface as TensorBatches."""

    def __init__(self, loader: DataLoader):
        self.loader = loader

    def __len__(self) -> int:  # batches in a whole epoch, also while resuming part-way
        return math.ceil(self.loader.sampler.n / self.loader.batch_size)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.loader.sampler.set_epoch(epoch, start)

    def __iter__(self):
        for batch in self.loader:
            if isinstance(batch, ImageError):
                raise ImageError(batch.path, f"{batch.reason}; it was readable when the run started, so it changed since")
            yield batch


def folder_data(cfg, root: Path, device, stats) -> Data:
    """Train and validation loaders of an ImageFolder-layout folder (see :func:`alexnet.data.build_data`)."""
    mode, split = "RGB", None
    if (root / "train").is_dir() and (root / "val").is_dir():
        train_samples, classes = scan_folder(root / "train")
        val_samples, _ = scan_folder(root / "val", classes)
        bad = _bad_images(cfg, root, train_samples + val_samples, mode)
        train_samples, val_samples = _without(train_samples, bad), _without(val_samples, bad)
    else:
        samples, classes = scan_folder(root)
        # The split is drawn from the readable files only: the same split as after deleting the bad ones.
        bad = _bad_images(cfg, root, samples, mode)
        samples = _without(samples, bad)
        order = list(range(len(samples)))
        random.Random(cfg.seed).shuffle(order)
        n_val = max(1, round(len(samples) * cfg.val_fraction)) if len(samples) > 1 else 0
        val_samples = [samples[i] for i in sorted(order[:n_val])]
        train_samples = [samples[i] for i in sorted(order[n_val:])]
        split = {"seed": cfg.seed, "val_fraction": cfg.val_fraction, "val": [p for p, _ in val_samples]}
    if bad and not (train_samples and val_samples):
        which = "training" if not train_samples else "validation"
        raise DataError(f"--data {root}: no readable {which} images left after skipping {len(bad)} bad file(s), e.g. {bad[0]['path']}: {bad[0]['reason']}")
    if not val_samples:
        raise DataError(f"--data {root}: too few images to hold out a validation set")
    if stats is None:
        mean, std = channel_stats(train_samples, mode, seed=cfg.seed)
        stats = {"mean": mean, "std": std}
    pin = device.type == "cuda"

    def loader(samples, train):
        ds = ImageList(samples, mode, folder_transform(cfg.image_size, stats["mean"], stats["std"], train))
        sampler = EpochSampler(len(ds), batch_size=cfg.batch_size, shuffle=train, seed=cfg.seed)
        # its own generator: each iter() draws the workers' base seed from it, not from the global
        # RNG that dropout uses (that draw would shift dropout's stream on a resume)
        return DataLoader(
            ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers,
            generator=torch.Generator().manual_seed(cfg.seed),
            pin_memory=pin, persistent_workers=cfg.workers > 0, drop_last=False, collate_fn=collate_images,
        )  # fmt: skip

    return Data(
        train=_EpochLoader(loader(train_samples, True)),
        val=_EpochLoader(loader(val_samples, False)),
        classes=classes,
        preprocess={"kind": "folder", "mode": mode, "image_size": cfg.image_size, "resize": resize_size(cfg.image_size), "mean": stats["mean"], "std": stats["std"]},
        num_train=len(train_samples),
        num_val=len(val_samples),
        source=str(root),
        split=split,
        bad_files=bad,
    )


def _bad_images(cfg, root: Path, samples, mode: str) -> list[dict]:
    """The files of ``samples`` that :func:`scan_images` finds bad; unless ``cfg.skip_bad_images``,
    the error that lists them all (before anything is trained or written)."""
    bad = scan_images(samples, mode, cfg.workers)
    if bad and not cfg.skip_bad_images:
        raise DataError(bad_images_message(root, bad))
    return bad


def _without(samples, bad: list[dict]):
    drop = {b["path"] for b in bad}
    return [s for s in samples if s[0] not in drop]

