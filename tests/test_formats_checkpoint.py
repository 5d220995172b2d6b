"""formats/checkpoint.py: a damaged ``.pt`` is a one-line error, and the command line refuses a
checkpoint whose weights are another network's, saying which. Checkpoints are made by hand
(helpers.py): nothing here trains."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from alexnet.formats import CheckpointError, load_checkpoint, save_checkpoint
from helpers import _checkpoint, _fake_weights, _one_line_error, _run


@pytest.mark.parametrize("damage", ["truncated", "garbage", "text", "empty"])
def test_corrupt_checkpoint_is_one_line_error(damage, tmp_path, capsys):
    path = tmp_path / "broken.pt"
    save_checkpoint(_checkpoint(_fake_weights("alexnet", num_classes=10, in_channels=1)), path)
    data = path.read_bytes()
    garbage = torch.randint(0, 256, (4096,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)).numpy().tobytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": garbage, "text": b"hello world", "empty": b""}[damage])
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    rc, _, err = _run(capsys, "evaluate", "--checkpoint", path)
    assert rc == 1 and str(path) in _one_line_error(err)


def test_cli_refuses_a_mismatched_checkpoint(tmp_path, capsys):
    path = tmp_path / "owt.pt"
    save_checkpoint(_checkpoint(_fake_weights("alexnet_owt", num_classes=10, in_channels=1)), path)
    image = tmp_path / "image.png"
    Image.new("L", (28, 28)).save(image)
    rc, _, err = _run(capsys, "predict", image, "--checkpoint", path)
    assert rc == 1
    assert f"--checkpoint {path}: weights are alexnet_owt's" in _one_line_error(err)
