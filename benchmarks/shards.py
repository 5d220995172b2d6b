"""Training batches per second from prepared shards against the same images as a folder.

Makes ``--images`` JPEGs of 500 x 375 pixels (quality 90, ImageNet's typical size) in ``--classes``
class folders in a temporary folder, prepares them with ``alexnet prepare`` (shorter side 256),
then times whole training epochs of both sources through ``build_data`` - the batches a run
trains on: decode, resize, random crop and flip, normalize, collate - with the same workers, batch
size and image size. The folder's bad-file scan and statistics happen before the timing (a run
does them once), and one untimed epoch of each starts the loader workers. The sources alternate,
repeat by repeat, so a slow spell of a shared machine hits both.

    .venv/bin/python benchmarks/shards.py                       # 300 images, 2 workers, 3 repeats
    .venv/bin/python benchmarks/shards.py --workers 4 --repeats 5 --image-size 227

The ratio is shards / folder images per second (above 1: the shards are faster). Before that, the
bad-file scan of the folder is timed without its cache, filling it, and with it (what the next run
or a resume pays).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL
import torch
import torchvision
from PIL import Image

from alexnet.config import TrainConfig
from alexnet.data import build_data
from alexnet.data.folder import scan_folder, scan_images
from alexnet.data.prepare import prepare
from alexnet.system.runtime import cpu_name

STATS = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}  # fixed: statistics are not what is timed


def make_images(root: Path, n: int, classes: int, size=(500, 375)) -> None:
    """``n`` photo-like JPEGs (smooth colour fields with noise and edges), quality 90."""
    rng = np.random.default_rng(0)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        folder = root / f"class{i % classes:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        base = rng.uniform(0, 255, 3)
        field = base + 60 * np.sin(xx[..., None] / rng.uniform(10, 80) + rng.uniform(0, 6, 3)) * np.cos(
            yy[..., None] / rng.uniform(10, 80)
        )
        field += rng.normal(0, 8, (h, w, 3))
        Image.fromarray(np.clip(field, 0, 255).astype(np.uint8)).save(folder / f"{i:05d}.jpg", quality=90)


def epoch_seconds(data, epoch: int) -> float:
    data.train.set_epoch(epoch)
    t0 = time.perf_counter()
    n = sum(len(y) for _, y in data.train)
    assert n == data.num_train, (n, data.num_train)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-size", type=int, default=227)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    print(f"machine : {cpu_name()}, {os.cpu_count()} cores | load avg {os.getloadavg()[0]:.2f} at start")
    print(
        f"versions: torch {torch.__version__} | torchvision {torchvision.__version__} | Pillow {PIL.__version__} | "
        f"python {platform.python_version()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["ALEXNET_CACHE"] = str(Path(tmp) / "scan-cache")  # leave the user's cache alone
        src, dst = Path(tmp) / "images", Path(tmp) / "shards"
        make_images(src, args.images, args.classes)
        samples, _ = scan_folder(src)
        scans = {}
        for label, cache in (("no cache", False), ("cache filled", True), ("cache read", True)):
            t0 = time.perf_counter()
            scan_images(samples, "RGB", args.workers, cache=cache)
            scans[label] = time.perf_counter() - t0
        print(
            "scan    : "
            + " | ".join(f"{k} {v:.2f} s" for k, v in scans.items())
            + f" ({len(samples)} files, {args.workers} workers)"
        )
        os.environ["ALEXNET_CACHE"] = str(Path(tmp) / "cache")  # prepare scans afresh
        t0 = time.perf_counter()
        prepare(src, dst, workers=args.workers, quiet=True)
        prepared = time.perf_counter() - t0
        source_mb = sum(f.stat().st_size for f in src.rglob("*.jpg")) / 1e6
        shard_mb = sum(f.stat().st_size for f in dst.glob("*.tar")) / 1e6
        print(
            f"data    : {args.images} JPEGs 500x375 q90 ({source_mb:.1f} MB) -> shards at 256 ({shard_mb:.1f} MB), "
            f"prepare took {prepared:.1f} s with {args.workers} workers"
        )
        settings = dict(workers=args.workers, batch_size=args.batch_size, image_size=args.image_size, val_fraction=0.1)
        sources = {
            "folder": build_data(TrainConfig(data=str(src), **settings), torch.device("cpu"), STATS),
            "shards": build_data(TrainConfig(data=str(dst), **settings), torch.device("cpu"), STATS),
        }
        times = {name: [] for name in sources}
        for data in sources.values():  # untimed: starts the persistent workers
            epoch_seconds(data, 0)
        for r in range(args.repeats):
            for name, data in sources.items():
                times[name].append(epoch_seconds(data, r + 1))
    rates = {name: [sources[name].num_train / t for t in ts] for name, ts in times.items()}
    print(
        f"\nworkers {args.workers} | batch {args.batch_size} | image size {args.image_size} | repeats {args.repeats} "
        f"(one epoch of {sources['folder'].num_train} training images each)\n"
    )
    print(f"{'source':<8} {'median img/s':>13} {'min':>8} {'max':>8} {'spread':>8} {'ratio':>7}")
    base = statistics.median(rates["folder"])
    for name, rs in rates.items():
        med = statistics.median(rs)
        print(
            f"{name:<8} {med:>13.1f} {min(rs):>8.1f} {max(rs):>8.1f} {100 * (max(rs) - min(rs)) / med:>7.1f}% "
            f"{med / base:>7.2f}"
        )
    print(
        "\nspread = (max - min) / median; ratio = median / the folder's median | load avg "
        f"{os.getloadavg()[0]:.2f} "
        "at end"
    )


if __name__ == "__main__":
    main()
