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
    row = Row(
        "step",
        "case",
        "images/s",
        "plain",
        "ours",
        [10.0, 12.0, 11.0, 30.0],
        [20.0, 18.0, 33.0, 45.0],
        {"flops_per_image": 5.0},
    )
    d = row.to_dict()
    assert d["baseline_median"] == statistics.median([10, 12, 11, 30]) and d["ours_median"] == statistics.median(
        [20, 18, 33, 45]
    )
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
    args = ["bench", "--quick", "--device", "cpu", "--repeats", "1", "--warmup", "0", "--batch-size", "4"]
    assert main([*args, "--json", str(path)]) == 0  # a batch of 4: the record's shape is the claim, not its rates
    record = json.loads(path.read_text())
    assert set(record) == {"machine", "settings", "ceiling_flops", "rows", "checks", "skipped"}
    assert {"cpu", "cores", "threads", "torch", "torchvision", "device", "precision"} <= set(record["machine"])
    assert record["ceiling_flops"]["fp32"] > 0 and record["ceiling_flops"]["bf16"] > 0
    assert {r["group"] for r in record["rows"]} == {"step", "choice", "pipeline", "e2e"}
    for r in record["rows"]:
        assert {
            "name",
            "unit",
            "baseline",
            "ours",
            "baseline_median",
            "ours_median",
            "ratio_median",
            "ratio_spread",
        } <= set(r)
        assert r["baseline_median"] > 0 and r["ours_median"] > 0
    steps = [r for r in record["rows"] if r["group"] == "step"]
    assert {r["name"].split()[1] for r in steps} == {"227px", "99px"} and all(
        0 < r["ours_ceiling_fraction"] for r in steps
    )
    assert record["checks"][0]["passed"]
    assert [s["group"] for s in record["skipped"]] == ["gpu"]  # no CUDA here: the GPU rows say why they are missing
    assert "| step |" in capsys.readouterr().out


def test_bench_batch_size_sets_the_step_and_choice_rows_batch(tmp_path):
    path = tmp_path / "bench.json"
    args = [
        "bench",
        "--only",
        "step",
        "--quick",
        "--device",
        "cpu",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--batch-size",
        "3",
    ]
    assert main([*args, "--json", str(path)]) == 0
    record = json.loads(path.read_text())
    assert record["settings"]["batch_size"] == 3
    names = [r["name"] for r in record["rows"]]
    assert {r["group"] for r in record["rows"]} == {"step", "choice"} and all(" b3" in n for n in names), names


# -- time to accuracy (bench/accuracy.py) --
def _epochs(top1s, train_s=10.0, val_s=2.0):
    return [{"val_top1": t, "train_seconds": train_s, "val_seconds": val_s} for t in top1s]


def test_seconds_to_a_target_are_those_of_the_first_epoch_at_or_above_it():
    from alexnet.bench.accuracy import seconds_to

    metrics = _epochs([0.85, 0.905, 0.899, 0.912])
    for target in (0.80, 0.85, 0.90, 0.905, 0.91, 0.95):  # against a loop over the epochs' own sums
        first = next((i for i, m in enumerate(metrics) if m["val_top1"] >= target), None)
        expect = None if first is None else 10.0 * (first + 1)
        assert seconds_to(metrics, target) == expect
        assert seconds_to(metrics, target, "both") == (None if first is None else 12.0 * (first + 1))


def test_the_summary_is_the_mean_and_spread_of_the_last_epochs():
    from alexnet.bench.accuracy import markdown, seed_row, summary

    rows = [seed_row(s, _epochs(t), wall=50.0) for s, t in enumerate([[0.88, 0.902], [0.89, 0.915], [0.87, 0.899]])]
    s = summary(rows)
    assert s["final_top1_mean"] == pytest.approx(statistics.fmean([0.902, 0.915, 0.899]))
    assert s["final_top1_spread"] == [0.899, 0.915]
    assert s["0.90"] == {"reached": 2, "median_train_seconds": 20.0} and s["0.91"] == {
        "reached": 1,
        "median_train_seconds": 20.0,
    }
    text = markdown(rows)
    assert "not reached" in text and "mean 90.53% [89.90-91.50]" in text


def test_bench_accuracy_prints_the_table_and_refuses_bad_data_in_one_line(idx_folder, tmp_path, capsys):
    flags = f"--data {idx_folder.path} --epochs 1 --image-size 67 --batch-size 64 --precision fp32"
    assert (
        main(
            [
                "bench",
                "--only",
                "accuracy",
                "--seeds",
                "3",
                "--train",
                flags,
                "--out",
                str(tmp_path),
                "--json",
                str(tmp_path / "a.json"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "| seed | epochs | last-epoch top-1 |" in out and "train s to 90%" in out
    record = json.loads((tmp_path / "a.json").read_text())
    assert record["rows"][0]["seed"] == 3 and record["machine"]["torch"] == torch.__version__
    run = tmp_path / "tta-seed3"  # each seed's own run folder, its metrics the row's
    assert json.loads((run / "config.json").read_text())["seed"] == 3
    assert (
        record["rows"][0]["final_top1"] == json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["val_top1"]
    )
    assert main(["bench", "--only", "accuracy", "--train", f"--data {tmp_path / 'none'}"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no such folder" in err
