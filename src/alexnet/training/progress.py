"""What a training run prints: the opening lines, a tqdm bar per epoch on a terminal, and one line
per finished epoch. The run's files are written by :class:`~alexnet.training.rundir.RunFolder`; this is the
console only, and a console that goes away (``alexnet train | head``) never stops the run.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from alexnet.errors import printable

if TYPE_CHECKING:
    from alexnet.training.engine import EpochResult, StepResult
    from alexnet.training.run import Run


def printer(quiet: bool):
    """``print`` for progress lines; a reader that leaves (``| head``) never stops the run."""

    def say(*args) -> None:
        if quiet:
            return
        try:
            print(*(printable(str(a)) for a in args), flush=True)  # names from files never act on the terminal
        except BrokenPipeError:  # stdout closed: keep training, print nowhere from now on
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())

    return say


def announce(run: Run, restarted: bool, say) -> None:
    """The lines a run prints before its first epoch: what runs where, and what it skipped or found."""
    cfg, d = run.cfg, run.data
    say(
        f"run {run.folder}: {cfg.model} on {d.source} ({d.num_train} train / {d.num_val} val images, "
        f"{len(d.classes)} classes) at {cfg.image_size}x{cfg.image_size}, "
        f"{f'towers on {cfg.model_parallel}' if cfg.model_parallel else run.device} {run.precision}"
    )
    if run.fit is not None:
        say(run.fit.describe(cfg.time_budget))
    if run.transfer is not None:
        from alexnet.training.transfer import describe

        say(describe(run.transfer))
    if cfg.lighting and not d.preprocess.eigval:
        say(f"PCA lighting skipped: {d.source} is grayscale (one channel has no colour to relight)")
    if d.decode_on == "gpu":
        say(
            f"JPEGs decoded, cropped and flipped on {run.device} (nvJPEG); loader workers read the files (--decode "
            "cpu: in the workers)"
        )
    if restarted:
        say(
            f"{run.folder} stopped before its first checkpoint: starting it again from step 0 with its recorded "
            "settings"
        )
    if d.bad_files:
        say(f"skipped {len(d.bad_files)} bad image file(s), listed in {run.folder.path / 'bad_images.json'}")
    if run.state.epoch >= cfg.epochs:
        say(f"{run.folder} already finished all {cfg.epochs} epochs")


def epoch_line(epoch: int, epochs: int, tr: EpochResult, ev: dict | None, images_per_second: float) -> str:
    """The line printed after an epoch: training loss and accuracy, validation top-1/top-5/loss
    (``ev`` None: an epoch --eval-every leaves unevaluated), times."""
    head = f"epoch {epoch + 1}/{epochs}: train loss {tr.loss:.4f} acc {100 * tr.acc:.2f}% | "
    speed = f"{tr.seconds:.0f}s train ({images_per_second:.0f} img/s)"
    if ev is None:
        return f"{head}not evaluated (--eval-every) | {speed}"
    return (
        f"{head}val top-1 {100 * ev['top1']:.2f}% top-5 {100 * ev['top5']:.2f}% loss {ev['loss']:.4f} | "
        f"{speed} + {ev['seconds']:.0f}s val"
    )


class Bar:
    """tqdm progress bar in images, with loss and learning rate; reads the loss every 20 steps."""

    def __init__(self, bar):
        self.bar, self.steps = bar, 0

    def update(self, images: int, step: StepResult) -> None:
        """Count the images of a step; every 20 steps show its loss and the learning rate."""
        self.steps += 1
        self.bar.update(images)
        if self.steps % 20 == 1:
            self.bar.set_postfix(loss=f"{step.loss.item():.3f}", lr=f"{step.lr:.4g}", refresh=False)

    def close(self) -> None:
        self.bar.close()


def bar(epoch: int, epochs: int, total: int, done: int, quiet: bool) -> Bar | None:
    """The epoch's tqdm bar on a terminal; None when quiet or when stderr is not one."""
    if quiet or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return Bar(
        tqdm(total=total, initial=done, desc=f"epoch {epoch + 1}/{epochs}", unit="img", dynamic_ncols=True, leave=False)
    )
