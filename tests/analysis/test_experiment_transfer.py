"""alexnet experiment transfer: the halves, the settings of every arm against what
docs/transfer.md says each means, the table read back from run folders (with a stand-in for
train) with its intervals against stats.py and the findings' verdicts, resuming and skipping, the
command line's one-line errors, and one real experiment end to end at test size (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import alexnet.training.loop
from alexnet.analysis.stats import mean_interval, paired_difference
from alexnet.analysis.transfer import ARMS, Options, few_epochs, halves, plan, run_transfer
from alexnet.config import TrainConfig
from alexnet.errors import ConfigError

from helpers import _main, _one_line_error


def test_the_fixed_split_is_0_to_4_against_5_to_9_and_a_random_one_is_drawn_per_seed():
    assert halves(10, "fixed", 3) == ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9])
    drawn = [halves(10, "random", seed) for seed in range(4)]
    for a, b in drawn:
        assert len(a) == len(b) == 5 and sorted(a + b) == list(range(10))
    assert len({tuple(a) for a, _ in drawn}) > 1 and halves(10, "random", 2) == drawn[2]
    with pytest.raises(ConfigError, match="--split"):
        halves(10, "natural", 0)


def test_every_arm_has_the_settings_its_name_means(tmp_path):
    opts = Options(layers=("conv2", "fc6"), seeds=2, few=(10, 1000))
    jobs = {j.name: TrainConfig.from_dict(j.settings) for j in plan(opts, tmp_path, 10)}
    assert len(jobs) == 2 * (2 + 4 * 2 + 2 * 2)
    for k in range(2):
        base = {x: str(tmp_path / f"base{x}-seed{k}" / "checkpoints" / "last.pt") for x in "AB"}
        assert jobs[f"baseA-seed{k}"].classes == "0,1,2,3,4" and jobs[f"baseB-seed{k}"].classes == "5,6,7,8,9"
        assert jobs[f"baseA-seed{k}"].init_from is None and jobs[f"baseB-seed{k}"].init_from is None
        for n in ("conv2", "fc6"):
            for arm in ARMS:  # BnB: from baseB, frozen; BnB+: from baseB, fine-tuned; AnB and AnB+ from baseA
                cfg = jobs[f"{arm}-{n}-seed{k}"]
                assert (cfg.init_from, cfg.copy_up_to, cfg.classes) == (base[arm[0]], n, "5,6,7,8,9")
                assert cfg.freeze == (None if arm.endswith("+") else n)
        for m in (10, 1000):
            scratch, tuned = jobs[f"few{m}-scratch-seed{k}"], jobs[f"few{m}-fromA-seed{k}"]
            assert (scratch.init_from, tuned.init_from, tuned.copy_up_to, tuned.freeze) == (None, base["A"], None, None)
            assert scratch.subset_per_class == tuned.subset_per_class == m and scratch.subset is None
        # every run of a seed shares its recipe: only the transfer settings, classes and size differ
        recipe = {"model", "image_size", "batch_size", "lr", "schedule", "seed", "data", "dropout"}
        assert len({tuple(getattr(c, key) for key in recipe) for n, c in jobs.items() if n.endswith(f"seed{k}")}) == 1


def test_few_shot_runs_take_a_base_runs_steps_within_their_epoch_cap():
    opts = Options(epochs=2, subset=2000, batch_size=32, few_epochs=4)
    assert few_epochs(opts, 10, 5) == 4  # 2 steps an epoch: capped
    assert few_epochs(opts, 100, 5) == 4  # 16 steps an epoch: 126 steps need 8, capped at 4
    assert few_epochs(opts, 1000, 5) == 2  # 157 steps an epoch: never fewer epochs than a base run


def _stand_in(calls, top1):
    """train() as far as the experiment reads it: the run folder's config and metrics."""

    def train(cfg, *, argv=None, resume=None, epochs=None, quiet=False):
        calls.append((cfg.name, resume is not None))
        if cfg.init_from is not None:  # a run copied from a base net comes after it
            assert Path(cfg.init_from).parent.parent.joinpath("metrics.jsonl").is_file(), cfg.name
        folder = (
            alexnet.training.loop.RunFolder(resume) if resume else alexnet.training.loop.RunFolder.create(cfg, argv)
        )
        folder.last.parent.mkdir(exist_ok=True)
        folder.last.write_bytes(b"")
        folder.metrics_file.write_text(
            "".join(json.dumps({"epoch": e, "val_top1": top1(cfg) / 100}) + "\n" for e in range(cfg.epochs))
        )
        folder.close()
        return {"val_top1": top1(cfg) / 100}

    return train


def _top1(cfg) -> float:
    """A made-up top-1 (%) that tells every run apart: its arm, layer and seed."""
    name = cfg.name.rsplit("-seed", 1)[0]
    arms = {"baseA": 90, "baseB": 80, "BnB-conv2": 79, "BnB+-conv2": 81, "AnB-conv2": 70, "AnB+-conv2": 82}
    arms |= {"few10-scratch": 40, "few10-fromA": 60}
    return arms[name] + 0.5 * cfg.seed + (0.25 if cfg.seed == 1 and name == "AnB+-conv2" else 0.0)


def test_the_table_reads_every_run_folder_and_states_the_findings(idx_folder, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(alexnet.training.loop, "train", _stand_in(calls, _top1))
    opts = Options(layers=("conv2",), seeds=3, few=(10,), data=str(idx_folder.path))
    folder = run_transfer(opts, tmp_path / "exp", say=lambda _: None)
    table = json.loads((folder / "table.json").read_text())
    assert table["baseB"]["seeds"] == [80.0, 80.5, 81.0]
    row = next(r for r in table["rows"] if (r["arm"], r["layer"]) == ("AnB+", "conv2"))
    assert row["seeds"] == [82.0, 82.75, 83.0]
    expected = mean_interval([82.0, 82.75, 83.0])
    assert (row["mean"], row["low"], row["high"]) == pytest.approx((expected.mean, expected.low, expected.high))
    findings = {f["claim"]: f for f in table["findings"]}
    plus = findings["fine-tuning: AnB+ (mean over n) above baseB"]
    assert plus["difference"]["mean"] == pytest.approx(paired_difference([82.0, 82.75, 83.0], [80, 80.5, 81]).mean)
    assert plus["verdict"] == "the paper's direction"  # +2, +2.25, +2 over baseB: the interval excludes 0
    assert findings["specificity: AnB below BnB at conv2"]["verdict"] == "the paper's direction"
    assert findings["10 images per class: fine-tuned from baseA above scratch"]["difference"]["mean"] == 20
    assert (folder / "figure.png").stat().st_size > 0
    assert "| conv2 | 79.50 [" in (folder / "table.md").read_text()
    first = list(calls)
    run_transfer(opts, tmp_path / "exp", say=lambda _: None)  # again: every run finished, none trained
    assert calls == first and len(first) == 3 * (2 + 4 + 2)


def test_the_same_folder_with_other_settings_is_refused(idx_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(alexnet.training.loop, "train", _stand_in([], _top1))
    opts = Options(layers=("conv2",), seeds=1, few=(10,), data=str(idx_folder.path))
    run_transfer(opts, tmp_path, say=lambda _: None)
    with pytest.raises(ConfigError, match="other settings"):
        run_transfer(Options(**{**opts.__dict__, "epochs": 3}), tmp_path, say=lambda _: None)


def test_experiment_flags_are_checked_in_one_line(idx_folder, capsys, tmp_path):
    for argv, words in (
        (["transfer", "--layers", "conv2,conv9"], "--layers conv2,conv9: give some of conv1"),
        (["transfer", "--few", "10,0"], "--few must be a positive integer"),
        (["transfer", "--split", "natural"], "--split 'natural' is not one of: fixed, random"),
        (["lrn", "--layers", "conv2"], "--layers is for the transfer experiment"),
    ):
        rc, _, err = _main(capsys, "experiment", *argv, "--data", str(idx_folder.path), "--out", str(tmp_path / "x"))
        assert rc == 2 and words in _one_line_error(err), (argv, err)
    rc, out, _ = _main(capsys, "experiment", "--list")
    assert rc == 0 and "transfer" in out


@pytest.mark.slow
def test_a_real_transfer_experiment_at_test_size(idx_folder, tmp_path):
    opts = Options(
        layers=("conv3",), seeds=1, epochs=1, subset=64, few=(3,), data=str(idx_folder.path), model="alexnet_tiny"
    )
    folder = run_transfer(opts, tmp_path / "exp", say=lambda _: None)
    table = json.loads((folder / "table.json").read_text())
    assert len(table["rows"]) == 4 and all(0 <= r["mean"] <= 100 for r in table["rows"])
    record = json.loads((folder / "AnB-conv3-seed0" / "transfer.json").read_text())
    assert record["copied"] == ["conv1", "conv2", "conv3"] and record["frozen"] == ["conv1", "conv2", "conv3"]
    assert record["init_from"] == str(folder / "baseA-seed0" / "checkpoints" / "last.pt")
    assert json.loads((folder / "few3-fromA-seed0" / "config.json").read_text())["subset_per_class"] == 3
    # measured runs give their checkpoints back; the base nets keep theirs, which the others copy
    kept = sorted(p.parent.parent.name for p in folder.glob("*/checkpoints/*.pt"))
    assert kept == ["baseA-seed0", "baseA-seed0", "baseB-seed0", "baseB-seed0"]
    assert json.loads((folder / "AnB+-conv3-seed0" / "metrics.jsonl").read_text().splitlines()[-1])["epoch"] == 0


def test_keep_checkpoints_keeps_every_runs(idx_folder, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(alexnet.training.loop, "train", _stand_in(calls, _top1))
    opts = Options(layers=("conv2",), seeds=1, few=(10,), data=str(idx_folder.path))
    for keep, folder in ((False, tmp_path / "a"), (True, tmp_path / "b")):
        run_transfer(Options(**{**opts.__dict__, "keep_checkpoints": keep}), folder, say=lambda _: None)
        kept = sorted(p.parent.parent.name for p in folder.glob("*/checkpoints/last.pt"))
        assert kept == (sorted(name for name, _ in calls[-8:]) if keep else ["baseA-seed0", "baseB-seed0"])
