"""The paper's ablations as data: ``alexnet experiment --list``.

An experiment is its arms (settings over the shared ones), the comparisons that test the paper's
claims (which arm against which, and the sign the paper reports), its regime (the settings every
arm shares, epochs, seeds) and, for figure 1, the learning rates each arm's sweep tries. Each
regime is chosen so that its effect can appear (docs/experiments.md says why): relu-vs-tanh at
a constant rate per arm chosen by a sweep, with no regularization; dropout and augmentation on a
small training set trained until it is fitted; lrn, pooling and towers with enough paired seeds
to state the smallest effect they could detect. Running them is experiments.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from alexnet.errors import ConfigError

# Settings every experiment starts from. Each setting a design depends on is named here or in its
# regime (augment, and epochs in the Experiment), never left to TrainConfig's defaults, so that a
# new default recipe leaves every arm as it was designed and measured: the document's network
# (kaiming init), one-cycle SGD at the paper's momentum, decay and dropout, the smallest input, 32
# images a step, plain cross-entropy (the paper has no label smoothing), no mid-epoch checkpoints.
BASE: dict[str, Any] = {
    "model": "alexnet",
    "image_size": 67,
    "batch_size": 32,
    "schedule": "onecycle",
    "lr": 0.02,
    "warmup": 0.15,
    "momentum": 0.9,
    "nesterov": False,  # the paper's heavy ball, as every experiment was calibrated
    "weight_decay": 5e-4,
    "dropout": 0.5,
    "label_smoothing": 0.0,
    "lighting": False,
    "checkpoint_every": None,
}


@dataclass(frozen=True)
class Arm:
    name: str
    settings: dict[str, Any]  # TrainConfig fields over the experiment's own
    rgb_only: bool = False  # needs colour (PCA lighting): on grayscale data the arm is skipped, and the table says so


@dataclass(frozen=True)
class Comparison:
    """``arm`` against its baseline ``against``, seed by seed: on ``metric`` (test error or the
    train-test gap, % points: arm minus baseline), or on the steps to each training-error level
    (``steps``: the ratio arm / baseline). ``paper_sign`` is the sign the paper reports: -1 for
    less error, +1 for a ratio above 1 (tanh slower)."""

    arm: str
    against: str
    paper_sign: int = -1
    metric: Literal["test_error", "gap", "steps"] = "test_error"


@dataclass(frozen=True)
class Experiment:
    name: str
    summary: str  # one line for --list
    paper: str  # what the paper reports
    design: str  # the regime and why its effect can appear there (docs/experiments.md has the long form)
    arms: tuple[Arm, ...]
    comparisons: tuple[Comparison, ...]  # the first is the headline verdict
    settings: dict[str, Any] = field(default_factory=dict)  # shared by every arm, over BASE
    epochs: int = 2
    seeds: int = 2
    curves: Literal["steps", "epochs"] = "epochs"  # the figure: training error per logged step, or errors per epoch
    levels: tuple[float, ...] = ()  # training-error levels whose steps-to-reach are tabled (figure 1)
    smooth: int = 0  # steps-to-reach reads each step-log window averaged with this many on either side
    rates: tuple[float, ...] = ()  # the sweep: constant rates each arm tries on seed 0 (none: no sweep)
    sweep_epochs: int = 1  # the length of a sweep run
    sweep_level: float = 0.25  # the sweep picks the rate that reaches this training error first
    training_error: bool = False  # measure the final weights on the training images (the train-test gap)
    minutes: float = 0.0  # the defaults' wall time on the 2-core EPYC (docs/experiments.md)
    timing: Literal["measured", "estimated"] = "estimated"  # whether `minutes` was timed whole or worked out


FIGURE1 = (0.40, 0.25, 0.15)  # the paper's 25%, and a level either side
# Figure 1's regime: "no regularization of any kind" (no dropout, weight decay or augmentation),
# a constant rate per arm, and training error read from steps.jsonl every 10 steps, each window
# averaged with two on either side: 50 steps, 1,600 images, within about 1 point at 25%.
FIGURE1_REGIME = {
    "subset": 9600,  # 300 steps an epoch: one epoch is a sweep run
    "schedule": "constant",
    "dropout": 0.0,
    "weight_decay": 0.0,
    "augment": False,
    "step_log": 10,
    "eval_every": 100,  # only the last epoch: the measure is the training error
    "save_every": 100,
}
# Dropout and augmentation act against overfitting: a training set small enough for the network to
# fit (training error near 0) in the epochs given, evaluated and saved every 10 epochs. One-cycle at
# a peak of 0.01 fits 1,000 images without augmentation in 30 epochs; at the default 0.02 with crops
# and flips, 40 epochs still left 8% training error (docs/experiments.md, calibration).
OVERFIT = {"subset": 1000, "lr": 0.01, "augment": False, "eval_every": 10, "save_every": 10}
# lrn, pooling and towers: a short run that ends converged (one-cycle decays to ~0), so that more
# seeds fit the budget; evaluated and saved after epochs 3 and 6. With the crops and flips the
# paper trained its networks with (section 4.1), as these were designed.
SHORT = {"subset": 4000, "augment": True, "eval_every": 3, "save_every": 3}
RATE_CHOICE = "the rate of the sweep (seed 0) that reached 25% training error first"

EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment(
            "relu-vs-tanh",
            "figure 1 on its own kind of network: training error against steps of a four-layer CNN (convnet4), "
            "ReLU vs tanh, each at its own swept constant rate; steps to 40/25/15% and the speed-up",
            "a 4-layer CNN with ReLUs reached 25% training error on CIFAR-10 six times faster than with tanh",
            f"no regularization, a constant rate per arm: {RATE_CHOICE}",
            (
                Arm("convnet4-relu", {"model": "convnet4", "activation": "relu"}),
                Arm("convnet4-tanh", {"model": "convnet4", "activation": "tanh"}),
            ),
            (Comparison("convnet4-tanh", "convnet4-relu", +1, "steps"),),
            settings=FIGURE1_REGIME,
            epochs=5,
            seeds=10,
            curves="steps",
            levels=FIGURE1,
            smooth=2,
            rates=(0.0025, 0.005, 0.01, 0.02, 0.04),
            minutes=23,
            timing="measured",
        ),
        Experiment(
            "relu-vs-tanh-alexnet",
            "figure 1 on the document's network: training error against steps of alexnet, ReLU vs tanh, each at its "
            "own swept constant rate; steps to 40/25/15% and the speed-up",
            "the speed-up 'varies with network architecture' (the paper's 6x was measured on a 4-layer CNN)",
            f"as relu-vs-tanh, on alexnet: {RATE_CHOICE}",
            (
                Arm("alexnet-relu", {"model": "alexnet", "activation": "relu"}),
                Arm("alexnet-tanh", {"model": "alexnet", "activation": "tanh"}),
            ),
            (Comparison("alexnet-tanh", "alexnet-relu", +1, "steps"),),
            settings=FIGURE1_REGIME,
            epochs=2,
            seeds=4,
            curves="steps",
            levels=FIGURE1,
            smooth=2,
            rates=(0.001, 0.002, 0.005, 0.01),
            minutes=20,
            timing="measured",
        ),
        Experiment(
            "dropout",
            "section 4.2: dropout 0.5 vs none in FC6/FC7, on a training set small enough to overfit; test error "
            "and the train-test gap",
            "without dropout the network overfits substantially; dropout roughly doubles the iterations to converge",
            (
                "1,000 training images, no augmentation, trained until the network fits them (training error "
                "near 0): where Srivastava et al. found dropout's gain, between the smallest sets (none) and the whole"
            ),
            (Arm("no-dropout", {"dropout": 0.0}), Arm("dropout", {"dropout": 0.5})),
            (Comparison("dropout", "no-dropout"), Comparison("dropout", "no-dropout", metric="gap")),
            settings=OVERFIT,  # no augmentation: dropout the only regularizer besides weight decay
            epochs=30,
            seeds=4,
            training_error=True,
            minutes=25,
            timing="measured",
        ),
        Experiment(
            "augmentation",
            "section 4.1: none / crops+flips / crops+flips+PCA lighting, on a training set small enough to "
            "overfit (lighting needs RGB --data)",
            "without crops and flips the network overfits substantially; PCA lighting reduced top-1 error by "
            "over 1 point",
            "the regime of dropout (1,000 images until fitted), dropout 0.5 on as in the paper",
            (
                Arm("none", {"augment": False}),
                Arm("crops-flips", {"augment": True}),
                Arm("crops-flips-lighting", {"augment": True, "lighting": True}, rgb_only=True),
            ),
            (
                Comparison("crops-flips", "none"),
                Comparison("crops-flips", "none", metric="gap"),
                Comparison("crops-flips-lighting", "crops-flips"),
            ),
            settings=OVERFIT,
            epochs=30,
            seeds=4,
            training_error=True,
            minutes=24,
            timing="measured",
        ),
        Experiment(
            "lrn",
            "section 3.3: with and without local response normalization (alexnet, LRN after conv1/conv2)",
            "LRN reduced top-1/top-5 error by 1.4/1.2 points on ImageNet (CIFAR-10: 13% -> 11%)",
            "4,000 images for 6 epochs (one-cycle to ~0), paired seeds: the arms share data, order and initial weights",
            (Arm("no-lrn", {"lrn": False}), Arm("lrn", {"lrn": True})),
            (Comparison("lrn", "no-lrn"),),
            settings=SHORT,
            epochs=6,
            seeds=5,
            minutes=25,
            timing="measured",
        ),
        Experiment(
            "pooling",
            "section 3.4: overlapping 3x3/2 max-pooling vs plain 2x2/2",
            "overlapping pooling reduced top-1/top-5 error by 0.4/0.3 points",
            "the regime of lrn; the arms share data, order and initial weights (FC6 reads 6x6 either way)",
            (Arm("plain", {"pooling": "plain"}), Arm("overlap", {"pooling": "overlap"})),
            (Comparison("overlap", "plain"),),
            settings=SHORT,
            epochs=6,
            seeds=5,
            minutes=22,
            timing="measured",
        ),
        Experiment(
            "towers",
            "section 3.2: two-tower alexnet2012 vs one tower of half width (alexnet2012_half)",
            "the two-GPU net had 1.7/1.2 points lower top-1/top-5 error than the one-GPU net of half the kernels",
            "the regime of lrn, kaiming init (the paper's sits at chance this short); the arms share data and order",
            (Arm("one-tower-half", {"model": "alexnet2012_half"}), Arm("two-towers", {"model": "alexnet2012"})),
            (Comparison("two-towers", "one-tower-half"),),
            settings={**SHORT, "init": "kaiming"},
            epochs=6,
            seeds=5,
            minutes=22,
            timing="measured",
        ),
    )
}


def experiment(name: str) -> Experiment:
    """The experiment called ``name``; an unknown name is one line listing the known ones."""
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}; choose one of: {', '.join(EXPERIMENTS)} (or all)")
    return EXPERIMENTS[name]


def list_lines() -> list[str]:
    """One line per experiment: name, default arms x seeds x epochs, its time on two CPU cores
    (measured or estimated), what it measures."""
    return [
        f"{e.name:<20} {len(e.arms)} arms x {e.seeds} seeds x {e.epochs} epochs"
        + (f" (+ a sweep of {len(e.rates)} rates per arm)" if e.rates else "")
        + f", ~{e.minutes:g} min on 2 CPU cores ({e.timing}): {e.summary}"
        for e in EXPERIMENTS.values()
    ]
