"""data.py: IDX files, the on-device tensor pipeline, image folders, and the predict/evaluate guarantee.

References used instead of restating the code: the tensors written into the IDX files, the
published Fashion-MNIST counts, ``F.interpolate`` for the resize, geometry (a flip is
``x.flip(-1)``, a shift moves a dot by shift x S / 28), plain numpy statistics, and the
evaluation batches themselves for single-image preprocessing. Everything runs on small synthetic
data from conftest.py in a few seconds on 2 CPU cores.
"""

from __future__ import annotations

import gzip
import math
import random
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from alexnet.config import TrainConfig
from alexnet.data import DataError, TensorBatches, build_data, preprocess_image
from alexnet.data.folder import channel_stats, scan_folder
from alexnet.data.idx import FASHION_MNIST_DIR, IDX_FILES, find_idx_files, load_idx_dataset, read_idx
from alexnet.data.images import open_image
from alexnet.data.transforms import MAX_SHIFT, Preprocess, random_flips_and_shifts, resample
from conftest import CLASS_COLOURS, IDX_NAMES, write_idx

CPU = torch.device("cpu")
CLASS_CHANNEL = {"red": 0, "green": 1, "blue": 2}


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
# resample and TensorBatches


def _batches(images, labels, *, train, batch_size=16, image_size=67, mean=(0.0,), std=(1.0,), seed=0):
    return TensorBatches(
        images, labels, batch_size=batch_size, train=train, device=CPU, seed=seed,
        preprocess=Preprocess.for_tensors(mode="L", source_size=images.shape[-1], image_size=image_size, stats={"mean": mean, "std": std}),
    )  # fmt: skip


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


def test_training_order_is_fixed_by_seed_and_epoch(idx_folder):
    images, n = idx_folder.train_images[:64].unsqueeze(1), 64

    def epoch(seed, e):
        b = _batches(images, torch.arange(n), train=True, seed=seed)
        b.set_epoch(e)
        x, y = map(torch.cat, zip(*b))
        return x, y

    x0, y0 = epoch(0, 0)
    x0b, y0b = epoch(0, 0)
    assert torch.equal(y0, y0b) and torch.equal(x0, x0b)  # same augmentation too
    assert not torch.equal(y0, epoch(0, 1)[1])
    assert not torch.equal(y0, epoch(1, 0)[1])
    assert not torch.equal(y0, torch.arange(n))


def test_training_batches_are_augmented(idx_folder):
    n = 48
    images = idx_folder.train_images[:n].unsqueeze(1)
    train = _batches(images, torch.arange(n), train=True, batch_size=n)
    x, y = next(iter(train))
    reference = _batches(images, torch.arange(n), train=False, batch_size=n).preprocess.tensor_batch(images[y].float() / 255)
    differs = [not torch.allclose(a, b, atol=1e-3) for a, b in zip(x, reference)]
    assert sum(differs) >= 0.9 * n


def test_random_flips_and_shifts_follow_the_paper():
    flip, shift = random_flips_and_shifts(20000, torch.Generator().manual_seed(0))
    assert flip.dtype == torch.bool and 0.48 < flip.float().mean() < 0.52
    assert shift.shape == (20000, 2) and shift.abs().max() <= MAX_SHIFT
    assert shift.min() < -0.95 * MAX_SHIFT and shift.max() > 0.95 * MAX_SHIFT


def test_resample_flip_is_flipping_the_input():
    x = torch.rand(4, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    for size in (28, 67, 227):
        flipped = resample(x, size, flip=torch.ones(4, dtype=torch.bool))
        torch.testing.assert_close(flipped, resample(x.flip(-1), size), atol=1e-5, rtol=0)  # float rounding of the grid
        mixed = resample(x, size, flip=torch.tensor([True, False, True, False]))
        torch.testing.assert_close(mixed[1::2], resample(x[1::2], size), atol=0, rtol=0)


def test_resample_without_augmentation_equals_evaluation():
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    plain = resample(x, 67)
    assert torch.equal(resample(x, 67, flip=torch.zeros(3, dtype=torch.bool), shift=torch.zeros(3, 2)), plain)


@pytest.mark.parametrize("sx, sy", [(2.0, 0.0), (-1.5, 0.0), (0.0, 1.25), (0.75, -2.0)])
def test_a_shift_of_s_source_pixels_moves_a_dot_by_s_times_the_scale(sx, sy):
    size = 112  # 4 output pixels per source pixel
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 12, 14] = 1.0  # row 12, column 14

    def centroid(img):
        img = img[0, 0].double()
        rows, cols = torch.meshgrid(torch.arange(size, dtype=torch.double), torch.arange(size, dtype=torch.double), indexing="ij")
        return (img * cols).sum() / img.sum(), (img * rows).sum() / img.sum()

    cx0, cy0 = centroid(resample(x, size))
    cx, cy = centroid(resample(x, size, shift=torch.tensor([[sx, sy]])))
    assert cx - cx0 == pytest.approx(sx * size / 28, abs=1e-3)  # positive x: to the right
    assert cy - cy0 == pytest.approx(sy * size / 28, abs=1e-3)  # positive y: down
    assert cx0 == pytest.approx((14 + 0.5) * size / 28 - 0.5, abs=1e-3)  # pixel centres line up


# --------------------------------------------------------------------------------------------
# Image files and folders


def test_open_image_converts_every_kind_keeping_its_size(image_set):
    kinds = set()
    for f in image_set.files:
        kinds.add(f.kind)
        with Image.open(f.path) as raw:
            assert raw.mode == f.mode
        rgb, gray = open_image(f.path, "RGB"), open_image(f.path, "L")
        assert rgb.mode == "RGB" and gray.mode == "L"
        assert rgb.size == f.size and gray.size == f.size
        a = np.asarray(rgb, dtype=np.float64)
        if f.kind not in ("gray_png", "gray16_png"):  # the class colour survives the conversion
            assert a.mean(axis=(0, 1)).argmax() == CLASS_CHANNEL[f.label], f
        if f.kind == "rgba_png":
            assert (a[:, 0] == 255).all()  # alpha 0 -> white, not the hidden colour
        if f.kind == "palette_transparent_png":
            assert (a[0] == 255).all()
    assert len(kinds) == 8


def test_open_image_transparency_and_16_bit_values(tmp_path):
    rgba = np.zeros((2, 3, 4), dtype=np.uint8)
    rgba[..., :3] = (200, 10, 10)
    rgba[0, 0, 3], rgba[1, 2, 3] = 0, 255  # one transparent, one opaque pixel, the rest transparent too
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    rgb = np.asarray(open_image(tmp_path / "a.png", "RGB"))
    assert rgb[0, 0].tolist() == [255, 255, 255] and rgb[1, 2].tolist() == [200, 10, 10]
    assert np.asarray(open_image(tmp_path / "a.png", "L"))[0, 0] == 255

    la = Image.fromarray(np.dstack([np.full((1, 2), 30, np.uint8), np.array([[0, 255]], np.uint8)]), mode="LA")
    la.save(tmp_path / "la.png")
    assert np.asarray(open_image(tmp_path / "la.png", "L")).tolist() == [[255, 30]]

    values = np.array([[0, 257 * 100, 65535, 32768]], dtype=np.uint16)  # 16 bits: 0, 100, 255, 128 in 8
    Image.fromarray(values).save(tmp_path / "g16.png")
    gray = np.asarray(open_image(tmp_path / "g16.png", "L")).astype(int)
    assert np.abs(gray - [[0, 100, 255, 128]]).max() <= 1
    assert np.asarray(open_image(tmp_path / "g16.png", "RGB"))[0, 2].tolist() == [255, 255, 255]


def test_scan_folder_lists_sorted_classes_and_every_image(image_set, tmp_path):
    samples, classes = scan_folder(image_set.path)
    assert classes == image_set.classes == sorted(CLASS_COLOURS)
    expected = sorted((str(f.path), classes.index(f.label)) for f in image_set.files)
    assert sorted(samples) == expected and len(samples) == 24

    # hidden folders are not classes and other files are not images
    root = tmp_path / "scan"
    shutil.copytree(image_set.path, root)
    (root / ".cache").mkdir()
    shutil.copy(image_set.files[0].path, root / ".cache" / "x.jpg")
    (root / "blue" / "notes.txt").write_text("not an image")
    samples2, classes2 = scan_folder(root)
    assert classes2 == classes and len(samples2) == 24


def test_scan_folder_errors_name_the_folder(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path)):
        scan_folder(tmp_path)  # no class folders
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_text("")
    with pytest.raises(DataError, match=str(tmp_path)):
        scan_folder(tmp_path)  # no images


FIXED_STATS = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


def _folder_cfg(folder, **kw):
    return TrainConfig(data=str(folder), workers=0, image_size=67, batch_size=8, **kw)


def _samples(loader):
    return loader.loader.dataset.samples


def test_hold_out_split_is_seeded_disjoint_covering_and_recorded(image_set):
    all_paths = sorted(str(f.path) for f in image_set.files)
    splits = {}
    for seed in (0, 0, 1):
        data = build_data(_folder_cfg(image_set.path, seed=seed, val_fraction=0.25), CPU, stats=FIXED_STATS)
        train, val = [p for p, _ in _samples(data.train)], [p for p, _ in _samples(data.val)]
        assert not set(train) & set(val) and sorted(train + val) == all_paths
        assert len(val) == data.num_val == 6 and data.num_train == 18
        assert data.split == {"seed": seed, "val_fraction": 0.25, "val": val}
        assert data.classes == image_set.classes and data.source == str(image_set.path)
        splits.setdefault(seed, []).append(val)
    assert splits[0][0] == splits[0][1]
    assert set(splits[0][0]) != set(splits[1][0])


def test_train_and_val_folders_share_the_training_class_indices(image_set_split, image_folder_split):
    train_set, val_set = image_set_split
    data = build_data(_folder_cfg(image_folder_split), CPU, stats=FIXED_STATS)
    assert data.classes == ["blue", "green", "red"] and data.split is None
    assert data.num_train == 18 and data.num_val == 6
    val = dict(_samples(data.val))
    for f in val_set.files:
        assert val[str(f.path)] == data.classes.index(f.label)  # red is 2, as in train/, not 1
    assert sorted(val.values()) == [0, 0, 0, 2, 2, 2]


def test_folder_loaders_give_normalized_batches_in_a_fixed_order(image_folder):
    data = build_data(_folder_cfg(image_folder, val_fraction=0.25), CPU, stats=FIXED_STATS)
    assert len(data.train) == 3 and len(data.val) == 1
    x, y = next(iter(data.train))
    assert x.shape == (8, 3, 67, 67) and x.dtype == torch.float32 and y.shape == (8,)
    xv, yv = next(iter(data.val))
    assert xv.shape == (6, 3, 67, 67)
    assert data.preprocess.to_dict() == {"kind": "folder", "mode": "RGB", "image_size": 67, "resize": 77, **FIXED_STATS}

    def order(epoch):
        data.train.set_epoch(epoch)
        return torch.cat([y for _, y in data.train]).tolist()

    assert order(0) == order(0) != order(1)


def test_channel_stats_match_numpy(image_set):
    samples, _ = scan_folder(image_set.path)
    mean, std = channel_stats(samples, "RGB", limit=len(samples), size=32)
    pixels = np.stack([
        TF.resize(TF.pil_to_tensor(open_image(p, "RGB")), [32, 32], antialias=True).numpy() / 255.0
        for p, _ in samples
    ])  # (N, 3, 32, 32)  # fmt: skip
    np.testing.assert_allclose(mean, pixels.mean(axis=(0, 2, 3)), rtol=1e-9)
    np.testing.assert_allclose(std, pixels.std(axis=(0, 2, 3)), rtol=1e-6)
    # the class colours pull the channel means apart from grey
    assert len(mean) == 3 and all(0 < m < 1 for m in mean) and all(0 < s < 0.5 for s in std)


def test_channel_stats_of_a_subset_are_a_seeded_sample(image_set):
    samples, _ = scan_folder(image_set.path)
    a, b = channel_stats(samples, "L", limit=5, size=16, seed=3), channel_stats(samples, "L", limit=5, size=16, seed=3)
    assert a == b and len(a[0]) == 1
    chosen = random.Random(3).sample(samples, 5)
    assert channel_stats(chosen, "L", limit=5, size=16)[0] == pytest.approx(a[0], rel=1e-12)


def test_idx_data_stats_and_preprocess(idx_folder):
    data = build_data(TrainConfig(data=str(idx_folder.path), batch_size=16), CPU)
    pixels = idx_folder.train_images.double() / 255
    assert data.preprocess.mean[0] == pytest.approx(pixels.mean().item(), rel=1e-5)
    assert data.preprocess.std[0] == pytest.approx(pixels.std().item(), rel=1e-4)
    assert data.num_train == 320 and data.num_val == 80 and len(data.classes) == 10
    assert data.preprocess.kind == "tensor" and data.preprocess.source_size == 28


def test_preprocess_image_equals_the_evaluation_batch_for_idx_data(idx_folder, tmp_path):
    # The predict/evaluate guarantee: a 28 x 28 PNG of a test image becomes exactly the tensor the
    # evaluation batches hold for that image.
    data = build_data(TrainConfig(data=str(idx_folder.path), batch_size=16, image_size=67), CPU)
    batch, labels = next(iter(data.val))
    assert torch.equal(labels, idx_folder.test_labels[:16])
    for i in (0, 7, 15):
        path = tmp_path / f"{i}.png"
        Image.fromarray(idx_folder.test_images[i].numpy(), mode="L").save(path)
        x = preprocess_image(path, data.preprocess)
        assert x.shape == (1, 67, 67)
        assert torch.equal(x, batch[i])


def test_preprocess_image_equals_the_evaluation_batch_for_folders(image_folder):
    data = build_data(_folder_cfg(image_folder, val_fraction=0.25), CPU, stats=FIXED_STATS)
    batch, _ = next(iter(data.val))
    for (path, _), row in zip(_samples(data.val), batch):
        x = preprocess_image(path, data.preprocess)
        transform = Preprocess.for_folder(image_size=67, stats=FIXED_STATS).folder_transform(train=False)
        assert torch.equal(x, transform(open_image(path, "RGB")))
        assert torch.equal(x, row)
