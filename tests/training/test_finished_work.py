"""What a finished run's folder holds is never trained over: ``--resume`` of a run whose
``last.pt`` went missing, a ``config.json`` edited by hand, and a run whose validation accuracy
never rises above 0 (its ``best.pt``). Each is a class of issue 22 (docs/reliability.md)."""

from __future__ import annotations

import json

import torch

from alexnet.training import engine

from helpers import _run as _cli

TINY = ["--model", "alexnet_tiny"]  # the size of the network is not the claim
FAST = [*TINY, "--batch-size", "32", "--image-size", "67", "--seed", "1", "--subset", "64", "--workers", "0"]


def _train(capsys, idx_folder, out, name, *extra):
    rc, out_, err = _cli(capsys, "train", "--data", idx_folder.path, *FAST, "--out", out, "--name", name, *extra)
    assert rc == 0, err
    return out / name


def test_a_run_whose_last_checkpoint_went_missing_is_not_trained_again_over_its_best(idx_folder, tmp_path, capsys):
    """Before: "stopped before its first checkpoint", retrained from step 0 and overwrote best.pt."""
    run = _train(capsys, idx_folder, tmp_path, "done", "--epochs", "2", "--schedule", "constant")
    best = (run / "checkpoints" / "best.pt").read_bytes()
    (run / "checkpoints" / "last.pt").unlink()
    (run / "checkpoints" / "last.pt").symlink_to(tmp_path / "gone.pt")  # a dangling link, as a moved disk leaves
    for argv in (["--resume", run], ["--resume", run, "--epochs", "3"]):
        rc, _, err = _cli(capsys, "train", *argv)
        assert rc == 1 and len(err.strip().splitlines()) == 1, err
        assert "last.pt is missing" in err and "best.pt is there" in err and "cp " in err
    assert (run / "checkpoints" / "best.pt").read_bytes() == best


def test_a_hand_edited_config_is_refused_and_an_edited_length_is_taken(idx_folder, tmp_path, capsys):
    """Before: --resume silently discarded config.json's edits and wrote the checkpoint's settings over them."""
    run = _train(capsys, idx_folder, tmp_path, "r", "--epochs", "1", "--schedule", "constant")
    settings = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**settings, "lr": 0.5}))
    rc, _, err = _cli(capsys, "train", "--resume", run)
    assert rc == 2 and "config.json: lr is 0.5 there but 0.02" in err and len(err.strip().splitlines()) == 1
    assert json.loads((run / "config.json").read_text())["lr"] == 0.5  # left as the user wrote it
    (run / "config.json").write_text(json.dumps({**settings, "epochs": 2}))
    rc, out, err = _cli(capsys, "train", "--resume", run)
    assert rc == 0, err
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [0, 1]


def test_a_run_that_never_beats_zero_accuracy_still_has_a_best_checkpoint(idx_folder, tmp_path, capsys, monkeypatch):
    """Before: best.pt was written only for a top-1 above the last best (0 at the start), so the
    documented ``evaluate --checkpoint RUN/checkpoints/best.pt`` failed for such a run."""
    real = engine.evaluate
    monkeypatch.setattr(engine, "evaluate", lambda *a, **k: {**real(*a, **k), "top1": 0.0})
    run = _train(capsys, idx_folder, tmp_path, "zero", "--epochs", "1")
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert best["epoch"] == 0 and best["metrics"]["val_top1"] == 0.0
