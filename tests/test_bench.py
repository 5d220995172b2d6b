"""bench/: the harness's statistics (against Python's statistics module), its interleaving, and
``alexnet bench --quick --json`` end to end (one repeat: a smoke test, never a timing)."""

from __future__ import annotations

import json
import statistics

import pytest
import torch

from alexnet.bench.core import Row, compare, table
from alexnet.cli import main

CPU = torch.device("cpu")


def test_a_row_reports_medians_spreads_and_paired_ratios():
    row = Row("step", "case", "images/s", "plain", "ours", [10.0, 12.0, 11.0, 30.0], [20.0, 18.0, 33.0, 45.0], {"flops_per_image": 5.0})
    d = row.to_dict()
    assert d["baseline_median"] == statistics.median([10, 12, 11, 30]) and d["ours_median"] == statistics.median([20, 18, 33, 45])
    ratios = [20 / 10, 18 / 12, 33 / 11, 45 / 30]
    assert d["ratio_median"] == pytest.approx(statistics.median(ratios))
    assert d["ratio_spread"] == pytest.approx([min(ratios), max(ratios)]) and d["baseline_spread"] == [10.0, 30.0]
    assert d["flops_per_image"] == 5.0
    assert "| step | case | images/s |" in table([row])


def test_compare_warms_up_then_interleaves_in_alternating_order():
    calls = []

    def side(name):
        def run():
            calls.append(name)
            return 4

        return run

    row = compare("g", "n", "images/s", ("b", side("base")), ("o", side("ours")), device=CPU, warmup=2, repeats=4)
    assert calls == ["base", "ours"] * 2 + ["base", "ours", "ours", "base", "base", "ours", "ours", "base"]
    assert len(row.baseline_rates) == len(row.ours_rates) == 4 and all(r > 0 for r in row.ratios)


@pytest.mark.slow
def test_bench_quick_writes_the_documented_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--device", "cpu", "--repeats", "1", "--warmup", "0", "--json", str(path)]) == 0
    record = json.loads(path.read_text())
    assert set(record) == {"machine", "settings", "ceiling_flops", "rows", "checks", "skipped"}
    assert {"cpu", "cores", "threads", "torch", "torchvision", "device", "precision"} <= set(record["machine"])
    assert record["ceiling_flops"]["fp32"] > 0 and record["ceiling_flops"]["bf16"] > 0
    assert {r["group"] for r in record["rows"]} == {"step", "choice", "pipeline", "e2e"}
    for r in record["rows"]:
        assert {"name", "unit", "baseline", "ours", "baseline_median", "ours_median", "ratio_median", "ratio_spread"} <= set(r)
        assert r["baseline_median"] > 0 and r["ours_median"] > 0
    steps = [r for r in record["rows"] if r["group"] == "step"]
    assert {r["name"].split()[1] for r in steps} == {"227px", "99px"} and all(0 < r["ours_ceiling_fraction"] for r in steps)
    assert record["checks"][0]["passed"]
    assert [s["group"] for s in record["skipped"]] == ["gpu"]  # no CUDA here: the GPU rows say why they are missing
    assert "| step |" in capsys.readouterr().out
