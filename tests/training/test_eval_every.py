"""--eval-every N: the test images are evaluated after every N-th epoch and after the last, never
more often; an epoch left unevaluated has no validation numbers in metrics.jsonl or in its
checkpoint, never becomes best.pt, and a run stopped after one resumes to the same weights.
--save-every N: the end-of-epoch checkpoint every N epochs; a run killed between resumes exactly."""

from __future__ import annotations

import json

import pytest
import torch

from alexnet.config import TrainConfig
from alexnet.errors import ConfigError
from alexnet.formats import load_checkpoint
from alexnet.training import engine, loop
from alexnet.training.rundir import RunFolder

from helpers import _run_stdout as _run


def _args(idx_folder, tmp_path, *more: str) -> list[str]:
    return [
        "train",
        "--data",
        str(idx_folder.path),
        "--model",
        "alexnet_tiny",  # the test-size network: the schedule of evaluations is under test, not the network
        "--subset",
        "64",
        "--batch-size",
        "32",
        "--image-size",
        "67",
        "--precision",
        "fp32",
        "--device",
        "cpu",
        "--out",
        str(tmp_path),
        *more,
    ]


def _rows(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_evaluation_every_n_epochs_and_after_the_last(idx_folder, tmp_path, capsys, monkeypatch):
    real, evaluated = engine.evaluate, []

    def counting(*a, **k):
        evaluated.append(1)
        return real(*a, **k)

    monkeypatch.setattr(engine, "evaluate", counting)
    rc, out = _run(capsys, *_args(idx_folder, tmp_path, "--epochs", "5", "--eval-every", "2", "--name", "r"))
    assert rc == 0, out
    assert len(evaluated) == 3  # after epochs 2 and 4, and after 5, the last
    rows = _rows(tmp_path / "r")
    assert ["val_top1" in r for r in rows] == [False, True, False, True, True]
    assert all(r["val_seconds"] == 0.0 for r in rows if "val_top1" not in r)
    assert out.count("not evaluated (--eval-every)") == 2
    best = load_checkpoint(tmp_path / "r" / "checkpoints" / "best.pt")
    assert best["epoch"] in (1, 3, 4)  # best.pt is only ever an evaluated epoch


def test_a_run_stopped_after_an_unevaluated_epoch_resumes_exactly(idx_folder, tmp_path, capsys, monkeypatch):
    args = _args(idx_folder, tmp_path, "--epochs", "2", "--eval-every", "2")
    assert _run(capsys, *args, "--name", "through")[0] == 0
    real, calls = loop._train_epoch, []

    def stop_in_second_epoch(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(loop, "_train_epoch", stop_in_second_epoch)
    assert _run(capsys, *args, "--name", "stopped")[0] == 130
    stopped = load_checkpoint(tmp_path / "stopped" / "checkpoints" / "last.pt")
    assert stopped["epoch"] == 0 and "val_top1" not in stopped["metrics"]  # the first epoch was not evaluated
    monkeypatch.setattr(loop, "_train_epoch", real)
    rc, out = _run(capsys, "train", "--resume", str(tmp_path / "stopped"))
    assert rc == 0, out
    a, b = (load_checkpoint(tmp_path / n / "checkpoints" / "last.pt") for n in ("through", "stopped"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    strip = lambda r: {k: v for k, v in r.items() if "second" not in k}  # noqa: E731
    assert [strip(r) for r in _rows(tmp_path / "through")] == [strip(r) for r in _rows(tmp_path / "stopped")]


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"eval_every": 0}, "--eval-every must be a positive integer"),
        ({"eval_every": 2, "schedule": "plateau"}, "plateau"),
        ({"save_every": 0}, "--save-every must be a positive integer"),
    ],
)
def test_eval_every_is_checked(settings, words):
    with pytest.raises(ConfigError, match=words):
        TrainConfig(**settings)


def test_save_every_writes_fewer_checkpoints_and_a_killed_run_resumes_exactly(
    idx_folder, tmp_path, capsys, monkeypatch
):
    """--save-every 2 of 4 epochs: checkpoints after epochs 2 and 4 only; a run that dies in epoch
    4 resumes from epoch 2's, the line of epoch 3 is trimmed and trained again, to the same weights."""
    args = _args(idx_folder, tmp_path, "--epochs", "4", "--save-every", "2", "--eval-every", "4")
    saved, real_save = [], RunFolder.save

    def save(self, state, *, best=False):
        saved.append(state["epoch"])
        return real_save(self, state, best=best)

    monkeypatch.setattr(RunFolder, "save", save)
    assert _run(capsys, *args, "--name", "through")[0] == 0
    assert saved == [1, 3]
    real, calls = loop._train_epoch, []

    def die_in_fourth_epoch(*a, **k):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(loop, "_train_epoch", die_in_fourth_epoch)
    assert _run(capsys, *args, "--name", "stopped")[0] == 130
    assert load_checkpoint(tmp_path / "stopped" / "checkpoints" / "last.pt")["epoch"] == 1
    assert len(_rows(tmp_path / "stopped")) == 3  # epoch 3's line, ahead of the checkpoint
    monkeypatch.setattr(loop, "_train_epoch", real)
    rc, out = _run(capsys, "train", "--resume", str(tmp_path / "stopped"))
    assert rc == 0, out
    a, b = (load_checkpoint(tmp_path / n / "checkpoints" / "last.pt") for n in ("through", "stopped"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    strip = lambda r: {k: v for k, v in r.items() if "second" not in k}  # noqa: E731
    assert [strip(r) for r in _rows(tmp_path / "through")] == [strip(r) for r in _rows(tmp_path / "stopped")]
