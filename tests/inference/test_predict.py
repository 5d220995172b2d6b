"""predict.py: the Predictor loads once and takes paths, PIL images and tensors, answering what
``alexnet predict`` answers; a missing or unreadable image is one line naming it; torchvision's
weights (``--weights``) predict exactly what torchvision itself predicts."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

import alexnet.inference.predict
from alexnet.inference.predict import Predictor

from helpers import _main
from helpers import _run as _cli
from helpers import _run_stdout as _run


def test_predict_names_a_missing_or_unreadable_image(capsys, monkeypatch, tmp_path):
    # A real checkpoint is 230 MB; the image errors do not depend on the model, so a tiny one stands in.
    import alexnet.inference.predict

    preprocess = {"kind": "folder", "mode": "RGB", "image_size": 8, "resize": 9, "mean": [0.5] * 3, "std": [0.5] * 3}
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2))
    stand_in = alexnet.inference.predict.Predictor(
        model, ["a", "b"], alexnet.inference.predict.Preprocess.from_dict(preprocess)
    )
    monkeypatch.setattr(alexnet.inference.predict.Predictor, "load", classmethod(lambda cls, *a, **k: stand_in))
    (tmp_path / "text.png").write_text("not an image")
    for name, phrase in (("missing.png", "no such image file"), ("text.png", "not a readable image")):
        code, out, err = _main(capsys, "predict", str(tmp_path / name), "--checkpoint", "stands-in.pt")
        assert (code, len(err.splitlines())) == (1, 1), err
        assert str(tmp_path / name) in err and phrase in err and "Traceback" not in err


def test_torchvision_weights_give_torchvision_top5(tmp_path, capsys):
    """--weights FILE: a torchvision AlexNet state_dict predicts what torchvision itself predicts."""
    import torchvision
    from torchvision.models import AlexNet_Weights

    torch.manual_seed(0)
    reference = torchvision.models.alexnet(weights=None).eval()
    weights = tmp_path / "alexnet-owt-test.pth"
    torch.save(reference.state_dict(), weights)
    image = tmp_path / "photo.jpg"
    gen = torch.Generator().manual_seed(1)
    Image.fromarray((torch.rand(300, 400, 3, generator=gen) * 255).byte().numpy()).save(image)

    rc, out = _run(capsys, "predict", str(image), "--weights", str(weights), "--json")
    assert rc == 0
    ours = json.loads(out)[0]["predictions"]

    meta = AlexNet_Weights.IMAGENET1K_V1
    with torch.no_grad():
        probs = reference(meta.transforms()(Image.open(image).convert("RGB")).unsqueeze(0)).softmax(1)[0]
    p, idx = probs.topk(5)
    assert [o["class"] for o in ours] == [meta.meta["categories"][i] for i in idx]
    assert [o["probability"] for o in ours] == pytest.approx(p.tolist(), rel=1e-4)


FAST = ["--batch-size", "32", "--image-size", "67", "--seed", "1"]


def test_predictor_loads_once_and_takes_paths_images_and_tensors(idx_folder, tmp_path, capsys, monkeypatch):
    assert (
        _cli(capsys, "train", "--data", idx_folder.path, *FAST, "--epochs", "1", "--out", tmp_path, "--name", "p")[0]
        == 0
    )
    ckpt = tmp_path / "p" / "checkpoints" / "last.pt"
    loads = []
    real = alexnet.inference.predict.read_model
    monkeypatch.setattr(alexnet.inference.predict, "read_model", lambda *a, **k: loads.append(a) or real(*a, **k))
    image = tmp_path / "test0.png"
    Image.fromarray(idx_folder.test_images[0].numpy()).save(image)
    predictor = Predictor.load(ckpt)
    first, second = predictor.predict([image]), predictor.predict([image])
    assert len(loads) == 1 and first == second
    rc, out, _ = _cli(capsys, "predict", image, "--checkpoint", ckpt, "--json")
    assert rc == 0 and json.loads(out) == first  # the command line answers what the library does
    by_path = predictor.probabilities([image])
    by_pil = predictor.probabilities([Image.open(image)])
    by_tensor = predictor.probabilities([predictor.inputs([image])[0]])
    assert torch.equal(by_path, by_pil) and torch.equal(by_path, by_tensor)
    features = predictor.embed([image, image])
    model = predictor.model
    x = predictor.inputs([image, image])
    with torch.no_grad():  # FC7 after its ReLU: the classifier without FC8
        expected = model.classifier[:-1](torch.flatten(model.avgpool(model.features(x)), 1))
        assert torch.equal(features, expected) and features.shape == (2, 4096)
        torch.testing.assert_close(model.classifier[-1](features), model(x))
