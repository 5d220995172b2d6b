"""experiments.py, ablations.py, tables.py, sweep.py: the registry's arms against the settings
docs/experiments.md documents; the paired intervals, verdicts and speed-ups of table.json against
hand computations (and SciPy's ttest_rel) from hand-made run folders; the sweep's choice against
hand-made step logs; that seed k of every arm trains on the same images in the same order from the
same weights; skip, resume and the sweep with a stand-in for train; a diverging sweep run, the
training-error measurement and one real experiment end to end (slow)."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

import alexnet.recipes
import alexnet.training.loop
from alexnet.analysis import ablations
from alexnet.analysis.ablations import Arm, Comparison, Experiment
from alexnet.analysis.experiments import (
    BASE,
    EXPERIMENTS,
    Options,
    _Runner,
    arm_config,
    experiment,
    run_experiment,
    sweep_config,
)
from alexnet.analysis.sweep import DIVERGED, Trial, fastest, steps_to_reach, trial_of
from alexnet.analysis.tables import TRAINING_ERROR, make_table
from alexnet.config import TrainConfig
from alexnet.data.sampling import subset_indices
from alexnet.errors import ConfigError, RunError
from alexnet.training.rundir import RunFolder

from helpers import _main, _one_line_error

# The network of the tests that train for real: its size is not what they test (the test-size
# alexnet: the document's layers with few channels).
TEST_MODEL = "alexnet_tiny"
T975_3, T80_3, T975_2 = 3.182446305284263, 0.9784723123633045, 4.302652729911275  # Student t quantiles

# What each arm changes, as docs/experiments.md states it; everything else is the shared settings.
DOCUMENTED = {
    "relu-vs-tanh": {
        "convnet4-relu": {"model": "convnet4", "activation": "relu"},
        "convnet4-tanh": {"model": "convnet4", "activation": "tanh"},
    },
    "relu-vs-tanh-alexnet": {
        "alexnet-relu": {"model": "alexnet", "activation": "relu"},
        "alexnet-tanh": {"model": "alexnet", "activation": "tanh"},
    },
    "dropout": {"no-dropout": {"dropout": 0.0}, "dropout": {"dropout": 0.5}},
    "augmentation": {
        "none": {"augment": False, "lighting": False},
        "crops-flips": {"augment": True, "lighting": False},
        "crops-flips-lighting": {"augment": True, "lighting": True},
    },
    "lrn": {"no-lrn": {"lrn": False}, "lrn": {"lrn": True}},
    "pooling": {"plain": {"pooling": "plain"}, "overlap": {"pooling": "overlap"}},
    "towers": {"one-tower-half": {"model": "alexnet2012_half"}, "two-towers": {"model": "alexnet2012"}},
}
# The regime every arm of an experiment shares, as docs/experiments.md states it.
FIGURE1 = {"schedule": "constant", "dropout": 0.0, "weight_decay": 0.0, "augment": False, "lr_swept": True}
SHORT = {"schedule": "onecycle", "lr": 0.02, "dropout": 0.5, "augment": True, "subset": 4000}
SHARED = {
    "relu-vs-tanh": FIGURE1,
    "relu-vs-tanh-alexnet": FIGURE1,
    "dropout": {"schedule": "onecycle", "lr": 0.01, "weight_decay": 5e-4, "augment": False, "subset": 1000},
    "augmentation": {"schedule": "onecycle", "lr": 0.01, "dropout": 0.5, "subset": 1000},
    "lrn": {**SHORT, "model": "alexnet"},
    "pooling": {**SHORT, "model": "alexnet"},
    "towers": {**SHORT, "init": "kaiming"},
}
# Another default recipe: every setting an experiment's design rests on, changed (the defaults are
# the `fast` recipe's, which from_dict fills in under the given settings).
OTHER_DEFAULTS = {
    "model": "alexnet_owt",
    "image_size": 99,
    "epochs": 3,
    "batch_size": 64,
    "augment": True,  # the fast recipe's own is off: the patch must differ from it
    "lighting": True,
    "label_smoothing": 0.2,
    "nesterov": True,
    "schedule": "cosine",
    "lr": 0.05,
    "warmup": 0.3,
    "momentum": 0.8,
    "weight_decay": 1e-3,
    "dropout": 0.3,
}


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_arms_make_the_documented_configs(name, tmp_path):
    exp = experiment(name)
    assert {a.name: None for a in exp.arms}.keys() == DOCUMENTED[name].keys()
    assert all(c.arm in DOCUMENTED[name] and c.against in DOCUMENTED[name] for c in exp.comparisons)
    for arm in exp.arms:
        configs = [arm_config(exp, arm, seed, Options(), tmp_path) for seed in range(exp.seeds)]
        for seed, cfg in enumerate(configs):
            for key, value in DOCUMENTED[name][arm.name].items():
                assert getattr(cfg, key) == value, (arm.name, key)
            for key, value in SHARED[name].items():
                assert key == "lr_swept" or getattr(cfg, key) == value, (arm.name, key)
            assert (cfg.seed, cfg.epochs, cfg.image_size, cfg.batch_size) == (seed, exp.epochs, 67, 32)
            assert cfg.label_smoothing == 0.0  # the paper's plain cross-entropy
            assert cfg.out == str(tmp_path) and cfg.name == f"{arm.name}-seed{seed}"
        # the arms of one seed differ in their own settings only
        other = arm_config(exp, exp.arms[0], 0, Options(), tmp_path).to_dict()
        changed = {k for k, v in configs[0].to_dict().items() if v != other[k]} - {"name"}
        assert changed <= set(DOCUMENTED[name][arm.name]) | set(DOCUMENTED[name][exp.arms[0].name]), changed
    if exp.rates:  # a sweep run: seed 0, its own length and rate, whatever --epochs says
        cfg = sweep_config(exp, exp.arms[1], exp.rates[0], Options(epochs=9), tmp_path)
        assert (cfg.seed, cfg.epochs, cfg.lr) == (0, exp.sweep_epochs, exp.rates[0])
        assert cfg.name == f"sweep-{exp.arms[1].name}-lr{exp.rates[0]:g}"


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_the_arms_do_not_change_when_the_default_recipe_does(name, tmp_path, monkeypatch):
    """Every arm-seed (and sweep run) names the settings its design rests on: with other defaults
    under them the configs are the same, setting for setting."""
    exp = experiment(name)

    def configs():
        made = [arm_config(exp, arm, seed, Options(), tmp_path) for arm in exp.arms for seed in range(exp.seeds)]
        made += [sweep_config(exp, arm, lr, Options(), tmp_path) for arm in exp.arms for lr in exp.rates]
        return [cfg.to_dict() for cfg in made]

    before = configs()
    monkeypatch.setitem(alexnet.recipes.RECIPES, "fast", OTHER_DEFAULTS)
    assert TrainConfig.from_dict({}).to_dict().items() >= OTHER_DEFAULTS.items()  # the patch takes
    assert configs() == before


def test_options_override_the_experiment_defaults(tmp_path):
    exp = experiment("dropout")
    opts = Options(epochs=7, subset=250, image_size=99, data="/d", device="cuda")
    cfg = arm_config(exp, exp.arms[1], 2, opts, tmp_path)
    assert (cfg.epochs, cfg.subset, cfg.image_size, cfg.data, cfg.device, cfg.dropout, cfg.seed) == (
        7,
        250,
        99,
        "/d",
        "cuda",
        0.5,
        2,
    )
    assert arm_config(exp, exp.arms[1], 2, replace(opts, subset="all"), tmp_path).subset is None
    assert arm_config(exp, exp.arms[1], 2, Options(), tmp_path).subset == exp.settings["subset"]


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


def _steps(run_dir, errors: list[float], every: int = 10) -> None:
    """A run folder's steps.jsonl: one window every ``every`` steps with these training errors."""
    run_dir.mkdir(parents=True, exist_ok=True)
    rows = [{"step": every * (i + 1), "epoch": 0, "train_loss": 1.0, "train_error": e} for i, e in enumerate(errors)]
    (run_dir / "steps.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_the_sweep_picks_the_rate_that_reaches_the_level_first(tmp_path):
    logs = {  # rate: training error per logged window (every 10 steps); level 25%
        0.001: [0.9, 0.8, 0.7, 0.6, 0.5, 0.45],  # never: ends at 0.45 (mean of the last three 0.5167)
        0.01: [0.8, 0.5, 0.3, 0.24, 0.2, 0.1],  # step 40
        0.03: [0.6, 0.3, 0.25, 0.2, 0.2, 0.2],  # step 30: the fastest
        0.1: [0.5, 0.2, 0.9, 0.9, 0.9, 0.9],  # step 20, but it diverged
        0.3: [0.9, 0.9, 0.9, 0.9, 0.9, 0.9],  # never, at chance
    }
    for lr, errors in logs.items():
        _steps(tmp_path / f"lr{lr}", errors)
    (tmp_path / "lr0.1" / DIVERGED).write_text("the training loss became nan\n")
    trials = [trial_of(tmp_path / f"lr{lr}", lr, 0.25) for lr in logs]
    assert [t.steps_to for t in trials] == [None, 40, 30, 20, None]
    assert trials[0].final_error == pytest.approx((0.6 + 0.5 + 0.45) / 3) and trials[3].diverged
    assert fastest(trials).lr == 0.03
    # a tie in steps goes to the smaller rate; when none reaches the level, the lowest final error wins
    tie = Trial(0.003, "x", 30, 0.2, 60)
    assert fastest([*trials, tie]).lr == 0.003
    assert fastest([trials[0], trials[4]]).lr == 0.001
    assert fastest([trials[3]]) is None  # every rate diverged: nothing to choose


def test_steps_to_reach_can_average_each_window_with_its_neighbours():
    rows = [{"step": 10 * (i + 1), "train_error": e} for i, e in enumerate([0.5, 0.3, 0.2, 0.4, 0.1])]
    assert steps_to_reach(rows, 0.25) == 30  # one window's 0.2
    # averaged with one on either side: 0.4, 1/3, 0.3, 0.7/3 (step 40), 0.25
    assert steps_to_reach(rows, 0.25, half=1) == 40 and steps_to_reach(rows, 0.2, half=1) is None


def _run(run_dir, *, test: float, train: float | None = None, last_train: float = 0.0, epochs: int = 2) -> None:
    """A finished run folder as train() leaves it, errors given in %: its test error after the
    last epoch and, when given, the final weights' training error (final_train.json)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    rows = [
        {"epoch": e, "train_acc": 1 - last_train / 100, "train_seconds": 1.0, "val_seconds": 0.5}
        | ({"val_top1": 1 - test / 100} if e == epochs - 1 else {})  # only the last epoch evaluated
        for e in range(epochs)
    ]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if train is not None:
        (run_dir / TRAINING_ERROR).write_text(json.dumps({"train_error": train / 100}))


def _made_up(tmp_path, arms, comparisons, levels=()) -> tuple[Experiment, list[TrainConfig]]:
    exp = Experiment("made-up", "a test", "the paper", "a design", arms, comparisons, levels=levels, seeds=4)
    configs = [arm_config(exp, a, s, Options(), tmp_path) for s in range(exp.seeds) for a in arms]
    return exp, configs


def test_paired_intervals_and_verdicts_by_hand(tmp_path):
    base = [20.0, 21.0, 19.5, 20.5]
    arms = {  # test error % per seed, final training error % per seed
        "base": (base, [1.0, 2.0, 0.5, 1.5]),
        "better": ([18.0, 19.5, 18.5, 18.0], [3.0, 3.0, 3.0, 3.0]),  # -2.0 -1.5 -1.0 -2.5: the paper's direction
        "worse": ([21.0, 22.5, 20.0, 21.5], [0.0, 0.0, 0.0, 0.0]),  # +1.0 +1.5 +0.5 +1.0: the opposite
        "same": ([21.0, 20.0, 20.5, 19.5], [1.0, 2.0, 0.5, 1.5]),  # +1 -1 +1 -1: inconclusive
    }
    for arm, (tests, trains) in arms.items():
        for seed, (test, train) in enumerate(zip(tests, trains)):
            _run(tmp_path / f"{arm}-seed{seed}", test=test, train=train)
    exp, configs = _made_up(
        tmp_path,
        tuple(Arm(a, {}) for a in arms),
        (
            Comparison("better", "base"),
            Comparison("worse", "base"),
            Comparison("same", "base"),
            Comparison("better", "base", metric="gap"),
        ),
    )
    table = json.loads(json.dumps(make_table(exp, tmp_path, configs, {})))  # what table.json holds
    better, worse, same, gap = table["comparisons"]
    # better: differences -2.0 -1.5 -1.0 -2.5, mean -1.75, sd sqrt(1.25 / 3)
    sd = math.sqrt(1.25 / 3)
    assert better["per_seed"] == pytest.approx([-2.0, -1.5, -1.0, -2.5]) and better["seeds"] == [0, 1, 2, 3]
    d = better["difference"]
    assert (d["mean"], d["sd"], d["n"]) == (pytest.approx(-1.75), pytest.approx(sd), 4)
    assert (d["low"], d["high"]) == (pytest.approx(-1.75 - T975_3 * sd / 2), pytest.approx(-1.75 + T975_3 * sd / 2))
    assert better["detectable"] == pytest.approx((T975_3 + T80_3) * sd / 2)
    assert better["verdict"] == "the paper's direction" and worse["verdict"] == "the opposite direction"
    # same: +1 -1 +1 -1, mean 0, sd sqrt(4/3): the design could detect (t + t) * sd / 2
    assert same["verdict"] == "inconclusive"
    assert f"could detect ±{(T975_3 + T80_3) * math.sqrt(4 / 3) / 2:.2f}" in same["reading"]
    # the gap: test minus the final training error; better's gaps 15, 16.5, 15.5, 15 against 19, 19, 19, 19
    assert gap["per_seed"] == pytest.approx([-4.0, -2.5, -3.5, -4.0]) and gap["verdict"] == "the paper's direction"
    by_arm = {a["arm"]: a for a in table["arms"]}
    assert [r["gap"] for r in by_arm["base"]["runs"]] == pytest.approx([19.0, 19.0, 19.0, 19.0])
    assert by_arm["better"]["test_error"]["mean"] == pytest.approx(18.5)
    assert table["verdict"]["verdict"] == "the paper's direction" and table["verdict"]["arm"] == "better"
    scipy_stats = pytest.importorskip("scipy.stats")  # and the interval is SciPy's paired t
    ci = scipy_stats.ttest_rel(arms["worse"][0], base).confidence_interval(0.95)
    assert (worse["difference"]["low"], worse["difference"]["high"]) == (pytest.approx(ci.low), pytest.approx(ci.high))


def test_speedups_are_geometric_means_of_paired_ratios_by_hand(tmp_path):
    reach = {"relu": [100, 120, 80], "tanh": [300, 600, None]}  # steps to 25%; tanh's seed 2 never gets there
    for arm, steps in reach.items():
        for seed, at in enumerate(steps):
            errors = [0.9 if at is None or 10 * (i + 1) < at else 0.2 for i in range(60)]  # 600 steps logged
            _steps(tmp_path / f"{arm}-seed{seed}", errors)
            _run(tmp_path / f"{arm}-seed{seed}", test=10.0)
    exp, configs = _made_up(
        tmp_path, (Arm("relu", {}), Arm("tanh", {})), (Comparison("tanh", "relu", +1, "steps"),), (0.25, 0.15)
    )
    configs = [c for c in configs if c.seed < 3]
    at25, at15 = make_table(exp, tmp_path, configs, {})["speedups"]
    logs = [math.log(3), math.log(5), math.log(600 / 80)]  # the censored seed counts its last step, 600
    sd = float(np.std(logs, ddof=1))
    assert at25["steps"] == {"relu": [100, 120, 80], "tanh": [300, 600, None]} and at25["censored"] == [2]
    assert at25["ratio"]["mean"] == pytest.approx((3 * 5 * 7.5) ** (1 / 3))
    assert at25["ratio"]["low"] == pytest.approx(math.exp(np.mean(logs) - T975_2 * sd / math.sqrt(3)))
    assert at25["verdict"] == "the paper's direction" and "a lower bound" in at25["reading"]
    assert at15["verdict"] == "inconclusive" and "relu did not reach 15%" in at15["reading"]


def test_seed_k_of_every_arm_trains_on_the_same_images_from_the_same_weights(idx_folder, tmp_path, monkeypatch):
    """The pairing the statistics rest on, through run.start: the same subset, order and crops for
    seed k of every arm; the same initial weights where the arms' layers have the same shapes."""
    from alexnet.training.run import start

    monkeypatch.setitem(BASE, "model", TEST_MODEL)

    def first_run(name, arm, seed):
        exp = experiment(name)
        opts = Options(subset=64, data=str(idx_folder.path), device="cpu", epochs=2)
        run = start(arm_config(exp, exp.arms[arm], seed, opts, tmp_path / name), None, None, ["test"])
        batches = []
        for epoch in (0, 1):
            run.data.train.set_epoch(epoch)
            batches.append(next(iter(run.data.train)))
        run.folder.close()
        return [p.detach() for p in run.model.parameters()], batches

    (w0, b0), (w1, b1) = first_run("lrn", 0, 3), first_run("lrn", 1, 3)
    assert len(w0) == len(w1) and all(torch.equal(a, b) for a, b in zip(w0, w1))  # LRN has no weights
    for (x0, y0), (x1, y1) in zip(b0, b1):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)
    _, other = first_run("lrn", 0, 4)  # and another seed is another draw
    assert not torch.equal(other[0][0], b0[0][0])
    (_, t0), (_, t1) = first_run("dropout", 0, 3), first_run("dropout", 1, 3)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(t0, t1))


def _fake_train(calls, diverge_at: float | None = None):
    """train() as far as the experiment reads it: the run folder's config, metrics and steps. The
    steps reach 25% sooner the closer the rate is to 0.02 (ReLU) or 0.01 (tanh); ``diverge_at``:
    a rate whose runs stop with a NaN loss, as train() does."""

    def train(cfg, *, argv=None, resume=None, epochs=None, quiet=False):
        calls.append((cfg.name, resume is not None))
        folder = RunFolder(resume) if resume else RunFolder.create(cfg, argv)
        if cfg.lr == diverge_at:
            folder.close()
            raise RunError("the training loss became nan by step 3 of the epoch; lower --lr or use --on-nan rollback")
        err = 0.1 * (1 + cfg.seed) + (0.05 if "tanh" in cfg.name else 0.0)
        _run(folder.path, test=100 * err, last_train=100 * err, epochs=cfg.epochs)
        best = 0.01 if cfg.activation == "tanh" else 0.02
        at = 50 + round(100 * abs(math.log(cfg.lr / best)))
        _steps(folder.path, [0.9 if 10 * (i + 1) < at else 0.2 for i in range(40)])
        folder.save({"weights": "stand-in"})  # a checkpoint for the experiment to delete
        folder.close()
        return {"val_top1": 1 - err, "run_dir": str(folder)}

    return train


def test_the_sweep_then_seed_by_seed_and_a_rerun_skips_or_resumes(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(alexnet.training.loop, "train", _fake_train(calls, diverge_at=0.04))
    out, opts = tmp_path / "exp", Options(seeds=2)
    exp = experiment("relu-vs-tanh")
    run_experiment("relu-vs-tanh", opts, out, say=lambda s: None)
    sweep = [(f"sweep-{a.name}-lr{lr:g}", False) for a in exp.arms for lr in exp.rates]
    main = [(f"{a.name}-seed{s}", False) for s in range(2) for a in exp.arms]  # seed by seed: whole pairs first
    assert calls == sweep + main
    chosen = json.loads((out / "sweep.json").read_text())
    assert {a: r["chosen"] for a, r in chosen.items()} == {"convnet4-relu": 0.02, "convnet4-tanh": 0.01}
    assert RunFolder(out / "convnet4-tanh-seed1").read_config().lr == 0.01
    assert (out / "sweep-convnet4-relu-lr0.04" / DIVERGED).is_file()
    assert not any(out.glob("*/checkpoints/*.pt"))  # the checkpoints of finished runs are gone
    table = json.loads((out / "table.json").read_text())
    assert table["sweep"]["convnet4-relu"]["chosen"] == 0.02 and len(table["speedups"]) == 3
    assert (out / "figure.png").stat().st_size > 0 and "(chosen)" in (out / "table.md").read_text()

    calls.clear()  # again: nothing to train
    run_experiment("relu-vs-tanh", opts, out, say=lambda s: None)
    assert calls == []
    calls.clear()  # a run stopped before its last epoch: resumed, alone
    (out / "convnet4-tanh-seed1" / "metrics.jsonl").write_text("")
    run_experiment("relu-vs-tanh", opts, out, say=lambda s: None)
    assert calls == [("convnet4-tanh-seed1", True)]

    calls.clear()  # other settings into the same folder: refused before anything runs
    with pytest.raises(ConfigError, match="other settings"):
        run_experiment("relu-vs-tanh", Options(seeds=2, subset=500), out, say=lambda s: None)
    assert calls == []


def test_keep_checkpoints_keeps_them(tmp_path, monkeypatch):
    monkeypatch.setattr(alexnet.training.loop, "train", _fake_train([]))
    run_experiment("pooling", Options(seeds=1, keep_checkpoints=True), tmp_path, say=lambda s: None)
    assert len(list(tmp_path.glob("*/checkpoints/last.pt"))) == 2


def test_lighting_runs_on_colour_data_and_is_skipped_on_grayscale(tmp_path, monkeypatch, image_folder):
    calls = []
    monkeypatch.setattr(alexnet.training.loop, "train", _fake_train(calls))
    exp = replace(experiment("augmentation"), training_error=False)  # the stand-in writes no weights
    monkeypatch.setitem(ablations.EXPERIMENTS, "augmentation", exp)
    run_experiment("augmentation", Options(seeds=1), tmp_path / "gray", say=lambda s: None)
    assert {c[0] for c in calls} == {"none-seed0", "crops-flips-seed0"}
    table = json.loads((tmp_path / "gray" / "table.json").read_text())
    assert "grayscale" in table["arms"][2]["skipped"] and "grayscale" in (tmp_path / "gray" / "table.md").read_text()
    assert table["comparisons"][2]["verdict"] is None and "grayscale" in table["comparisons"][2]["reading"]
    calls.clear()
    run_experiment("augmentation", Options(seeds=1, data=str(image_folder)), tmp_path / "rgb", say=lambda s: None)
    assert {c[0] for c in calls} == {"none-seed0", "crops-flips-seed0", "crops-flips-lighting-seed0"}
    assert RunFolder(tmp_path / "rgb" / "crops-flips-lighting-seed0").read_config().lighting


def test_a_sweep_run_whose_loss_becomes_nan_is_marked_and_not_run_again(idx_folder, tmp_path):
    exp = experiment("relu-vs-tanh")
    opts = Options(subset=256, data=str(idx_folder.path), device="cpu")
    cfg = replace(sweep_config(exp, exp.arms[0], 0.01, opts, tmp_path), lr=1e12)
    said = []
    runner = _Runner(exp, tmp_path, opts, ["test"], said.append)
    runner.one(cfg, sweep=True)  # a real run: the loss overflows within the epoch
    assert "training loss became" in (tmp_path / cfg.name / DIVERGED).read_text()
    runner.one(cfg, sweep=True)
    assert said[-1].endswith("diverged before, skipped")
    with pytest.raises(RunError, match="training loss became"):  # outside a sweep it is an error
        _Runner(exp, tmp_path / "b", opts, ["test"], said.append).one(replace(cfg, out=str(tmp_path / "b")))


def test_the_training_error_is_the_final_weights_on_the_training_images(idx_folder, tmp_path, monkeypatch):
    """final_train.json: the run's own training images (the subset), evaluation mode, last.pt;
    then the checkpoints go."""
    monkeypatch.setitem(BASE, "model", TEST_MODEL)
    opts = Options(subset=48, epochs=2, seeds=1, data=str(idx_folder.path), device="cpu")
    run_experiment("dropout", opts, tmp_path, say=lambda s: None)
    for arm in ("no-dropout", "dropout"):
        measured = json.loads((tmp_path / f"{arm}-seed0" / TRAINING_ERROR).read_text())
        assert measured["images"] == 48 and 0 <= measured["train_error"] <= 1
        rows = [json.loads(line) for line in (tmp_path / f"{arm}-seed0" / "metrics.jsonl").read_text().splitlines()]
        assert "val_top1" in rows[-1]  # the last epoch is always evaluated
    assert not any(tmp_path.glob("*/checkpoints/*.pt"))


def test_unknown_experiment_and_bad_flags_are_one_line(tmp_path, capsys):
    for argv, words in (
        (["experiment", "nope"], "relu-vs-tanh, relu-vs-tanh-alexnet, dropout"),
        (["experiment", "nope"], "towers, transfer (or all)"),
        (["experiment", "lrn", "--seeds", "0"], "--seeds"),
        (["experiment", "lrn", "--subset", "many"], "--subset"),
        (["experiment"], "--list"),
    ):
        rc, out, err = _main(capsys, *argv, "--out", str(tmp_path / "x"))
        assert rc == 2 and words in _one_line_error(err)
    assert not (tmp_path / "x").exists()
    rc, out, _ = _main(capsys, "experiment", "--list")
    lines = out.splitlines()
    assert rc == 0 and [line.split()[0] for line in lines] == [*EXPERIMENTS, "transfer"]
    assert all("(measured)" in line or "(estimated)" in line for line in lines)


def test_the_defaults_fit_the_budgets():
    """Each experiment at its defaults within 30 minutes on the 2-core CPU, all of them within 3 hours."""
    minutes = [e.minutes for e in EXPERIMENTS.values()]
    assert all(0 < m <= 30 for m in minutes) and sum(minutes) <= 180, minutes


def test_subset_indices_are_seeded_sorted_and_shared_by_the_arms():
    a = subset_indices(1000, 100, seed=3)
    assert torch.equal(a, subset_indices(1000, 100, seed=3)) and not torch.equal(a, subset_indices(1000, 100, seed=4))
    assert len(a) == 100 and len(set(a.tolist())) == 100 and torch.equal(a, a.sort().values)
    assert subset_indices(1000, None, 0) is None and subset_indices(1000, 1000, 0) is None


def test_a_run_logs_steps_that_add_up_to_its_epoch(idx_folder, tmp_path):
    """steps.jsonl's windows, weighted by their images, give the epoch's own training error; the
    subset sets the number of steps."""
    cfg = TrainConfig(
        model=TEST_MODEL,
        data=str(idx_folder.path),
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
    monkeypatch.setitem(BASE, "model", TEST_MODEL)
    out = tmp_path / "pooling"
    argv = ["experiment", "pooling", "--data", str(idx_folder.path), "--subset", "32", "--epochs", "1"]
    argv += ["--seeds", "2", "--device", "cpu", "--out", str(out)]
    rc, printed, err = _main(capsys, *argv)
    assert rc == 0, err
    table = json.loads((out / "table.json").read_text())
    assert [len(a["runs"]) for a in table["arms"]] == [2, 2]
    for arm in table["arms"]:  # every arm-seed's own run folder, reproducible from its settings
        for run in arm["runs"]:
            stored = json.loads((out / run["run_dir"] / "config.json").read_text())
            assert stored["pooling"] == arm["settings"]["pooling"] and stored["subset"] == 32
    exp, opts = experiment("pooling"), Options(subset=32, epochs=1, data=str(idx_folder.path), device="cpu")
    again = make_table(exp, out, [arm_config(exp, a, s, opts, out) for s in range(2) for a in exp.arms], {})
    assert json.loads(json.dumps(again["arms"])) == table["arms"]  # the table is a function of the run folders
    assert table["comparisons"][0]["seeds"] == [0, 1] and table["comparisons"][0]["verdict"] in (
        "the paper's direction",
        "the opposite direction",
        "inconclusive",
    )
    rc, printed, _ = _main(capsys, *argv)  # again: everything skipped
    assert rc == 0 and printed.count("finished before, skipped") == 4


def test_a_damaged_experiment_record_is_one_line(tmp_path, capsys, monkeypatch):
    """Before: an experiment.json that is a list (or not JSON) was a traceback."""
    monkeypatch.setattr(alexnet.training.loop, "train", lambda *a, **k: pytest.fail("trained"))
    for text in ("[]", "{", "[" * 100_000 + "]" * 100_000):
        (tmp_path / "experiment.json").write_text(text)
        rc, _, err = _main(capsys, "experiment", "lrn", "--seeds", "1", "--out", str(tmp_path))
        assert rc == 2 and "experiment.json" in _one_line_error(err)
