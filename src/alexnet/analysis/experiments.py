"""Running the paper's ablations: ``alexnet experiment NAME``. What each experiment is - arms,
comparisons, regime - is data in :mod:`alexnet.analysis.ablations`.

The runner trains every arm with every seed through :func:`alexnet.training.loop.train`, each
into an ordinary run folder ``<experiment folder>/<arm>-seed<k>/`` (reproducible from its own
``config.json``), seed by seed - seed 0 of every arm, then seed 1 - so that an experiment stopped
part-way holds whole pairs. An experiment with a learning-rate sweep (relu-vs-tanh) first trains
each arm at each of its rates on seed 0 (``sweep-<arm>-lr<rate>/``) and picks the arm's rate
(:mod:`alexnet.analysis.sweep`). Where the experiment measures the train-test gap, the final
weights of each arm-seed are evaluated on its own training images (``final_train.json``). The
checkpoints of finished runs are then deleted unless ``keep_checkpoints``: the tables need only
the records, and an alexnet checkpoint with its momentum is about 0.5 GB. Last, the folders are
read back into ``table.json``, ``table.md`` and ``figure.png`` (:mod:`alexnet.analysis.tables`).
Running it again on the same folder skips the finished arm-seeds and resumes a stopped one.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Literal

from alexnet.analysis.ablations import BASE, EXPERIMENTS, Arm, Comparison, Experiment, experiment, list_lines
from alexnet.analysis.sweep import DIVERGED, fastest, trial_of
from alexnet.analysis.tables import TRAINING_ERROR, make_table, write_table
from alexnet.config import TrainConfig
from alexnet.errors import ConfigError, RunError, brief, first_line
from alexnet.system.files import read_json
from alexnet.training.rundir import RunFolder, read_metrics

__all__ = [
    "BASE",
    "EXPERIMENTS",
    "Arm",
    "Comparison",
    "Experiment",
    "Options",
    "arm_config",
    "experiment",
    "list_lines",
    "run_all",
    "run_experiment",
    "sweep_config",
]


@dataclass(frozen=True)
class Options:
    """What the command line may change; None keeps the experiment's own default."""

    epochs: int | None = None
    seeds: int | None = None
    subset: int | Literal["all"] | None = None  # "all": the whole training set
    image_size: int = BASE["image_size"]
    data: str | None = None
    device: str = "auto"
    keep_checkpoints: bool = False


def is_grayscale(data: str | None) -> bool:
    """IDX sets (Fashion-MNIST, the default) are one channel: nothing for PCA lighting to shift."""
    from alexnet.data.idx import is_idx_folder

    return data is None or is_idx_folder(data)


def arm_config(
    exp: Experiment,
    arm: Arm,
    seed: int,
    opts: Options,
    folder: Path,
    *,
    lr: float | None = None,
    epochs: int | None = None,
    name: str | None = None,
) -> TrainConfig:
    """The settings of one arm-seed: defaults < BASE < the experiment's < the arm's < the options
    (< the swept ``lr``, and a sweep run's own ``epochs`` and ``name``)."""
    values = {
        **BASE,
        **exp.settings,
        **arm.settings,
        "epochs": epochs or opts.epochs or exp.epochs,
        "seed": seed,
        "image_size": opts.image_size,
        "data": opts.data,
        "device": opts.device,
        "out": str(folder),
        "name": name or f"{arm.name}-seed{seed}",
    }
    if opts.subset is not None:
        values["subset"] = None if opts.subset == "all" else opts.subset
    if lr is not None:
        values["lr"] = lr
    return TrainConfig.from_dict(values, source=f"experiment {exp.name}, arm {arm.name}")


def sweep_config(exp: Experiment, arm: Arm, lr: float, opts: Options, folder: Path) -> TrainConfig:
    """One rate of an arm's sweep: seed 0, the experiment's sweep length (not ``--epochs``)."""
    return arm_config(exp, arm, 0, opts, folder, lr=lr, epochs=exp.sweep_epochs, name=f"sweep-{arm.name}-lr{lr:g}")


def _finished(folder: Path, epochs: int) -> bool:
    path = folder / "metrics.jsonl"
    return path.is_file() and any(r["epoch"] == epochs - 1 for r in read_metrics(path, ()))


def _check_same(stored: TrainConfig, cfg: TrainConfig, where: Path, also: tuple[str, ...] = ()) -> None:
    """A run folder found again must hold this arm-seed's settings (the device may differ, and
    ``also`` names settings not known yet)."""
    a, b = stored.to_dict(), cfg.to_dict()
    differ = [k for k in a if k not in ("device", *also) and a[k] != b[k]]
    if differ:
        shown = ", ".join(f"{k} {a[k]!r} there, {b[k]!r} now" for k in differ[:3])
        raise ConfigError(
            f"{where} holds this arm-seed with other settings ({shown}); give the same flags, or another --out"
        )


def _check_folder(folder: Path, name: str, configs: list[TrainConfig], swept: bool) -> None:
    """Before anything is written: the folder holds this experiment, and the runs found again
    are its arm-seeds with these settings (the swept rate is checked once it is known)."""
    record = folder / "experiment.json"
    found = read_json(record, error=ConfigError) if os.path.lexists(record) else {"experiment": name}
    if not isinstance(found, dict):
        raise ConfigError(f"{record}: not an experiment record (a JSON object); pick another --out")
    if found.get("experiment") != name:
        raise ConfigError(
            f"{folder} holds experiment {brief(found.get('experiment'))}, not {name!r}; pick another --out"
        )
    for cfg in configs:
        if (folder / cfg.name / "config.json").is_file():
            late = ("lr",) if swept and not cfg.name.startswith("sweep-") else ()
            _check_same(RunFolder(folder / cfg.name).read_config(), cfg, folder / cfg.name, late)


def run_experiment(
    name: str,
    opts: Options = Options(),
    out: str | Path | None = None,
    *,
    argv: list[str] | None = None,
    say: Callable[[str], None] = print,
) -> Path:
    """Train every arm with every seed into ``out`` (default ``runs/experiment-NAME-<time>``),
    after the sweep when the experiment has one, skipping finished arm-seeds and resuming stopped
    ones; then write the table and the figure. Returns the experiment folder."""
    exp = experiment(name)
    seeds = opts.seeds or exp.seeds
    folder = Path(out) if out is not None else Path("runs") / f"experiment-{name}-{datetime.now():%Y%m%d-%H%M%S}"
    skipped = {
        a.name: "skipped: grayscale data has no colour for PCA lighting to shift; give RGB --data to run it"
        for a in exp.arms
        if a.rgb_only and is_grayscale(opts.data)
    }
    arms = [a for a in exp.arms if a.name not in skipped]
    trials = {(a.name, lr): sweep_config(exp, a, lr, opts, folder) for a in arms for lr in exp.rates}
    provisional = [arm_config(exp, a, s, opts, folder) for s in range(seeds) for a in arms]  # every flag checked
    _check_folder(folder, name, [*trials.values(), *provisional], bool(exp.rates))
    folder.mkdir(parents=True, exist_ok=True)
    command = shlex.join(argv or sys.argv)
    record = {"experiment": name, "seeds": seeds, "options": opts.__dict__, "command": command}
    (folder / "experiment.json").write_text(json.dumps(record, indent=2) + "\n")
    started = time.monotonic()
    run = _Runner(exp, folder, opts, argv or ["alexnet", "experiment", name], say)
    sweep = run.sweep(arms, trials) if exp.rates else None
    rates = {a: r["chosen"] for a, r in sweep.items()} if sweep else {}
    configs = [arm_config(exp, a, s, opts, folder, lr=rates.get(a.name)) for s in range(seeds) for a in arms]
    for cfg in configs:
        run.one(cfg)
    table = make_table(exp, folder, configs, skipped, sweep)
    table["wall_seconds_this_call"] = round(time.monotonic() - started, 1)
    write_table(table, folder)
    from alexnet.plots import plot_experiment

    plot_experiment(table, folder / "figure.png")
    say(f"{name}: wrote {folder / 'table.md'} and {folder / 'figure.png'}")
    return folder


class _Runner:
    """Trains the runs of one experiment: fresh, resumed or skipped, then measured and tidied."""

    def __init__(self, exp: Experiment, folder: Path, opts: Options, argv: list[str], say):
        self.exp, self.folder, self.opts, self.argv, self.say = exp, folder, opts, argv, say

    def sweep(self, arms: list[Arm], trials: dict[tuple[str, float], TrainConfig]) -> dict:
        """Every arm at every rate on seed 0, then each arm's fastest rate (``sweep.json``)."""
        record, rates, level = {}, self.exp.rates, self.exp.sweep_level
        for arm in arms:
            for lr in rates:
                self.one(trials[arm.name, lr], sweep=True)
            found = [trial_of(self.folder / trials[arm.name, lr].name, lr, level, self.exp.smooth) for lr in rates]
            best = fastest(found)
            if best is None:
                raise RunError(
                    f"{self.exp.name}: every rate of {arm.name}'s sweep ({', '.join(f'{r:g}' for r in rates)}) "
                    f"diverged; see {self.folder}/sweep-{arm.name}-*/{DIVERGED}"
                )
            record[arm.name] = {"level": level, "chosen": best.lr, "trials": [t.to_dict() for t in found]}
            self.say(f"{self.exp.name}: {arm.name} trains at lr {best.lr:g} (the sweep's fastest to {self._level()})")
        (self.folder / "sweep.json").write_text(json.dumps(record, indent=2) + "\n")
        return record

    def _level(self) -> str:
        return f"{100 * self.exp.sweep_level:g}% training error"

    def one(self, cfg: TrainConfig, sweep: bool = False) -> None:
        """Train ``cfg`` unless it finished (or, in a sweep, diverged) before; measure, tidy."""
        from alexnet.training.loop import train

        run_dir, name = self.folder / cfg.name, self.exp.name
        if (run_dir / DIVERGED).is_file():
            self.say(f"{name}: {cfg.name} diverged before, skipped")
            return
        if (run_dir / "config.json").is_file():
            _check_same(RunFolder(run_dir).read_config(), cfg, run_dir)
        if _finished(run_dir, cfg.epochs):
            self.say(f"{name}: {cfg.name} finished before, skipped")
        else:
            resume = run_dir if (run_dir / "config.json").is_file() else None
            if resume:
                self.say(f"{name}: {cfg.name} resumed")
            t = time.monotonic()
            try:
                result = train(cfg, resume=resume, quiet=True) if resume else train(cfg, argv=self.argv, quiet=True)
            except RunError as e:
                if not (sweep and "training loss became" in str(e)):  # a sweep's rate may be too high
                    raise
                (run_dir / DIVERGED).write_text(first_line(e) + "\n")
                self.say(f"{name}: {cfg.name} diverged ({first_line(e)})")
                self._tidy(run_dir)
                return
            took = f"{time.monotonic() - t:.0f} s"
            self.say(f"{name}: {cfg.name} test error {100 * (1 - result['val_top1']):.2f}% ({took})")
        if self.exp.training_error and not sweep and not (run_dir / TRAINING_ERROR).is_file():
            (run_dir / TRAINING_ERROR).write_text(json.dumps(training_error(run_dir), indent=2) + "\n")
        self._tidy(run_dir)

    def _tidy(self, run_dir: Path) -> None:
        if self.opts.keep_checkpoints:
            return
        RunFolder(run_dir).delete_checkpoints()


def training_error(run_dir: Path) -> dict:
    """The final weights (``last.pt``: never an epoch picked by the test set) on the run's own
    training images in evaluation mode: dropout off, images only resized as evaluation's are."""
    import torch

    from alexnet.data import build_data
    from alexnet.formats import read_model
    from alexnet.system import runtime
    from alexnet.training import engine

    folder = RunFolder(run_dir)
    cfg = folder.read_config()
    model_file = read_model(folder.last)
    device = runtime.resolve_device(cfg.device)
    fast = runtime.fast_path(device, cfg.precision, cfg.channels_last)
    pre = model_file.preprocess
    data = build_data(replace(cfg, augment=False, lighting=False), device, stats=pre.stats, decode=pre.decode)
    layout = torch.channels_last if fast.channels_last else torch.preserve_format
    model = model_file.network().to(device, memory_format=layout)
    ev = engine.evaluate(
        model, data.train, len(data.classes), device=device, precision=fast.precision, channels_last=fast.channels_last
    )
    return {"train_error": 1 - ev["top1"], "images": ev["images"], "weights": "checkpoints/last.pt", "mode": "eval"}


def run_all(opts: Options, out: str | Path | None = None, *, argv: list[str] | None = None, say=print) -> Path:
    """Every experiment, each into ``<out>/<name>`` (default ``runs/experiments-<time>``)."""
    root = Path(out) if out is not None else Path("runs") / f"experiments-{datetime.now():%Y%m%d-%H%M%S}"
    for name in EXPERIMENTS:
        run_experiment(name, replace(opts), root / name, argv=argv, say=say)
    return root
