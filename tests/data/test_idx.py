"""data/idx.py: IDX files (Fashion-MNIST's format) read, found and loaded; malformed ones refused
naming the file, also under fuzzing; and ``TensorBatches``, the on-device tensor pipeline.

References used instead of restating the code: the tensors written into the IDX files, the
published Fashion-MNIST counts, and ``F.interpolate`` for the resize.
"""

from __future__ import annotations

import gzip
import math
import shutil

import pytest
import torch
import torch.nn.functional as F

hypothesis = pytest.importorskip("hypothesis")  # the fuzz tests; the rest of the suite runs without it
from hypothesis import given
from hypothesis import strategies as st

from alexnet.config import TrainConfig
from alexnet.data import DataError, build_data
from alexnet.data.idx import FASHION_MNIST_DIR, IDX_FILES, find_idx_files, load_idx_dataset, read_idx

from conftest import IDX_NAMES, write_idx, write_idx_set
from fuzz import FUZZ
from helpers import CPU, _batches, _one_line_error, _run

# --------------------------------------------------------------------------------------------
# IDX files


def test_idx_names_are_fashion_mnists():
    assert IDX_FILES == IDX_NAMES


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("shape", [(7,), (5, 28, 28), (2, 3, 4, 5)])
def test_read_idx_round_trip(tmp_path, suffix, shape):
    x = torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    path = write_idx(tmp_path / f"x-idx{len(shape)}-ubyte{suffix}", x)
    if suffix:
        assert path.read_bytes()[:2] == b"\x1f\x8b"  # really gzipped
    y = read_idx(path)
    assert y.dtype == torch.uint8 and y.shape == shape
    assert torch.equal(y, x)


def _header(*dims, dtype=0x08):
    return bytes([0, 0, dtype, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


@pytest.mark.parametrize(
    "raw, words",
    [
        (_header(3, 2, 2, dtype=0x09) + bytes(12), "magic"),  # signed bytes: not what we read
        (b"\x01\x00" + _header(12)[2:] + bytes(12), "magic"),
        (_header(12)[:4].replace(b"\x01", b"\x07") + bytes(12), "magic"),  # ndim 7
        (b"\x00\x00", "magic"),
        (b"\x89PNG\r\n\x1a\n" + bytes(24), "magic"),
        (_header(3, 2, 2)[:9], "truncated"),  # 3 dimensions announced, 1 and a bit given
        (_header(3, 2, 2) + bytes(11), "length"),  # one byte short
        (_header(3, 2, 2) + bytes(13), "length"),  # one byte too many
        (_header(60000) + bytes(59999), "length"),
    ],
    ids=["dtype", "first-byte", "ndim", "tiny", "not-idx", "truncated-header", "short", "long", "labels-short"],
)
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_rejects_broken_files_naming_them(tmp_path, raw, words, suffix):
    path = tmp_path / f"broken-idx-ubyte{suffix}"
    path.write_bytes(gzip.compress(raw) if suffix else raw)
    with pytest.raises(DataError) as e:
        read_idx(path)
    assert str(path) in str(e.value) and words in str(e.value)


def test_read_idx_rejects_corrupt_gzip_and_missing_files(tmp_path):
    bad = tmp_path / "x.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    for path in (bad, tmp_path / "missing-idx1-ubyte"):
        with pytest.raises(DataError, match=str(path)):
            read_idx(path)


def test_read_idx_of_an_empty_set(tmp_path):
    path = write_idx(tmp_path / "empty-idx3-ubyte", torch.zeros(0, 28, 28, dtype=torch.uint8))
    assert read_idx(path).shape == (0, 28, 28)


def test_find_idx_files_names_what_is_missing_and_how_to_get_it(tmp_path):
    with pytest.raises(DataError) as e:
        find_idx_files(tmp_path)
    msg = str(e.value)
    assert str(tmp_path) in msg and "apt-get install dataset-fashion-mnist" in msg
    for name in IDX_NAMES.values():
        assert name in msg
    # with only the training files there, only the test files are named
    write_idx(tmp_path / IDX_NAMES["train_images"], torch.zeros(1, 28, 28))
    write_idx(tmp_path / (IDX_NAMES["train_labels"] + ".gz"), torch.zeros(1))
    with pytest.raises(DataError) as e:
        find_idx_files(tmp_path)
    assert "t10k-images-idx3-ubyte" in str(e.value) and "train-images" not in str(e.value)


def test_load_idx_dataset_gives_the_tensors_written(idx_folder, tmp_path):
    gz = tmp_path / "gz"
    gz.mkdir()
    for name in IDX_NAMES.values():  # the same set gzipped, as Debian ships Fashion-MNIST
        (gz / f"{name}.gz").write_bytes(gzip.compress((idx_folder.path / name).read_bytes()))
    assert set(find_idx_files(gz).values()) == {gz / f"{n}.gz" for n in IDX_NAMES.values()}
    for folder in (idx_folder.path, gz):
        d = load_idx_dataset(folder)
        for split in ("train", "test"):
            images, labels = d[f"{split}_images"], d[f"{split}_labels"]
            assert images.dtype == torch.uint8 and images.shape[1:] == (1, 28, 28)
            assert torch.equal(images[:, 0], getattr(idx_folder, f"{split}_images"))
            assert labels.dtype == torch.int64 and torch.equal(labels, getattr(idx_folder, f"{split}_labels"))


def test_load_idx_dataset_rejects_mismatched_images_and_labels(idx_folder, tmp_path):
    for name in IDX_NAMES.values():
        shutil.copy(idx_folder.path / name, tmp_path / name)
    write_idx(tmp_path / IDX_NAMES["test_labels"], idx_folder.test_labels[:-1])
    with pytest.raises(DataError, match=IDX_NAMES["test_images"]):
        load_idx_dataset(tmp_path)


@pytest.mark.skipif(
    not all((FASHION_MNIST_DIR / f"{n}.gz").is_file() or (FASHION_MNIST_DIR / n).is_file() for n in IDX_NAMES.values()),
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_real_fashion_mnist_has_the_published_sizes():
    # Xiao, Rasul & Vollgraf (2017): 60,000 training and 10,000 test images of 28 x 28, 10 classes,
    # 6,000 training and 1,000 test images per class.
    d = load_idx_dataset()
    assert d["train_images"].shape == (60000, 1, 28, 28) and d["test_images"].shape == (10000, 1, 28, 28)
    assert torch.equal(torch.bincount(d["train_labels"]), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(d["test_labels"]), torch.full((10,), 1000))


# --------------------------------------------------------------------------------------------
# IDX sets that lie: well-formed files whose contents do not describe a data set


def _relabel(labels: torch.Tensor, old: int, new: int) -> torch.Tensor:
    return torch.where(labels == old, new, labels)


# id: (the tensors swapped in, given the good set; the file the message names; words it says)
LIES = {
    "train-label-200": (
        lambda s: {"train_labels": _relabel(s.train_labels, 9, 200)},
        "train_labels",
        "class(es) 9, 10, 11, 12, 13 and 186 more have no training images",
    ),
    "test-labels-reach-12": (
        lambda s: {"test_labels": _relabel(s.test_labels, 9, 12)},
        "test_labels",
        "label 12 is outside the training labels' 10 classes",
    ),
    "no-train-images": (
        lambda s: {"train_images": s.train_images[:0], "train_labels": s.train_labels[:0]},
        "train_images",
        "holds no images",
    ),
    "no-test-images": (
        lambda s: {"test_images": s.test_images[:0], "test_labels": s.test_labels[:0]},
        "test_images",
        "holds no images",
    ),
    "zero-sized-images": (lambda s: {"train_images": torch.zeros(320, 0, 28)}, "train_images", "images of 0x28 pixels"),
    "more-labels-than-images": (
        lambda s: {"train_labels": torch.cat([s.train_labels, s.train_labels[:5]])},
        "train_labels",
        "holds 320 images but",
    ),
    "fewer-test-labels": (lambda s: {"test_labels": s.test_labels[:-1]}, "test_labels", "holds 79 labels"),
    "labels-as-a-matrix": (
        lambda s: {"train_labels": s.train_labels.view(32, 10)},
        "train_labels",
        "expected a list of N labels",
    ),
    "images-as-a-list": (
        lambda s: {"test_images": s.test_images.flatten()},
        "test_images",
        "expected N x H x W images",
    ),
    "not-square": (lambda s: {"train_images": s.train_images[:, :, :20]}, "train_images", "images of 28x20 pixels"),
    "test-images-of-another-size": (
        lambda s: {"test_images": torch.zeros(80, 32, 32)},
        "test_images",
        "images of 32x32 pixels, but the training images",
    ),
    "one-flat-shade": (
        lambda s: {"train_images": torch.full((320, 28, 28), 7)},
        "train_images",
        "pixel std [0.0] is outside",
    ),
}


@pytest.mark.parametrize("lie", LIES.values(), ids=LIES.keys())
def test_idx_sets_that_lie_stop_the_run_before_it_starts_naming_the_file(idx_folder, tmp_path, capsys, lie):
    """Before: a label 200 made 201 classes, test labels beyond the training ones or a flat set
    failed (or trained on NaN) after the run folder was made, zero images divided by zero."""
    swap, key, words = lie
    data = write_idx_set(tmp_path / "lies", idx_folder, **swap(idx_folder))
    runs = tmp_path / "runs"
    rc, _, err = _run(
        capsys,
        "train",
        "--data",
        data,
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--image-size",
        "67",
        "--out",
        runs,
        "--name",
        "r",
    )
    line = _one_line_error(err)
    assert (
        rc == 1 and line.startswith("alexnet train: error: ") and str(data / IDX_NAMES[key]) in line and words in line
    ), line
    assert not runs.exists()  # refused before the run folder is made


def test_the_classes_are_the_training_labels_and_the_test_set_may_lack_some(idx_folder, tmp_path):
    # the rule: classes = highest training label + 1, each with training images; a test label
    # must be one of them, but a class may be missing from the test set
    few = write_idx_set(tmp_path / "few", idx_folder, test_labels=idx_folder.test_labels % 5)
    data = build_data(TrainConfig(data=str(few), batch_size=16), CPU)
    assert data.classes == [str(i) for i in range(10)] and data.num_val == 80


# --------------------------------------------------------------------------------------------
# Malformed IDX files


def _idx(*dims, body=b""):
    return bytes([0, 0, 0x08, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims) + body


GOOD_IDX = _idx(3, 2, 2, body=bytes(range(12)))


MALFORMED_IDX = {
    "plain-bytes-in-gz": ("x-idx3-ubyte.gz", GOOD_IDX, "cannot read"),
    # cut inside the bytes its header declares (the reader stops one byte past them)
    "gzip-cut-off": (
        "x-idx3-ubyte.gz",
        gzip.compress(_idx(3, 64, 64, body=bytes(range(256)) * 48))[:60],
        "cannot read",
    ),
    "gzip-damaged": (
        "x-idx3-ubyte.gz",
        (lambda z: z[:20] + bytes(b ^ 0xFF for b in z[20:30]) + z[30:])(gzip.compress(GOOD_IDX * 50)),
        "cannot read",
    ),
    "huge-dims": ("x-idx3-ubyte", _idx(2**32 - 1, 2**32 - 1, 2**32 - 1, 2**32 - 1, body=bytes(16)), "length"),
    "huge-dims-gz": ("x-idx3-ubyte.gz", gzip.compress(_idx(2**32 - 1, 2**32 - 1, 2**32 - 1, body=bytes(16))), "length"),
    "empty-file": ("x-idx3-ubyte", b"", "magic"),
}


@pytest.mark.parametrize("name, raw, words", MALFORMED_IDX.values(), ids=MALFORMED_IDX.keys())
def test_read_idx_rejects_more_malformed_files_naming_them(tmp_path, name, raw, words):
    path = tmp_path / name
    path.write_bytes(raw)
    with pytest.raises(DataError) as e:
        read_idx(path)
    assert str(path) in str(e.value) and words in str(e.value)


def test_read_idx_of_a_directory_or_no_elements_with_huge_dims(tmp_path):
    (tmp_path / "d-idx1-ubyte").mkdir()
    with pytest.raises(DataError, match="d-idx1-ubyte"):
        read_idx(tmp_path / "d-idx1-ubyte")
    path = tmp_path / "z-idx3-ubyte"
    path.write_bytes(_idx(0, 2**32 - 1, 2**32 - 1, 2**32 - 1))  # no elements, yet strides beyond int64
    with pytest.raises(DataError, match="too large"):
        read_idx(path)


@st.composite
def idx_files(draw) -> bytes:
    """IDX-like bytes: a mostly plausible magic, dims small or huge, a body of about the right
    size (exact, a little off, or arbitrary), sometimes cut off."""
    magic = bytes(
        [
            draw(st.sampled_from([0, 0, 0, 1])),
            draw(st.sampled_from([0, 0, 0, 0x80])),
            draw(st.sampled_from([0x08, 0x08, 0x09, 0x0D])),
            draw(st.integers(0, 6)),
        ]
    )
    dims = draw(st.lists(st.integers(0, 5) | st.integers(0, 2**32 - 1), max_size=6))
    size = math.prod(dims)
    if size > 300:
        size = draw(st.integers(0, 64))
    raw = magic + b"".join(d.to_bytes(4, "big") for d in dims) + draw(st.binary(min_size=size, max_size=size + 2))
    return raw[: draw(st.integers(0, len(raw)))] if draw(st.booleans()) else raw


@FUZZ
@given(
    raw=idx_files() | st.binary(max_size=64),
    gz=st.sampled_from(["plain", "gzip", "gzip-damaged"]),
    at=st.integers(0, 2**16),
)
def test_fuzz_idx_files_read_or_raise_data_error(fuzz_dir, raw, gz, at):
    path = fuzz_dir / ("fuzz-idx-ubyte" if gz == "plain" else "fuzz-idx-ubyte.gz")
    if gz != "plain":
        raw = bytearray(gzip.compress(raw))
        if gz == "gzip-damaged":  # two bytes flipped anywhere: header, deflate data or CRC/length trailer
            at %= len(raw) - 1
            raw[at], raw[at + 1] = raw[at] ^ 0x5A, raw[at + 1] ^ 0xA5
    path.write_bytes(raw)
    try:
        x = read_idx(path)
    except DataError as e:
        assert str(path) in str(e) and "\n" not in str(e)
    else:
        assert x.dtype == torch.uint8 and 1 <= x.dim() <= 4


# --------------------------------------------------------------------------------------------
# TensorBatches


def _constant_images(n: int) -> torch.Tensor:
    """Image i is uniformly 5 * i: its value says which image it is, whatever the crop or flip."""
    return (torch.arange(n) * 5).view(n, 1, 1, 1).expand(n, 1, 28, 28).to(torch.uint8).contiguous()


@pytest.mark.parametrize("size", [28, 67, 227])
def test_eval_batches_match_bilinear_interpolate_inside_the_border(idx_folder, size):
    images, labels = idx_folder.test_images[:20].unsqueeze(1), idx_folder.test_labels[:20]
    mean, std = 0.3, 0.2
    batches = _batches(images, labels, train=False, batch_size=8, image_size=size, mean=(mean,), std=(std,))
    assert len(batches) == 3
    x, y = map(torch.cat, zip(*batches))
    assert x.shape == (20, 1, size, size) and torch.equal(y, labels)  # evaluation keeps the order
    ref = (F.interpolate(images.float() / 255, size=(size, size), mode="bilinear", align_corners=False) - mean) / std
    # interpolate clamps at the border where grid_sample pads with zeros: compare the interior
    m = math.ceil(size / 28) + 1
    torch.testing.assert_close(x[..., m:-m, m:-m], ref[..., m:-m, m:-m], atol=2e-5, rtol=0)


def test_training_batches_cover_every_image_once_per_epoch_with_aligned_labels():
    n = 50
    batches = _batches(_constant_images(n), torch.arange(n), train=True, batch_size=16, image_size=67)
    assert len(batches) == 4
    for epoch in range(3):
        batches.set_epoch(epoch)
        seen = []
        for i, (x, y) in enumerate(batches):
            assert x.shape == (16 if i < 3 else 2, 1, 67, 67) and x.dtype == torch.float32
            assert y.shape == (len(x),)
            # the centre is never reached by the zero padding of a shift of <= 2 of 28 pixels
            centre = x[:, 0, 25:42, 25:42]
            assert torch.allclose(centre, (5 * y.float() / 255).view(-1, 1, 1).expand_as(centre), atol=1e-5)
            seen += y.tolist()
        assert sorted(seen) == list(range(n))


def test_training_batches_are_augmented(idx_folder):
    n = 48
    images = idx_folder.train_images[:n].unsqueeze(1)
    train = _batches(images, torch.arange(n), train=True, batch_size=n)
    x, y = next(iter(train))
    reference = _batches(images, torch.arange(n), train=False, batch_size=n).preprocess.tensor_batch(
        images[y].float() / 255
    )
    differs = [not torch.allclose(a, b, atol=1e-3) for a, b in zip(x, reference)]
    assert sum(differs) >= 0.9 * n


def test_a_gzip_stream_longer_than_its_header_says_costs_only_what_the_header_declares(tmp_path):
    """Before: a gzipped IDX file expanding to 2 GB was read whole (4.3 GB) before its length was
    checked. Here 64 MB of zeros behind a header of 10 images: the reader stops one byte past them."""
    import tracemalloc

    path = tmp_path / "bomb-idx3-ubyte.gz"
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(_header(10, 28, 28))
        for _ in range(64):
            f.write(bytes(1 << 20))
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="does not match its shape") as e:
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, peak  # the declared 7840 bytes and gzip's buffers, not the 64 MB
    assert str(path) in str(e.value)


def test_class_names_that_a_model_file_could_not_hold_are_refused_before_training(idx_folder, tmp_path):
    """Before: a duplicate name in classes.txt trained, then every checkpoint was refused."""
    root = write_idx_set(tmp_path / "named", idx_folder)
    (root / "classes.txt").write_text("\n".join(["shoe", "bag", "shoe"] + [f"c{i}" for i in range(7)]) + "\n")
    with pytest.raises(DataError, match=r"classes.txt: the class names must be .*'shoe' is there twice"):
        build_data(TrainConfig(data=str(root), image_size=67, workers=0), CPU)
