"""The accuracy-time frontier: every recipe timed by ``alexnet bench --only accuracy --json``, one
row each, and which of them no other recipe beats on both accuracy and time (docs/performance.md).

A record's accuracy is the last epoch's test top-1 (the number a run reports, never the best
epoch's), its time the whole run's wall seconds: training, the evaluations and the checkpoints.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from alexnet.bench.core import fmt
from alexnet.errors import ConfigError
from alexnet.system.files import read_json


def read_records(paths: list[str | Path]) -> list[dict]:
    """The JSON records of ``alexnet bench --only accuracy --json``, each labelled with its file name;
    records of the same flags (a recipe's seeds measured in several calls) are pooled into the first."""
    records: dict[tuple, dict] = {}
    for path in paths:
        record = read_json(path, error=ConfigError)  # bounded; one line naming the file on any failure
        if not isinstance(record, dict) or not isinstance(record.get("rows"), list) or not record["rows"]:
            raise ConfigError(f"{path}: not a record of alexnet bench --only accuracy --json (no rows)")
        flags = tuple(record.get("train_flags", []))
        if flags in records:
            records[flags]["rows"] += record["rows"]
        else:
            records[flags] = {**record, "rows": list(record["rows"]), "label": Path(path).stem}
    return list(records.values())


def frontier_rows(records: list[dict]) -> list[dict]:
    """Per record: the seeds' mean, min and max last-epoch top-1 and their median, min and max wall
    seconds, fastest first; ``frontier`` is true where no other record is at least as accurate (by
    the mean) in at most the time (by the median) and better in one of them."""
    rows = []
    for rec in records:
        finals = [r["final_top1"] for r in rec["rows"]]
        walls = [r["wall_seconds"] for r in rec["rows"]]
        rows.append(
            {
                "label": rec.get("label", ""),
                "flags": " ".join(rec.get("train_flags", [])) or "(the defaults)",
                "seeds": len(finals),
                "epochs": rec["rows"][0]["epochs"],
                "top1_mean": statistics.fmean(finals),
                "top1_min": min(finals),
                "top1_max": max(finals),
                "wall_median": statistics.median(walls),
                "wall_min": min(walls),
                "wall_max": max(walls),
            }
        )
    for row in rows:
        row["frontier"] = not any(
            o is not row
            and o["wall_median"] <= row["wall_median"]
            and o["top1_mean"] >= row["top1_mean"]
            and (o["wall_median"], o["top1_mean"]) != (row["wall_median"], row["top1_mean"])
            for o in rows
        )
    return sorted(rows, key=lambda r: (r["wall_median"], -r["top1_mean"]))


def frontier_markdown(rows: list[dict]) -> str:
    """The table docs/performance.md shows: a row per recipe, * on the frontier."""
    lines = [
        "| recipe | alexnet train flags | seeds | epochs | top-1 mean [min-max] | wall s median [min-max] | frontier |",
        "|---|---|---:|---:|---:|---:|:---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['label']} | `{r['flags']}` | {r['seeds']} | {r['epochs']} | "
            f"{100 * r['top1_mean']:.2f}% [{100 * r['top1_min']:.2f}-{100 * r['top1_max']:.2f}] | "
            f"{fmt(r['wall_median'])} [{fmt(r['wall_min'])}-{fmt(r['wall_max'])}] | {'*' if r['frontier'] else ''} |"
        )
    return "\n".join(lines)


def write_frontier(paths: list[str | Path], figure: str | Path | None = None, say=print) -> list[dict]:
    """Read the records, print the table, draw the figure (plots.plot_frontier) when asked."""
    rows = frontier_rows(read_records(paths))
    say(frontier_markdown(rows))
    if figure:
        from alexnet.plots import plot_frontier

        plot_frontier(rows, figure)
    return rows
