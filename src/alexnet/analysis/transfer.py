"""Yosinski et al. 2014, "How transferable are features in deep neural networks?", on
Fashion-MNIST: ``alexnet experiment transfer``.

The data set's classes split into halves A and B: the fixed split (Fashion-MNIST's 0-4, tops and
trousers, against 5-9, footwear, bags and shirts: the nearest thing here to the paper's
natural/man-made split) or a random 5/5 split drawn from each seed. baseA and baseB are trained
with one recipe on their half. For every layer n of ``--layers``, layers conv1 .. n are copied and
the rest initialised afresh and trained on B: BnB (copied from baseB, frozen), BnB+ (copied from
baseB, fine-tuned), AnB (from baseA, frozen), AnB+ (from baseA, fine-tuned). Beside it the
practitioner's question: with 10, 100 or 1,000 training images per class of B, fine-tuning every
layer of baseA against training from scratch.

Every run is an ordinary run folder ``<out>/<name>/`` made by :func:`alexnet.training.loop.train`
(``--classes``, ``--init-from``, ``--copy-up-to``, ``--freeze``, ``--subset-per-class``): the
table and the figure are read back from those folders, never from live objects, and running the
command again on the same folder skips what finished and resumes what stopped. Intervals are
Student-t 95% over seeds (analysis/stats.py); a comparison is a paired difference per seed.
"""

from __future__ import annotations

import json
import math
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import torch

from alexnet.analysis.stats import mean_interval, paired_difference, verdict
from alexnet.config import TrainConfig
from alexnet.data.folder import folder_classes
from alexnet.data.idx import count_classes, find_idx_files, is_idx_folder, read_idx
from alexnet.data.shards import ShardIndex, is_shards
from alexnet.errors import ConfigError
from alexnet.ranges import LAYERS
from alexnet.training.rundir import RunFolder, read_metrics

ARMS = ("BnB", "BnB+", "AnB", "AnB+")
SPLITS = ("fixed", "random")
# Yosinski et al.'s top-1 on B's validation images, n = 1..7 (PAPER.md section 7, from their logs)
PAPER = {
    "baseB": 62.5,
    "BnB": (62.7, 62.4, 62.1, 60.5, 59.4, 61.9, 62.3),
    "AnB": (62.8, 62.4, 61.9, 60.0, 57.8, 58.1, 54.3),
    "AnB+": "63.7-64.7 for every n (about +1.7 over baseB)",
}
SUMMARY = (
    "Yosinski et al. 2014 on Fashion-MNIST: baseA, baseB, BnB, BnB+, AnB, AnB+ against the layer n copied, and "
    "fine-tuning vs scratch with 10/100/1000 images per class"
)
MINUTES = 34.0  # the defaults' wall time on the 2-core EPYC, estimated from a calibration (docs/transfer.md)


@dataclass(frozen=True)
class Options:
    """The experiment's settings: what ``alexnet experiment transfer`` takes from the command line."""

    layers: tuple[str, ...] = ("conv2", "conv4", "fc6")  # n of the transfer arms (docs/transfer.md: the cost)
    seeds: int = 3
    epochs: int = 2
    subset: int | None = 2000  # training images of a half per run, seeded (None: the whole half)
    image_size: int = 67
    batch_size: int = 32
    split: str = "fixed"
    few: tuple[int, ...] = (10, 100, 1000)  # training images per class of B, fine-tuned from baseA vs scratch
    few_epochs: int = 4  # at most: a small set trains for as many steps as a base run, within this many epochs
    data: str | None = None
    device: str = "auto"
    model: str = "alexnet"
    keep_checkpoints: bool = False  # of every run; the base nets' are always kept (the others start from them)


@dataclass(frozen=True)
class Job:
    """One run of the experiment."""

    name: str  # its run folder's
    arm: str  # baseA, baseB, one of ARMS, scratch or fromA
    seed: int
    layer: str | None = None  # n of a transfer arm
    per_class: int | None = None  # images per class of a few-shot run
    settings: dict = field(default_factory=dict)


def class_count(data: str | None) -> int:
    """How many classes ``data`` holds (IDX labels, an image folder's class folders, a shard index)."""
    if is_shards(data):
        return len(ShardIndex.read(data).classes)
    if data is None or is_idx_folder(data):
        path = find_idx_files(data, splits=("train",))["train_labels"]
        return count_classes(read_idx(path).long(), path)
    return len(folder_classes(Path(data)))


def halves(count: int, split: str, seed: int) -> tuple[list[int], list[int]]:
    """Classes A and B: the first and second half (``fixed``), or a random half and the rest, drawn
    from ``seed`` (``random``); each in ascending order."""
    if split not in SPLITS:
        raise ConfigError(f"--split {split!r} is not one of: {', '.join(SPLITS)}")
    if count < 2:
        raise ConfigError(f"--data holds {count} class; the experiment splits the classes into two halves")
    order = list(range(count))
    if split == "random":
        order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[: count // 2]), sorted(order[count // 2 :])


def few_epochs(opts: Options, per_class: int, classes: int) -> int:
    """Epochs of a few-shot run: as many steps as a base run takes where ``opts.few_epochs`` allows
    (every epoch evaluates B's whole test set: that is the cost), never fewer than a base run's."""
    if opts.subset is None:
        return max(opts.epochs, opts.few_epochs)
    base_steps = opts.epochs * math.ceil(opts.subset / opts.batch_size)
    per_epoch = math.ceil(per_class * classes / opts.batch_size)
    return max(opts.epochs, min(opts.few_epochs, math.ceil(base_steps / per_epoch)))


def plan(opts: Options, folder: Path, count: int) -> list[Job]:
    """Every run, in the order they train (a base net before the runs copied from it)."""
    bad = [n for n in opts.layers if n not in LAYERS]
    if bad or not opts.layers:
        raise ConfigError(f"--layers {','.join(opts.layers)}: give some of {', '.join(LAYERS)}, comma-separated")
    if any(m < 1 for m in opts.few):
        raise ConfigError(f"--few {','.join(map(str, opts.few))}: give positive numbers of images per class")
    return [job for k in range(opts.seeds) for job in _seed_jobs(opts, folder, count, k)]


def _seed_jobs(opts: Options, folder: Path, count: int, k: int) -> list[Job]:
    """The runs of seed ``k``: its halves, base nets, transfer arms and few-shot pairs."""
    a, b = halves(count, opts.split, k)
    shared = {
        "model": opts.model,
        "image_size": opts.image_size,
        "batch_size": opts.batch_size,
        "epochs": opts.epochs,
        "subset": opts.subset,
        "seed": k,
        "data": opts.data,
        "device": opts.device,
        "checkpoint_every": None,
        # the recipe the experiment was calibrated with, named so that a new default recipe leaves it
        # as designed: the paper's crops and flips, plain cross-entropy, the heavy ball
        "augment": True,
        "label_smoothing": 0.0,
        "nesterov": False,
        "out": str(folder),
        "classes": ",".join(map(str, b)),
    }

    def job(name: str, arm: str, layer=None, per_class=None, **settings) -> Job:
        return Job(name, arm, k, layer, per_class, {**shared, **settings, "name": name})

    base = {x: str(folder / f"base{x}-seed{k}" / "checkpoints" / "last.pt") for x in "AB"}
    jobs = [job(f"baseA-seed{k}", "baseA", classes=",".join(map(str, a))), job(f"baseB-seed{k}", "baseB")]
    for n in opts.layers:
        for arm in ARMS:
            frozen = {} if arm.endswith("+") else {"freeze": n}
            jobs.append(job(f"{arm}-{n}-seed{k}", arm, n, init_from=base[arm[0]], copy_up_to=n, **frozen))
    for m in opts.few:
        few = {"subset": None, "subset_per_class": m, "epochs": few_epochs(opts, m, len(b))}
        jobs.append(job(f"few{m}-scratch-seed{k}", "scratch", per_class=m, **few))
        jobs.append(job(f"few{m}-fromA-seed{k}", "fromA", per_class=m, init_from=base["A"], **few))
    return jobs


def _config(job: Job) -> TrainConfig:
    return TrainConfig.from_dict(job.settings, source=f"experiment transfer, run {job.name}")


def _finished(run_dir: Path, epochs: int) -> bool:
    path = run_dir / "metrics.jsonl"
    return path.is_file() and any(r["epoch"] == epochs - 1 for r in read_metrics(path, ()))


def _check_same(stored: TrainConfig, cfg: TrainConfig, where: Path) -> None:
    """A run folder found again holds this run's settings (the device, and the source's hash the
    run recorded, aside)."""
    a, b = stored.to_dict(), cfg.to_dict()
    differ = [k for k in a if k not in ("device", "init_sha256") and a[k] != b[k]]
    if differ:
        shown = ", ".join(f"{k} {a[k]!r} there, {b[k]!r} now" for k in differ[:3])
        raise ConfigError(
            f"{where} holds this run with other settings ({shown}); give the same flags, or another --out"
        )


def run_transfer(
    opts: Options = Options(),
    out: str | Path | None = None,
    *,
    argv: list[str] | None = None,
    say: Callable[[str], None] = print,
) -> Path:
    """Train every run of :func:`plan` into ``out`` (default ``runs/experiment-transfer-<time>``),
    skipping finished ones and resuming stopped ones; then write the table and the figure."""
    from alexnet.plots import plot_transfer
    from alexnet.training.loop import train

    folder = Path(out) if out is not None else Path("runs") / f"experiment-transfer-{datetime.now():%Y%m%d-%H%M%S}"
    count = class_count(opts.data)
    jobs = plan(opts, folder, count)
    configs = {j.name: _config(j) for j in jobs}  # every setting checked before anything is written
    record = folder / "experiment.json"
    if record.is_file() and json.loads(record.read_text()).get("experiment") != "transfer":
        raise ConfigError(
            f"{folder} holds experiment {json.loads(record.read_text()).get('experiment')!r}, not transfer"
        )
    for name, cfg in configs.items():
        if (folder / name / "config.json").is_file():
            _check_same(RunFolder(folder / name).read_config(), cfg, folder / name)
    folder.mkdir(parents=True, exist_ok=True)
    command = shlex.join(argv or sys.argv)
    record.write_text(json.dumps({"experiment": "transfer", "options": asdict(opts), "command": command}, indent=2))
    started = time.monotonic()
    for job in jobs:
        cfg, run_dir = configs[job.name], folder / job.name
        if (run_dir / "config.json").is_file():
            if not _finished(run_dir, cfg.epochs):
                say(f"transfer: {job.name} resumed")
                train(cfg, resume=run_dir, quiet=True)
        else:
            t = time.monotonic()
            result = train(cfg, argv=argv or ["alexnet", "experiment", "transfer"], quiet=True)
            say(f"transfer: {job.name} top-1 {100 * result['val_top1']:.2f}% ({time.monotonic() - t:.0f} s)")
        if not opts.keep_checkpoints and job.arm not in ("baseA", "baseB"):
            RunFolder(run_dir).delete_checkpoints()  # the base nets' stay: the other runs copy them
    table = make_table(opts, folder, jobs, count)
    table["wall_seconds_this_call"] = round(time.monotonic() - started, 1)
    (folder / "table.json").write_text(json.dumps(table, indent=2) + "\n")
    (folder / "table.md").write_text(table_markdown(table))
    plot_transfer(table, folder / "figure.png")
    say(f"transfer: wrote {folder / 'table.md'} and {folder / 'figure.png'}")
    return folder


def _top1(run_dir: Path) -> float:
    """A finished run's top-1 (%) on its test images after its last epoch, from metrics.jsonl."""
    return 100 * read_metrics(run_dir / "metrics.jsonl", ("val_top1",))[-1]["val_top1"]


def make_table(opts: Options, folder: Path, jobs: list[Job], count: int) -> dict:
    """The experiment's numbers, read from its run folders: per arm (and n, or images per class)
    the top-1 of every seed with its mean and interval, and the comparisons with their verdicts."""
    top1 = {j.name: _top1(folder / j.name) for j in jobs}
    env_path = folder / jobs[0].name / "env.json"
    env = json.loads(env_path.read_text()) if env_path.is_file() else {}

    def values(arm: str, layer: str | None = None, per_class: int | None = None) -> list[float]:
        found = [j for j in jobs if (j.arm, j.layer, j.per_class) == (arm, layer, per_class)]
        return [top1[j.name] for j in sorted(found, key=lambda j: j.seed)]

    def cell(vals: list[float]) -> dict:
        return {"seeds": vals, **mean_interval(vals).to_dict()}

    base_b = values("baseB")
    rows = [{"arm": arm, "layer": n, **cell(values(arm, n))} for n in opts.layers for arm in ARMS]
    few = [
        {"per_class": m, "scratch": cell(values("scratch", None, m)), "fromA": cell(values("fromA", None, m))}
        for m in opts.few
    ]
    return {
        "experiment": "transfer",
        "summary": SUMMARY,
        "metric": "top-1 (%) on B's test images after the last epoch",
        "options": asdict(opts),
        "layer_order": list(LAYERS),
        "halves": {f"seed{k}": dict(zip("AB", halves(count, opts.split, k))) for k in range(opts.seeds)},
        "baseA": cell(values("baseA")),
        "baseB": cell(base_b),
        "rows": rows,
        "few": few,
        "findings": _findings(opts, values, base_b),
        "paper": PAPER,
        "device": env.get("device"),
        "torch": env.get("torch"),
    }


def _findings(opts: Options, values, base_b: list[float]) -> list[dict]:
    """Yosinski's three findings and the practitioner's question, each as a paired difference over
    seeds with the verdict against the direction the paper (or common practice) expects."""
    out = []

    def add(claim: str, a: list[float], b: list[float], sign: int) -> None:
        diff = paired_difference(a, b)
        word, sentence = verdict(diff, sign)
        out.append({"claim": claim, "difference": diff.to_dict(), "verdict": word, "reading": sentence})

    for n in [n for n in opts.layers if n in ("conv4", "conv5")]:
        add(f"co-adaptation: BnB at {n} below baseB", values("BnB", n), base_b, -1)
    top = max(opts.layers, key=LAYERS.index)
    add(f"specificity: AnB at {top} below baseB", values("AnB", top), base_b, -1)
    add(f"specificity: AnB below BnB at {top}", values("AnB", top), values("BnB", top), -1)
    mean_plus = [sum(v) / len(v) for v in zip(*(values("AnB+", n) for n in opts.layers))]
    add("fine-tuning: AnB+ (mean over n) above baseB", mean_plus, base_b, +1)
    for m in opts.few:
        add(
            f"{m} images per class: fine-tuned from baseA above scratch",
            values("fromA", None, m),
            values("scratch", None, m),
            +1,
        )
    return out


def _ci(c: dict) -> str:
    return f"{c['mean']:.2f} [{c['low']:.2f}, {c['high']:.2f}]"


def table_markdown(t: dict) -> str:
    """The table as markdown: top-1 (mean [95% interval] over seeds) per arm and n, Yosinski's
    numbers beside them, the findings, and the few-shot comparison."""
    o = t["options"]
    lines = [
        f"**transfer** — {t['summary']}. {o['data'] or 'Fashion-MNIST'}, {o['split']} halves, {o['subset'] or 'all'} "
        f"training images of a half per run at {o['image_size']} px, {o['epochs']} epochs, {o['seeds']} seeds; "
        f"{t['metric']}, mean [95% interval].",
        "",
        f"baseA (on A): {_ci(t['baseA'])}; baseB: {_ci(t['baseB'])} (Yosinski: {PAPER['baseB']})",
        "",
        "| n | " + " | ".join(ARMS) + " | Yosinski BnB / AnB |",
        "|---|" + "---|" * (len(ARMS) + 1),
    ]
    for n in o["layers"]:
        cells = [_ci(r) for a in ARMS for r in t["rows"] if (r["arm"], r["layer"]) == (a, n)]
        i = LAYERS.index(n)
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {PAPER['BnB'][i]} / {PAPER['AnB'][i]} |")
    lines += ["", "| images per class of B | scratch | fine-tuned from baseA |", "|---|---|---|"]
    lines += [f"| {f['per_class']} | {_ci(f['scratch'])} | {_ci(f['fromA'])} |" for f in t["few"]]
    lines += ["", *(f"- {f['claim']}: {f['reading']}." for f in t["findings"])]
    return "\n".join(lines) + "\n"


def list_line() -> str:
    """The experiment's line in ``alexnet experiment --list``."""
    o = Options()
    runs = o.seeds * (2 + len(ARMS) * len(o.layers) + 2 * len(o.few))
    return f"{'transfer':<20} {runs} runs ({o.seeds} seeds), ~{MINUTES:g} min on 2 CPU cores (estimated): {SUMMARY}"
