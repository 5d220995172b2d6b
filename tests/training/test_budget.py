"""--time-budget (budget.py): the duration parsed, the epochs that fit, and a budgeted run equal to
the run ``--epochs N`` gives for the N it chose (the measurement leaves no trace in the run)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from alexnet.cli import main
from alexnet.errors import ConfigError
from alexnet.formats import load_checkpoint
from alexnet.training import budget

# the test-size network (models.py): the budget's arithmetic and records do not depend on the network's size
FAST = ["--model", "alexnet_tiny", "--batch-size", "32", "--image-size", "67", "--seed", "1", "--precision", "fp32"]


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("15m", 900), ("1.5h", 5400), (".5m", 30)])
def test_a_budget_is_a_duration_in_seconds_minutes_or_hours(text, seconds):
    assert budget.budget_seconds(text) == seconds


@pytest.mark.parametrize("text", ["15", "m", "-3m", "0m", "1.5d", "15 min", ""])
def test_anything_else_is_refused_naming_the_flag(text):
    with pytest.raises(ConfigError, match="--time-budget .*90s, 15m or 1.5h"):
        budget.budget_seconds(text)


def test_the_epochs_that_fit_are_whole_epochs_within_the_margin():
    for seconds, epoch in [(900, 100), (900, 1), (600, 240), (600, 539)]:
        assert budget.epochs_that_fit(seconds, epoch) == math.floor(seconds * budget.MARGIN / epoch)
    with pytest.raises(ConfigError, match="one epoch takes about 10.0 min on this machine; give a longer budget"):
        budget.epochs_that_fit(300, 600)


def test_a_budgeted_run_records_its_measurement_and_trains_as_epochs_n_would(idx_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(
        budget, "epochs_that_fit", lambda seconds, epoch: 1
    )  # the speed is the machine's: fix the outcome
    data = ["--data", str(idx_folder.path), *FAST, "--out", str(tmp_path)]
    assert main(["train", *data, "--time-budget", "10m", "--name", "budgeted"]) == 0
    assert "--time-budget 10m: 1 epoch(s) of about" in capsys.readouterr().out
    run = tmp_path / "budgeted"
    fit = json.loads((run / "budget.json").read_text())
    assert json.loads((run / "config.json").read_text())["epochs"] == fit["epochs"] == 1
    assert fit["budget_seconds"] == 600 and fit["train_images_per_second"] > 0 and fit["eval_images_per_second"] > 0
    assert fit["epoch_seconds"] == pytest.approx(
        320 / fit["train_images_per_second"] + 80 / fit["eval_images_per_second"]
    )
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    assert main(["train", *data, "--epochs", "1", "--name", "plain"]) == 0  # the reference: the same run, epochs given
    a, b = (
        load_checkpoint(run / "checkpoints" / "last.pt"),
        load_checkpoint(tmp_path / "plain" / "checkpoints" / "last.pt"),
    )
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert (
        json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["val_top1"]
        == json.loads((tmp_path / "plain" / "metrics.jsonl").read_text().splitlines()[-1])["val_top1"]
    )


def test_under_torchrun_a_budget_is_refused(idx_folder):
    from types import SimpleNamespace

    from alexnet.training.run import _fit_budget

    with pytest.raises(ConfigError, match="under torchrun give --epochs"):
        _fit_budget(None, None, torch.device("cpu"), None, SimpleNamespace(distributed=True))


def test_an_epoch_no_longer_than_the_warm_up_is_timed_whole(idx_folder, tmp_path, monkeypatch):
    """One batch of 320 training and one of 80 evaluation images: nothing is left after the warm-up
    pass, so a second, whole pass is the measurement (of both), and the run goes on as any other."""
    monkeypatch.setattr(budget, "epochs_that_fit", lambda seconds, epoch: 1)
    one_batch = [
        "--model",
        "alexnet_tiny",
        "--batch-size",
        "512",
        "--image-size",
        "67",
        "--seed",
        "1",
        "--precision",
        "fp32",
    ]
    assert (
        main(
            [
                "train",
                "--data",
                str(idx_folder.path),
                *one_batch,
                "--out",
                str(tmp_path),
                "--time-budget",
                "10m",
                "--name",
                "b",
            ]
        )
        == 0
    )
    fit = json.loads((tmp_path / "b" / "budget.json").read_text())
    assert fit["train_images_per_second"] > 0 and fit["eval_images_per_second"] > 0
    assert fit["epoch_seconds"] == pytest.approx(
        320 / fit["train_images_per_second"] + 80 / fit["eval_images_per_second"]
    )


def test_a_clock_set_back_while_timing_is_refused_not_taken_as_infinite_speed(monkeypatch):
    """Before: a negative interval was clamped to 1e-9 s, an epoch took "no time", and the run was
    given as many epochs as the budget divided by nothing."""
    from alexnet.errors import RunError

    class Batches:
        def set_epoch(self, epoch):
            pass

        def __iter__(self):
            return iter([(None, [0] * 8)] * 10)

    readings = iter([1000.0] + [900.0] * 100)  # the clock stepped back after the warm-up
    monkeypatch.setattr(budget.time, "perf_counter", lambda: next(readings))
    with pytest.raises(RunError, match="the clock went back or stood still while 3 step"):
        budget._rate(lambda x, y: None, Batches(), torch.device("cpu"), warmup=1, max_steps=3)
