"""alexnet embed: the features of every image of a data set (or of files) from any model file, with
labels, class names, paths and splits. FC7 equals Predictor.embed image by image; FC6 equals a
forward written out layer by layer; an ImageNet model embeds grayscale IDX images through its
own pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from alexnet.inference.embed import embed
from alexnet.inference.predict import Predictor
from alexnet.models import build_model

from helpers import _checkpoint, _main, _one_line_error

MODEL = "alexnet_tiny"  # the document's layers at a test size (FC 64): the claims are not about the width


def _model_file(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "model.pt"
    torch.save(_checkpoint(build_model(MODEL, num_classes=10, in_channels=1).state_dict(), model=MODEL), path)
    return path


def test_fc7_of_an_idx_set_equals_predictor_embed(idx_folder, tmp_path):
    path = _model_file(tmp_path)
    result = embed(path, tmp_path / "f.npz", data=str(idx_folder.path), batch_size=64)
    saved = np.load(tmp_path / "f.npz")
    images = torch.cat([idx_folder.train_images, idx_folder.test_images])
    assert saved["features"].shape == (400, 64) and result["images"] == 400
    assert saved["labels"].tolist() == torch.cat([idx_folder.train_labels, idx_folder.test_labels]).tolist()
    assert saved["classes"].tolist() == [str(i) for i in range(10)] and str(saved["layer"]) == "fc7"
    assert saved["splits"].tolist() == ["train"] * 320 + ["test"] * 80
    predictor = Predictor.load(path)
    some = [0, 5, 319, 320, 399]
    want = predictor.embed([Image.fromarray(images[i].numpy(), "L") for i in some])
    torch.testing.assert_close(torch.from_numpy(saved["features"][some]), want, rtol=1e-4, atol=1e-5)


def test_fc6_of_image_files_equals_a_forward_written_out(image_set, tmp_path):
    torch.manual_seed(1)
    model = build_model(MODEL, num_classes=3).eval()
    pre = {"kind": "folder", "mode": "RGB", "image_size": 67, "resize": 77, "mean": [0.5] * 3, "std": [0.25] * 3}
    torch.save(_checkpoint(model.state_dict(), model=MODEL, classes=3, preprocess=pre), tmp_path / "rgb.pt")
    files = [str(f.path) for f in image_set.files[:5]]
    embed(tmp_path / "rgb.pt", tmp_path / "f6.npz", images=files, layer="fc6")
    saved = np.load(tmp_path / "f6.npz")
    assert saved["paths"].tolist() == files and "labels" not in saved and str(saved["layer"]) == "fc6"
    x = Predictor.load(tmp_path / "rgb.pt").inputs(files)
    with torch.no_grad():
        for layer in model.features:
            x = layer(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, (6, 6)), 1)
        fc6 = next(m for m in model.classifier if isinstance(m, nn.Linear))
        want = torch.relu(x @ fc6.weight.T + fc6.bias)
    torch.testing.assert_close(torch.from_numpy(saved["features"]), want, rtol=1e-4, atol=1e-5)


def test_torchvision_weights_embed_grayscale_images_through_their_pipeline(idx_folder, tmp_path, capsys):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(2)
    torch.save(torchvision.models.alexnet().state_dict(), tmp_path / "alexnet-owt-test.pth")
    rc, out, err = _main(
        capsys,
        "embed",
        "--weights",
        str(tmp_path / "alexnet-owt-test.pth"),
        "--data",
        str(idx_folder.path),
        "--split",
        "test",
        "--out",
        str(tmp_path / "tv.npz"),
    )
    assert rc == 0, err
    saved = np.load(tmp_path / "tv.npz")
    assert saved["features"].shape == (80, 4096) and saved["splits"].tolist() == ["test"] * 80
    predictor = Predictor.load(tmp_path / "alexnet-owt-test.pth", format="torchvision")
    want = predictor.embed([Image.fromarray(idx_folder.test_images[i].numpy(), "L") for i in (0, 79)])
    torch.testing.assert_close(torch.from_numpy(saved["features"][[0, 79]]), want, rtol=1e-4, atol=1e-5)


def test_embed_errors_are_one_line(idx_folder, tmp_path, capsys):
    path = _model_file(tmp_path)
    for argv in (
        ["--checkpoint", path, "--out", tmp_path / "x.npz"],  # neither data nor images
        ["--checkpoint", path, "--data", idx_folder.path, "--layer", "fc8", "--out", tmp_path / "x.npz"],
        ["--checkpoint", path, "--weights", path, "--data", idx_folder.path, "--out", tmp_path / "x.npz"],
        ["--checkpoint", path, "--data", idx_folder.path, "--out", tmp_path / "x.txt"],
    ):
        rc, _, err = _main(capsys, "embed", *map(str, argv))
        assert rc in (1, 2) and _one_line_error(err).startswith("alexnet embed: error:"), argv
    assert not (tmp_path / "x.npz").exists()
