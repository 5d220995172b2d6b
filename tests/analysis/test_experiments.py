"""experiments.py: the registry's arms against the settings docs/experiments.md documents, the
table's statistics against numpy, steps-to-level against a brute-force loop, the verdict, resume
and skip of finished arm-seeds (with a stand-in for train), the per-step log and the training
subset of a real run, and one real experiment end to end (slow)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import alexnet.analysis.experiments
import alexnet.training.loop
from alexnet.analysis.experiments import (
    BASE,
    EXPERIMENTS,
    Options,
    arm_config,
    experiment,
    make_table,
    run_experiment,
    spread,
    steps_to_reach,
    verdict,
)
from alexnet.config import TrainConfig
from alexnet.data.sampling import subset_indices
from alexnet.errors import ConfigError

from helpers import _main, _one_line_error

# What each arm changes, as docs/experiments.md states it; everything else is the shared settings.
DOCUMENTED = {
    "relu-vs-tanh": {"relu": {"activation": "relu"}, "tanh": {"activation": "tanh"}},
    "lrn": {"no-lrn": {"lrn": False}, "lrn": {"lrn": True}},
    "pooling": {"plain": {"pooling": "plain"}, "overlap": {"pooling": "overlap"}},
    "dropout": {"no-dropout": {"dropout": 0.0}, "dropout": {"dropout": 0.5}},
    "augmentation": {
        "none": {"augment": False, "lighting": False},
        "crops-flips": {"augment": True, "lighting": False},
        "crops-flips-lighting": {"augment": True, "lighting": True},
    },
    "towers": {
        "one-tower-half": {"model": "alexnet2012_half", "init": "kaiming"},
        "two-towers": {"model": "alexnet2012", "init": "kaiming"},
    },
}


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_arms_make_the_documented_configs(name, tmp_path):
    exp = experiment(name)
    assert {a.name: None for a in exp.arms}.keys() == DOCUMENTED[name].keys()
    default = TrainConfig()
    for arm in exp.arms:
        configs = [arm_config(exp, arm, seed, Options(), tmp_path) for seed in range(exp.seeds)]
        for seed, cfg in enumerate(configs):
            for key, value in DOCUMENTED[name][arm.name].items():
                assert getattr(cfg, key) == value, (arm.name, key)
            assert (cfg.seed, cfg.epochs, cfg.image_size, cfg.subset) == (seed, exp.epochs, 67, 6000)
            assert cfg.out == str(tmp_path) and cfg.name == f"{arm.name}-seed{seed}"
        # the arms of one seed differ in their own settings only
        other = arm_config(exp, exp.arms[0], 0, Options(), tmp_path).to_dict()
        changed = {k for k, v in configs[0].to_dict().items() if v != other[k]} - {"name"}
        assert changed <= set(DOCUMENTED[name][arm.name]), changed
        # and from the defaults in the shared settings and their own only
        shared = set(BASE) | set(exp.settings) | set(DOCUMENTED[name][arm.name]) | {"epochs", "out", "name", "seed"}
        assert {k for k, v in configs[0].to_dict().items() if v != getattr(default, k)} <= shared


def test_options_override_the_experiment_defaults(tmp_path):
    exp = experiment("dropout")
    cfg = arm_config(
        exp, exp.arms[1], 2, Options(epochs=7, subset=None, image_size=99, data="/d", device="cuda"), tmp_path
    )
    assert (cfg.epochs, cfg.subset, cfg.image_size, cfg.data, cfg.device, cfg.dropout, cfg.seed) == (
        7,
        None,
        99,
        "/d",
        "cuda",
        0.5,
        2,
    )


@pytest.mark.parametrize("values", [[12.5], [10.0, 11.0], [3.25, 9.5, 4.0, 7.75, 1.0]])
def test_spread_matches_numpy(values):
    s = spread(values)
    a = np.array(values)
    assert s["mean"] == pytest.approx(a.mean())
    assert s["std"] == pytest.approx(a.std(ddof=1) if len(a) > 1 else 0.0)
    assert (s["min"], s["max"], s["n"]) == (a.min(), a.max(), len(a))


def test_steps_to_reach_matches_a_brute_force_loop():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(0, 30))
        rows = [{"step": 5 * (i + 1), "train_error": float(e)} for i, e in enumerate(rng.uniform(0, 1, n))]
        rng.shuffle(rows)  # the order of the lines does not matter; the step does
        level = float(rng.uniform(0, 1))
        expected = None
        for step in range(0, 5 * n + 1):
            if any(r["step"] == step and r["train_error"] <= level for r in rows):
                expected = step
                break
        assert steps_to_reach(rows, level) == expected


def test_verdict_needs_ranges_that_do_not_overlap():
    a = spread([10.0, 11.0, 12.0])
    assert verdict(a, spread([12.5, 13.0, 14.0])) == "outside the spread over seeds"
    assert verdict(a, spread([11.5, 13.0, 14.0])) == "inside the spread: not a reproduction"
    assert verdict(spread([10.0]), spread([20.0])).startswith("one seed")


def _fake_train(calls):
    """train() as far as the experiment reads it: the run folder's config, metrics and steps."""

    def train(cfg, *, argv=None, resume=None, epochs=None, quiet=False):
        calls.append((cfg.name, resume is not None))
        folder = (
            alexnet.training.loop.RunFolder(resume) if resume else alexnet.training.loop.RunFolder.create(cfg, argv)
        )
        err = 0.1 * (1 + cfg.seed) + (0.05 if "tanh" in cfg.name else 0.0)
        folder.metrics_file.write_text(
            "".join(
                json.dumps(
                    {"epoch": e, "val_top1": 1 - err, "train_acc": 1 - err, "train_seconds": 1.0, "val_seconds": 0.5}
                )
                + "\n"
                for e in range(cfg.epochs)
            )
        )
        folder.steps_file.write_text(
            "".join(
                json.dumps({"step": 5 * (i + 1), "epoch": 0, "train_loss": 1.0, "train_error": 0.5 - 0.1 * i}) + "\n"
                for i in range(4)
            )
        )
        folder.close()
        return {"val_top1": 1 - err, "run_dir": str(folder)}

    return train


def test_finished_arm_seeds_are_skipped_and_stopped_ones_resumed(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(alexnet.training.loop, "train", _fake_train(calls))
    out = tmp_path / "exp"
    run_experiment("relu-vs-tanh", Options(seeds=2), out, say=lambda s: None)
    assert calls == [("relu-seed0", False), ("relu-seed1", False), ("tanh-seed0", False), ("tanh-seed1", False)]
    table = json.loads((out / "table.json").read_text())
    assert [a["test_error"]["mean"] for a in table["arms"]] == pytest.approx([15.0, 20.0])
    assert table["speedups"][0]["level"] == "40" and table["speedups"][0]["ratio"] == 1.0
    assert (out / "figure.png").stat().st_size > 0 and "| relu |" in (out / "table.md").read_text()

    calls.clear()
    (out / "tanh-seed1" / "metrics.jsonl").write_text("")  # stopped before its last epoch
    run_experiment("relu-vs-tanh", Options(seeds=2), out, say=lambda s: None)
    assert calls == [("tanh-seed1", True)]

    calls.clear()  # other settings into the same folder: refused before anything runs
    with pytest.raises(ConfigError, match="other settings"):
        run_experiment("relu-vs-tanh", Options(seeds=2, epochs=5), out, say=lambda s: None)
    assert calls == []


def test_lighting_arm_is_skipped_on_grayscale_and_says_so(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(alexnet.training.loop, "train", _fake_train(calls))
    run_experiment("augmentation", Options(seeds=1), tmp_path, say=lambda s: None)
    assert {c[0] for c in calls} == {"none-seed0", "crops-flips-seed0"}
    table = json.loads((tmp_path / "table.json").read_text())
    assert "grayscale" in table["arms"][2]["skipped"] and "grayscale" in (tmp_path / "table.md").read_text()
    assert all(c["verdict"].startswith("one seed") for c in table["comparisons"])


def test_unknown_experiment_and_bad_flags_are_one_line(tmp_path, capsys):
    for argv, words in (
        (["experiment", "nope"], "relu-vs-tanh, lrn"),
        (["experiment", "lrn", "--seeds", "0"], "--seeds"),
        (["experiment", "lrn", "--subset", "many"], "--subset"),
        (["experiment"], "--list"),
    ):
        rc, out, err = _main(capsys, *argv, "--out", str(tmp_path / "x"))
        assert rc == 2 and words in _one_line_error(err)
    assert not (tmp_path / "x").exists()
    rc, out, _ = _main(capsys, "experiment", "--list")
    assert rc == 0 and [line.split()[0] for line in out.splitlines()] == list(EXPERIMENTS)


def test_subset_indices_are_seeded_sorted_and_shared_by_the_arms():
    a = subset_indices(1000, 100, seed=3)
    assert torch.equal(a, subset_indices(1000, 100, seed=3)) and not torch.equal(a, subset_indices(1000, 100, seed=4))
    assert len(a) == 100 and len(set(a.tolist())) == 100 and torch.equal(a, a.sort().values)
    assert subset_indices(1000, None, 0) is None and subset_indices(1000, 1000, 0) is None


def test_a_run_logs_steps_that_add_up_to_its_epoch(idx_folder, tmp_path):
    """steps.jsonl's windows, weighted by their images, give the epoch's own training error; the
    subset sets the number of steps."""
    cfg = TrainConfig(
        data=str(idx_folder.path),
        model="alexnet_tiny",  # the test-size network: the step log is under test, not the network
        subset=64,
        batch_size=16,
        step_log=2,
        epochs=1,
        image_size=67,
        out=str(tmp_path),
        name="r",
        device="cpu",
        checkpoint_every=None,
    )
    result = alexnet.training.loop.train(cfg, quiet=True)
    rows = [json.loads(line) for line in (tmp_path / "r" / "steps.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]  # 64 images in batches of 16
    assert np.mean([r["train_error"] for r in rows]) == pytest.approx(1 - result["train_acc"])


def test_training_without_augmentation_gives_the_evaluation_inputs(idx_folder):
    from helpers import _batches

    plain = _batches(idx_folder.train_images[:16].unsqueeze(1), idx_folder.train_labels[:16], train=False)
    off = _batches(idx_folder.train_images[:16].unsqueeze(1), idx_folder.train_labels[:16], train=True)
    off.augment = False
    off.order.shuffle = False
    (x0, _), (x1, _) = next(iter(plain)), next(iter(off))
    assert torch.equal(x0, x1)


@pytest.mark.slow
def test_a_real_experiment_end_to_end(idx_folder, tmp_path, capsys, monkeypatch):
    # every arm-seed on the test-size network (the command has no --model): the runs and the table
    # made of them are under test, not the network
    monkeypatch.setitem(alexnet.analysis.experiments.BASE, "model", "alexnet_tiny")
    out = tmp_path / "pooling"
    argv = [
        "experiment",
        "pooling",
        "--data",
        str(idx_folder.path),
        "--subset",
        "32",
        "--epochs",
        "1",
        "--seeds",
        "2",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    rc, printed, err = _main(capsys, *argv)
    assert rc == 0, err
    table = json.loads((out / "table.json").read_text())
    assert [len(a["runs"]) for a in table["arms"]] == [2, 2]
    for arm in table["arms"]:  # every arm-seed's own run folder, reproducible from its settings
        for run in arm["runs"]:
            stored = json.loads((out / run["run_dir"] / "config.json").read_text())
            assert stored["pooling"] == arm["settings"]["pooling"] and stored["subset"] == 32
    exp, opts = experiment("pooling"), Options(subset=32, epochs=1, data=str(idx_folder.path), device="cpu")
    again = make_table(exp, out, [arm_config(exp, a, s, opts, out) for a in exp.arms for s in range(2)], {})
    assert json.loads(json.dumps(again["arms"])) == table["arms"]  # the table is a function of the run folders
    rc, printed, _ = _main(capsys, *argv)  # again: everything skipped
    assert rc == 0 and printed.count("finished before, skipped") == 4


def test_a_damaged_experiment_record_is_one_line(tmp_path, capsys, monkeypatch):
    """Before: an experiment.json that is a list (or not JSON) was a traceback."""
    monkeypatch.setattr(alexnet.training.loop, "train", lambda *a, **k: pytest.fail("trained"))
    for text in ("[]", "{", "[" * 100_000 + "]" * 100_000):
        (tmp_path / "experiment.json").write_text(text)
        rc, _, err = _main(capsys, "experiment", "lrn", "--seeds", "1", "--out", str(tmp_path))
        assert rc == 2 and "experiment.json" in _one_line_error(err)
