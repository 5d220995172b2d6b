"""IDX files (Fashion-MNIST, MNIST) held in memory and batched on the device.

Fashion-MNIST sits in memory as one uint8 tensor (60,000 x 1 x 28 x 28 is 47 MB).
:class:`TensorBatches` moves each batch to the device and resizes, crops and flips it there in a
single ``grid_sample`` call: no per-image Python work, so the same code is fast on CPU and GPU.
Normalization statistics come from the training images and are stored with the model.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from alexnet.data.base import Data, EvalData, class_names_problem
from alexnet.data.classes import by_names, choose, relabel
from alexnet.data.sampling import EpochOrder, subset_indices, subset_per_class
from alexnet.data.stats import stats_problem, uint8_stats
from alexnet.data.transforms import Preprocess, random_flips_and_shifts
from alexnet.errors import DataError
from alexnet.models import MAX_IMAGE_SIZE
from alexnet.system.distributed import SINGLE, World
from alexnet.system.files import check_regular, read_text

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
INSTALL_HINT = "install them with: sudo apt-get install dataset-fashion-mnist (or pass --data DIR)"

_IDX_DTYPES = {0x08: torch.uint8}
MAX_NAMES_BYTES = 16 << 20  # classes.txt: one name a line
GZIP_RATIO = 1032  # deflate's largest expansion: 258 bytes from every 2 bits


def read_idx(path: str | Path) -> torch.Tensor:
    """Read an IDX file (plain or .gz) into a uint8 tensor, checking its magic number and length.

    Any malformed file - not a regular file, not gzip data in a .gz, a cut-off or damaged gzip
    stream, a wrong magic number, a shape that does not match the length - raises
    :class:`DataError` naming it. The header is read first and only the bytes its shape implies
    after it (one more, to tell a longer file), into the tensor's own memory: a file that holds
    more than it says, or a gzip stream that expands without end, costs no more than it declares.
    """
    path = Path(path)
    size = check_regular(path).st_size
    gz = path.suffix == ".gz"
    try:
        with (gzip.open if gz else open)(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES or not 1 <= head[3] <= 4:
                raise DataError(f"{path}: not an IDX file of unsigned bytes (wrong magic number)")
            dims = f.read(4 * head[3])
            if len(dims) < 4 * head[3]:
                raise DataError(f"{path}: truncated IDX header")
            shape = [int.from_bytes(dims[4 * i : 4 * i + 4], "big") for i in range(head[3])]
            header, n = 4 + len(dims), math.prod(shape)
            # a plain file's length is its size; deflate expands at most 1032 times
            most = size - header if not gz else GZIP_RATIO * size
            if n > most:
                raise DataError(
                    f"{path}: IDX length of at most {most:,} bytes after the header does not match its shape "
                    f"{shape} ({n:,} bytes)"
                )
            body = bytearray(n)
            got = f.readinto(body) if n else 0
            while n and got < n and (more := f.readinto(memoryview(body)[got:])):
                got += more
            extra = len(f.read(1))
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError; bad deflate data a zlib.error
        raise DataError(f"{path}: cannot read IDX file ({e})") from None
    if got != n or extra:
        raise DataError(
            f"{path}: IDX length {header + got}{'+' if extra else ''} bytes does not match its shape {shape} "
            f"({header + n} bytes)"
        )
    if n == 0:  # a valid file of zero images; frombuffer refuses empty buffers
        try:
            return torch.zeros(shape, dtype=torch.uint8)
        except RuntimeError:  # e.g. 0 x 2^32-1 x 2^32-1 x 2^32-1: no elements, but its strides overflow
            raise DataError(f"{path}: IDX shape {shape} is too large to hold") from None
    return torch.frombuffer(body, dtype=torch.uint8).reshape(shape)


def find_idx_files(root: str | Path | None, splits: tuple[str, ...] = ("train", "test")) -> dict[str, Path]:
    """Locate the IDX files of ``splits`` (plain or .gz) in ``root`` or Debian's folder."""
    folder = Path(root) if root is not None else FASHION_MNIST_DIR
    found, missing = {}, []
    for key, stem in IDX_FILES.items():
        if key.split("_")[0] not in splits:
            continue
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


def load_idx_split(files: dict[str, Path], split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 1, S, S) uint8 and labels (N,) int64 of ``split`` (train or test); a pair that
    does not describe N >= 1 square images and their N labels is refused naming the file."""
    images_path, labels_path = files[f"{split}_images"], files[f"{split}_labels"]
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dim() != 3:
        raise DataError(f"{images_path}: expected N x H x W images, got an IDX array of shape {list(images.shape)}")
    if labels.dim() != 1:
        raise DataError(f"{labels_path}: expected a list of N labels, got an IDX array of shape {list(labels.shape)}")
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels; they must pair up"
        )
    if len(images) == 0:
        raise DataError(f"{images_path}: holds no images")
    h, w = images.shape[1:]
    # one side length: Preprocess keeps a single source_size, to which predict brings every image
    if h != w or not 1 <= h <= MAX_IMAGE_SIZE:
        raise DataError(
            f"{images_path}: images of {h}x{w} pixels; expected square images of 1 to {MAX_IMAGE_SIZE} pixels a side"
        )
    return images.unsqueeze(1), labels.long()  # (N, H, W) -> (N, 1, H, W)


def count_classes(labels: torch.Tensor, path: Path) -> int:
    """The class count of an IDX set: its highest training label + 1, every class with training
    images. A gap (a label 200 among labels 0..9) is a label that lies: refused naming the file."""
    counts = torch.bincount(labels)
    empty = (counts == 0).nonzero().flatten().tolist()
    if empty:
        listed = ", ".join(map(str, empty[:5])) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        raise DataError(
            f"{path}: labels run up to {len(counts) - 1} but class(es) {listed} have no training images; "
            f"labels must number the classes 0..K-1, each with images"
        )
    return len(counts)


def check_labels(labels: torch.Tensor, num_classes: int, path: Path, whose: str) -> None:
    """Every label of ``path`` names one of ``num_classes`` classes (``whose``: where that count
    comes from); a label the model has no output for is refused, not counted as an error."""
    if int(labels.max()) >= num_classes:
        raise DataError(
            f"{path}: label {int(labels.max())} is outside {whose} {num_classes} classes (0..{num_classes - 1})"
        )


def check_image_side(images: torch.Tensor, side: int, path: Path, whose: str) -> None:
    """The images of ``path`` have the side the model's preprocessing was made for."""
    if images.shape[-1] != side:
        s = images.shape[-1]
        raise DataError(f"{path}: images of {s}x{s} pixels, but {whose} are {side}x{side}")


def load_idx_dataset(root: str | Path | None = None) -> dict[str, torch.Tensor]:
    """Images (N, 1, H, W) uint8 and labels (N,) int64 for the train and test splits."""
    files = find_idx_files(root)
    out = {}
    for split in ("train", "test"):
        out[f"{split}_images"], out[f"{split}_labels"] = load_idx_split(files, split)
    return out


def idx_class_names(root: str | Path | None, count: int) -> list[str]:
    """Fashion-MNIST's names for the default data or a folder whose name says fashion, when there
    are 10 classes; else one name per line of ``classes.txt`` in the folder if present, else 0, 1, ..."""
    if root is not None:
        names_file = Path(root) / "classes.txt"
        if os.path.lexists(names_file):
            text = read_text(names_file, limit=MAX_NAMES_BYTES)
            names = [line.strip() for line in text.splitlines() if line.strip()]
            if len(names) < count:
                raise DataError(f"{names_file}: {len(names)} names for {count} classes; give one name per line")
            problem = class_names_problem(names[:count])
            if problem:  # refused now, not by every checkpoint of the run later
                raise DataError(f"{names_file}: the class names {problem}")
            return names[:count]
    if (root is None or "fashion" in Path(root).resolve().name.lower()) and count == 10:
        return FASHION_MNIST_CLASSES
    return [str(i) for i in range(count)]


def is_idx_folder(path: str | Path) -> bool:
    folder = Path(path)
    return any((folder / s).is_file() or (folder / f"{s}.gz").is_file() for s in IDX_FILES.values())


class TensorBatches:
    """Batches of an in-memory uint8 image tensor, resized and augmented on the device.

    Training batches get the paper's two augmentations in one ``grid_sample``: a random crop (a
    shift of up to ``MAX_SHIFT`` source pixels, zero-padded like the background) and a horizontal
    flip with probability 1/2 (unless ``augment`` is off). Evaluation batches are only resized. The order is an
    :class:`EpochOrder`, so a run can be repeated and resumed exactly.
    """

    def __init__(
        self,
        images,
        labels,
        *,
        batch_size: int,
        preprocess: Preprocess,
        train: bool,
        device,
        seed: int = 0,
        world: World = SINGLE,
        ten_crop: bool = False,
        augment: bool = True,
    ):
        self.images, self.labels, self.preprocess, self.train, self.world = images, labels, preprocess, train, world
        self.augment = train and augment  # training batches without it are only resized, as evaluation's
        self.ten_crop = ten_crop and not train  # evaluation only: (N, 10, C, S, S) views
        self.device = torch.device(device)
        self.order = EpochOrder(len(images), batch_size=batch_size, shuffle=train, seed=seed)
        if self.device.type == "cuda":  # keep the whole set on the GPU: no host transfers at all
            self.images, self.labels = self.images.to(self.device), self.labels.to(self.device)

    def __len__(self) -> int:
        return len(self.order)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's order, and skip its first ``start`` batches (resuming mid-epoch)."""
        self.order.set_epoch(epoch, start)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g, order = self.order.draw()
        for b, idx in self.order.batches(order):
            idx = idx.to(self.images.device)
            if self.augment:  # draw even for skipped batches: the random stream stays the same
                flip, shift = random_flips_and_shifts(len(idx), g)
            if b < self.order.start:
                continue
            if self.world.distributed:  # this process's part of the global batch, with its augmentation
                part = self.world.part(len(idx))
                idx = idx[part]
                if self.augment:
                    flip, shift = flip[part], shift[part]
            x = self.images[idx].to(self.device, non_blocking=True).float().div_(255)
            y = self.labels[idx].to(self.device, non_blocking=True)
            if self.augment:
                yield self.preprocess.tensor_batch(x, flip, shift), y
            else:
                yield (self.preprocess.ten_crop_batch(x) if self.ten_crop else self.preprocess.tensor_batch(x)), y


def idx_data(cfg, device: torch.device, stats: Mapping | None, world: World = SINGLE) -> Data:
    """Training and test batches of an IDX set (Fashion-MNIST by default); see build_data.

    The classes are those of the training labels (:func:`count_classes`); every test label must be
    one of them and the test images the training images' size, all before anything is trained.
    ``cfg.classes`` keeps the chosen classes only (data/classes.py), before the statistics and the
    subset: as if the set held no others."""
    files = find_idx_files(cfg.data)
    train_images, train_labels = load_idx_split(files, "train")
    test_images, test_labels = load_idx_split(files, "test")
    num_classes = count_classes(train_labels, files["train_labels"])
    check_labels(test_labels, num_classes, files["test_labels"], "the training labels'")
    side = train_images.shape[-1]
    check_image_side(test_images, side, files["test_images"], f"the training images in {files['train_images']}")
    classes = idx_class_names(cfg.data, num_classes)
    source = str(cfg.data or FASHION_MNIST_DIR)
    chosen = choose(cfg.classes, classes, f"--data {source}")
    if chosen is not None:
        (keep, train_labels), (keep_test, test_labels) = relabel(train_labels, chosen), relabel(test_labels, chosen)
        train_images, test_images = train_images[keep], test_images[keep_test]
        classes = [classes[i] for i in chosen]
    if stats is None:
        mean, std = uint8_stats(train_images)
        stats = {"mean": [mean], "std": [std]}
        problem = stats_problem(stats["mean"], stats["std"])
        if problem:
            raise DataError(f"{files['train_images']}: {problem}")
    preprocess = Preprocess.for_tensors(mode="L", source_size=side, image_size=cfg.image_size, stats=stats)
    common = dict(batch_size=cfg.batch_size, preprocess=preprocess, device=device, seed=cfg.seed, world=world)
    # after the statistics: they stay the whole (chosen) set's
    keep = subset_indices(len(train_images), cfg.subset, cfg.seed)
    if keep is None:
        keep = subset_per_class(train_labels, cfg.subset_per_class, cfg.seed)
    if keep is not None:
        train_images, train_labels = train_images[keep], train_labels[keep]
    return Data(
        train=TensorBatches(train_images, train_labels, train=True, augment=cfg.augment, **common),
        val=TensorBatches(test_images, test_labels, train=False, **common),
        classes=classes,
        preprocess=preprocess,
        num_train=len(train_images),
        num_val=len(test_images),
        source=source,
    )


def idx_eval_data(
    root: str | None,
    preprocess: Preprocess,
    num_classes: int,
    *,
    batch_size: int,
    device: torch.device,
    ten_crop: bool = False,
    chosen: list[str] | None = None,
) -> EvalData:
    """The test split of an IDX set as evaluation batches: the training files are not read.
    ``ten_crop``: batches of (N, 10, C, S, S) views (:meth:`Preprocess.ten_crop_batch`).
    ``chosen``: the model's classes, picked out of the set by name (a model trained with ``--classes``)."""
    files = find_idx_files(root, splits=("test",))
    images, labels = load_idx_split(files, "test")
    source = str(root or FASHION_MNIST_DIR)
    if chosen is not None:
        names = idx_class_names(root, int(labels.max()) + 1)
        keep, labels = relabel(labels, by_names(chosen, names, f"--data {source}"))
        images = images[keep]
    check_labels(labels, num_classes, files["test_labels"], "the model's")
    check_image_side(images, preprocess.source_size, files["test_images"], "the model's training images")
    batches = TensorBatches(
        images, labels, batch_size=batch_size, preprocess=preprocess, train=False, device=device, ten_crop=ten_crop
    )
    names = list(chosen) if chosen is not None else idx_class_names(root, num_classes)
    return EvalData(batches, names, len(images), source)
