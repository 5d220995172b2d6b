"""``alexnet prepare``: an image folder to pre-resized WebDataset tar shards (:mod:`alexnet.data.shards`).

The folder is listed, scanned and split exactly as training reads it (:func:`alexnet.data.folder.split_folder`:
``train/`` and ``val/``, or the seeded hold-out of a plain folder; bad files refused or, with
``skip_bad_images``, left out and listed). Each image is decoded by ``open_image``, its shorter side
resized to ``resize`` and re-encoded as JPEG in loader workers; the main process writes the shards
in order. The training images go in a seeded random order, so every shard mixes the classes.
"""

from __future__ import annotations

import io
import json
import random
import sys
from pathlib import Path

from PIL import Image
from torch.utils.data import DataLoader, Dataset

from alexnet.config import TrainConfig
from alexnet.data.folder import split_folder
from alexnet.data.images import MIN_IMAGE_SIDE, open_image, resized_size
from alexnet.data.shards import BAD_IMAGES, CLASSES, INDEX, SHARD_NAME, ShardIndex, ShardWriter, parse_size
from alexnet.data.stats import channel_stats, stats_problem
from alexnet.errors import ConfigError, DataError, ImageError
from alexnet.models import MAX_IMAGE_SIZE
from alexnet.system.signals import held, ignore_in_worker

QUALITY = 95  # JPEG quality of the re-encoded images: visually lossless at a few tens of kB each
MODE = "RGB"


class _Encoded(Dataset):
    """Image i of ``samples``, decoded, resized and re-encoded: (JPEG bytes, label), or (ImageError, label)."""

    def __init__(self, samples, resize: int):
        self.samples, self.resize = samples, resize

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        try:
            img = open_image(path, MODE, min_side=MIN_IMAGE_SIDE)
        except ImageError as e:
            return e, label
        # the size torchvision's Resize(resize) gives (shorter side to resize, the other rounded down)
        img = img.resize(resized_size(*img.size, self.resize), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=QUALITY)
        return buf.getvalue(), label


def _check_places(src: Path, dst: Path, force: bool) -> None:
    """SRC an existing folder; DST not inside SRC, and empty of anything but an earlier prepare's
    files when ``force`` (which replaces those)."""
    if not src.is_dir():
        raise DataError(
            f"SRC {src}: no such folder; give an image folder (one sub-folder per class, or train/ and val/)"
        )
    if dst.resolve() == src.resolve() or src.resolve() in dst.resolve().parents:
        raise ConfigError(
            f"DST {dst} is inside SRC {src}: its shards would be listed as a class; give a folder elsewhere"
        )
    if dst.exists() and not dst.is_dir():
        raise ConfigError(f"DST {dst} is a file; give a folder")
    present = sorted(p.name for p in dst.iterdir()) if dst.is_dir() else []
    if present and not force:
        raise ConfigError(
            f"DST {dst} is not empty ({present[0]}, ...); give an empty folder, or --force to replace an earlier "
            "prepare there"
        )
    ours = {INDEX, CLASSES, BAD_IMAGES}
    others = [n for n in present if n not in ours and not SHARD_NAME.fullmatch(n) and not n.endswith(".partial")]
    if others:
        raise ConfigError(f"DST {dst} holds {others[0]}, which alexnet prepare did not write; give an empty folder")


def prepare(
    src: str | Path,
    dst: str | Path,
    *,
    resize: int = 256,
    shard_size: str = "1GB",
    workers: int = 2,
    skip_bad_images: bool = False,
    seed: int = 0,
    val_fraction: float = 0.1,
    force: bool = False,
    quiet: bool = False,
) -> ShardIndex:
    """Write the shards of the image folder ``src`` into ``dst`` and return their index.

    Everything is checked before anything is written in ``dst``: the settings, the places, every
    image (a bad one stops it with the list of all of them unless ``skip_bad_images``). The
    hold-out of a plain folder is the one ``alexnet train --seed S --val-fraction F`` draws.
    """
    src, dst = Path(src), Path(dst)
    try:
        max_bytes = parse_size(shard_size)
    except ValueError as e:
        raise ConfigError(f"--shard-size {e}") from None
    if not 1 <= resize <= 2 * MAX_IMAGE_SIZE:
        raise ConfigError(f"--resize must be from 1 to {2 * MAX_IMAGE_SIZE}, got {resize}")
    cfg = TrainConfig(
        data=str(src), workers=workers, seed=seed, val_fraction=val_fraction, skip_bad_images=skip_bad_images
    )
    _check_places(src, dst, force)
    s = split_folder(cfg, src, MODE, name="SRC")
    mean, std = channel_stats(s.train, MODE, seed=seed)
    if stats_problem(mean, std):
        raise DataError(f"SRC {src}: the training images' {stats_problem(mean, std)}")
    train = list(s.train)
    random.Random(seed).shuffle(train)  # every shard a mix of the classes
    dst.mkdir(parents=True, exist_ok=True)
    for old in dst.iterdir():  # an earlier prepare's files (force), checked above to be ours
        old.unlink()
    bad = list(s.bad)
    shards = {
        name: _write_split(dst, name, samples, resize, max_bytes, workers, skip_bad_images, bad, quiet)
        for name, samples in (("train", train), ("val", s.val))
    }
    if bad:
        (dst / BAD_IMAGES).write_text(json.dumps(bad, indent=1) + "\n")
    split = None if s.split is None else {"seed": seed, "val_fraction": val_fraction}
    index = ShardIndex(s.classes, resize, {"mean": mean, "std": std}, shards, MODE, QUALITY, str(src.resolve()), split)
    index.write(dst)
    return index


def _write_split(
    dst: Path, split: str, samples, resize: int, max_bytes: int, workers: int, skip: bool, bad: list, quiet: bool
):
    """The shards of one split, written in order from images encoded in ``workers`` processes. A
    file that went bad since the scan is left out and listed (``skip``) or stops the prepare."""
    from tqdm import tqdm

    chunk = max(1, min(32, len(samples) // (4 * max(1, workers))))
    loader = DataLoader(
        _Encoded(samples, resize),
        batch_size=chunk,
        num_workers=workers,
        collate_fn=list,
        worker_init_fn=ignore_in_worker,
    )
    writer = ShardWriter(dst, split, max_bytes)
    bar = tqdm(total=len(samples), desc=f"prepare {split}", unit="img", disable=quiet or not sys.stderr.isatty())
    try:
        with held():  # the workers start here
            batches = iter(loader)
        n = 0
        for batch in batches:
            for jpg, label in batch:
                if isinstance(jpg, ImageError):
                    if not skip:
                        raise ImageError(
                            jpg.path, f"{jpg.reason}; it was readable when the scan ran, so it changed since"
                        )
                    bad.append({"path": jpg.path, "reason": jpg.reason})
                    continue
                writer.add(f"{n:09d}", jpg, label)
                n += 1
            bar.update(len(batch))
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
    if n == 0:
        raise DataError(f"no readable {split} images left to write in {dst}")
    return writer.close()
