"""formats/safetensors.py and ``alexnet export``: the weights and JSON sidecar an export writes,
``predict`` and ``evaluate`` giving from them exactly what the checkpoint gives, and the refusals
(overwriting, a missing or disagreeing sidecar, damaged or foreign files). The round trip builds
one real ``alexnet`` (about 230 MB on disk) once per module.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from PIL import Image

from alexnet.cli import main
from alexnet.data.idx import idx_class_names
from alexnet.formats import WEIGHTS_FORMAT, export, load_checkpoint, read_model, save_checkpoint
from alexnet.models import build_model
from helpers import PREPROCESS, _checkpoint, _one_line_error, _run


@pytest.fixture(scope="module")
def exported(idx_folder, tmp_path_factory):
    """A real seeded alexnet for the IDX look-alike, saved as train.py would and exported once.

    Its weights are channels_last, as training leaves them by default, which safetensors cannot
    store as they are: the export must make them contiguous."""
    folder = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    model = build_model("alexnet", num_classes=10, in_channels=1).to(memory_format=torch.channels_last)
    state = _checkpoint(model.state_dict(), data=str(idx_folder.path), batch_size=32)
    state["classes"] = idx_class_names(idx_folder.path, 10)
    save_checkpoint(state, folder / "model.pt")
    weights, sidecar = export(folder / "model.pt")
    return folder / "model.pt", weights, sidecar


def test_export_writes_weights_and_sidecar(exported):
    from safetensors import safe_open

    pt, weights, sidecar = exported
    assert weights == pt.with_suffix(".safetensors") and sidecar == pt.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    state = load_checkpoint(pt)
    assert meta["format"] == WEIGHTS_FORMAT and meta["model"] == "alexnet"
    assert meta["classes"] == state["classes"] and meta["num_classes"] == 10 and meta["in_channels"] == 1
    assert meta["preprocess"] == PREPROCESS  # the normalization predict applies
    assert meta["config"]["model"] == "alexnet" and meta["config"]["dropout"] == 0.5 and meta["config"]["image_size"] == 67
    assert meta["source_checkpoint"] == str(pt) and meta["epoch"] == 0
    with safe_open(weights, framework="pt") as f:
        assert f.metadata() == {"format": WEIGHTS_FORMAT}
        assert set(f.keys()) == set(state["model"])  # the state_dict and nothing else
        for key in f.keys():
            assert torch.equal(f.get_tensor(key), state["model"][key]), key
    loaded = read_model(weights)  # a model file: the network and what it needs, no training state
    assert not hasattr(loaded, "optimizer") and loaded.classes == state["classes"]


def test_predict_from_export_matches_checkpoint_exactly(exported, idx_folder, tmp_path, capsys):
    pt, weights, _ = exported
    image = tmp_path / "test0.png"
    Image.fromarray(idx_folder.test_images[0].numpy(), mode="L").save(image)
    outputs = []
    for path in (pt, weights):
        rc, out, _ = _run(capsys, "predict", image, "--checkpoint", path, "--top", "10", "--json")
        assert rc == 0
        outputs.append(json.loads(out))
    assert outputs[0] == outputs[1]  # same classes, same probabilities to the last bit


def test_evaluate_from_export_matches_checkpoint(exported, idx_folder, tmp_path, capsys):
    pt, weights, _ = exported
    results = []
    for path, out in ((pt, tmp_path / "pt"), (weights, tmp_path / "st")):
        rc, stdout, _ = _run(capsys, "evaluate", "--checkpoint", path, "--data", idx_folder.path, "--out", out, "--json")
        assert rc == 0
        results.append(json.loads(stdout))
    assert results[0]["top1"] == results[1]["top1"] and results[0]["confusion"] == results[1]["confusion"]
    assert sum(map(sum, results[1]["confusion"])) == len(idx_folder.test_labels)


def test_export_refuses_to_overwrite(exported, tmp_path, capsys):
    pt, weights, sidecar = exported
    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in (weights, sidecar)}
    rc, _, err = _run(capsys, "export", "--checkpoint", pt)
    assert rc == 1 and "already exists" in _one_line_error(err) and "--force" in err
    assert {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in (weights, sidecar)} == before

    # a sidecar alone is enough to stop the export: no weights file is written beside it
    (tmp_path / "other.json").write_text("{}")
    rc, _, err = _run(capsys, "export", "--checkpoint", pt, "--out", tmp_path / "other.safetensors")
    assert rc == 1 and "other.json already exists" in err
    assert not (tmp_path / "other.safetensors").exists()
    rc, out, _ = _run(capsys, "export", "--checkpoint", pt, "--out", tmp_path / "other.safetensors", "--force")
    assert rc == 0 and "other.safetensors" in out
    assert json.loads((tmp_path / "other.json").read_text())["format"] == WEIGHTS_FORMAT
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary files left behind


def test_export_flags(exported, tmp_path, capsys):
    pt, _, _ = exported
    with pytest.raises(SystemExit) as e:  # argparse: only the formats export.EXPORTERS knows
        main(["export", "--checkpoint", str(pt), "--format", "onnx"])
    assert e.value.code == 2
    capsys.readouterr()
    rc, _, err = _run(capsys, "export", "--checkpoint", pt, "--out", tmp_path / "model.bin")
    assert rc == 2 and ".safetensors" in _one_line_error(err)


def test_export_needs_its_sidecar(exported, tmp_path, capsys):
    _, weights, sidecar = exported
    lonely = tmp_path / "lonely.safetensors"
    os.link(weights, lonely)  # the same bytes without copying 230 MB
    image = tmp_path / "image.png"
    Image.new("L", (28, 28)).save(image)
    rc, _, err = _run(capsys, "predict", image, "--checkpoint", lonely)
    assert rc == 1 and str(tmp_path / "lonely.json") in _one_line_error(err)

    # a sidecar that disagrees with the weights is caught like a checkpoint that does
    meta = json.loads(sidecar.read_text())
    (tmp_path / "lonely.json").write_text(json.dumps({**meta, "classes": ["a", "b", "c"], "num_classes": 3}))
    rc, _, err = _run(capsys, "predict", image, "--checkpoint", lonely)
    assert rc == 1 and "weights are for 10 classes, the checkpoint says 3" in _one_line_error(err)

    (tmp_path / "lonely.json").write_text(json.dumps({**meta, "config": {**meta["config"], "pooling": "big"}}))
    rc, _, err = _run(capsys, "predict", image, "--checkpoint", lonely)
    assert rc == 1 and "pooling" in _one_line_error(err)


def test_damaged_or_foreign_safetensors_are_refused(exported, tmp_path, capsys):
    from safetensors.torch import save_file

    _, _, sidecar = exported
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    save_file({"w": torch.zeros(2)}, tmp_path / "foreign.safetensors")  # someone else's file, no metadata
    for name, message in (("junk", "not a readable safetensors file"), ("foreign", "not an alexnet export")):
        (tmp_path / f"{name}.json").write_text(sidecar.read_text())
        rc, _, err = _run(capsys, "evaluate", "--checkpoint", tmp_path / f"{name}.safetensors")
        assert rc == 1 and message in _one_line_error(err)
