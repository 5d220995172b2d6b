"""An experiment's table, read back from its run folders (never from live objects): every arm's
numbers per seed with their 95% intervals, and the paired comparisons that test the paper's claims.

Seeds are paired: seed k of every arm trains on the same images in the same order with the same
crops and flips (and, where the arms' layers have the same shapes, the same initial weights), so
an arm is compared with its baseline through the per-seed differences, arm minus baseline. Each
comparison carries the mean difference with its Student-t interval (:mod:`alexnet.analysis.stats`:
paired t, not a bootstrap), the smallest difference the design detects at 80% power, and a
verdict: the paper's direction (the interval excludes 0 on the paper's side), the opposite
direction, or inconclusive (with what it could have detected). Speed-ups (figure 1) are compared
as log ratios of steps, so the interval of their mean, exponentiated, is that of a geometric-mean
ratio.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from alexnet.analysis import stats
from alexnet.analysis.ablations import Comparison, Experiment
from alexnet.analysis.sweep import read_steps, steps_to_reach
from alexnet.config import TrainConfig
from alexnet.errors import DataError
from alexnet.ranges import is_number
from alexnet.system.files import read_json
from alexnet.training.rundir import read_metrics

TRAINING_ERROR = "final_train.json"  # beside an arm-seed's run: its final weights on its training images


def read_run(run_dir: Path, seed: int, levels: tuple[float, ...], half: int = 0) -> dict:
    """One arm-seed's numbers (errors in %): the last epoch's test error, its training error in
    training mode, the final weights' training error in evaluation mode with the train-test gap
    (when measured), the curves, and the steps to each training-error level."""
    metrics = read_metrics(run_dir / "metrics.jsonl", ("train_acc", "train_seconds", "val_seconds"))
    env = read_json(run_dir / "env.json") if os.path.lexists(run_dir / "env.json") else {}
    env = env if isinstance(env, dict) else {}
    final = read_json(run_dir / TRAINING_ERROR) if os.path.lexists(run_dir / TRAINING_ERROR) else None
    if final is not None and not (isinstance(final, dict) and is_number(final.get("train_error"))):
        raise DataError(f"{run_dir / TRAINING_ERROR}: not a training-error record (an object with train_error)")
    if not metrics or "val_top1" not in metrics[-1]:
        raise DataError(f"{run_dir / 'metrics.jsonl'}: the last epoch has no test accuracy; train it to the end")
    steps = read_steps(run_dir)
    test = 100 * (1 - metrics[-1]["val_top1"])
    final_train = None if final is None else 100 * final["train_error"]
    return {
        "seed": seed,
        "run_dir": run_dir.name,
        "test_error": test,
        "train_error": 100 * (1 - metrics[-1]["train_acc"]),
        "final_train_error": final_train,
        "gap": None if final_train is None else test - final_train,
        "seconds": sum(m["train_seconds"] + m["val_seconds"] for m in metrics),
        "epochs": [
            {
                "epoch": m["epoch"] + 1,
                "test_error": 100 * (1 - m["val_top1"]) if "val_top1" in m else None,  # None: not evaluated
                "train_error": 100 * (1 - m["train_acc"]),
            }
            for m in metrics
        ],
        "steps": [{"step": s["step"], "train_error": 100 * s["train_error"]} for s in steps],
        "last_step": steps[-1]["step"] if steps else 0,
        "steps_to": {_key(lv): steps_to_reach(steps, lv, half) for lv in levels},
        "device": env.get("device"),
        "torch": env.get("torch"),
    }


def _key(level: float) -> str:
    return f"{100 * level:g}"


ARM_METRICS = ("test_error", "train_error", "final_train_error", "gap")


def arm_rows(exp: Experiment, folder: Path, configs: list[TrainConfig], skipped: dict[str, str]) -> list[dict]:
    """Per arm: its settings, its runs (:func:`read_run`, seed order) and each metric's mean with
    its 95% interval over seeds; an arm not run says why (``skipped``)."""
    arms = []
    for arm in exp.arms:
        row: dict[str, Any] = {"arm": arm.name, "settings": arm.settings, "runs": []}
        if arm.name in skipped:
            arms.append({**row, "skipped": skipped[arm.name]})
            continue
        mine = sorted((c for c in configs if c.name == f"{arm.name}-seed{c.seed}"), key=lambda c: c.seed)
        row["lr"] = mine[0].lr if mine else None
        row["runs"] = [read_run(folder / c.name, c.seed, exp.levels, exp.smooth) for c in mine]
        for key in ARM_METRICS:
            values = [r[key] for r in row["runs"] if r[key] is not None]
            row[key] = stats.mean_interval(values).to_dict() if values else None
        arms.append(row)
    return arms


def _paired(a: dict, b: dict, key) -> tuple[list[int], list, list]:
    """The seeds both arms ran, and each arm's ``key(run)`` on them, in seed order."""
    runs_a, runs_b = ({r["seed"]: r for r in x["runs"]} for x in (a, b))
    seeds = sorted(set(runs_a) & set(runs_b))
    return seeds, [key(runs_a[s]) for s in seeds], [key(runs_b[s]) for s in seeds]


def compare(arms: dict[str, dict], c: Comparison) -> dict:
    """``c.arm`` against ``c.against`` on ``c.metric`` (% points): the per-seed differences, their
    paired interval, the minimum detectable effect and the verdict."""
    a, b = arms[c.arm], arms[c.against]
    out: dict[str, Any] = {"arm": c.arm, "against": c.against, "metric": c.metric, "paper_sign": c.paper_sign}
    if "skipped" in a or "skipped" in b:
        return {**out, "verdict": None, "reading": f"not run: {(a if 'skipped' in a else b)['skipped']}"}
    seeds, xs, ys = _paired(a, b, lambda r: r[c.metric])
    pairs = [(s, x, y) for s, x, y in zip(seeds, xs, ys) if x is not None and y is not None]
    if not pairs:
        return {**out, "verdict": None, "reading": f"no seed has {c.metric} for both arms"}
    diff = stats.paired_difference([x for _, x, _ in pairs], [y for _, _, y in pairs])
    word, sentence = stats.verdict(diff, c.paper_sign)
    return {
        **out,
        "seeds": [s for s, _, _ in pairs],
        "per_seed": [x - y for _, x, y in pairs],
        "difference": diff.to_dict(),
        "detectable": stats.detectable(diff.sd, diff.n),
        "verdict": word,
        "reading": sentence,
    }


def speedups(arms: dict[str, dict], c: Comparison, levels: tuple[float, ...]) -> list[dict]:
    """Figure 1's measure for ``c.arm`` (tanh) against ``c.against`` (ReLU), per level: each seed's
    steps to it, the ratio arm/against as a geometric mean with its paired interval (on the log
    ratios), what the design could detect, and the verdict (the paper: the ratio is above 1).

    A seed on which ``c.arm`` never reached the level counts with its last logged step, a lower
    bound (``censored``): the ratio is then at least what is shown. When ``c.against`` missed it
    on any seed there is no ratio."""
    a, b = arms[c.arm], arms[c.against]
    out = []
    for lv in levels:
        key = _key(lv)
        seeds, slow, fast = _paired(a, b, lambda r, key=key: (r["steps_to"][key], r["last_step"]))
        row: dict[str, Any] = {
            "arm": c.arm,
            "against": c.against,
            "level": key,
            "seeds": seeds,
            "steps": {c.against: [s for s, _ in fast], c.arm: [s for s, _ in slow]},
            "censored": [s for s, (reached, _) in zip(seeds, slow) if reached is None],
        }
        missed = [s for s, (reached, _) in zip(seeds, fast) if reached is None]
        if not seeds or missed:
            row.update(
                verdict=stats.INCONCLUSIVE,
                reading=f"no ratio: {c.against} did not reach {key}% on seed(s) {', '.join(map(str, missed))}"
                if missed
                else "no seed ran both arms",
            )
            out.append(row)
            continue
        logs = [math.log(max(r or last, 1) / f) for (r, last), (f, _) in zip(slow, fast)]
        diff = stats.mean_interval(logs)
        word, _ = stats.verdict(diff, +1)
        mde = stats.detectable(diff.sd, diff.n)
        ratio = {"mean": math.exp(diff.mean), "low": math.exp(diff.low), "high": math.exp(diff.high)}
        shown = f"{ratio['mean']:.2f}x [{ratio['low']:.2f}, {ratio['high']:.2f}]"
        bound = f" (a lower bound: {c.arm} did not reach it on seed(s) {row['censored']})" if row["censored"] else ""
        if word == stats.INCONCLUSIVE:
            could = f"could detect a ratio beyond {math.exp(mde):.2f}x" if mde is not None else "one seed: no interval"
            reading = f"{word}: {shown}{bound}, {could}"
        else:
            reading = f"{word}: {c.arm} took {shown} the steps of {c.against}{bound}"
        row.update(
            log_ratio=diff.to_dict(),
            ratio=ratio,
            detectable_ratio=None if mde is None else math.exp(mde),
            verdict=word,
            reading=reading,
        )
        out.append(row)
    return out


def make_table(
    exp: Experiment,
    folder: Path,
    configs: list[TrainConfig],
    skipped: dict[str, str],
    sweep: dict | None = None,
) -> dict:
    """The experiment's numbers, read from its run folders: the arms (:func:`arm_rows`), the
    comparisons (:func:`compare`, or :func:`speedups` for steps), the headline verdict (the first
    comparison; for steps at the sweep's level), and the learning-rate sweep when there was one."""
    arms = arm_rows(exp, folder, configs, skipped)
    by_name = {a["arm"]: a for a in arms}
    comparisons, ratios = [], []
    for c in exp.comparisons:
        if c.metric == "steps":
            ratios += speedups(by_name, c, exp.levels) if not {c.arm, c.against} & set(skipped) else []
        else:
            comparisons.append(compare(by_name, c))
    head = next((r for r in ratios if r["level"] == _key(exp.sweep_level)), None) if ratios else None
    head = head or (comparisons[0] if comparisons else None)
    headline = ("arm", "against", "level", "verdict", "reading")
    cfg = configs[0]
    return {
        "experiment": exp.name,
        "summary": exp.summary,
        "paper": exp.paper,
        "design": exp.design,
        "statistics": "paired Student t over seeds, 95% intervals; detectable = minimum effect at 80% power",
        "metric": "test error (%) after the last epoch" if not ratios else "steps to each training-error level",
        "epochs": cfg.epochs,
        "seeds": sorted({c.seed for c in configs}),
        "subset": cfg.subset,
        "image_size": cfg.image_size,
        "batch_size": cfg.batch_size,
        "data": cfg.data or "Fashion-MNIST",
        "levels": [100 * lv for lv in exp.levels],
        "curves": exp.curves,
        "arms": arms,
        "comparisons": comparisons,
        "speedups": ratios,
        "verdict": None if head is None else {k: head.get(k) for k in headline},
        "sweep": sweep,
    }


def write_table(table: dict, folder: Path) -> None:
    """``table.json`` (everything) and ``table.md`` (the rows a reader wants)."""
    (folder / "table.json").write_text(json.dumps(table, indent=2) + "\n")
    (folder / "table.md").write_text(table_markdown(table))


def _ci(s: dict | None) -> str:
    return "—" if s is None else f"{s['mean']:.2f} [{s['low']:.2f}, {s['high']:.2f}]"


def _seeds(runs: list[dict], key: str) -> str:
    return ", ".join("—" if r[key] is None else f"{r[key]:.2f}" for r in runs)


def table_markdown(table: dict) -> str:
    """The table as markdown: one row per arm (mean [95% interval] and every seed's value), the
    comparisons with their verdicts, the speed-ups and the sweep."""
    t = table
    lines = [
        f"**{t['experiment']}** — {t['summary']}. {t['data']}, {t['subset'] or 'all'} training images at "
        f"{t['image_size']} px, batch {t['batch_size']}, {t['epochs']} epochs, seeds "
        f"{', '.join(map(str, t['seeds']))}. Paper: {t['paper']}.",
        "",
        "| arm | lr | test error % | per seed | train error % (final, eval mode) | per seed | gap | per seed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for a in t["arms"]:
        if "skipped" in a:
            lines.append(f"| {a['arm']} | {a['skipped']} | | | | | | |")
            continue
        runs = a["runs"]
        lines.append(
            f"| {a['arm']} | {a['lr']:g} | {_ci(a['test_error'])} | {_seeds(runs, 'test_error')} | "
            f"{_ci(a['final_train_error'])} | {_seeds(runs, 'final_train_error')} | {_ci(a['gap'])} | "
            f"{_seeds(runs, 'gap')} |"
        )
    lines.append("")
    for c in t["comparisons"]:
        per = ", ".join(f"{d:+.2f}" for d in c.get("per_seed", []))
        what = "test error" if c["metric"] == "test_error" else c["metric"].replace("_", " ")
        lines.append(f"- {c['arm']} − {c['against']}, points of {what} (per seed {per}): {c['reading']}.")
    if t["speedups"]:
        lines += ["", "| training error ≤ | arms | steps per seed (baseline; arm) | arm / baseline | verdict |"]
        lines.append("|---|---|---|---|---|")
        for s in t["speedups"]:
            steps = "; ".join(
                ", ".join("—" if v is None else str(v) for v in s["steps"][name]) for name in (s["against"], s["arm"])
            )
            ratio = _ci(s.get("ratio")) if s.get("ratio") else "—"
            lines.append(f"| {s['level']}% | {s['arm']} / {s['against']} | {steps} | {ratio} | {s['reading']} |")
    if t.get("sweep"):
        lines += ["", "| sweep (seed 0, constant rate) | rate | steps to reach | final training error % |"]
        lines.append("|---|---|---|---|")
        for arm, record in t["sweep"].items():
            for trial in record["trials"]:
                chosen = " (chosen)" if trial["lr"] == record["chosen"] else ""
                final = "diverged" if trial["diverged"] else _pct(trial["final_error"])
                reach = "—" if trial["steps_to"] is None else str(trial["steps_to"])
                lines.append(f"| {arm} | {trial['lr']:g}{chosen} | {reach} | {final} |")
    if t["verdict"]:
        lines += ["", f"Verdict ({t['verdict']['arm']} against {t['verdict']['against']}): {t['verdict']['reading']}."]
    return "\n".join(lines) + "\n"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}"
