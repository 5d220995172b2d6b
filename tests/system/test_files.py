"""formats/files.py: untrusted PyTorch files are read without running code from them - a checkpoint
crafted to run code when unpickled is refused in one line, by ``load_checkpoint`` and by every
command that reads a model file, and runs nothing."""

from __future__ import annotations

import pathlib

import pytest
import torch
from PIL import Image

from alexnet.formats import FORMAT, CheckpointError, load_checkpoint

from helpers import _one_line_error, _run


class _Touch:
    """Unpickles as ``pathlib.Path.touch(marker)``: the harmless stand-in for any code at all."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def _evil(path: pathlib.Path, marker: pathlib.Path) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": FORMAT, "model": {"features.0.weight": torch.zeros(1)}, "config": _Touch(marker)}, path)
    return path


def test_the_crafted_file_really_runs_code_when_loaded_unsafely(tmp_path):
    """Proves the payload is live, so the refusals below mean something."""
    marker = tmp_path / "ran"
    torch.load(_evil(tmp_path / "evil.pt", marker), weights_only=False)
    assert marker.exists()


def test_load_checkpoint_refuses_code_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    with pytest.raises(CheckpointError, match="refused") as e:
        load_checkpoint(_evil(tmp_path / "evil.pt", marker))
    assert "\n" not in str(e.value) and "weights_only=False" not in str(e.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    "how", ["predict --checkpoint", "evaluate --checkpoint", "predict --weights", "train --resume"]
)
def test_cli_refuses_code_and_runs_nothing(how, tmp_path, capsys):
    marker = tmp_path / "ran"
    image = tmp_path / "image.png"
    Image.new("L", (28, 28)).save(image)
    argv = {
        "predict --checkpoint": ["predict", image, "--checkpoint", _evil(tmp_path / "evil.pt", marker)],
        "evaluate --checkpoint": ["evaluate", "--checkpoint", _evil(tmp_path / "evil.pt", marker)],
        "predict --weights": ["predict", image, "--weights", _evil(tmp_path / "evil.pth", marker)],
        "train --resume": ["train", "--resume", _evil(tmp_path / "run/checkpoints/last.pt", marker).parent.parent],
    }[how]
    rc, _, err = _run(capsys, *argv)
    assert rc == 1
    assert "refused" in _one_line_error(err)
    assert not marker.exists()
