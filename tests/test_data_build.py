"""data/__init__.py: what ``build_data`` hands a run - the seeded hold-out split, the class indices,
the statistics, every bad image file listed at once (or skipped with ``skip_bad_images``) - and the
predict/evaluate guarantee: ``preprocess_image`` of a file equals its row of the evaluation batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from alexnet.cli import main
from alexnet.config import TrainConfig
from alexnet.data import DataError, build_data, preprocess_image
from alexnet.data.images import open_image
from alexnet.data.transforms import Preprocess
from helpers import CPU, FIXED_STATS, GOOD_PER_CLASS, _cfg, _check_reasons, _folder_cfg, make_folder


def _samples(loader):
    return loader.loader.dataset.samples


# --------------------------------------------------------------------------------------------
# Image folders


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


# --------------------------------------------------------------------------------------------
# Bad image files


def test_build_data_lists_every_bad_file_with_its_reason(bad_folder):
    root, expected = bad_folder
    with pytest.raises(DataError) as e:
        build_data(_cfg(root), CPU)
    first, *rest = str(e.value).splitlines()
    assert first == f"5 bad image file(s) in {root}; fix or remove them, or pass --skip-bad-images to train on the rest:"
    assert all(line.startswith("  ") for line in rest)
    _check_reasons([dict(zip(("path", "reason"), line.strip().split(": ", 1))) for line in rest], expected)


def test_cli_stops_before_training_naming_every_bad_file(capfd, bad_folder, tmp_path):
    root, expected = bad_folder
    out = tmp_path / "runs"
    argv = ["train", "--data", str(root), "--epochs", "1", "--batch-size", "8", "--image-size", "67", "--workers", "0", "--out", str(out)]
    code = main(argv)
    _, err = capfd.readouterr()
    assert code == 1 and "Traceback" not in err
    assert err.startswith(f"alexnet train: error: 5 bad image file(s) in {root}")
    assert all(path in err for path in expected)
    assert not out.exists()


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_bad_images_trains_on_the_rest_and_lists_them(bad_folder, workers):
    root, expected = bad_folder
    data = build_data(_cfg(root, skip_bad_images=True, workers=workers), CPU)
    _check_reasons(data.bad_files, expected)
    used = [p for loader in (data.train, data.val) for p, _ in loader.loader.dataset.samples]
    assert len(used) == data.num_train + data.num_val == 2 * GOOD_PER_CLASS
    assert not set(used) & set(expected)
    assert data.split["val"] == [p for p, _ in data.val.loader.dataset.samples] and data.num_val > 0
    for loader, n in ((data.train, data.num_train), (data.val, data.num_val)):
        seen = 0
        for x, y in loader:
            assert x.shape[1:] == (3, 67, 67) and torch.isfinite(x).all()
            seen += len(y)
        assert seen == n


def test_the_hold_out_split_is_the_one_after_deleting_the_bad_files(tmp_path):
    expected = make_folder(tmp_path)
    skipped = build_data(_cfg(tmp_path, skip_bad_images=True, val_fraction=0.1), CPU)
    for path in expected:
        Path(path).unlink()
    cleaned = build_data(_cfg(tmp_path, val_fraction=0.1), CPU)
    assert skipped.split == cleaned.split and cleaned.bad_files == []
    assert skipped.num_val == round(2 * GOOD_PER_CLASS * 0.1)  # the share of readable images


def test_bad_files_in_a_val_folder_are_listed_too(tmp_path):
    make_folder(tmp_path / "train", bad=False)
    expected = make_folder(tmp_path / "val")
    with pytest.raises(DataError) as e:
        build_data(_cfg(tmp_path), CPU)
    assert all(path in str(e.value) for path in expected)
    data = build_data(_cfg(tmp_path, skip_bad_images=True), CPU)
    _check_reasons(data.bad_files, expected)
    assert data.split is None and data.num_val == 2 * GOOD_PER_CLASS


def test_a_folder_of_only_bad_files_is_a_clear_error(tmp_path):
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(3):
            (tmp_path / c / f"{i}.png").write_bytes(b"")
    with pytest.raises(DataError, match="no readable training images left after skipping 6 bad file"):
        build_data(_cfg(tmp_path, skip_bad_images=True), CPU)


# --------------------------------------------------------------------------------------------
# IDX sets, and the predict/evaluate guarantee


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
