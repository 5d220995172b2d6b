"""The optimizers and the learning-rate schedules, and how the rate changes after a NaN rollback.

Section 5 of the paper: SGD with momentum 0.9 and weight decay 0.0005 on every weight and bias,
the rate divided by 10 when the validation error stops improving (three times in all). The default
schedule is not the paper's: a one-cycle warm-up and cosine decay, which trains from scratch
without the stall at chance that the paper's init and constant rate show on small data
(docs/results.md). ``--optimizer paper`` is the paper's update rule exactly (:class:`PaperSGD`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from alexnet.config import EXTENDABLE_SCHEDULES, TrainConfig
from alexnet.errors import ConfigError
from alexnet.training import transfer

# The per-parameter state each optimizer keeps (what a checkpoint's optimizer state must hold).
STATE_BUFFERS = {"sgd": "momentum_buffer", "paper": "velocity"}
# The plateau schedule divides the rate by 10 three times at most (section 5: "three times prior to
# termination"): ReduceLROnPlateau's floor is lr / 1000, less a hair so that float rounding of
# lr * 0.1**3 cannot clamp the third division or leave room for a fourth.
PLATEAU_DIVISIONS = 3


class PaperSGD(torch.optim.Optimizer):
    """The paper's update rule (section 5), exactly::

        v <- momentum * v - weight_decay * lr * w - lr * grad
        w <- w + v

    The velocity ``v`` holds the rate of the steps it was made in. PyTorch's SGD keeps
    ``b <- momentum * b + grad + weight_decay * w`` and steps ``w <- w - lr * b``: the same while the
    rate is constant, but when the rate changes (a plateau division) it rescales the whole history
    by the new rate at once; here the old steps keep their old rate and decay with the momentum.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4):
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter that has a gradient; ``closure`` as torch's optimizers take it."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, m, wd = group["lr"], group["momentum"], group["weight_decay"]
            for w in group["params"]:
                if w.grad is None:
                    continue
                state = self.state[w]
                if "velocity" not in state:  # v starts at 0
                    state["velocity"] = torch.zeros_like(w, memory_format=torch.preserve_format)
                v = state["velocity"]
                v.mul_(m).add_(w, alpha=-wd * lr).add_(w.grad, alpha=-lr)
                w.add_(v)
        return loss


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, fused: bool = True) -> torch.optim.Optimizer:
    """``cfg.optimizer``: ``sgd`` (PyTorch's SGD) or ``paper`` (:class:`PaperSGD`), with momentum and
    weight decay on every parameter.

    PyTorch's update v <- m*v + (g + wd*w); w <- w - lr*v equals the paper's
    v <- 0.9v - 0.0005*lr*w - lr*g; w <- w + v while the learning rate is constant.
    ``fused`` (runtime.fast_path decides it per device): one kernel for the whole update; else
    torch's foreach update, a loop over tensors computing the same. ``cfg.nesterov`` (None: on
    whenever there is momentum): the step looks ahead along the momentum, w <- w - lr*(g' + m*v) with
    g' = g + wd*w.

    A run from another model's weights (transfer.py) leaves the layers frozen for the whole run
    out, and gives the copied layers a group of their own at ``--transfer-lr-mult`` times the rate.
    """
    groups = transfer.param_groups(model, cfg)
    if cfg.optimizer == "paper":
        return PaperSGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    kind = {"fused": True} if fused else {"foreach": True}
    return torch.optim.SGD(
        groups,
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        nesterov=cfg.momentum > 0 if cfg.nesterov is None else cfg.nesterov,
        **kind,
    )


def start_buffers(optimizer: torch.optim.Optimizer, buffer: str) -> None:
    """A zero ``buffer`` (``STATE_BUFFERS``) for every parameter that trains and has none yet: a
    layer that starts to train part-way through a run (``--freeze-epochs``). torch's fused SGD
    takes every momentum buffer of a group or none, and fails on a mix; a zero buffer is what the
    first step makes of a missing one (b <- 0.9 * 0 + g = g, bit for bit), and the velocity
    PaperSGD starts from."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.requires_grad and buffer not in optimizer.state.get(p, {}):
                optimizer.state[p][buffer] = torch.zeros_like(p, memory_format=torch.preserve_format)


@dataclass
class Schedule:
    """A run's learning-rate schedule: stepped after every optimizer step (``per_step``: one-cycle,
    cosine) or after every evaluation (``plateau``), or neither (constant)."""

    per_step: torch.optim.lr_scheduler.LRScheduler | None = None
    plateau: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None

    @property
    def scheduler(self):
        return self.per_step or self.plateau

    def after_epoch(self, val_top1: float) -> None:
        if self.plateau is not None:
            self.plateau.step(val_top1)

    def state_dict(self) -> dict | None:
        return self.scheduler.state_dict() if self.scheduler is not None else None

    def load_state_dict(self, state: dict | None) -> None:
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state)


def make_schedule(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int) -> Schedule:
    """The schedule ``cfg.schedule`` names, laid out over ``cfg.epochs`` epochs."""
    total = cfg.epochs * steps_per_epoch
    peaks = [group["lr"] for group in optimizer.param_groups]  # each group's own (--transfer-lr-mult)
    if cfg.schedule == "onecycle":
        # Linear warm-up from lr/25 to lr over the first `warmup` of the steps, then cosine decay to
        # ~0: a stable start from scratch (no stall at chance) and most of the budget at high lr.
        # A warm-up of exactly one step ends on step 0, where OneCycleLR would divide by its zero
        # length; a hair less gives the same rates (the limit from below) without the division.
        warmup = cfg.warmup * (1 - 1e-9) if cfg.warmup * total == 1 else cfg.warmup
        return Schedule(
            per_step=torch.optim.lr_scheduler.OneCycleLR(
                optimizer,
                max_lr=peaks if len(peaks) > 1 else cfg.lr,
                total_steps=total,
                pct_start=warmup,
                anneal_strategy="cos",
                cycle_momentum=False,
                div_factor=25.0,
                final_div_factor=1e3,
            )
        )
    if cfg.schedule == "cosine":
        return Schedule(per_step=torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total))
    if cfg.schedule == "plateau":
        # The paper: divide by 10 when the validation error stops improving, three times at most.
        floors = [lr * 0.1**PLATEAU_DIVISIONS * (1 - 1e-6) for lr in peaks]
        return Schedule(
            plateau=torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="max", factor=0.1, patience=1, min_lr=floors if len(floors) > 1 else floors[0]
            )
        )
    return Schedule()


def halve_lr(optimizer: torch.optim.Optimizer, schedule: Schedule) -> None:
    """After a NaN rollback: half the learning rate from here on, for every schedule."""
    for group in optimizer.param_groups:
        for key in ("lr", "initial_lr", "max_lr", "min_lr"):  # OneCycleLR keeps its own copies
            if key in group:
                group[key] *= 0.5
    if hasattr(schedule.per_step, "base_lrs"):
        schedule.per_step.base_lrs = [lr * 0.5 for lr in schedule.per_step.base_lrs]


def check_extension(cfg: TrainConfig, epochs: int, run_dir) -> None:
    """Whether a run of ``cfg`` may be continued to ``epochs`` epochs (``--resume RUN --epochs N``).

    A plateau or constant schedule does not depend on the run's length, so any longer run follows
    the same rates; onecycle and cosine are laid out over the first length and cannot be stretched.
    """
    if epochs == cfg.epochs:
        return
    if epochs < cfg.epochs:
        raise ConfigError(
            f"--epochs {epochs}: {run_dir} is a run of {cfg.epochs} epochs; a resumed run can only be made longer"
        )
    if cfg.schedule not in EXTENDABLE_SCHEDULES:
        raise ConfigError(
            f"--epochs {epochs}: {run_dir} uses the {cfg.schedule} schedule, "
            "laid out over its "
            f"{cfg.epochs} epochs, "
            "so it "
            f"cannot be extended; start a new run with --epochs {epochs} (or use --schedule plateau or constant)"
        )
