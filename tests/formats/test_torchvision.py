"""formats/torchvision.py: ``predict --weights`` takes torchvision's AlexNet only, and says what a
file is when it holds another variant's weights or a training checkpoint."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from helpers import _checkpoint, _fake_weights, _one_line_error, _run


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            lambda: _fake_weights("alexnet"),
            (
                "these are alexnet's weights, not torchvision's alexnet_owt; load a training checkpoint or an export "
                "of them with --checkpoint"
            ),
        ),
        (lambda: _fake_weights("alexnet2012"), "these are alexnet2012's weights, not torchvision's alexnet_owt"),
        (lambda: _fake_weights("alexnet_owt", in_channels=1), "weights have 1 input channels, expected 3"),
        (lambda: _checkpoint(_fake_weights("alexnet_owt")), "a training checkpoint; load it with --checkpoint"),
    ],
)
def test_weights_flag_refuses_other_networks(content, message, tmp_path, capsys):
    path = tmp_path / "weights.pth"
    torch.save(content(), path)
    image = tmp_path / "photo.png"
    Image.new("RGB", (64, 64)).save(image)
    rc, _, err = _run(capsys, "predict", image, "--weights", path)
    assert rc == 1
    assert message in _one_line_error(err)
