"""``--time-budget``: as many epochs as fit a wall-clock budget on this machine.

A fresh run with a budget first times a few training steps and evaluation batches of its own
network on its own data and device (a throwaway copy; the global RNG is put back, so the run that
follows is the run ``--epochs N`` would give), then sets ``epochs`` to what fits, with a margin for
checkpoints and the machine's drift. The chosen number is recorded in ``config.json`` like any
other setting, and the measurement in ``budget.json``, so the run folder reproduces and resumes
as any other; the budget is not measured again on a resume.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch

from alexnet.errors import ConfigError, RunError
from alexnet.ranges import MAX_EPOCHS, budget_seconds
from alexnet.training import engine

MARGIN = 0.9  # of the budget planned for epochs: checkpoints, the start, a slower spell of the machine
WARMUP_STEPS, MIN_STEPS, MAX_STEPS, MIN_SECONDS = 2, 3, 20, 5.0
EVAL_BATCHES = 3


@dataclass(frozen=True)
class Fit:
    """What the measurement found and the epochs it chose (``budget.json``)."""

    budget_seconds: float
    train_images_per_second: float
    eval_images_per_second: float
    epoch_seconds: float  # training and evaluation of one epoch, as measured
    epochs: int

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self, budget: str) -> str:
        return (
            f"--time-budget {budget}: {self.epochs} epoch(s) of about {self.epoch_seconds / 60:.1f} min each "
            f"(measured {self.train_images_per_second:.0f} training, {self.eval_images_per_second:.0f} evaluation "
            "images/s here)"
        )


def epochs_that_fit(budget: float, epoch_seconds: float) -> int:
    """Whole epochs in ``MARGIN`` of the budget; none fitting is refused in one line."""
    epochs = min(math.floor(budget * MARGIN / epoch_seconds), MAX_EPOCHS)
    if epochs < 1:
        raise ConfigError(
            f"--time-budget {budget / 60:.1f} min: one epoch takes about {epoch_seconds / 60:.1f} min on this machine; "
            "give a longer budget, a smaller --image-size, or --epochs 1"
        )
    return epochs


def fit_epochs(
    cfg,
    data,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    device: torch.device,
    precision: str,
    channels_last: bool,
) -> Fit:
    """Time ``model`` (a throwaway, built as the run's) on ``data``'s first training batches and
    evaluation batches, and choose the epochs that fit ``cfg.time_budget``."""
    budget = budget_seconds(cfg.time_budget)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        train_rate = _train_rate(cfg, data.train, model, optimizer, device, precision, channels_last)
        eval_rate = _eval_rate(data.val, model, device, precision, channels_last)
    epoch = data.num_train / train_rate + data.num_val / eval_rate
    return Fit(budget, train_rate, eval_rate, epoch, epochs_that_fit(budget, epoch))


def _batches(batches):
    """The batches of epoch 0 (the training loop sets its own epoch again before it starts)."""
    batches.set_epoch(0)
    return iter(batches)


def _train_rate(cfg, batches, model, optimizer, device, precision, channels_last) -> float:
    model.train()

    def step(x, y):
        x, y = engine.to_device(device, x, y, channels_last)
        engine.train_step(
            model, x, y, optimizer, device=device, precision=precision, label_smoothing=cfg.label_smoothing
        )

    return _rate(
        step, batches, device, warmup=WARMUP_STEPS, max_steps=MAX_STEPS, min_steps=MIN_STEPS, min_seconds=MIN_SECONDS
    )


@torch.no_grad()
def _eval_rate(batches, model, device, precision, channels_last) -> float:
    model.eval()

    def step(x, y):
        x, y = engine.to_device(device, x, y, channels_last)
        with engine.autocast(device, precision):
            model(x)

    return _rate(step, batches, device, warmup=1, max_steps=EVAL_BATCHES)


def _rate(step, batches, device, **counts) -> float:
    """Images per second of ``step`` after its warm-up; an epoch no longer than the warm-up (nothing
    timed) is timed again whole, its first pass having been the warm-up."""
    images, steps, seconds = _timed(step, batches, device, **counts)
    if not steps:
        images, steps, seconds = _timed(step, batches, device, warmup=0)
    if not seconds > 0:  # a clock set back meanwhile: any rate from it would be made up
        raise RunError(
            f"--time-budget: the clock went back or stood still while {steps} step(s) were timed ({seconds:.3g} s); "
            "run again, or give --epochs instead"
        )
    return images / seconds


def _timed(
    step,
    batches,
    device,
    *,
    warmup: int,
    max_steps: float = math.inf,
    min_steps: float = math.inf,
    min_seconds: float = 0.0,
) -> tuple[int, int, float]:
    """Run ``step(x, y)`` over epoch 0's batches: ``warmup`` untimed steps, then timed ones until
    ``max_steps``, or ``min_steps`` once ``min_seconds`` have passed. -> (images, steps, seconds) timed."""
    images, steps, start = 0, 0, time.perf_counter()
    for i, (x, y) in enumerate(_batches(batches)):
        step(x, y)
        if i + 1 == warmup:
            _sync(device)
            start = time.perf_counter()
        elif i + 1 > warmup:
            images, steps = images + len(y), steps + 1
            if steps >= max_steps or (steps >= min_steps and time.perf_counter() - start >= min_seconds):
                break
    _sync(device)
    return images, steps, time.perf_counter() - start


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
