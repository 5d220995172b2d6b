"""Steps to a training-error level, and the per-arm learning-rate sweep of ``relu-vs-tanh``.

Figure 1 of the paper: "the learning rates for each network were chosen independently to make
training as fast as possible", and the measure is the steps to 25% training error. So each arm
of the experiment trains on seed 0 at every rate of a short list, at a constant rate, for a few
hundred steps; :func:`fastest` picks the rate that reached the level in the fewest logged steps,
and every seed of that arm then trains at it. The training error is read from a run's
``steps.jsonl`` (one line every ``--step-log`` steps: the mean error of those steps' batches, in
training mode), so the choice is a function of the run folders alone.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

DIVERGED = "diverged.txt"  # beside a sweep run whose loss became NaN: the error, and a finished trial
TAIL = 3  # logged windows averaged for a trial's final training error


def read_steps(run_dir: str | Path) -> list[dict]:
    """The lines of a run's ``steps.jsonl`` (none when it has none), in step order."""
    from alexnet.errors import DataError
    from alexnet.ranges import is_number
    from alexnet.system.files import read_json_lines

    path = Path(run_dir) / "steps.jsonl"
    rows = read_json_lines(path) if os.path.lexists(path) else []
    if not all(
        isinstance(r, dict) and isinstance(r.get("step"), int) and is_number(r.get("train_error")) for r in rows
    ):
        raise DataError(f"{path}: not a steps record (lines of step and train_error)")
    return sorted(rows, key=lambda r: r["step"])


def smoothed(rows: list[dict], half: int) -> list[dict]:
    """Each logged window's training error averaged with up to ``half`` windows on either side:
    one window holds only ``--step-log`` batches, whose error is a few points noisy."""
    rows = sorted(rows, key=lambda r: r["step"])
    errors = [r["train_error"] for r in rows]
    out = []
    for i, r in enumerate(rows):
        near = errors[max(0, i - half) : i + half + 1]
        out.append({**r, "train_error": sum(near) / len(near)})
    return out


def steps_to_reach(rows: list[dict], level: float, half: int = 0) -> int | None:
    """The first logged step whose training error (the mean of the steps since the line before,
    averaged with ``half`` lines on either side) is at or below ``level`` (a fraction); None when
    no line reaches it."""
    return next((r["step"] for r in smoothed(rows, half) if r["train_error"] <= level), None)


@dataclass(frozen=True)
class Trial:
    """One rate of one arm's sweep, as its run folder tells it."""

    lr: float
    run_dir: str
    steps_to: int | None  # first logged step at or below the level; None: not reached
    final_error: float | None  # mean training error (fraction) of the last TAIL logged windows
    last_step: int  # the last logged step: how long the trial ran
    diverged: bool = False  # the loss became NaN or infinite: never chosen

    def to_dict(self) -> dict:
        return asdict(self)


def trial_of(run_dir: str | Path, lr: float, level: float, half: int = 0) -> Trial:
    """What the sweep run in ``run_dir`` at rate ``lr`` shows about reaching ``level`` (the
    windows smoothed over ``half`` on either side, as :func:`steps_to_reach`)."""
    rows = read_steps(run_dir)
    tail = [r["train_error"] for r in rows[-TAIL:] if math.isfinite(r["train_error"])]
    return Trial(
        lr=lr,
        run_dir=Path(run_dir).name,
        steps_to=steps_to_reach(rows, level, half),
        final_error=sum(tail) / len(tail) if tail else None,
        last_step=rows[-1]["step"] if rows else 0,
        diverged=(Path(run_dir) / DIVERGED).is_file(),
    )


def _order(t: Trial) -> tuple:
    # reached first, then fewer steps; then the lower final error (a rate that never reached the
    # level but got closest), then the smaller rate (the safer of two that tie)
    reached = t.steps_to is not None
    return (not reached, t.steps_to if reached else 0, math.inf if t.final_error is None else t.final_error, t.lr)


def fastest(trials: list[Trial]) -> Trial | None:
    """The trial that reached the level in the fewest logged steps; when none reached it, the one
    with the lowest final training error; ties go to the smaller rate. A trial that diverged is
    never chosen; None when every one did."""
    kept = [t for t in trials if not t.diverged]
    return min(kept, key=_order) if kept else None
