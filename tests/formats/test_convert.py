"""``alexnet convert`` of torchvision's weights: an ``alexnet-owt-*.pth`` (a bare state_dict, here
of a seeded ``torchvision.models.alexnet()``) becomes a checkpoint or a safetensors export holding
ImageNet's class names and torchvision's preprocessing, whose network gives torchvision's outputs
and whose predictions are those of ``predict --weights`` on the original file."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torchvision.models import AlexNet_Weights, alexnet

from alexnet.formats import read_model

from helpers import _run


@pytest.mark.slow
@pytest.mark.parametrize("out", ["owt.pt", "owt.safetensors"])
def test_torchvision_weights_convert_with_their_classes_and_preprocessing(out, tmp_path, capsys):
    torch.manual_seed(0)
    reference = alexnet().eval()
    weights = tmp_path / "alexnet-owt-7be5be79.pth"
    torch.save(reference.state_dict(), weights)
    rc, stdout, err = _run(capsys, "convert", weights, "--to", tmp_path / out)
    assert rc == 0, err
    model = read_model(tmp_path / out)
    assert model.classes == list(AlexNet_Weights.IMAGENET1K_V1.meta["categories"])
    assert model.config["model"] == "alexnet_owt"
    p = model.preprocess  # torchvision's AlexNet_Weights.IMAGENET1K_V1.transforms()
    assert (p.kind, p.image_size, p.resize, p.mean, p.std) == (
        "folder",
        224,
        256,
        (0.485, 0.456, 0.406),
        (0.229, 0.224, 0.225),
    )
    assert (p.channel_order, p.scale, p.resize_to) == ("RGB", 1, "shorter")
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model.network().eval()(x), reference(x), rtol=0, atol=0)
    image = tmp_path / "photo.png"
    Image.effect_mandelbrot((300, 240), (-2, -1.2, 1, 1.2), 64).convert("RGB").save(image)
    rc, converted, _ = _run(capsys, "predict", image, "--checkpoint", tmp_path / out, "--json")
    rc2, original, _ = _run(capsys, "predict", image, "--weights", weights, "--json")
    assert rc == rc2 == 0 and converted == original
