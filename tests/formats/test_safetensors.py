"""formats/safetensors.py and ``alexnet export``: the weights and JSON sidecar an export writes,
``predict`` and ``evaluate`` giving from them exactly what the checkpoint gives, and the refusals
(overwriting, a missing or disagreeing sidecar, damaged or foreign files). The round trip builds
one real ``alexnet`` (about 230 MB on disk) once per module.
"""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")  # the fuzz tests; the rest of the suite runs without it
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from alexnet.cli import main
from alexnet.data.idx import idx_class_names
from alexnet.formats import WEIGHTS_FORMAT, export, load_checkpoint, read_model, save_checkpoint
from alexnet.models import build_model

from fuzz import FUZZ_CLI, changed, changes
from helpers import PREPROCESS, _checkpoint, _one_line_error, _refused_in_one_line, _run


@pytest.fixture(scope="module")
def exported(idx_folder, tmp_path_factory):
    """A real seeded network for the IDX look-alike, saved as train.py would and exported once: the
    test-size alexnet_tiny, since what is checked is the files and their fields, not the network's size.

    Its weights are channels_last, as training leaves them by default, which safetensors cannot
    store as they are: the export must make them contiguous."""
    folder = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    model = build_model("alexnet_tiny", num_classes=10, in_channels=1).to(memory_format=torch.channels_last)
    state = _checkpoint(model.state_dict(), model="alexnet_tiny", data=str(idx_folder.path), batch_size=32)
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
    assert meta["format"] == WEIGHTS_FORMAT and meta["model"] == "alexnet_tiny"
    assert meta["classes"] == state["classes"] and meta["num_classes"] == 10 and meta["in_channels"] == 1
    assert meta["preprocess"] == PREPROCESS  # the normalization predict applies
    assert (
        meta["config"]["model"] == "alexnet_tiny"
        and meta["config"]["dropout"] == 0.5
        and meta["config"]["image_size"] == 67
    )
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
        rc, stdout, _ = _run(
            capsys, "evaluate", "--checkpoint", path, "--data", idx_folder.path, "--out", out, "--json"
        )
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
    (tmp_path / "other.json").write_text(json.dumps({**json.loads(sidecar.read_text()), "epoch": 7}))
    rc, _, err = _run(capsys, "export", "--checkpoint", pt, "--out", tmp_path / "other.safetensors")
    assert rc == 1 and "other.json already exists" in err
    assert not (tmp_path / "other.safetensors").exists()
    rc, out, _ = _run(capsys, "export", "--checkpoint", pt, "--out", tmp_path / "other.safetensors", "--force")
    assert rc == 0 and "other.safetensors" in out
    assert json.loads((tmp_path / "other.json").read_text()) == json.loads(sidecar.read_text())  # replaced
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary files left behind


def test_force_never_replaces_a_file_that_is_not_a_sidecar(exported, tmp_path, capsys):
    """Before: ``--force --out RUN/config.safetensors`` replaced the run's config.json with the sidecar."""
    pt, _, _ = exported
    config = tmp_path / "config.json"
    config.write_text('{"epochs": 4}\n')
    rc, _, err = _run(capsys, "export", "--checkpoint", pt, "--out", tmp_path / "config.safetensors", "--force")
    assert rc == 1 and "config.json exists and is not an alexnet export's sidecar" in _one_line_error(err)
    assert config.read_text() == '{"epochs": 4}\n' and not (tmp_path / "config.safetensors").exists()


def test_weights_larger_than_the_sidecars_network_are_refused_before_they_are_read(exported, tmp_path, capsys):
    """Before: a header declaring an extra tensor of GBs (a sparse file) was read whole, then refused."""
    _, weights, sidecar = exported
    raw = weights.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    end = max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__")
    # float32 values past what the network takes in float64 (twice its float32 bytes) and a header
    extra = (end + (100 << 20)) // 4 + 1  # 100 MB: the largest header safetensors reads
    header["extra"] = {"dtype": "F32", "shape": [extra], "data_offsets": [end, end + 4 * extra]}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    big = tmp_path / "big.safetensors"
    with open(big, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + raw[8 + n :])
        f.truncate(8 + len(text) + end + 4 * extra)  # sparse: no disk, and no memory unless read
    (tmp_path / "big.json").write_text(sidecar.read_text())
    rc, _, err = _run(capsys, "predict", tmp_path / "x.png", "--checkpoint", big)
    assert rc == 1 and "float64; not that network's weights" in _one_line_error(err)


def test_export_flags(exported, tmp_path, capsys):
    pt, _, _ = exported
    with pytest.raises(SystemExit) as e:  # argparse: only the formats export.EXPORTERS knows
        main(["export", "--checkpoint", str(pt), "--format", "tflite"])
    assert e.value.code == 2
    capsys.readouterr()
    rc, _, err = _run(capsys, "export", "--checkpoint", pt, "--out", tmp_path / "model.bin")
    assert rc == 2 and ".safetensors" in _one_line_error(err)


def test_export_needs_its_sidecar(exported, tmp_path, capsys):
    _, weights, sidecar = exported
    lonely = tmp_path / "lonely.safetensors"
    os.link(weights, lonely)  # the same bytes, not a copy
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


# id: (the sidecar's change, words of the one line)
SIDECAR_FIELDS = {
    "num-classes-disagrees": ({"num_classes": 3}, "'num_classes' is 3 but its config, classes and preprocess say 10"),
    "in-channels-disagrees": ({"in_channels": 3}, "'in_channels' is 3"),
    "model-disagrees": ({"model": "alexnet_owt"}, "'model' is 'alexnet_owt'"),
    "num-classes-a-string": ({"num_classes": "10"}, "'num_classes' is '10'"),
    "source-checkpoint-a-list": ({"source_checkpoint": ["a.pt"]}, "'source_checkpoint' must be a path"),
    "epoch-a-string": ({"epoch": "3"}, "'epoch' must be a whole number"),
    "metrics-a-list": ({"metrics": [0.5]}, "'metrics' must be an object of finite numbers"),
    "metrics-nan": ({"metrics": {"val_top1": math.nan}}, "'metrics' must be an object of finite numbers"),
    "classes-empty": ({"classes": []}, "'classes' must be a non-empty list"),
    "std-zero": ({"preprocess": {**PREPROCESS, "std": [0]}}, "pixel std [0] is outside"),
    "mean-above-one": ({"preprocess": {**PREPROCESS, "mean": [3]}}, "pixel mean [3] is outside [0, 1]"),
    "image-size-below-the-minimum": (
        {
            "preprocess": {**PREPROCESS, "image_size": 50},
            "config": {
                "model": "alexnet_tiny",
                "activation": "relu",
                "lrn": None,
                "pooling": "overlap",
                "dropout": 0.5,
            },
        },
        "--image-size 50 is below the minimum 67",
    ),
    "image-sizes-disagree": (
        {"preprocess": {**PREPROCESS, "image_size": 99}},
        "config image_size 67 differs from preprocess image_size 99",
    ),
    "source-size-huge": (
        {"preprocess": {**PREPROCESS, "source_size": 10**6}},
        "'source_size' 1000000 is above the maximum 4096",
    ),
    "rgb-means-for-gray": (
        {"preprocess": {**PREPROCESS, "mean": [0.3] * 3, "std": [0.3] * 3}},
        "one finite number per channel of mode L",
    ),
    "folder-crop-beyond-its-resize": (
        {"preprocess": {"kind": "folder", "mode": "L", "image_size": 67, "resize": 60, "mean": [0.3], "std": [0.3]}},
        "'resize' 60 must be between its image_size 67",
    ),
    "lr-huge": (
        {
            "config": {
                "model": "alexnet_tiny",
                "activation": "relu",
                "lrn": None,
                "pooling": "overlap",
                "dropout": 0.5,
                "lr": 10**400,
            }
        },
        "--lr must be a finite number",
    ),
}


@pytest.mark.parametrize("case", SIDECAR_FIELDS.values(), ids=SIDECAR_FIELDS.keys())
def test_sidecar_fields_are_checked_naming_the_field(exported, tmp_path, capsys, case):
    """Before: the repeated fields were never compared, a zero std or an image size below the
    network's minimum failed in the forward pass with a traceback, a huge source_size ran out of
    memory resizing the image, NaN metrics were copied on."""
    change, words = case
    _, weights, sidecar = exported
    lonely = tmp_path / "lonely.safetensors"
    os.link(weights, lonely)
    (tmp_path / "lonely.json").write_text(json.dumps({**json.loads(sidecar.read_text()), **change}))
    image = tmp_path / "image.png"
    Image.new("L", (28, 28)).save(image)
    rc, _, err = _run(capsys, "predict", image, "--checkpoint", lonely)
    line = _one_line_error(err)
    assert rc == 1 and str(tmp_path / "lonely.json") in line and words in line, line


@settings(FUZZ_CLI, max_examples=50)
@given(data=st.data(), command=st.sampled_from(["predict", "evaluate"]))
def test_fuzz_sidecar_structure(exported, idx_folder, fuzz_dir, capsys, data, command):
    """Sidecars with keys deleted and values of other types (JSON's own and Python's NaN,
    Infinity and huge integers): predict and evaluate work or say one line naming the export."""
    _, weights, sidecar = exported
    lonely = fuzz_dir / "fuzzed.safetensors"
    if not lonely.exists():
        os.link(weights, lonely)
    meta = json.loads(sidecar.read_text())
    (fuzz_dir / "fuzzed.json").write_text(
        json.dumps({**changed(meta, data.draw(changes(meta, tensors=False))), "format": meta["format"]})
    )
    image = fuzz_dir / "image.png"
    Image.fromarray(idx_folder.test_images[0].numpy(), mode="L").save(image)
    argv = (
        [image, "--checkpoint", lonely]
        if command == "predict"
        else ["--checkpoint", lonely, "--out", fuzz_dir / "eval"]
    )
    rc, out, err = _run(capsys, command, *argv)
    _refused_in_one_line(rc, out, err, command, (str(lonely), str(fuzz_dir / "fuzzed.json"), "--data"))
