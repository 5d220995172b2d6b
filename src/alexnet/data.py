"""Data: Fashion-MNIST from its IDX files, or any folder of images, as batches for training.

Two paths, one interface (:func:`build_data` returns :class:`Data`):

* Fashion-MNIST (and any IDX set) sits in memory as one uint8 tensor (60,000 x 1 x 28 x 28 is 47 MB).
  :class:`TensorBatches` moves each batch to the device and resizes, crops and flips it there in a
  single ``grid_sample`` call - no per-image Python work, so the same code is fast on CPU and GPU.
* An image folder (torchvision's ImageFolder layout) is decoded by PIL in DataLoader workers with
  the paper's transforms: see folders.py.

Per-channel normalization statistics are computed from the training set and stored with the model.
"""

from __future__ import annotations

import gzip
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from PIL import Image

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
INSTALL_HINT = "install them with: sudo apt-get install dataset-fashion-mnist (or pass --data DIR)"
MAX_SHIFT = 2.0  # Fashion-MNIST random crops: shifts of up to 2 of the 28 source pixels


class DataError(Exception):
    """Data that cannot be used; the message names the file or folder and what to do."""


class ImageError(DataError):
    """An image file that cannot be used; the message is one line, ``"<path>: <reason>"``."""

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self):  # rebuilt from (path, reason) when it crosses from a loader worker
        return type(self), (self.path, self.reason)


# --------------------------------------------------------------------------------------------
# IDX files (Fashion-MNIST, MNIST)

_IDX_DTYPES = {0x08: torch.uint8}


def read_idx(path: str | Path) -> torch.Tensor:
    """Read an IDX file (plain or .gz) into a uint8 tensor, checking its magic number and length.

    Any malformed file - not gzip data in a .gz, a cut-off or damaged gzip stream, a wrong magic
    number, a shape that does not match the length - raises :class:`DataError` naming it.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError; bad deflate data a zlib.error
        raise DataError(f"{path}: cannot read IDX file ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or not 1 <= raw[3] <= 4:
        raise DataError(f"{path}: not an IDX file of unsigned bytes (wrong magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + math.prod(shape)
    if len(raw) != expected:
        raise DataError(f"{path}: IDX length {len(raw)} bytes does not match its shape {shape} ({expected} bytes)")
    if expected == header:  # a valid file of zero images; frombuffer refuses empty buffers
        try:
            return torch.zeros(shape, dtype=torch.uint8)
        except RuntimeError:  # e.g. 0 x 2^32-1 x 2^32-1 x 2^32-1: no elements, but its strides overflow
            raise DataError(f"{path}: IDX shape {shape} is too large to hold") from None
    return torch.frombuffer(bytearray(raw[header:]), dtype=torch.uint8).reshape(shape)


def find_idx_files(root: str | Path | None) -> dict[str, Path]:
    """Locate the four Fashion-MNIST IDX files (plain or .gz) in ``root`` or Debian's folder."""
    folder = Path(root) if root is not None else FASHION_MNIST_DIR
    found, missing = {}, []
    for key, stem in IDX_FILES.items():
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            missing.append(stem)
    if missing:
        where = f"{folder}" if root is not None else f"{folder} (Debian's dataset-fashion-mnist)"
        raise DataError(f"Fashion-MNIST files missing in {where}: {', '.join(missing)}; {INSTALL_HINT}")
    return found


def load_idx_dataset(root: str | Path | None = None) -> dict[str, torch.Tensor]:
    """Images (N, 1, H, W) uint8 and labels (N,) int64 for the train and test splits."""
    files = find_idx_files(root)
    out = {}
    for split in ("train", "test"):
        images, labels = read_idx(files[f"{split}_images"]), read_idx(files[f"{split}_labels"])
        if images.dim() != 3 or labels.dim() != 1 or len(images) != len(labels):
            raise DataError(
                f"{files[f'{split}_images']}: expected N x H x W images and N labels, "
                f"got {list(images.shape)} and {list(labels.shape)}"
            )
        out[f"{split}_images"] = images.unsqueeze(1)  # (N, H, W) -> (N, 1, H, W)
        out[f"{split}_labels"] = labels.long()
    return out


def idx_class_names(root: str | Path | None, count: int) -> list[str]:
    """Fashion-MNIST's names for the default data; else one name per line of ``classes.txt`` in the
    folder if present, Fashion-MNIST's names for a folder whose name says fashion, else 0, 1, ..."""
    if root is None:
        return FASHION_MNIST_CLASSES
    names_file = Path(root) / "classes.txt"
    if names_file.is_file():
        names = [line.strip() for line in names_file.read_text().splitlines() if line.strip()]
        if len(names) < count:
            raise DataError(f"{names_file}: {len(names)} names for {count} classes; give one name per line")
        return names[:count]
    if "fashion" in Path(root).resolve().name.lower() and count == 10:
        return FASHION_MNIST_CLASSES
    return [str(i) for i in range(count)]


def is_idx_folder(path: str | Path) -> bool:
    folder = Path(path)
    return any((folder / s).is_file() or (folder / f"{s}.gz").is_file() for s in IDX_FILES.values())


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The random stream of one epoch (order and augmentation): a function of (seed, epoch) alone,
    so any epoch can be replayed - from its start or, skipping draws, from a saved batch."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


class TensorBatches:
    """Batches of an in-memory uint8 image tensor, resized and augmented on the device.

    Training batches get the paper's two augmentations in one ``grid_sample``: a random crop (a
    shift of up to ``MAX_SHIFT`` source pixels, zero-padded like the background) and a horizontal
    flip with probability 1/2. Evaluation batches are only resized.
    The order is a seeded permutation per epoch, so a run can be repeated and resumed exactly.
    """

    def __init__(self, images, labels, *, batch_size, image_size, mean, std, train, device, seed=0):
        self.images, self.labels = images, labels
        self.batch_size, self.image_size, self.train = batch_size, image_size, train
        self.device = torch.device(device)
        self.mean = torch.tensor(mean).view(1, -1, 1, 1).to(self.device)
        self.std = torch.tensor(std).view(1, -1, 1, 1).to(self.device)
        self.seed, self.epoch, self.start = seed, 0, 0
        if self.device.type == "cuda":  # keep the whole set on the GPU: no host transfers at all
            self.images, self.labels = self.images.to(self.device), self.labels.to(self.device)

    def __len__(self) -> int:
        return math.ceil(len(self.images) / self.batch_size)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's order, and skip its first ``start`` batches (resuming mid-epoch)."""
        self.epoch, self.start = epoch, start

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = epoch_generator(self.seed, self.epoch)
        n = len(self.images)
        order = torch.randperm(n, generator=g) if self.train else torch.arange(n)
        for b, start in enumerate(range(0, n, self.batch_size)):
            idx = order[start : start + self.batch_size].to(self.images.device)
            if self.train:  # draw even for skipped batches: the random stream stays the same
                flip, shift = random_flips_and_shifts(len(idx), g)
            if b < self.start:
                continue
            x = self.images[idx].to(self.device, non_blocking=True).float().div_(255)
            y = self.labels[idx].to(self.device, non_blocking=True)
            if self.train:
                yield self.transform(x, flip, shift), y
            else:
                yield self.transform(x), y

    def transform(self, x: torch.Tensor, flip: torch.Tensor | None = None, shift: torch.Tensor | None = None) -> torch.Tensor:
        """(N, C, h, w) floats in [0, 1] -> (N, C, S, S), resized by :func:`resample` and normalized."""
        return (resample(x, self.image_size, flip, shift) - self.mean) / self.std


def resample(x: torch.Tensor, size: int, flip: torch.Tensor | None = None, shift: torch.Tensor | None = None) -> torch.Tensor:
    """Bilinear resize of (N, C, h, w) to (N, C, size, size), optionally flipped and shifted.

    ``flip`` (N,) bool mirrors images left-right; ``shift`` (N, 2) moves them by (x, y) source
    pixels, i.e. a crop of the zero-padded image. One ``grid_sample`` does all three, for training
    and evaluation alike, so an un-augmented training batch equals the evaluation batch exactly.
    """
    n, c, h, w = x.shape
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = 1.0 - 2.0 * flip.float() if flip is not None else 1.0
    theta[:, 1, 1] = 1.0
    if shift is not None:  # affine_grid works in [-1, 1]: one source pixel is 2/w (2/h) of it
        theta[:, 0, 2] = -shift[:, 0] * 2 / w
        theta[:, 1, 2] = -shift[:, 1] * 2 / h
    grid = F.affine_grid(theta.to(x.device), [n, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_flips_and_shifts(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's augmentation for one batch: flips with probability 1/2, and random crops as
    shifts drawn uniformly from [-MAX_SHIFT, MAX_SHIFT] source pixels in x and y."""
    flip = torch.rand(n, generator=g) < 0.5
    shift = (torch.rand(n, 2, generator=g) * 2 - 1) * MAX_SHIFT
    return flip, shift


# --------------------------------------------------------------------------------------------
# One entry point for training and evaluation


@dataclass
class Data:
    """What a run needs from its data set."""

    train: Any  # iterable of (images, labels) batches with __len__ and set_epoch(epoch)
    val: Any
    classes: list[str]
    preprocess: dict  # how to turn one image into model input; stored in every checkpoint
    num_train: int
    num_val: int
    source: str
    split: dict | None = field(default=None)  # the hold-out split made for a plain folder
    bad_files: list[dict] = field(default_factory=list)  # {"path", "reason"} skipped by --skip-bad-images


def build_data(cfg, device: torch.device, stats: dict | None = None) -> Data:
    """Build the train and validation batches for ``cfg`` (a TrainConfig).

    ``stats`` (from a checkpoint's ``preprocess``) reuses stored normalization instead of
    recomputing it, so a resumed or evaluated model sees exactly the inputs it was trained on.
    """
    if cfg.data is None or is_idx_folder(cfg.data):
        return _idx_data(cfg, device, stats)
    root = Path(cfg.data)
    if not root.is_dir():
        raise DataError(f"--data {root}: no such folder; give an image folder or a folder of IDX files")
    from alexnet.folders import folder_data  # folders.py builds on this module's Data and errors

    return folder_data(cfg, root, device, stats)


def _idx_data(cfg, device, stats) -> Data:
    d = load_idx_dataset(cfg.data)
    classes = idx_class_names(cfg.data, int(d["train_labels"].max()) + 1)
    if stats is None:
        pixels = d["train_images"].float().div_(255)
        stats = {"mean": [pixels.mean().item()], "std": [pixels.std().item()]}
    common = dict(batch_size=cfg.batch_size, image_size=cfg.image_size, mean=stats["mean"], std=stats["std"], device=device, seed=cfg.seed)
    h = d["train_images"].shape[-1]
    return Data(
        train=TensorBatches(d["train_images"], d["train_labels"], train=True, **common),
        val=TensorBatches(d["test_images"], d["test_labels"], train=False, **common),
        classes=classes,
        preprocess={"kind": "tensor", "mode": "L", "source_size": h, "image_size": cfg.image_size, "mean": stats["mean"], "std": stats["std"]},
        num_train=len(d["train_images"]),
        num_val=len(d["test_images"]),
        source=str(cfg.data or FASHION_MNIST_DIR),
    )


def preprocess_image(path: str | Path, preprocess: dict) -> torch.Tensor:
    """One image file -> (C, S, S) model input, exactly as evaluation batches are made."""
    from alexnet.folders import folder_transform, open_image
    img = open_image(path, preprocess["mode"])
    if preprocess["kind"] == "tensor":
        s = preprocess["source_size"]  # back to the data set's own resolution, then as TensorBatches
        img = img.resize((s, s), Image.BILINEAR)
        x = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(1, -1, s, s).float().div(255)
        x = resample(x, preprocess["image_size"])
        mean = torch.tensor(preprocess["mean"]).view(1, -1, 1, 1)
        std = torch.tensor(preprocess["std"]).view(1, -1, 1, 1)
        return ((x - mean) / std)[0]
    return folder_transform(preprocess["image_size"], preprocess["mean"], preprocess["std"], train=False)(img)
