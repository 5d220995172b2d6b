"""data/__init__.py: what ``build_data`` hands a run - the seeded hold-out split, the class indices,
the statistics, every bad image file listed at once (or skipped with ``skip_bad_images``) - and the
predict/evaluate guarantee: ``preprocess_image`` of a file equals its row of the evaluation batch."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image

from alexnet.cli import main
from alexnet.config import TrainConfig
from alexnet.data import DataError, build_data, build_eval_data, preprocess_image
from alexnet.data.folder import holdout, scan_folder
from alexnet.data.images import open_image
from alexnet.data.transforms import Preprocess

from helpers import (
    CPU,
    FIXED_STATS,
    GOOD_PER_CLASS,
    _cfg,
    _check_reasons,
    _folder_cfg,
    _one_line_error,
    _run,
    make_folder,
)


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
    assert (
        first == f"5 bad image file(s) in {root}; fix or remove them, or pass --skip-bad-images to train on the rest:"
    )
    assert all(line.startswith("  ") for line in rest)
    _check_reasons([dict(zip(("path", "reason"), line.strip().split(": ", 1))) for line in rest], expected)


def test_cli_stops_before_training_naming_every_bad_file(capfd, bad_folder, tmp_path):
    root, expected = bad_folder
    out = tmp_path / "runs"
    argv = [
        "train",
        "--data",
        str(root),
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--image-size",
        "67",
        "--workers",
        "0",
        "--out",
        str(out),
    ]
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
# Folders that lie: a half split layout, classes without training images


def _train(capsys, root, runs, *flags):
    """``alexnet train`` on ``root``: exit code and the one error line, if any."""
    rc, _, err = _run(
        capsys,
        "train",
        "--data",
        root,
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--image-size",
        "67",
        "--workers",
        "0",
        "--out",
        runs,
        "--name",
        "r",
        *flags,
    )
    return rc, (_one_line_error(err) if rc else "")


@pytest.mark.parametrize(("have", "lack"), [("train", "val"), ("val", "train")])
def test_a_half_split_layout_is_refused_saying_what_is_missing(tmp_path, capsys, have, lack):
    """Before: train/ alone was read as a plain folder with one class called "train"."""
    root = tmp_path / "data"
    make_folder(root / have, bad=False)
    rc, line = _train(capsys, root, tmp_path / "runs")
    assert rc == 1 and line == (
        f"alexnet train: error: --data {root}: has {have}/ but no {lack}/; a split layout needs both "
        f"({root}/train/<class>/..., {root}/val/<class>/...), or rename {have}/ if it is a class"
    )
    assert not (tmp_path / "runs").exists()
    with pytest.raises(DataError, match=f"has {have}/ but no {lack}/"):  # evaluation reads the layout the same way
        build_eval_data(str(root), Preprocess.for_folder(image_size=67, stats=FIXED_STATS), ["a", "b"])


def test_a_class_folder_without_images_is_named(tmp_path, capsys):
    """Before: the empty class got an output the model could never learn, silently."""
    make_folder(tmp_path / "data", bad=False)
    (tmp_path / "data" / "c").mkdir()
    (tmp_path / "data" / "c" / "notes.txt").write_text("no images here")
    rc, line = _train(capsys, tmp_path / "data", tmp_path / "runs")
    assert rc == 1 and line.startswith(
        f"alexnet train: error: --data {tmp_path / 'data'}: class 'c' has no training images: its folder "
        f"{tmp_path / 'data' / 'c'} holds no image files"
    )
    assert not (tmp_path / "runs").exists()


def test_a_class_of_only_bad_files_is_named_when_skipping_them(tmp_path, capsys):
    make_folder(tmp_path / "data", bad=False)
    (tmp_path / "data" / "c").mkdir()
    for i in range(3):
        (tmp_path / "data" / "c" / f"{i}.png").write_bytes(b"")
    rc, line = _train(capsys, tmp_path / "data", tmp_path / "runs", "--skip-bad-images")
    assert rc == 1 and line.endswith("class 'c' has no training images: all its 3 file(s) are bad")
    assert not (tmp_path / "runs").exists()


def test_a_class_the_hold_out_takes_whole_is_named(tmp_path, capsys):
    root = tmp_path / "data"
    make_folder(root, bad=False)
    (root / "c").mkdir()
    (root / "c" / "only.png").write_bytes(Path(root / "a" / "good1.png").read_bytes())
    samples, _ = scan_folder(root)
    seed = next(s for s in range(100) if all(label != 2 for _, label in holdout(samples, s, 0.25)[0]))
    rc, line = _train(capsys, root, tmp_path / "runs", "--seed", str(seed), "--val-fraction", "0.25")
    assert rc == 1 and line.endswith(
        "class 'c' has no training images: all its 1 image(s) were held out for validation; add images or lower "
        "--val-fraction"
    )


def test_a_hold_out_of_every_image_is_refused(image_folder, tmp_path, capsys):
    # 24 images: a fraction of 0.99 rounds to all 24 (before: a TypeError traceback from the statistics of no images)
    rc, line = _train(capsys, image_folder, tmp_path / "runs", "--val-fraction", "0.99")
    assert rc == 1 and line == (
        f"alexnet train: error: --data {image_folder}: --val-fraction 0.99 of 24 images holds out all of them; "
        "lower it to leave some for training"
    )
    assert not (tmp_path / "runs").exists()
    # 0.95 holds out 23: one image is left, so two of the three classes have none (the next rule)
    rc, line = _train(capsys, image_folder, tmp_path / "runs", "--val-fraction", "0.95")
    assert rc == 1 and "has no training images: all its 8 image(s) were held out" in line


def test_evaluation_refuses_data_of_the_other_kind_size_or_labels(idx_folder, image_folder):
    tensor = Preprocess.for_tensors(mode="L", source_size=28, image_size=67, stats={"mean": [0.3], "std": [0.3]})
    folder = Preprocess.for_folder(image_size=67, stats=FIXED_STATS)
    with pytest.raises(DataError, match="the model was trained on IDX files, this is an image folder"):
        build_eval_data(str(image_folder), tensor, ["blue", "green", "red"])
    with pytest.raises(DataError, match="the model was trained on an image folder, this is IDX files"):
        build_eval_data(str(idx_folder.path), folder, [str(i) for i in range(10)])
    with pytest.raises(DataError, match="images of 28x28 pixels, but the model's training images are 32x32"):
        build_eval_data(str(idx_folder.path), replace(tensor, source_size=32), [str(i) for i in range(10)])
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: label 9 is outside the model's 5 classes \(0..4\)"):
        build_eval_data(str(idx_folder.path), tensor, [str(i) for i in range(5)])


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
        prep = Preprocess.for_folder(image_size=67, stats=FIXED_STATS)
        assert torch.equal(
            x,
            prep.to_input(
                prep.folder_transform(train=False)(open_image(path, "RGB", decode_side=prep.decode_side))[None]
            )[0],
        )
        assert torch.equal(x, row)
