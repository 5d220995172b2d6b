"""The paper's ablations, measured: ``alexnet experiment NAME``.

An experiment is data (:data:`EXPERIMENTS`): its arms as settings over the defaults, the settings
every arm shares, how many epochs and seeds it takes by default, and what the paper reports. The
runner trains every arm with every seed through :func:`alexnet.training.loop.train`, each into an ordinary
run folder ``<experiment folder>/<arm>-seed<k>/`` (reproducible from its own ``config.json``), and
then reads those folders back - never live objects - into ``table.json``, ``table.md`` and
``figure.png``. Running it again on the same folder skips the arm-seeds that finished and resumes
one that stopped part-way.

Arms are compared over seeds: a difference counts only when the two arms' ranges over seeds do
not overlap (every seed of one arm beats every seed of the other). Anything else is reported as
"inside the spread: not a reproduction"; one seed has no spread and never reproduces anything.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from alexnet.config import TrainConfig, is_number
from alexnet.errors import ConfigError, DataError, brief
from alexnet.system.files import read_json, read_json_lines
from alexnet.training.rundir import RunFolder, read_metrics

# Settings every experiment starts from: the fast recipe at the smallest input on a seeded subset
# of Fashion-MNIST, so the defaults finish in minutes on two CPU cores (docs/experiments.md).
# Batch 32: 375 steps in two epochs of 6,000 images; at batch 128 (94 steps) one seed in two of the
# default network stayed near chance (65% test error after two epochs; 25% at batch 32, same seed).
BASE: dict[str, Any] = {"image_size": 67, "subset": 6000, "batch_size": 32, "checkpoint_every": None}


@dataclass(frozen=True)
class Arm:
    name: str
    settings: dict[str, Any]  # TrainConfig fields over the experiment's own
    rgb_only: bool = False  # needs colour (PCA lighting): on grayscale data the arm is skipped, and the table says so


@dataclass(frozen=True)
class Experiment:
    name: str
    summary: str  # one line for --list
    paper: str  # what the paper reports
    arms: tuple[Arm, ...]  # the first is the baseline the others are compared with
    settings: dict[str, Any] = field(default_factory=dict)  # shared by every arm
    epochs: int = 2
    seeds: int = 2
    curves: str = "epochs"  # the figure: "steps" (training error per logged step) or "epochs" (train and test error)
    levels: tuple[float, ...] = ()  # training-error levels whose steps-to-reach are tabled (figure 1)
    minutes: float = 0.0  # measured wall time at the defaults on the 2-core EPYC (docs/experiments.md)


EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment(
            "relu-vs-tanh",
            "figure 1: training error against steps, ReLU vs tanh; steps to 40/25/15% and the speed-up",
            "a 4-layer CNN with ReLUs reached 25% training error on CIFAR-10 six times faster than with tanh",
            (Arm("relu", {"activation": "relu"}), Arm("tanh", {"activation": "tanh"})),
            settings={"step_log": 5},
            curves="steps",
            levels=(0.40, 0.25, 0.15),
            minutes=6,
        ),
        Experiment(
            "lrn",
            "section 3.3: with and without local response normalization (alexnet, LRN after conv1/conv2)",
            "LRN reduced top-1/top-5 error by 1.4/1.2 points on ImageNet (CIFAR-10: 13% -> 11%)",
            (Arm("no-lrn", {"lrn": False}), Arm("lrn", {"lrn": True})),
            seeds=3,
            minutes=10,
        ),
        Experiment(
            "pooling",
            "section 3.4: overlapping 3x3/2 max-pooling vs plain 2x2/2",
            "overlapping pooling reduced top-1/top-5 error by 0.4/0.3 points",
            (Arm("plain", {"pooling": "plain"}), Arm("overlap", {"pooling": "overlap"})),
            seeds=3,
            minutes=9,
        ),
        Experiment(
            "dropout",
            "section 4.2: dropout 0.5 vs none; train and test error per epoch (overfitting)",
            "without dropout the network overfits substantially; dropout roughly doubles the iterations to converge",
            (Arm("no-dropout", {"dropout": 0.0}), Arm("dropout", {"dropout": 0.5})),
            epochs=3,
            minutes=9,
        ),
        Experiment(
            "augmentation",
            "section 4.1: none / crops+flips / crops+flips+PCA lighting (lighting needs RGB --data)",
            (
                "without crops and flips the network overfits substantially; PCA lighting reduced top-1 error by "
                "over 1 point"
            ),
            (
                Arm("none", {"augment": False}),
                Arm("crops-flips", {"augment": True}),
                Arm("crops-flips-lighting", {"augment": True, "lighting": True}, rgb_only=True),
            ),
            epochs=3,
            minutes=9,
        ),
        Experiment(
            "towers",
            "section 3.2: two-tower alexnet2012 vs one tower of half width (alexnet2012_half)",
            "the two-GPU net had 1.7/1.2 points lower top-1/top-5 error than the one-GPU net of half the kernels",
            (Arm("one-tower-half", {"model": "alexnet2012_half"}), Arm("two-towers", {"model": "alexnet2012"})),
            settings={"init": "kaiming"},  # the paper's init sits at chance in these budgets (docs/paper.md)
            seeds=3,
            minutes=9,
        ),
    )
}


@dataclass(frozen=True)
class Options:
    """What the command line may change; None keeps the experiment's own default."""

    epochs: int | None = None
    seeds: int | None = None
    subset: int | None = BASE["subset"]  # None: the whole training set
    image_size: int = BASE["image_size"]
    data: str | None = None
    device: str = "auto"


def experiment(name: str) -> Experiment:
    """The experiment called ``name``; an unknown name is one line listing the known ones."""
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}; choose one of: {', '.join(EXPERIMENTS)} (or all)")
    return EXPERIMENTS[name]


def list_lines() -> list[str]:
    """One line per experiment: name, default arms x seeds x epochs and time, what it measures."""
    return [
        f"{e.name:<13} {len(e.arms)} arms x {e.seeds} seeds x {e.epochs} epochs, ~{e.minutes:g} "
        "min on 2 CPU cores: "
        f"{e.summary}"
        for e in EXPERIMENTS.values()
    ]


def is_grayscale(data: str | None) -> bool:
    """IDX sets (Fashion-MNIST, the default) are one channel: nothing for PCA lighting to shift."""
    from alexnet.data.idx import is_idx_folder

    return data is None or is_idx_folder(data)


def arm_config(exp: Experiment, arm: Arm, seed: int, opts: Options, folder: Path) -> TrainConfig:
    """The settings of one arm-seed: defaults < BASE < the experiment's < the arm's < the options."""
    values = {
        **BASE,
        **exp.settings,
        **arm.settings,
        "epochs": opts.epochs or exp.epochs,
        "seed": seed,
        "subset": opts.subset,
        "image_size": opts.image_size,
        "data": opts.data,
        "device": opts.device,
        "out": str(folder),
        "name": f"{arm.name}-seed{seed}",
    }
    return TrainConfig.from_dict(values, source=f"experiment {exp.name}, arm {arm.name}")


def _finished(folder: Path, epochs: int) -> bool:
    path = folder / "metrics.jsonl"
    return path.is_file() and any(r["epoch"] == epochs - 1 for r in read_metrics(path, ()))


def _check_same(stored: TrainConfig, cfg: TrainConfig, where: Path) -> None:
    """A run folder found again must hold this arm-seed's settings (the device may differ)."""
    a, b = stored.to_dict(), cfg.to_dict()
    differ = [k for k in a if k != "device" and a[k] != b[k]]
    if differ:
        shown = ", ".join(f"{k} {a[k]!r} there, {b[k]!r} now" for k in differ[:3])
        raise ConfigError(
            f"{where} holds this arm-seed with other settings ({shown}); give the same flags, or another --out"
        )


def run_experiment(
    name: str,
    opts: Options = Options(),
    out: str | Path | None = None,
    *,
    argv: list[str] | None = None,
    say: Callable[[str], None] = print,
) -> Path:
    """Train every arm with every seed into ``out`` (default ``runs/experiment-NAME-<time>``),
    skipping finished arm-seeds and resuming stopped ones; then write the table and the figure.
    Returns the experiment folder."""
    from alexnet.training.loop import train

    exp = experiment(name)
    seeds = opts.seeds or exp.seeds
    folder = Path(out) if out is not None else Path("runs") / f"experiment-{name}-{datetime.now():%Y%m%d-%H%M%S}"
    configs = {
        (arm.name, s): arm_config(exp, arm, s, opts, folder) for arm in exp.arms for s in range(seeds)
    }  # every flag checked first
    record = folder / "experiment.json"
    found = read_json(record, error=ConfigError) if os.path.lexists(record) else {"experiment": name}
    if not isinstance(found, dict):
        raise ConfigError(f"{record}: not an experiment record (a JSON object); pick another --out")
    if found.get("experiment") != name:
        raise ConfigError(
            f"{folder} holds experiment {brief(found.get('experiment'))}, not {name!r}; pick another --out"
        )
    for cfg in configs.values():  # before anything is written: the runs found again are this experiment's
        if (folder / cfg.name / "config.json").is_file():
            _check_same(RunFolder(folder / cfg.name).read_config(), cfg, folder / cfg.name)
    folder.mkdir(parents=True, exist_ok=True)
    record.write_text(
        json.dumps(
            {"experiment": name, "seeds": seeds, "options": opts.__dict__, "command": shlex.join(argv or sys.argv)},
            indent=2,
        )
        + "\n"
    )
    skipped = {
        a.name: "skipped: grayscale data has no colour for PCA lighting to shift; give RGB --data to run it"
        for a in exp.arms
        if a.rgb_only and is_grayscale(opts.data)
    }
    started = time.monotonic()
    for (arm, _seed), cfg in configs.items():
        run_dir = folder / cfg.name
        if arm in skipped:
            continue
        if (run_dir / "config.json").is_file():
            if _finished(run_dir, cfg.epochs):
                say(f"{name}: {cfg.name} finished before, skipped")
                continue
            say(f"{name}: {cfg.name} resumed")
            result = train(cfg, resume=run_dir, quiet=True)
        else:
            t = time.monotonic()
            result = train(cfg, argv=argv or ["alexnet", "experiment", name], quiet=True)
            say(f"{name}: {cfg.name} test error {100 * (1 - result['val_top1']):.2f}% ({time.monotonic() - t:.0f} s)")
    table = make_table(exp, folder, [cfg for cfg in configs.values()], skipped)
    table["wall_seconds_this_call"] = round(time.monotonic() - started, 1)
    write_table(table, folder)
    from alexnet.plots import plot_experiment

    plot_experiment(table, folder / "figure.png")
    say(f"{name}: wrote {folder / 'table.md'} and {folder / 'figure.png'}")
    return folder


def spread(values: list[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value), min and max of per-seed values."""
    a = np.asarray(values, dtype=float)
    return {
        "mean": float(a.mean()),
        "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
        "min": float(a.min()),
        "max": float(a.max()),
        "n": len(a),
    }


def steps_to_reach(rows: list[dict], level: float) -> int | None:
    """The first logged step whose training error (the mean of the steps since the line before)
    is at or below ``level``; None when no line reaches it."""
    return next((r["step"] for r in sorted(rows, key=lambda r: r["step"]) if r["train_error"] <= level), None)


def verdict(a: dict, b: dict) -> str:
    """Whether arm b's difference from arm a is larger than the spread over seeds: their ranges
    (min-max over seeds) must not overlap. One seed has no spread."""
    if min(a["n"], b["n"]) < 2:
        return "one seed: no spread to compare with, not a reproduction"
    if a["max"] < b["min"] or b["max"] < a["min"]:
        return "outside the spread over seeds"
    return "inside the spread: not a reproduction"


def _read_steps(run_dir: Path) -> list[dict]:
    path = run_dir / "steps.jsonl"
    rows = read_json_lines(path) if os.path.lexists(path) else []
    if not all(
        isinstance(r, dict) and isinstance(r.get("step"), int) and is_number(r.get("train_error")) for r in rows
    ):
        raise DataError(f"{path}: not a steps record (lines of step and train_error)")
    return rows


def make_table(exp: Experiment, folder: Path, configs: list[TrainConfig], skipped: dict[str, str]) -> dict:
    """The experiment's numbers, read from its run folders: per arm the final test and training
    error (%) per seed and their spread, the curves, steps to each level; arms against the baseline."""
    arms = []
    for arm in exp.arms:
        row: dict[str, Any] = {"arm": arm.name, "settings": arm.settings, "runs": []}
        if arm.name in skipped:
            arms.append({**row, "skipped": skipped[arm.name]})
            continue
        for cfg in (c for c in configs if c.name.startswith(f"{arm.name}-seed")):
            run_dir = folder / cfg.name
            metrics = read_metrics(run_dir / "metrics.jsonl", ("val_top1", "train_acc", "train_seconds", "val_seconds"))
            env = read_json(run_dir / "env.json") if os.path.lexists(run_dir / "env.json") else {}
            env = env if isinstance(env, dict) else {}
            steps = _read_steps(run_dir)
            row["runs"].append(
                {
                    "seed": cfg.seed,
                    "run_dir": cfg.name,
                    "test_error": 100 * (1 - metrics[-1]["val_top1"]),
                    "train_error": 100 * (1 - metrics[-1]["train_acc"]),
                    "seconds": sum(m["train_seconds"] + m["val_seconds"] for m in metrics),
                    "epochs": [
                        {
                            "epoch": m["epoch"] + 1,
                            "test_error": 100 * (1 - m["val_top1"]),
                            "train_error": 100 * (1 - m["train_acc"]),
                        }
                        for m in metrics
                    ],
                    "steps": [{"step": s["step"], "train_error": 100 * s["train_error"]} for s in steps],
                    "steps_to": {f"{100 * lv:g}": steps_to_reach(steps, lv) for lv in exp.levels},
                    "device": env.get("device"),
                    "torch": env.get("torch"),
                }
            )
        for key in ("test_error", "train_error"):
            row[key] = spread([r[key] for r in row["runs"]])
        arms.append(row)
    base = arms[0]
    comparisons = [
        {
            "arm": a["arm"],
            "against": base["arm"],
            "difference": a["test_error"]["mean"] - base["test_error"]["mean"],
            "verdict": verdict(base["test_error"], a["test_error"]),
        }
        for a in arms[1:]
        if "skipped" not in a and "skipped" not in base
    ]
    cfg = configs[0]
    return {
        "experiment": exp.name,
        "summary": exp.summary,
        "paper": exp.paper,
        "metric": "test error (%) after the last epoch",
        "epochs": cfg.epochs,
        "seeds": sorted({c.seed for c in configs}),
        "subset": cfg.subset,
        "image_size": cfg.image_size,
        "data": cfg.data or "Fashion-MNIST",
        "levels": [100 * lv for lv in exp.levels],
        "curves": exp.curves,
        "arms": arms,
        "comparisons": comparisons,
        "speedups": _speedups(arms, exp.levels),
    }


def _speedups(arms: list[dict], levels: tuple[float, ...]) -> list[dict]:
    """For figure 1: the mean steps of each arm to each level, and the last arm's over the first's."""
    if not levels or len(arms) < 2 or any("skipped" in a for a in arms):
        return []
    out = []
    for lv in levels:
        key = f"{100 * lv:g}"
        means = []
        for a in (arms[0], arms[-1]):
            reached = [r["steps_to"][key] for r in a["runs"]]
            means.append(None if None in reached else float(np.mean(reached)))
        fast, slow = means
        longest = max((r["steps"][-1]["step"] for r in arms[-1]["runs"] if r["steps"]), default=0)
        ratio = slow / fast if fast and slow else None
        if ratio:
            note = f"{ratio:.2f}x"
        elif fast:
            note = f"> {longest / fast:.2f}x ({arms[-1]['arm']} did not reach it in {longest} steps)"
        else:
            note = f"no ratio: {arms[0]['arm']} did not reach it on every seed" + (
                "" if slow is None else f", {arms[-1]['arm']} did"
            )
        out.append({"level": key, arms[0]["arm"]: fast, arms[-1]["arm"]: slow, "ratio": ratio, "reading": note})
    return out


def write_table(table: dict, folder: Path) -> None:
    """``table.json`` (everything) and ``table.md`` (the rows a reader wants)."""
    (folder / "table.json").write_text(json.dumps(table, indent=2) + "\n")
    (folder / "table.md").write_text(table_markdown(table))


def _pm(s: dict) -> str:
    return f"{s['mean']:.2f} ± {s['std']:.2f} ({s['min']:.2f}–{s['max']:.2f})"


def table_markdown(table: dict) -> str:
    """The table as markdown: one row per arm, mean ± std (min–max) over seeds and each seed's value."""
    t = table
    lines = [
        f"**{t['experiment']}** — {t['summary']}. {t['data']}, {t['subset'] or 'all'} "
        "training images at "
        f"{t['image_size']} px, "
        f"{t['epochs']} epochs, seeds {', '.join(map(str, t['seeds']))}. Paper: {t['paper']}.",
        "",
        "| arm | test error % (mean ± std (min–max)) | per seed | train error % | per seed |",
        "|---|---|---|---|---|",
    ]
    for a in t["arms"]:
        if "skipped" in a:
            lines.append(f"| {a['arm']} | {a['skipped']} | | | |")
            continue
        per = {k: ", ".join(f"{r[k]:.2f}" for r in a["runs"]) for k in ("test_error", "train_error")}
        lines.append(
            f"| {a['arm']} | {_pm(a['test_error'])} | {per['test_error']} | {_pm(a['train_error'])} | "
            f"{per['train_error']} |"
        )
    lines.append("")
    for c in t["comparisons"]:
        lines.append(f"- {c['arm']} − {c['against']}: {c['difference']:+.2f} points of test error; {c['verdict']}.")
    if t["speedups"]:
        first, last = t["arms"][0]["arm"], t["arms"][-1]["arm"]
        lines += [
            "",
            f"| training error ≤ | steps {first} (per seed) | steps {last} (per seed) | {last} / {first} |",
            "|---|---|---|---|",
        ]
        for s in t["speedups"]:
            steps = [
                ", ".join(
                    "—" if r["steps_to"][s["level"]] is None else str(r["steps_to"][s["level"]]) for r in a["runs"]
                )
                for a in (t["arms"][0], t["arms"][-1])
            ]
            lines.append(
                f"| {s['level']}% | {_fmt(s[first])} ({steps[0]}) | {_fmt(s[last])} ({steps[1]}) | {s['reading']} |"
            )
    return "\n".join(lines) + "\n"


def _fmt(x: float | None) -> str:
    return "not reached" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:g}"


def run_all(opts: Options, out: str | Path | None = None, *, argv: list[str] | None = None, say=print) -> Path:
    """Every experiment, each into ``<out>/<name>`` (default ``runs/experiments-<time>``)."""
    root = Path(out) if out is not None else Path("runs") / f"experiments-{datetime.now():%Y%m%d-%H%M%S}"
    for name in EXPERIMENTS:
        run_experiment(name, replace(opts), root / name, argv=argv, say=say)
    return root
