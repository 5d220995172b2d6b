"""Benchmarks 2 and 3: the image-folder input pipeline against pytorch/examples' ImageNet loader,
and an end-to-end training epoch over a JPEG folder against the same model on synthetic data.

The JPEGs are generated here (photo-like: smooth colour with texture, quality 90, ImageNet-like
500x375 and, outside ``--quick``, 1024x768 where the reduced-size decode applies). Both pipelines
end with a normalized float batch on the device and use the same number of loader workers.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from alexnet.bench.core import Row, compare
from alexnet.config import TrainConfig
from alexnet.data.folder import scan_folder
from alexnet.data.gpudecode import gpu_folder_loader
from alexnet.data.loader import folder_loader
from alexnet.data.transforms import Preprocess
from alexnet.models import build_model
from alexnet.system import runtime
from alexnet.training import engine
from alexnet.training.optim import make_optimizer

IMAGENET_STATS = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}  # pytorch/examples' values


def make_jpegs(
    root: Path, count: int, size: tuple[int, int], classes: int = 2, seed: int = 0, distinct: int | None = None
) -> Path:
    """``count`` photo-like JPEGs of ``size`` (quality 90) in ``classes`` class folders below ``root``;
    with ``distinct``, that many are drawn and the rest are copies of them (a decoder's work is the
    same, and the GPU rows' thousands of files are written in seconds)."""
    rng = np.random.default_rng(seed)
    w, h = size
    made: list[Path] = []
    for i in range(count):
        folder = root / f"class{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i:05d}.jpg"
        if distinct is not None and i >= distinct:
            path.write_bytes(made[i % distinct].read_bytes())
            continue
        coarse = Image.fromarray(rng.integers(0, 256, (h // 24 + 2, w // 24 + 2, 3), dtype=np.uint8)).resize(
            (w, h), Image.BICUBIC
        )
        pixels = np.asarray(coarse, dtype=np.float32) + rng.normal(0, 8, (h, w, 3)).astype(np.float32)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
        made.append(path)
    return root


def examples_loader(root: Path, *, batch_size: int, workers: int) -> DataLoader:
    """pytorch/examples' ImageNet training loader (imagenet/main.py): ImageFolder,
    RandomResizedCrop(224), flip, ToTensor, Normalize, shuffled."""
    import torchvision.datasets as datasets
    import torchvision.transforms as transforms

    transform = transforms.Compose(
        [
            transforms.RandomResizedCrop(224),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_STATS["mean"], IMAGENET_STATS["std"]),
        ]
    )
    return DataLoader(
        datasets.ImageFolder(str(root), transform),
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
    )


def _epoch(loader, device: torch.device, set_epoch: bool):
    state = {"epoch": 0}

    def run() -> int:
        if set_epoch:
            loader.set_epoch(state["epoch"])
        state["epoch"] += 1
        n = 0
        for x, _ in loader:
            x = x.to(device, non_blocking=True)
            n += len(x)
        return n

    return run


def pipeline_rows(device: torch.device, *, quick: bool, warmup: int, repeats: int, workers: int, say) -> list[Row]:
    """Images/s of the two pipelines over generated JPEG folders, one row per image size."""
    sizes = [(500, 375)] if quick else [(500, 375), (1024, 768)]
    count, batch = (96, 32) if quick else (600, 64)
    rows = []
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="alexnet-bench-") as tmp:
            root = make_jpegs(Path(tmp), count, size)
            samples, _ = scan_folder(root)
            prep = Preprocess.for_folder(image_size=224, stats=IMAGENET_STATS)
            ours = folder_loader(samples, prep, train=True, batch_size=batch, workers=workers, seed=0, device=device)
            base = examples_loader(root, batch_size=batch, workers=workers)
            per = max(workers, 1)
            threads = torch.get_num_threads()
            # the consumer on one thread (both sides): per core, the workers are the pipeline; an
            # OpenMP team on cores the workers hold makes our per-batch normalization wait for them
            torch.set_num_threads(1)
            row = compare(
                "pipeline",
                f"{size[0]}x{size[1]} JPEG q90 -> 224, {workers} worker(s)",
                "images/s",
                (
                    "pytorch/examples: ImageFolder, RandomResizedCrop, flip, ToTensor, Normalize",
                    _epoch(base, device, False),
                ),
                (
                    f"alexnet folder loader: {prep.decode} decode, uint8 from workers, normalized on {device.type}",
                    _epoch(ours, device, True),
                ),
                device=device,
                warmup=warmup,
                repeats=repeats,
            )
            torch.set_num_threads(threads)
            row.extra = {
                "images": count,
                "batch_size": batch,
                "workers": workers,
                "consumer_threads": 1,
                "baseline_per_worker": [r / per for r in row.baseline_rates],
                "ours_per_worker": [r / per for r in row.ours_rates],
            }
            rows.append(row)
            if device.type == "cuda":  # the same loader against the GPU-fed one (data/gpudecode.py)
                gpu = gpu_folder_loader(
                    samples, prep, train=True, batch_size=batch, workers=workers, seed=0, device=device
                )
                rows.append(
                    compare(
                        "pipeline",
                        f"{size[0]}x{size[1]} JPEG q90 -> 224, GPU decode vs CPU workers, {workers} worker(s)",
                        "images/s",
                        (
                            f"alexnet folder loader: {prep.decode} decode in {workers} CPU worker(s)",
                            _epoch(ours, device, True),
                        ),
                        (
                            "alexnet GPU-fed loader: workers read bytes, nvJPEG + crop + flip + normalize on the GPU",
                            _epoch(gpu, device, True),
                        ),
                        device=device,
                        warmup=warmup,
                        repeats=repeats,
                        extra={"images": count, "batch_size": batch, "workers": workers},
                    )
                )
                rows[-1].extra["cpu_fallbacks"] = gpu.decoder.fallbacks
                del gpu
            del ours, base  # their worker processes end here, before the folder goes
        for row in rows[-2 if device.type == "cuda" else -1 :]:
            say(f"  {row.name}: {sorted(row.ratios)[len(row.ratios) // 2]:.2f}x")
    return rows


def e2e_rows(device: torch.device, *, quick: bool, warmup: int, repeats: int, workers: int, say) -> list[Row]:
    """Training images/s of an epoch over a JPEG folder against the same model and steps on
    synthetic batches already on the device (the data pipeline's cost, or 1.0x when hidden)."""
    cfg = TrainConfig()
    count, batch = (96, 32) if quick else (512, 128)
    precision = runtime.resolve_precision("auto", device)
    with tempfile.TemporaryDirectory(prefix="alexnet-bench-") as tmp:
        root = make_jpegs(Path(tmp), count, (500, 375), classes=10)
        samples, _ = scan_folder(root)
        prep = Preprocess.for_folder(image_size=cfg.image_size, stats=IMAGENET_STATS)
        folder = folder_loader(samples, prep, train=True, batch_size=batch, workers=workers, seed=0, device=device)
        g = torch.Generator().manual_seed(0)
        synthetic = [
            (
                torch.randn(min(batch, count - i), 3, cfg.image_size, cfg.image_size, generator=g).to(device),
                torch.randint(0, 10, (min(batch, count - i),), generator=g).to(device),
            )
            for i in range(0, count, batch)
        ]
        model = build_model(cfg.model, num_classes=10).to(device, memory_format=torch.channels_last)
        opt = make_optimizer(model, cfg)
        epochs = {"n": 0}

        def over(batches, set_epoch: bool):
            def run() -> int:
                if set_epoch:
                    batches.set_epoch(epochs["n"])
                    epochs["n"] += 1
                return _train_pass(model, batches, opt, device, precision)

            return run

        row = compare(
            "e2e",
            f"epoch of {count} 500x375 JPEGs, {cfg.model} {cfg.image_size}px b{batch}, {workers} worker(s)",
            "images/s",
            ("same model and steps on synthetic batches on the device", over(synthetic, False)),
            ("JPEG folder through the alexnet folder loader", over(folder, True)),
            device=device,
            warmup=warmup,
            repeats=repeats,
        )
        del folder
    say(f"  {row.name}: {sorted(row.ratios)[len(row.ratios) // 2]:.2f}x")
    return [row]


def _train_pass(model, batches, optimizer, device: torch.device, precision: str) -> int:
    """One training pass over ``batches`` with the run's step (channels-last): the images trained."""
    model.train()
    images = 0
    for x, y in batches:
        x, y = engine.to_device(device, x, y, channels_last=True)
        images += engine.train_step(model, x, y, optimizer, device=device, precision=precision).images
    return images


def gpu_e2e_rows(device: torch.device, *, quick: bool, warmup: int, repeats: int, workers: int, say) -> list[Row]:
    """On CUDA: training epochs of ``alexnet`` at 227 px, batch 256, over a folder of 500x375 JPEGs
    through the GPU-fed loader (data/gpudecode.py), against the same steps on synthetic batches
    (the goal: >= 0.9x, docs/performance.md) and against the CPU-worker loader."""
    size, batch = 227, 256
    count, distinct = (1024, 128) if quick else (4096, 512)
    precision = runtime.resolve_precision("auto", device)
    with tempfile.TemporaryDirectory(prefix="alexnet-bench-") as tmp:
        root = make_jpegs(Path(tmp), count, (500, 375), classes=10, distinct=distinct)
        samples, _ = scan_folder(root)
        prep = Preprocess.for_folder(image_size=size, stats=IMAGENET_STATS)
        common = dict(train=True, batch_size=batch, workers=workers, seed=0, device=device)
        gpu, cpu = gpu_folder_loader(samples, prep, **common), folder_loader(samples, prep, **common)
        g = torch.Generator().manual_seed(0)
        synthetic = [
            (
                torch.randn(min(batch, count - i), 3, size, size, generator=g).to(device),
                torch.randint(0, 10, (min(batch, count - i),), generator=g).to(device),
            )
            for i in range(0, count, batch)
        ]
        model = build_model("alexnet", num_classes=10).to(device, memory_format=torch.channels_last)
        opt = make_optimizer(model, TrainConfig())
        epochs = {"n": 0}

        def over(batches, set_epoch: bool):
            def run() -> int:
                if set_epoch:
                    batches.set_epoch(epochs["n"])
                    epochs["n"] += 1
                return _train_pass(model, batches, opt, device, precision)

            return run

        case = f"epoch of {count} 500x375 JPEGs, alexnet {size}px b{batch} {precision}, {workers} worker(s)"
        gpu_side = ("JPEG folder, GPU decode (nvJPEG, crop, flip, normalize on the GPU)", over(gpu, True))
        rows = [
            compare(
                "e2e",
                f"{case}: GPU decode vs synthetic",
                "images/s",
                ("same model and steps on synthetic batches on the device", over(synthetic, False)),
                gpu_side,
                device=device,
                warmup=warmup,
                repeats=repeats,
            ),
            compare(
                "e2e",
                f"{case}: GPU decode vs CPU workers",
                "images/s",
                (f"JPEG folder, {prep.decode} decode in {workers} CPU worker(s)", over(cpu, True)),
                gpu_side,
                device=device,
                warmup=warmup,
                repeats=repeats,
            ),
        ]
        for row in rows:
            row.extra = {
                "images": count,
                "distinct_images": distinct,
                "batch_size": batch,
                "workers": workers,
                "cpu_fallbacks": gpu.decoder.fallbacks,
            }
            say(f"  {row.name}: {sorted(row.ratios)[len(row.ratios) // 2]:.2f}x")
        del gpu, cpu
    return rows
