"""formats/onnx.py and formats/pt2.py: ``alexnet export --format onnx|pt2``. Each export, run by
another runtime (onnxruntime; torch.export.load with no class of ours), gives PyTorch's logits
(max abs difference <= 1e-4 in fp32) at two batch sizes, one of them not the size it was traced
with, for ``alexnet`` and ``alexnet2012`` (LRN, groups); the preprocessing and class names come back
from the file's metadata; ``predict`` refuses the files in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from alexnet.formats import ModelFile, read_model
from alexnet.formats.caffe import PREPROCESS as CAFFE_PREPROCESS
from alexnet.models import build_model

from helpers import _one_line_error, _run

TOLERANCE = 1e-4
BATCHES = (1, 3)  # traced with 2: both differ from it


def _model_file(tmp_path, name: str, image_size: int) -> tuple[ModelFile, object]:
    """A checkpoint of ``name`` with random weights (seeded), RGB, ``image_size``; and its path."""
    torch.manual_seed(0)
    lrn_k = 1.0 if name == "alexnet2012" else 2.0  # Caffe's k for the network with LRN
    net = build_model(name, num_classes=7, lrn_k=lrn_k)
    preprocess = {
        "kind": "folder",
        "mode": "RGB",
        "image_size": image_size,
        "resize": image_size + 8,
        "mean": [0.5, 0.4, 0.3],
        "std": [0.2, 0.2, 0.2],
        **({"channel_order": "BGR"} if name == "alexnet2012" else {}),
    }
    state = {
        "format": "alexnet-checkpoint/1",
        "model": net.state_dict(),
        "classes": [f"class {i}" for i in range(7)],
        "preprocess": preprocess,
        "config": {
            "model": name,
            "activation": "relu",
            "lrn": None,
            "lrn_k": lrn_k,
            "pooling": "overlap",
            "dropout": 0.5,
            "image_size": image_size,
        },
    }
    path = tmp_path / f"{name}.pt"
    torch.save(state, path)
    return read_model(path), path


def _inputs(model: ModelFile, batch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(batch)
    return torch.randn(
        batch, model.preprocess.channels, model.preprocess.image_size, model.preprocess.image_size, generator=g
    )


@pytest.mark.slow
@pytest.mark.parametrize(("name", "image_size"), [("alexnet", 99), ("alexnet2012", 227)])
def test_onnx_export_runs_in_onnxruntime_with_pytorchs_outputs(name, image_size, tmp_path, capsys):
    import onnx
    import onnxruntime

    model, path = _model_file(tmp_path, name, image_size)
    rc, out, err = _run(capsys, "export", "--checkpoint", path, "--format", "onnx")
    assert rc == 0, err
    onnx_path = path.with_suffix(".onnx")
    assert str(onnx_path) in out
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == "batch"  # dynamic, not the traced 2
    net = model.network().eval()
    for batch in BATCHES:
        x = _inputs(model, batch)
        with torch.no_grad():
            expected = net(x).numpy()
        (got,) = session.run(None, {"image": x.numpy()})
        assert got.shape == (batch, 7)
        assert np.abs(got - expected).max() <= TOLERANCE
    meta = {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}
    assert meta["alexnet.format"] == "alexnet-onnx/1"
    assert json.loads(meta["alexnet.preprocess"]) == model.preprocess.to_dict()
    assert json.loads(meta["alexnet.classes"]) == model.classes
    assert json.loads(meta["alexnet.config"])["model"] == name


@pytest.mark.slow
@pytest.mark.parametrize(("name", "image_size"), [("alexnet", 99), ("alexnet2012", 227)])
def test_pt2_export_reloads_with_pytorchs_outputs(name, image_size, tmp_path, capsys):
    model, path = _model_file(tmp_path, name, image_size)
    out = tmp_path / "exported" / "net.pt2"
    out.parent.mkdir()
    rc, _, err = _run(capsys, "export", "--checkpoint", path, "--format", "pt2", "--out", out)
    assert rc == 0, err
    extra = {"alexnet.json": ""}
    program = torch.export.load(out, extra_files=extra)
    loaded = program.module()
    net = model.network().eval()
    for batch in BATCHES:
        x = _inputs(model, batch)
        with torch.no_grad():
            assert (loaded(x) - net(x)).abs().max() <= TOLERANCE
    meta = json.loads(extra["alexnet.json"])
    assert meta["format"] == "alexnet-pt2/1" and meta["classes"] == model.classes
    assert meta["preprocess"] == model.preprocess.to_dict() and meta["config"]["model"] == name


def test_predict_refuses_onnx_and_pt2_in_one_line(tmp_path, capsys):
    image = tmp_path / "photo.png"
    from PIL import Image

    Image.new("RGB", (80, 80)).save(image)
    for suffix, format in ((".onnx", "onnx"), (".pt2", "pt2")):
        path = tmp_path / f"net{suffix}"
        path.write_bytes(b"whatever is inside")
        rc, _, err = _run(capsys, "predict", image, "--checkpoint", path)
        line = _one_line_error(err)
        assert rc == 1 and str(path) in line and f"an {format} export, for other runtimes" in line, line


def test_export_refuses_to_overwrite_and_odd_names(tmp_path, capsys):
    _, path = _model_file(tmp_path, "alexnet", 67)
    existing = tmp_path / "alexnet.onnx"
    existing.write_bytes(b"keep me")
    rc, _, err = _run(capsys, "export", "--checkpoint", path, "--format", "onnx")
    assert rc == 1 and "already exists; pass --force" in _one_line_error(err)
    assert existing.read_bytes() == b"keep me"
    rc, _, err = _run(capsys, "export", "--checkpoint", path, "--format", "pt2", "--out", tmp_path / "net.onnx")
    assert rc == 2 and "give a .pt2 file name or an existing folder" in _one_line_error(err)
    rc, _, err = _run(capsys, "convert", path, "--to", tmp_path / "net.txt")
    assert rc == 2 and "the suffix picks the format" in _one_line_error(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alexnet.onnx", "alexnet.pt"]


def test_caffe_preprocessing_travels_in_the_metadata():
    from alexnet.formats.network import describe

    model = ModelFile({}, {"model": "alexnet2012", "lrn_k": 1.0}, ["a"], CAFFE_PREPROCESS)
    meta = describe(model, "alexnet-onnx/1")
    assert meta["preprocess"]["channel_order"] == "BGR" and meta["preprocess"]["scale"] == 255
    assert meta["config"] == {"model": "alexnet2012", "lrn_k": 1.0}


def test_a_pt2_export_prints_no_warning_about_its_temporary_file(tmp_path, monkeypatch, caplog, capfd):
    """Before: every export printed torch's warning that the temporary file's name does not end in .pt2."""
    from alexnet.formats import pt2

    model, path = _model_file(tmp_path, "alexnet", 99)
    small = torch.export.export(torch.nn.Linear(2, 2), (torch.zeros(1, 2),))
    monkeypatch.setattr(pt2, "to_exported", lambda model: small)  # the writer, not torch.export's tracing
    (out,) = pt2.write(model, tmp_path / "net.pt2", checkpoint=path)
    assert torch.export.load(out).module()(torch.ones(1, 2)).shape == (1, 2)
    said = caplog.text + "".join(capfd.readouterr())
    assert "Expect archive file" not in said and ".tmp" not in said, said
