"""Time to accuracy: a recipe trained with several seeds, timed to each target test accuracy.

Item 4 of the suite (docs/performance.md): for each seed, the seconds of training (and of training
plus the per-epoch evaluations) until the test top-1 first reached each target, read from the run
folder's ``metrics.jsonl``, and the last epoch's top-1, which is what the goals count. Accuracy is
measured once per epoch, so a time is that of the first epoch that ended at or above the target.
No baseline runs beside it: the rows are the recipe's own, with mean and spread over the seeds.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

from alexnet.bench.core import fmt, machine
from alexnet.config import TrainConfig
from alexnet.system import runtime
from alexnet.training.rundir import read_metrics

TARGETS = (0.90, 0.91)


def seconds_to(metrics: list[dict], target: float, key: str = "train_seconds") -> float | None:
    """The cumulative ``key`` seconds (``train_seconds``; ``both`` adds ``val_seconds``) at the end
    of the first epoch whose ``val_top1`` is at least ``target``, or None when no epoch was."""
    total = 0.0
    for m in metrics:
        total += m["train_seconds"] + (m["val_seconds"] if key == "both" else 0.0)
        if m["val_top1"] >= target:
            return total
    return None


def seed_row(seed: int, metrics: list[dict], wall: float, targets=TARGETS) -> dict:
    """One seed's record: last-epoch top-1, seconds to each target (training; with evaluation),
    total training seconds and the whole run's wall time."""
    return {
        "seed": seed,
        "epochs": len(metrics),
        "final_top1": metrics[-1]["val_top1"],
        "train_seconds": sum(m["train_seconds"] for m in metrics),
        "wall_seconds": wall,
        "to_target": {
            f"{t:.2f}": {"train_seconds": seconds_to(metrics, t), "with_eval_seconds": seconds_to(metrics, t, "both")}
            for t in targets
        },
    }


def summary(rows: list[dict], targets=TARGETS) -> dict:
    """Mean, min and max of the final top-1 over seeds, and per target how many seeds reached it and
    the median training seconds of those that did."""
    finals = [r["final_top1"] for r in rows]
    out = {
        "seeds": len(rows),
        "final_top1_mean": statistics.fmean(finals),
        "final_top1_spread": [min(finals), max(finals)],
    }
    for t in targets:
        times = [r["to_target"][f"{t:.2f}"]["train_seconds"] for r in rows]
        reached = [x for x in times if x is not None]
        out[f"{t:.2f}"] = {
            "reached": len(reached),
            "median_train_seconds": statistics.median(reached) if reached else None,
        }
    return out


def markdown(rows: list[dict], targets=TARGETS) -> str:
    """The per-seed table and its summary line, as docs/performance.md shows them."""
    head = (
        "| seed | epochs | last-epoch top-1 | "
        + " | ".join(f"train s to {100 * t:.0f}%" for t in targets)
        + " | train s | wall s |"
    )
    lines = [head, "|" + "---:|" * (5 + len(targets))]
    for r in rows:
        cells = [r["to_target"][f"{t:.2f}"]["train_seconds"] for t in targets]
        lines.append(
            f"| {r['seed']} | {r['epochs']} | {100 * r['final_top1']:.2f}% | "
            + " | ".join("not reached" if c is None else fmt(c) for c in cells)
            + f" | {fmt(r['train_seconds'])} | {fmt(r['wall_seconds'])} |"
        )
    s = summary(rows, targets)
    lo, hi = s["final_top1_spread"]
    lines.append(
        f"\nlast-epoch top-1 over {s['seeds']} seed(s): mean {100 * s['final_top1_mean']:.2f}% "
        f"[{100 * lo:.2f}-{100 * hi:.2f}]"
    )
    return "\n".join(lines)


def time_to_accuracy(cfg: TrainConfig, train_flags: list[str], seeds: list[int], out: str | Path, say=print) -> dict:
    """Train ``cfg`` (the settings ``alexnet train TRAIN_FLAGS`` gives) for each seed into ``out``,
    one after another in this process, and return the record: the flags, one row per seed, the summary."""
    from alexnet.training.loop import train

    rows = []
    for seed in seeds:
        run = replace(cfg, seed=seed, out=str(out), name=f"tta-seed{seed}")
        start = time.perf_counter()
        result = train(run, argv=["alexnet", "train", *train_flags, "--seed", str(seed)], quiet=True)
        rows.append(
            seed_row(
                seed,
                read_metrics(Path(result["run_dir"]) / "metrics.jsonl", ("val_top1", "train_seconds", "val_seconds")),
                time.perf_counter() - start,
            )
        )
        say(
            f"seed {seed}: last-epoch top-1 {100 * rows[-1]['final_top1']:.2f}% after "
            f"{rows[-1]['train_seconds']:.0f} s of training"
        )
    return {"train_flags": train_flags, "rows": rows, "summary": summary(rows)}


def run_accuracy(
    cfg: TrainConfig,
    train_flags: list[str],
    seeds: list[int],
    *,
    out: str | Path | None = None,
    json_path: str | None = None,
    say=print,
) -> dict:
    """``alexnet bench --only accuracy``: :func:`time_to_accuracy` into ``out`` (default: a
    temporary folder, removed after), then the machine, the table and (``json_path``) the record."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        record = time_to_accuracy(cfg, train_flags, seeds, out or tmp, say)
    device = runtime.resolve_device(cfg.device)
    m = record["machine"] = machine(device, runtime.resolve_precision("auto", device))
    say(
        f"machine: {m['cpu']} ({m['cores']} cores, {', '.join(m['cpu_features']) or 'no AVX2'}), device {m['device']}"
        f"{' ' + m['gpu'] if m['gpu'] else ''}, torch {m['torch']}; alexnet train "
        f"{' '.join(train_flags) or '(the defaults)'}"
    )
    say(markdown(record["rows"]))
    if json_path:
        Path(json_path).write_text(json.dumps(record, indent=2) + "\n")
    return record
