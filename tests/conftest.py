"""Small data made on the spot: nothing is downloaded and Debian's Fashion-MNIST is not needed.

* :func:`write_idx` writes the IDX format (the one Fashion-MNIST ships in) from a uint8 tensor.
* ``idx_folder``: a learnable Fashion-MNIST look-alike, 320 train / 80 test 28 x 28 images in the
  four files Fashion-MNIST uses; class k is a bright bar whose place depends on k.
* ``image_folder`` / ``image_folder_split``: ImageFolder layouts with images of mixed sizes,
  modes and formats (the ones PIL hands back from real photo collections), one dominant colour per
  class. ``image_set`` / ``image_set_split`` describe every file written.
* ``bad_folder``: an image folder with good images and five bad files (see helpers.make_folder);
  ``fuzz_dir``: a folder for the fuzz tests' files. Both are module-scoped.

The other fixtures are session-scoped: they take well under a second and are only read by the tests.
"""

from __future__ import annotations

import gzip
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import make_folder

# Runs write checkpoints of ~230-470 MB, each written, fsynced and renamed (formats/files.py). On
# disk every fsync waits for the device; on tmpfs it is free, and the suite writes hundreds: so the
# temporary folders go to /dev/shm when the machine has the memory for them (one test's run
# folders plus the module-scoped data at once) and no --basetemp was given. Only where the files
# live changes; every write path is the same. What it saved: docs/results.md.
SHM = Path("/dev/shm")
SHM_NEEDED = 12 << 30  # free memory for the folders and the tests' own processes, else the disk
SHM_KEY = pytest.StashKey[Path]()


def _available_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return 0


@pytest.hookimpl(tryfirst=True)  # before pytest's tmpdir plugin reads --basetemp
def pytest_configure(config: pytest.Config) -> None:
    _one_thread_per_worker()
    if config.option.basetemp or not SHM.is_dir() or not os.access(SHM, os.W_OK):
        return
    if min(shutil.disk_usage(SHM).free, _available_memory()) < SHM_NEEDED:
        return
    # one folder per pytest process, so concurrent runs never wipe each other's
    config.option.basetemp = str(SHM / f"alexnet-pytest-{os.getpid()}")
    config.stash[SHM_KEY] = Path(config.option.basetemp)


def _one_thread_per_worker() -> None:
    """With as many test processes (pytest-xdist workers) as cores, each computes on one thread,
    and so do the processes it starts (OMP_NUM_THREADS): two workers of two threads each on two
    cores spin-wait on each other's threads, which made the suite slower than one process."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and workers >= (os.cpu_count() or 1):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Free the tmpfs folder (it is memory) unless a test failed: then it stays for reading."""
    folder = session.config.stash.get(SHM_KEY, None)
    if folder is None or not folder.exists():
        return
    if exitstatus == 0:
        shutil.rmtree(folder, ignore_errors=True)
    else:
        print(f"\nthe temporary folders stay in {folder} (memory: remove it when done)")


# The longest file, first: executing the notebook takes about two minutes on one thread, the rest
# of the suite is files of at most ~90 s, so it must not be the last file a worker picks up.
LONGEST_FIRST = ("test_tour.py",)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The longest file first, then files with a slow test, then the rest, each file's tests in
    their own order: `make test` hands whole files to its workers in this order (pytest-xdist's
    --dist loadfile --no-loadscope-reorder), longest first, so no worker is left running a long
    file alone at the end. A stable sort, so every worker collects the same order."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: 0 if item.path.name in LONGEST_FIRST else 1 if item.path in slow_files else 2)


@pytest.fixture(scope="session", autouse=True)
def scan_cache(tmp_path_factory) -> Path:
    """The bad-file scan's cache of every test, in a temporary folder: never the user's ~/.cache
    (subprocesses inherit it through the environment)."""
    folder = tmp_path_factory.mktemp("alexnet-cache")
    os.environ["ALEXNET_CACHE"] = str(folder)
    return folder


IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def write_idx(path: str | Path, tensor: torch.Tensor) -> Path:
    """Write ``tensor`` as an IDX file of unsigned bytes, gzipped when ``path`` ends in .gz.

    The format (LeCun's MNIST page): magic 0, 0, 0x08 (unsigned byte), ndim; then each dimension
    as a 4-byte big-endian integer; then the values in C order.
    """
    path = Path(path)
    data = torch.as_tensor(tensor).to(torch.uint8).contiguous()
    header = bytes([0, 0, 0x08, data.dim()]) + b"".join(int(d).to_bytes(4, "big") for d in data.shape)
    raw = header + data.numpy().tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


# --------------------------------------------------------------------------------------------
# A Fashion-MNIST look-alike


@dataclass
class IdxSet:
    """The folder of IDX files and the tensors written into it."""

    path: Path
    train_images: torch.Tensor  # (N, 28, 28) uint8
    train_labels: torch.Tensor  # (N,) int64
    test_images: torch.Tensor
    test_labels: torch.Tensor


def make_bar_images(labels: np.ndarray, rng: np.random.Generator, size: int = 28) -> np.ndarray:
    """Class k in 0-4: a horizontal bar at row 3 + 5k; k in 5-9: a vertical one at column 3 + 5(k-5).

    Bars are 3 pixels wide with intensity 170-255 and jitter of one pixel; the black background has
    sparse dim noise, as Fashion-MNIST has a black background around a bright object.
    """
    images = np.zeros((len(labels), size, size), dtype=np.float32)
    for i, k in enumerate(labels):
        start = 3 + 5 * (k % 5) + rng.integers(-1, 2)
        bar = rng.uniform(170, 255, size=(3, size - 6))
        if k < 5:
            images[i, start : start + 3, 3:-3] = bar
        else:
            images[i, 3:-3, start : start + 3] = bar.T
    noise = rng.uniform(0, 40, size=images.shape) * (rng.random(images.shape) < 0.1)
    return np.clip(images + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def idx_folder(tmp_path_factory) -> IdxSet:
    """320 train / 80 test images of 10 balanced, shuffled classes in plain IDX files."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 320), ("test", 80)):
        labels = rng.permutation(np.repeat(np.arange(10), n // 10))
        arrays[f"{split}_images"] = torch.from_numpy(make_bar_images(labels, rng))
        arrays[f"{split}_labels"] = torch.from_numpy(labels).long()
    folder = tmp_path_factory.mktemp("idx")
    for key, name in IDX_NAMES.items():
        write_idx(folder / name, arrays[key])
    return IdxSet(path=folder, **arrays)


def write_idx_set(root: Path, base: IdxSet, **replace: torch.Tensor) -> Path:
    """The four IDX files of ``base`` in ``root``, with the tensors named in ``replace`` (train_images,
    train_labels, test_images, test_labels) swapped in: a set that lies in one way."""
    root.mkdir(parents=True, exist_ok=True)
    for key, name in IDX_NAMES.items():
        write_idx(root / name, replace.get(key, getattr(base, key)))
    return root


# --------------------------------------------------------------------------------------------
# Image folders of mixed sizes, modes and formats

CLASS_COLOURS = {"blue": (30, 60, 220), "green": (40, 200, 60), "red": (220, 40, 30)}
# (kind, file name suffix, mode PIL reports when the file is opened again)
KINDS = [
    ("rgb_jpeg", ".jpg", "RGB"),
    ("gray_png", ".png", "L"),
    ("rgba_png", ".png", "RGBA"),
    ("palette_png", ".png", "P"),
    ("palette_transparent_png", ".png", "P"),
    ("cmyk_jpeg", ".jpg", "CMYK"),
    ("gray16_png", ".png", "I;16"),
    ("rgb_upper_jpeg", ".JPG", "RGB"),  # upper-case extensions are images too
]
SIZES = [(40, 30), (300, 200), (64, 64), (200, 300), (120, 50), (90, 140), (33, 47), (256, 170)]  # (w, h)


@dataclass
class ImageFile:
    path: Path
    label: str  # class name
    kind: str
    mode: str  # as opened by PIL
    size: tuple[int, int]  # (w, h)


@dataclass
class ImageSet:
    path: Path
    classes: list[str]  # the class folders present, sorted
    files: list[ImageFile]


def _draw(colour, size, rng: np.random.Generator) -> np.ndarray:
    """(h, w, 3) uint8: the class colour with noise, and a brighter square in the middle."""
    w, h = size
    img = np.array(colour, dtype=np.float32) + rng.normal(0, 12, size=(h, w, 3))
    img[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] += 25
    return np.clip(img, 0, 255).astype(np.uint8)


def write_image(path: Path, kind: str, rgb: np.ndarray) -> None:
    """Save ``rgb`` (h, w, 3) uint8 in the mode and format ``kind`` names."""
    img = Image.fromarray(rgb, mode="RGB")
    if kind in ("rgb_jpeg", "rgb_upper_jpeg"):
        img.save(path, format="JPEG", quality=90)
    elif kind == "gray_png":
        img.convert("L").save(path)
    elif kind == "rgba_png":
        alpha = np.full(rgb.shape[:2], 255, dtype=np.uint8)
        alpha[:, : max(1, rgb.shape[1] // 8)] = 0  # a fully transparent left strip
        Image.fromarray(np.dstack([rgb, alpha]), mode="RGBA").save(path)
    elif kind == "palette_png":
        img.convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(path)
    elif kind == "palette_transparent_png":
        p = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=15)
        pixels = np.array(p)
        pixels[: max(1, pixels.shape[0] // 8), :] = 15  # top strip: the transparent index
        q = Image.fromarray(pixels, mode="P")
        q.putpalette(p.getpalette()[: 15 * 3] + [0, 0, 0])
        q.save(path, transparency=15)
    elif kind == "cmyk_jpeg":
        img.convert("CMYK").save(path, format="JPEG", quality=90)
    elif kind == "gray16_png":
        gray = np.array(img.convert("L"), dtype=np.uint16) * 257  # 8 -> 16 bits, 255 -> 65535
        Image.fromarray(gray).save(path)  # mode I;16
    else:
        raise ValueError(kind)


def make_image_folder(root: Path, per_class: dict[str, int], seed: int) -> list[ImageFile]:
    """``per_class`` images of every class under ``root``/<class>/, cycling through KINDS and SIZES."""
    rng = np.random.default_rng(seed)
    files = []
    for c, (name, count) in enumerate(per_class.items()):
        (root / name).mkdir(parents=True)
        for i in range(count):
            kind, suffix, mode = KINDS[i % len(KINDS)]
            size = SIZES[(i + 3 * c) % len(SIZES)]
            path = root / name / f"{i:02d}_{kind}{suffix}"
            write_image(path, kind, _draw(CLASS_COLOURS[name], size, rng))
            files.append(ImageFile(path, name, kind, mode, size))
    return files


@pytest.fixture(scope="session")
def image_set(tmp_path_factory) -> ImageSet:
    """3 classes x 8 images, every kind in KINDS once per class, no train/ or val/ folders."""
    root = tmp_path_factory.mktemp("images")
    files = make_image_folder(root, {name: 8 for name in CLASS_COLOURS}, seed=1)
    return ImageSet(root, sorted(CLASS_COLOURS), files)


@pytest.fixture(scope="session")
def image_folder(image_set) -> Path:
    """The folder of :func:`image_set` (an ImageFolder layout without train/ and val/)."""
    return image_set.path


@pytest.fixture(scope="session")
def image_set_split(tmp_path_factory) -> tuple[ImageSet, ImageSet]:
    """train/ with all three classes; val/ without 'green', so its own sorted class list would
    number 'red' 1 while the training classes number it 2."""
    root = tmp_path_factory.mktemp("images_split")
    train = make_image_folder(root / "train", {name: 6 for name in CLASS_COLOURS}, seed=2)
    val = make_image_folder(root / "val", {"blue": 3, "red": 3}, seed=3)
    return ImageSet(root / "train", sorted(CLASS_COLOURS), train), ImageSet(root / "val", ["blue", "red"], val)


@pytest.fixture(scope="session")
def image_folder_split(image_set_split) -> Path:
    """The parent folder holding train/ and val/."""
    return image_set_split[0].path.parent


# --------------------------------------------------------------------------------------------
# Fixtures shared by several test files (module-scoped: built once per test file)


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_images")
    return root, make_folder(root)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="session")
def trained_run(idx_folder, tmp_path_factory) -> Path:
    """A run folder of one epoch of ``alexnet_tiny`` at 67 on :func:`idx_folder` (10 steps): what the
    figures and the report are drawn from (the drawing, not the network's size, is under test).
    Read it; write only new files into it."""
    from alexnet.cli import main

    out = tmp_path_factory.mktemp("trained")
    argv = [
        "train",
        "--data",
        str(idx_folder.path),
        "--model",
        "alexnet_tiny",
        "--batch-size",
        "32",
        "--image-size",
        "67",
        "--seed",
        "1",
        "--epochs",
        "1",
    ]
    assert main([*argv, "--out", str(out), "--name", "run"]) == 0
    return out / "run"
