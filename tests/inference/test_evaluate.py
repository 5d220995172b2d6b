"""evaluate.py: a model file evaluated on its own validation images, decoding nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import alexnet.data.folder
import alexnet.data.idx
import alexnet.data.loader

from helpers import _run as _cli

# The test-size network (models.py): what is decoded does not depend on the network's size.
TINY = ["--model", "alexnet_tiny"]
FAST = [*TINY, "--batch-size", "32", "--image-size", "67", "--seed", "1"]


@pytest.fixture
def decodes(monkeypatch):
    """Every image path (or IDX file) that is opened, in order: by the bad-file scan and by the batches."""
    opened = []
    real_open, real_idx = alexnet.data.folder.open_image, alexnet.data.idx.read_idx
    for module in (alexnet.data.folder, alexnet.data.loader):
        monkeypatch.setattr(
            module, "open_image", lambda path, *a, **k: opened.append(str(path)) or real_open(path, *a, **k)
        )
    monkeypatch.setattr(alexnet.data.idx, "read_idx", lambda path: opened.append(str(path)) or real_idx(path))
    return opened


def test_evaluating_a_plain_folder_decodes_only_its_held_out_images(image_folder, tmp_path, capsys, decodes):
    train = [
        "train",
        "--data",
        image_folder,
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--image-size",
        "67",
        "--workers",
        "0",
        *TINY,
    ]
    assert _cli(capsys, *train, "--val-fraction", "0.25", "--out", tmp_path, "--name", "f")[0] == 0
    held_out = json.loads((tmp_path / "f" / "split.json").read_text())["val"]
    decodes.clear()
    rc, out, _ = _cli(capsys, "evaluate", "--checkpoint", tmp_path / "f" / "checkpoints" / "last.pt", "--json")
    assert rc == 0
    assert sorted(set(decodes)) == sorted(held_out)  # the scan and the batches read the hold-out, nothing else
    assert json.loads(out)["images"] == len(held_out)


def test_evaluating_a_split_folder_decodes_only_val(image_folder_split, tmp_path, capsys, decodes):
    train = [
        "train",
        "--data",
        image_folder_split,
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--image-size",
        "67",
        "--workers",
        "0",
        *TINY,
    ]
    assert _cli(capsys, *train, "--out", tmp_path, "--name", "s")[0] == 0
    decodes.clear()
    assert _cli(capsys, "evaluate", "--checkpoint", tmp_path / "s" / "checkpoints" / "last.pt")[0] == 0
    assert decodes and all(Path(p).is_relative_to(image_folder_split / "val") for p in decodes)


def test_evaluating_idx_data_reads_only_the_test_files(idx_folder, tmp_path, capsys, decodes):
    assert (
        _cli(capsys, "train", "--data", idx_folder.path, *FAST, "--epochs", "1", "--out", tmp_path, "--name", "i")[0]
        == 0
    )
    decodes.clear()
    assert _cli(capsys, "evaluate", "--checkpoint", tmp_path / "i" / "checkpoints" / "last.pt")[0] == 0
    assert sorted(Path(p).name for p in decodes) == ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def test_an_output_folder_that_cannot_be_written_is_refused_before_evaluating(idx_folder, tmp_path, capsys, decodes):
    """Before: the whole evaluation ran, then its result was lost when evaluation.json could not be written."""
    from alexnet.formats import save_checkpoint

    from helpers import _checkpoint, _fake_weights

    state = _checkpoint(_fake_weights("alexnet", num_classes=10, in_channels=1), data=str(idx_folder.path))
    save_checkpoint(state, tmp_path / "model.pt")
    (tmp_path / "file").write_text("a file, not a folder")
    rc, _, err = _cli(capsys, "evaluate", "--checkpoint", tmp_path / "model.pt", "--out", tmp_path / "file" / "out")
    assert rc == 2 and "--out" in err and "cannot write there" in err and "\n" not in err.strip()
    assert decodes == []  # no image was read
