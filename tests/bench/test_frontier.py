"""bench/frontier.py: the accuracy-time table against numpy and a brute-force dominance check,
the figure's points against the rows, and an unreadable record refused in one line."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from alexnet.bench.frontier import frontier_markdown, frontier_rows, read_records
from alexnet.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def _record(flags, finals, walls):
    rows = [{"seed": s, "epochs": 2, "final_top1": f, "wall_seconds": w} for s, (f, w) in enumerate(zip(finals, walls))]
    return {"train_flags": flags, "rows": rows}


RECORDS = {
    "slow-good": _record(["--epochs", "4"], [0.90, 0.91, 0.89], [900.0, 950.0, 910.0]),
    "fast-ok": _record(["--epochs", "2"], [0.892, 0.888], [350.0, 340.0]),
    "dominated": _record(["--batch-size", "64"], [0.87], [400.0]),
    "fastest": _record(["--epochs", "1"], [0.84, 0.83, 0.835], [170.0, 160.0, 200.0]),
}


def _write(tmp_path):
    paths = []
    for name, rec in RECORDS.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(rec))
        paths.append(tmp_path / f"{name}.json")
    return paths


def test_rows_are_the_seeds_statistics_and_the_frontier_is_what_nothing_beats(tmp_path):
    rows = frontier_rows(read_records(_write(tmp_path)))
    assert [r["label"] for r in rows] == ["fastest", "fast-ok", "dominated", "slow-good"]  # by median wall time
    for r in rows:
        rec = RECORDS[r["label"]]
        finals = np.array([x["final_top1"] for x in rec["rows"]])
        walls = np.array([x["wall_seconds"] for x in rec["rows"]])
        assert r["top1_mean"] == pytest.approx(finals.mean())
        assert (r["top1_min"], r["top1_max"]) == (finals.min(), finals.max())
        assert (r["wall_median"], r["wall_min"], r["wall_max"]) == (np.median(walls), walls.min(), walls.max())
    for r, o in itertools.permutations(rows, 2):  # brute force: dominated by another on both axes
        if o["wall_median"] <= r["wall_median"] and o["top1_mean"] > r["top1_mean"]:
            assert not r["frontier"]
    assert {r["label"] for r in rows if r["frontier"]} == {"fastest", "fast-ok", "slow-good"}
    table = frontier_markdown(rows)
    assert "| fast-ok | `--epochs 2` | 2 | 2 | 89.00% [88.80-89.20] |" in table
    assert table.count("| * |") == 3


def test_the_script_draws_the_figure_and_refuses_a_record_that_is_not_one(tmp_path):
    paths = _write(tmp_path)
    run = [
        sys.executable,
        str(ROOT / "benchmarks" / "frontier.py"),
        *map(str, paths),
        "--figure",
        str(tmp_path / "f.png"),
    ]
    done = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert done.stdout.count("\n| ") == len(RECORDS)  # a row each below the header and its rule
    (tmp_path / "bad.json").write_text("{not json")
    done = subprocess.run(run[:2] + [str(tmp_path / "bad.json")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()  # one line, naming the file
    assert line.startswith(f"error: {tmp_path / 'bad.json'}: not readable JSON")
    (tmp_path / "more.json").write_text(json.dumps(_record(["--epochs", "1"], [0.85], [180.0])))
    (pooled,) = [r for r in read_records([*paths, tmp_path / "more.json"]) if r["label"] == "fastest"]
    assert [x["final_top1"] for x in pooled["rows"]] == [0.84, 0.83, 0.835, 0.85]  # the same flags: one recipe
    with pytest.raises(ConfigError, match="no rows"):
        (tmp_path / "empty.json").write_text(json.dumps({"rows": []}))
        read_records([tmp_path / "empty.json"])
