"""optim.py: the optimizer against the paper's update rule, the schedules, the rollback halving,
and which runs may be extended with ``--resume RUN --epochs N``."""

from __future__ import annotations

import pytest
import torch

from alexnet.config import TrainConfig
from alexnet.errors import ConfigError
from alexnet.training.optim import check_extension, halve_lr, make_optimizer, make_schedule


def test_sgd_equals_the_papers_update_while_the_rate_is_constant():
    """Section 5: v <- 0.9 v - 0.0005 lr w - lr g; w <- w + v, computed by hand for three steps."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    cfg = TrainConfig(lr=0.01, nesterov=False)
    opt = make_optimizer(model, cfg)
    w = [p.detach().clone().double() for p in model.parameters()]
    v = [torch.zeros_like(p) for p in w]
    for _ in range(3):
        x = torch.randn(5, 4)
        opt.zero_grad()
        model(x).square().sum().backward()
        grads = [p.grad.double() for p in model.parameters()]
        opt.step()
        for i, g in enumerate(grads):
            v[i] = 0.9 * v[i] - 0.0005 * 0.01 * w[i] - 0.01 * g
            w[i] = w[i] + v[i]
    for p, ref in zip(model.parameters(), w):
        torch.testing.assert_close(p.double(), ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("fused", [True, False])
def test_nesterov_looks_ahead_along_the_momentum(fused):
    """Sutskever et al. 2013 in PyTorch's form, by hand: b <- m b + g'; w <- w - lr (g' + m b), g' = g + wd w."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = make_optimizer(model, TrainConfig(lr=0.01), fused=fused)  # the default: Nesterov with SGD's momentum
    w = [p.detach().clone().double() for p in model.parameters()]
    b = [None] * len(w)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(5, 4)).square().sum().backward()
        grads = [p.grad.double() for p in model.parameters()]
        opt.step()
        for i, g in enumerate(grads):
            g = g + 5e-4 * w[i]
            b[i] = g if b[i] is None else 0.9 * b[i] + g
            w[i] = w[i] - 0.01 * (g + 0.9 * b[i])
    for p, ref in zip(model.parameters(), w):
        torch.testing.assert_close(p.double(), ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("bad", [dict(optimizer="paper"), dict(momentum=0.0)])
def test_nesterov_without_sgd_momentum_is_refused_and_off_by_default(bad):
    with pytest.raises(ConfigError, match="--nesterov"):
        TrainConfig(nesterov=True, **bad)
    opt = make_optimizer(torch.nn.Linear(2, 2), TrainConfig(**bad))
    assert not opt.param_groups[0].get("nesterov", False)


def _schedule(name: str, epochs: int = 2, steps: int = 5):
    opt = make_optimizer(torch.nn.Linear(2, 2), TrainConfig(schedule=name, epochs=epochs))
    return opt, make_schedule(opt, TrainConfig(schedule=name, epochs=epochs), steps)


def test_each_schedule_steps_where_it_should():
    _, s = _schedule("onecycle")
    assert isinstance(s.per_step, torch.optim.lr_scheduler.OneCycleLR) and s.plateau is None
    _, s = _schedule("cosine")
    assert isinstance(s.per_step, torch.optim.lr_scheduler.CosineAnnealingLR) and s.plateau is None
    opt, s = _schedule("plateau")
    assert s.per_step is None and isinstance(s.plateau, torch.optim.lr_scheduler.ReduceLROnPlateau)
    for top1 in (0.5, 0.5, 0.5):  # no improvement for two evaluations (patience 1): divide by 10
        s.after_epoch(top1)
    assert opt.param_groups[0]["lr"] == pytest.approx(TrainConfig().lr / 10)
    opt, s = _schedule("constant")
    assert s.scheduler is None and s.state_dict() is None


def test_halving_after_a_rollback_reaches_every_copy_of_the_rate():
    opt, s = _schedule("onecycle")
    before = dict(opt.param_groups[0]), list(s.per_step.base_lrs)
    halve_lr(opt, s)
    for key in ("lr", "initial_lr", "max_lr", "min_lr"):
        assert opt.param_groups[0][key] == pytest.approx(before[0][key] / 2)
    assert s.per_step.base_lrs == pytest.approx([b / 2 for b in before[1]])


@pytest.mark.parametrize("schedule", ["plateau", "constant"])
def test_plateau_and_constant_runs_may_grow(schedule):
    cfg = TrainConfig(schedule=schedule, epochs=2)
    check_extension(cfg, 2, "run")
    check_extension(cfg, 10, "run")
    with pytest.raises(
        ConfigError, match="--epochs 1: run is a run of 2 epochs; a resumed run can only be made longer"
    ):
        check_extension(cfg, 1, "run")


@pytest.mark.parametrize("schedule", ["onecycle", "cosine"])
def test_schedules_laid_out_over_the_run_cannot_grow(schedule):
    cfg = TrainConfig(schedule=schedule, epochs=2)
    check_extension(cfg, 2, "run")  # the same length is no change
    with pytest.raises(ConfigError) as e:
        check_extension(cfg, 4, "run")
    message = str(e.value)
    assert "\n" not in message and schedule in message and "start a new run with --epochs 4" in message


@pytest.mark.parametrize(("warmup", "steps"), [(0.1, 10), (0.5, 2), (0.25, 4), (0.0, 3), (0.999, 1)])
def test_onecycle_lays_out_any_warmup_below_one(warmup, steps):
    """A warm-up of exactly one step (0.1 of 10) made OneCycleLR divide by zero when it was built,
    after the run folder was made; now every warm-up in [0, 1) gives finite rates up to the peak."""
    model = torch.nn.Linear(2, 2)
    cfg = TrainConfig(warmup=warmup, epochs=1, lr=0.1)
    opt = make_optimizer(model, cfg)
    schedule = make_schedule(opt, cfg, steps)
    rates = [opt.param_groups[0]["lr"]]
    for _ in range(steps - 1):
        opt.step()
        schedule.per_step.step()
        rates.append(opt.param_groups[0]["lr"])
    assert all(0 < r <= 0.1 for r in rates)
    if warmup * steps == 1:  # the warm-up ends on step 0: it starts at the peak, the limit from below
        assert rates[0] == pytest.approx(0.1)
