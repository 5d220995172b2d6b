"""data/folder.py: listing image folders, the bad-file scan, channel statistics (against plain
numpy), and the loaders: normalized batches in a seeded order, and a file gone bad after the scan
as one line from the main process, never a loader worker's traceback."""

from __future__ import annotations

import multiprocessing
import os
import random
import shutil

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from alexnet.data import DataError, ImageError, build_data
from alexnet.data.folder import scan_folder, scan_images
from alexnet.data.images import open_image
from alexnet.data.stats import channel_stats

from conftest import CLASS_COLOURS
from helpers import CPU, FIXED_STATS, _cfg, _check_reasons, _folder_cfg, make_folder


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


def test_scan_images_is_the_same_with_workers(bad_folder):
    samples, _ = scan_folder(bad_folder[0])
    serial = scan_images(samples, "RGB", 0)
    _check_reasons(serial, bad_folder[1])
    assert scan_images(samples, "RGB", 2, cache=False) == serial


def test_channel_stats_match_numpy(image_set):
    samples, _ = scan_folder(image_set.path)
    mean, std = channel_stats(samples, "RGB", limit=len(samples), size=32)
    pixels = np.stack(
        [
            TF.resize(TF.pil_to_tensor(open_image(p, "RGB")), [32, 32], antialias=True).numpy() / 255.0
            for p, _ in samples
        ]
    )  # (N, 3, 32, 32)
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


def test_folder_loaders_give_normalized_batches_in_a_fixed_order(image_folder):
    data = build_data(_folder_cfg(image_folder, val_fraction=0.25), CPU, stats=FIXED_STATS)
    assert len(data.train) == 3 and len(data.val) == 1
    x, y = next(iter(data.train))
    assert x.shape == (8, 3, 67, 67) and x.dtype == torch.float32 and y.shape == (8,)
    xv, yv = next(iter(data.val))
    assert xv.shape == (6, 3, 67, 67)
    assert data.preprocess.to_dict() == {
        "kind": "folder",
        "mode": "RGB",
        "image_size": 67,
        "resize": 77,
        "decode": "reduced",
        **FIXED_STATS,
    }

    def order(epoch):
        data.train.set_epoch(epoch)
        return torch.cat([y for _, y in data.train]).tolist()

    assert order(0) == order(0) != order(1)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_file_gone_bad_after_the_scan_is_one_line_from_the_main_process(tmp_path, workers):
    make_folder(tmp_path, bad=False)
    data = build_data(_cfg(tmp_path, workers=workers), CPU)
    victim = data.train.loader.dataset.samples[3][0]
    with open(victim, "r+b") as f:
        f.truncate(100)
    before = set(multiprocessing.active_children())
    with pytest.raises(ImageError) as e:
        for _ in data.train:
            pass
    message = str(e.value)
    assert message.startswith(f"{victim}: ") and "changed since" in message
    assert "\n" not in message and "Traceback" not in message and "worker" not in message
    # the loader's workers ended with the epoch, though the error (and through it the loader) is kept
    assert set(multiprocessing.active_children()) <= before


def test_a_class_folder_whose_name_is_not_utf8_is_refused_before_the_scan(tmp_path):
    """Before: it trained, then the service answered 500 to every request (its name cannot be JSON)."""
    make_folder(tmp_path / "data", bad=False)
    os.rename(tmp_path / "data" / "b", os.fsencode(tmp_path / "data") + b"/caf\xe9")  # Latin-1, not UTF-8
    with pytest.raises(DataError, match=r"class folders' names must be text: 'caf\\udce9' is not UTF-8") as e:
        scan_folder(tmp_path / "data")
    assert "\n" not in str(e.value)
