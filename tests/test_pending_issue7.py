"""New behaviour of the reshaping, to be folded into test_train/test_evaluate/test_predict."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import alexnet.data.folder
import alexnet.data.idx
import alexnet.predict
from alexnet.cli import main
from alexnet.formats import load_checkpoint
from alexnet.predict import Predictor

FAST = ["--batch-size", "32", "--image-size", "67", "--seed", "1"]


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _weights(run: Path) -> dict:
    return load_checkpoint(run / "checkpoints" / "last.pt")["model"]


def _metrics(run: Path) -> list[dict]:
    strip = lambda r: {k: v for k, v in r.items() if "second" not in k}  # noqa: E731
    return [strip(json.loads(s)) for s in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_resume_with_epochs_extends_a_plateau_run_exactly(idx_folder, tmp_path, capsys):
    """One epoch, then --resume --epochs 2, ends where an uninterrupted two-epoch run ends."""
    common = ["train", "--data", idx_folder.path, *FAST, "--schedule", "plateau", "--out", tmp_path]
    assert _run(capsys, *common, "--epochs", "2", "--name", "through")[0] == 0
    assert _run(capsys, *common, "--epochs", "1", "--name", "short")[0] == 0
    rc, out, _ = _run(capsys, "train", "--resume", tmp_path / "short", "--epochs", "2")
    assert rc == 0, out
    a, b = _weights(tmp_path / "through"), _weights(tmp_path / "short")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _metrics(tmp_path / "short") == _metrics(tmp_path / "through")
    assert json.loads((tmp_path / "short" / "config.json").read_text())["epochs"] == 2


def test_resume_with_epochs_refuses_a_onecycle_run(idx_folder, tmp_path, capsys):
    run = tmp_path / "one"
    assert _run(capsys, "train", "--data", idx_folder.path, *FAST, "--epochs", "1", "--out", tmp_path, "--name", "one")[0] == 0
    before = {p.name: p.stat().st_mtime_ns for p in (run / "config.json", run / "checkpoints" / "last.pt")}
    rc, _, err = _run(capsys, "train", "--resume", run, "--epochs", "3")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "onecycle" in err and "start a new run with --epochs 3" in err
    assert {p.name: p.stat().st_mtime_ns for p in (run / "config.json", run / "checkpoints" / "last.pt")} == before


def test_resume_of_a_folder_of_runs_takes_the_newest(idx_folder, tmp_path, capsys):
    for name in ("a", "b"):
        assert _run(capsys, "train", "--data", idx_folder.path, *FAST, "--epochs", "1", "--out", tmp_path, "--name", name)[0] == 0
    rc, out, _ = _run(capsys, "train", "--resume", tmp_path)
    assert rc == 0 and f"holds 2 runs; resuming the newest, {tmp_path / 'b'} (others: a)" in out
    assert "already finished all 1 epochs" in out


@pytest.mark.slow
def test_a_run_killed_before_its_first_checkpoint_resumes_to_the_same_weights(idx_folder, tmp_path, capsys):
    args = ["train", "--data", str(idx_folder.path), *FAST, "--epochs", "2", "--out", str(tmp_path)]
    assert _run(capsys, *args, "--name", "through")[0] == 0
    proc = subprocess.Popen([sys.executable, "-m", "alexnet", *args, "--name", "killed"], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # "run ...": the data is built and the run folder written
        assert line.startswith("run "), line
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    killed = tmp_path / "killed"
    assert (killed / "config.json").is_file() and not (killed / "checkpoints" / "last.pt").exists()
    rc, out, _ = _run(capsys, "train", "--resume", killed)
    assert rc == 0 and "stopped before its first checkpoint: starting it again from step 0" in out
    a, b = _weights(tmp_path / "through"), _weights(killed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _metrics(killed) == _metrics(tmp_path / "through")


@pytest.fixture
def decodes(monkeypatch):
    """Every image path (or IDX file) that is opened, in order."""
    opened = []
    real_open, real_idx = alexnet.data.folder.open_image, alexnet.data.idx.read_idx
    monkeypatch.setattr(alexnet.data.folder, "open_image", lambda path, *a, **k: opened.append(str(path)) or real_open(path, *a, **k))
    monkeypatch.setattr(alexnet.data.idx, "read_idx", lambda path: opened.append(str(path)) or real_idx(path))
    return opened


def test_evaluating_a_plain_folder_decodes_only_its_held_out_images(image_folder, tmp_path, capsys, decodes):
    train = ["train", "--data", image_folder, "--epochs", "1", "--batch-size", "8", "--image-size", "67", "--workers", "0"]
    assert _run(capsys, *train, "--val-fraction", "0.25", "--out", tmp_path, "--name", "f")[0] == 0
    held_out = json.loads((tmp_path / "f" / "split.json").read_text())["val"]
    decodes.clear()
    rc, out, _ = _run(capsys, "evaluate", "--checkpoint", tmp_path / "f" / "checkpoints" / "last.pt", "--json")
    assert rc == 0
    assert sorted(set(decodes)) == sorted(held_out)  # the scan and the batches read the hold-out, nothing else
    assert json.loads(out)["images"] == len(held_out)


def test_evaluating_a_split_folder_decodes_only_val(image_folder_split, tmp_path, capsys, decodes):
    train = ["train", "--data", image_folder_split, "--epochs", "1", "--batch-size", "8", "--image-size", "67", "--workers", "0"]
    assert _run(capsys, *train, "--out", tmp_path, "--name", "s")[0] == 0
    decodes.clear()
    assert _run(capsys, "evaluate", "--checkpoint", tmp_path / "s" / "checkpoints" / "last.pt")[0] == 0
    assert decodes and all(Path(p).is_relative_to(image_folder_split / "val") for p in decodes)


def test_evaluating_idx_data_reads_only_the_test_files(idx_folder, tmp_path, capsys, decodes):
    assert _run(capsys, "train", "--data", idx_folder.path, *FAST, "--epochs", "1", "--out", tmp_path, "--name", "i")[0] == 0
    decodes.clear()
    assert _run(capsys, "evaluate", "--checkpoint", tmp_path / "i" / "checkpoints" / "last.pt")[0] == 0
    assert sorted(Path(p).name for p in decodes) == ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def test_predictor_loads_once_and_takes_paths_images_and_tensors(idx_folder, tmp_path, capsys, monkeypatch):
    assert _run(capsys, "train", "--data", idx_folder.path, *FAST, "--epochs", "1", "--out", tmp_path, "--name", "p")[0] == 0
    ckpt = tmp_path / "p" / "checkpoints" / "last.pt"
    loads = []
    real = alexnet.predict.read_model
    monkeypatch.setattr(alexnet.predict, "read_model", lambda *a, **k: loads.append(a) or real(*a, **k))
    image = tmp_path / "test0.png"
    Image.fromarray(idx_folder.test_images[0].numpy()).save(image)
    predictor = Predictor.load(ckpt)
    first, second = predictor.predict([image]), predictor.predict([image])
    assert len(loads) == 1 and first == second
    rc, out, _ = _run(capsys, "predict", image, "--checkpoint", ckpt, "--json")
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
