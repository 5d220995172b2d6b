"""checkpoint.py and export.py: untrusted files load without running code, exports round-trip,
and weights for another network are refused with a message that says which.

Nothing here trains. Checkpoints are made by hand: mismatch tests use state_dicts whose tensors are
one zero expanded to the right shape (a few bytes on disk, the right shapes when loaded); the
export round trip builds one real ``alexnet`` (about 230 MB on disk) once per module.
"""

from __future__ import annotations

import json
import os
import pathlib

import pytest
import torch
from PIL import Image

from alexnet.formats import (
    FORMAT, WEIGHTS_FORMAT, CheckpointError, identify_weights, load_checkpoint, model_from_checkpoint, read_model, save_checkpoint,
)  # fmt: skip
from alexnet.cli import main
from alexnet.config import TrainConfig
from alexnet.data.idx import idx_class_names
from alexnet.formats import export
from alexnet.models import MODELS, build_model

PREPROCESS = {"kind": "tensor", "mode": "L", "source_size": 28, "image_size": 67, "mean": [0.3], "std": [0.3]}


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _one_line_error(err: str) -> str:
    assert "Traceback" not in err
    assert err.strip() and "\n" not in err.strip(), err
    return err.strip()


def _fake_weights(name: str, **kwargs) -> dict[str, torch.Tensor]:
    """A state_dict with the shapes of ``build_model(name, **kwargs)`` and the storage of one number."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in build_model(name, init="torch", **kwargs).state_dict().items()}
    return {k: torch.zeros(()).expand(s) for k, s in shapes.items()}


def _checkpoint(weights: dict, *, model="alexnet", classes=10, preprocess=PREPROCESS, **config) -> dict:
    """The dict train.py writes, with the given weights and settings (no optimizer state)."""
    return {
        "format": FORMAT, "model": weights, "optimizer": None, "scheduler": None, "epoch": 0, "best_top1": 0.0,
        "metrics": {"epoch": 0, "val_top1": 0.0}, "rng": {"torch": torch.get_rng_state(), "cuda": None},
        "preprocess": preprocess, "classes": [f"c{i}" for i in range(classes)],
        "config": TrainConfig(model=model, image_size=67, **config).to_dict(),
    }  # fmt: skip


# --------------------------------------------------------------------------------------------
# A checkpoint crafted to run code when unpickled


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


@pytest.mark.parametrize("how", ["predict --checkpoint", "evaluate --checkpoint", "predict --weights", "train --resume"])
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


# --------------------------------------------------------------------------------------------
# Weights for another network


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize(("num_classes", "in_channels"), [(1000, 3), (10, 1)])
def test_identify_weights_reads_variant_classes_and_channels(name, num_classes, in_channels):
    weights = _fake_weights(name, num_classes=num_classes, in_channels=in_channels)
    assert identify_weights(weights) == {"variant": name, "num_classes": num_classes, "in_channels": in_channels}


def test_identify_weights_sees_through_lrn_layers():
    # LRN shifts every later index in `features`; conv2 is then features.4, not features.3
    weights = _fake_weights("alexnet", lrn=True)
    assert identify_weights(weights)["variant"] == "alexnet"
    assert identify_weights(_fake_weights("alexnet2012", lrn=False))["variant"] == "alexnet2012"


@pytest.mark.parametrize(
    ("weights", "checkpoint", "message"),
    [
        (("alexnet_owt", 10, 1), {}, "weights are alexnet_owt's (conv1 has 64 filters), not alexnet's (conv1 has 96 filters)"),
        (("alexnet2012", 10, 1), {}, "weights are alexnet2012's (conv2 is grouped, 48 maps per filter), not alexnet's (conv2 sees all 96 maps)"),
        (("alexnet", 10, 1), {"model": "alexnet_owt"}, "weights are alexnet's (conv1 has 96 filters), not alexnet_owt's (conv1 has 64 filters)"),
        (("alexnet", 1000, 1), {}, "weights are for 1000 classes, the checkpoint says 10"),
        (("alexnet", 10, 3), {}, "weights have 3 input channels, expected 1"),
    ],
)  # fmt: skip
def test_model_from_checkpoint_says_which_mismatch(weights, checkpoint, message):
    name, num_classes, in_channels = weights
    state = _checkpoint(_fake_weights(name, num_classes=num_classes, in_channels=in_channels), **checkpoint)
    with pytest.raises(CheckpointError) as e:
        model_from_checkpoint(state, source="ckpt.pt")
    assert str(e.value) == f"ckpt.pt: {message}"


def test_model_from_checkpoint_names_an_lrn_mismatch():
    state = _checkpoint(_fake_weights("alexnet", num_classes=10, in_channels=1, lrn=True))  # config: lrn=None
    with pytest.raises(CheckpointError, match=r"lrn=True, the checkpoint says lrn=None"):
        model_from_checkpoint(state)


def test_cli_refuses_a_mismatched_checkpoint(tmp_path, capsys):
    path = tmp_path / "owt.pt"
    save_checkpoint(_checkpoint(_fake_weights("alexnet_owt", num_classes=10, in_channels=1)), path)
    image = tmp_path / "image.png"
    Image.new("L", (28, 28)).save(image)
    rc, _, err = _run(capsys, "predict", image, "--checkpoint", path)
    assert rc == 1
    assert f"--checkpoint {path}: weights are alexnet_owt's" in _one_line_error(err)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (lambda: _fake_weights("alexnet"), "these are alexnet's weights, not torchvision's alexnet_owt; load a training checkpoint or an export of them with --checkpoint"),
        (lambda: _fake_weights("alexnet2012"), "these are alexnet2012's weights, not torchvision's alexnet_owt"),
        (lambda: _fake_weights("alexnet_owt", in_channels=1), "weights have 1 input channels, expected 3"),
        (lambda: _checkpoint(_fake_weights("alexnet_owt")), "a training checkpoint; load it with --checkpoint"),
    ],
)  # fmt: skip
def test_weights_flag_refuses_other_networks(content, message, tmp_path, capsys):
    path = tmp_path / "weights.pth"
    torch.save(content(), path)
    image = tmp_path / "photo.png"
    Image.new("RGB", (64, 64)).save(image)
    rc, _, err = _run(capsys, "predict", image, "--weights", path)
    assert rc == 1
    assert message in _one_line_error(err)


# --------------------------------------------------------------------------------------------
# Export to safetensors + JSON sidecar


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
    (tmp_path / "lonely.json").write_text(json.dumps({**meta, "classes": ["a", "b", "c"]}))
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
