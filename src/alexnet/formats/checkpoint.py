"""Our training checkpoint (``*.pt``): its writer and its reader side by side.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(weights_only=True)``; a file crafted to run code when unpickled is refused before
anything in it runs. Keys: ``format``, ``model`` (the state_dict), ``optimizer``, ``scheduler``,
``epoch``, ``totals`` (:class:`Totals` mid-epoch, else None), ``best_top1``, ``rollbacks``,
``metrics``, ``rng``, ``preprocess`` (:class:`~alexnet.data.transforms.Preprocess` as a dict),
``classes`` and ``config`` (the run's resolved settings). The run writes it (train.py); resume,
evaluate, predict and export read it.

Every field is checked where it is read, here: the network's fields by
:meth:`ModelFile.from_state` (predict, evaluate, export and resume alike), the training fields by
:func:`read_resume` and :meth:`Resume.check_fits` (``train --resume`` and a NaN rollback). A
field that is missing, of the wrong type or absurd is one :class:`CheckpointError` naming the
file and the field.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import torch

from alexnet.config import TrainConfig
from alexnet.errors import CheckpointError, brief
from alexnet.formats.network import ModelFile, tensor_problem
from alexnet.ranges import is_number
from alexnet.system.distributed import SINGLE, World
from alexnet.system.files import atomic_write, load_torch_file, output_path, torch_save

FORMAT = "alexnet-checkpoint/1"
SUFFIXES = (".pt", ".pth")
METRICS = ("epoch", "train_loss", "train_acc", "val_loss", "val_top1", "val_top5", "lr",
           "train_seconds", "val_seconds", "images_per_second")  # fmt: skip  # train._one_epoch's line
SHARES = ("train_acc", "val_top1", "val_top5")  # metrics that are fractions of images
VALIDATION = ("val_loss", "val_top1", "val_top5")  # absent from an epoch --eval-every did not evaluate
# What changes in the optimizer's and the schedule's state as a run goes on (the halvings of a NaN
# rollback included); every other entry follows from the run's settings and must be what they build.
MOVING_RATES = ("lr", "initial_lr", "max_lr", "min_lr")
# min_lrs: a plateau run from before the floor of three divisions resumes with its own (none).
MOVING_SCHEDULE = (
    "last_epoch",
    "_step_count",
    "_last_lr",
    "base_lrs",
    "best",
    "num_bad_epochs",
    "cooldown_counter",
    "_get_lr_called_within_step",
    "_is_initial",
    "min_lrs",
)


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically (see :func:`~alexnet.system.files.atomic_write`)."""
    atomic_write(path, lambda tmp: torch_save(state, tmp))


def load_checkpoint(path: str | Path) -> dict:
    """Read a training checkpoint into its dict, checking its format and the keys everything needs."""
    path = Path(path)
    state = load_torch_file(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an alexnet training checkpoint (for torchvision weights use --weights)")
    missing = [k for k in ("model", "config", "classes", "preprocess") if not isinstance(state.get(k), (list, dict))]
    if missing:
        raise CheckpointError(f"{path}: a damaged checkpoint, it lacks {', '.join(missing)}")
    return state


def write(model: ModelFile, out: str | Path | None, *, checkpoint: Path, force: bool = False) -> tuple[Path]:
    """Write ``model`` as a checkpoint of the network alone (weights, settings, classes,
    preprocessing; no optimizer or schedule, so ``train --resume`` refuses it): what ``alexnet
    convert`` makes of weights trained elsewhere. ``out`` is a ``.pt`` name or a folder."""
    path = output_path(checkpoint, out, ".pt", force=force)
    state = {
        "format": FORMAT,
        "model": {k: v.detach().cpu().contiguous() for k, v in model.weights.items()},
        "config": dict(model.config),
        "classes": list(model.classes),
        "preprocess": model.preprocess.to_dict(),
        "epoch": model.epoch,
        "metrics": model.metrics,
        "source": str(checkpoint),
    }
    atomic_write(path, lambda tmp: torch_save(state, tmp), overwrite=force)
    return (path,)


def read(path: Path, source: str) -> ModelFile:
    """A training checkpoint as a :class:`ModelFile` (the network and what it needs, no training state)."""
    return ModelFile.from_state(load_checkpoint(path), source)


@dataclass(frozen=True)
class Totals:
    """The running sums of an epoch: its training loss summed over images, the images classified
    right, the images seen and the steps taken; ``Totals()`` is an epoch's start, ``+`` adds a step.

    The step loop keeps ``loss_sum`` and ``correct`` as tensors on the device (:meth:`on`), so
    adding a step never waits for it; :meth:`summed` turns them into numbers over every process.
    A checkpoint stores those numbers (:meth:`to_dict`, :meth:`from_dict`); None there is an
    epoch finished."""

    loss_sum: float | torch.Tensor = 0.0
    correct: int | torch.Tensor = 0
    seen: int = 0
    steps: int = 0

    def __add__(self, other: Totals) -> Totals:
        return Totals(
            self.loss_sum + other.loss_sum,
            self.correct + other.correct,
            self.seen + other.seen,
            self.steps + other.steps,
        )

    def on(self, device: torch.device) -> Totals:
        """The sums as the step loop keeps them: the loss (float32) and the count on ``device``."""
        loss_sum = torch.tensor(self.loss_sum, device=device)
        return Totals(loss_sum, torch.tensor(self.correct, device=device, dtype=torch.long), self.seen, self.steps)

    def summed(self, world: World = SINGLE) -> Totals:
        """The sums as numbers, over every process. With several processes this is a collective
        (the sums kept on the device, :meth:`on`): every process calls it at the same step."""
        if not world.distributed:
            return Totals(_number(self.loss_sum), _number(self.correct), self.seen, self.steps)
        seen = torch.tensor(float(self.seen), device=self.loss_sum.device, dtype=torch.float64)
        sums = world.sum(torch.stack([self.loss_sum.double(), self.correct.double(), seen]))
        return Totals(sums[0].item(), round(sums[1].item()), round(sums[2].item()), self.steps)

    def to_dict(self) -> dict:
        """The checkpoint's ``totals``: numbers (summed over the processes first)."""
        return {"loss_sum": float(self.loss_sum), "correct": int(self.correct), "seen": self.seen, "steps": self.steps}

    @classmethod
    def from_dict(cls, totals, where: str) -> Totals:
        """A checkpoint's ``totals`` of an epoch stopped part-way, checked: counts that add up, a
        finite loss; anything else is a CheckpointError naming ``where``."""
        names = [f.name for f in fields(cls)]
        if not isinstance(totals, dict) or set(totals) != set(names):
            raise CheckpointError(
                f"{where}: 'totals' must be None or an object of {', '.join(names)}, got {brief(totals)}"
            )
        steps, seen, correct, loss_sum = totals["steps"], totals["seen"], totals["correct"], totals["loss_sum"]
        counts = _whole(steps) and _whole(seen) and _whole(correct) and 1 <= steps <= seen and correct <= seen
        if not (counts and is_number(loss_sum) and loss_sum >= 0):
            raise CheckpointError(
                f"{where}: 'totals' {brief(totals)} do not add up (steps >= 1, seen >= steps, correct <= seen, a "
                "finite loss)"
            )
        return cls(float(loss_sum), correct, seen, steps)


def _number(x: float | int | torch.Tensor) -> float | int:
    return x.item() if isinstance(x, torch.Tensor) else x


@dataclass
class Resume:
    """A checkpoint as ``train --resume`` reads it: the run's settings, its network, and where it
    stands; each field checked by :func:`read_resume`, the rest by :meth:`check_fits`."""

    path: Path
    config: TrainConfig
    model: ModelFile
    epoch: int  # the epoch saved: finished when totals is None, else in progress
    totals: Totals | None
    best_top1: float
    rollbacks: int
    metrics: dict  # the last finished epoch's line of metrics.jsonl; {} before the first
    rng: dict  # {"torch": uint8 tensor, "cuda": uint8 tensor or None}
    optimizer: dict
    scheduler: dict | None

    @property
    def epochs_done(self) -> int:
        return self.epoch + (1 if self.totals is None else 0)

    def check_fits(
        self,
        *,
        optimizer: dict,
        scheduler: dict | None,
        params: list,
        steps_per_epoch: int,
        num_train: int,
        buffer: str = "momentum_buffer",
    ) -> None:
        """Check the fields that only make sense against the run rebuilt from the settings: the
        optimizer's and the schedule's state against the run's own (``optimizer``, ``scheduler``:
        their state_dicts before loading; ``params``: the parameters' shapes; ``buffer``: the name
        of its per-parameter state, ``optim.STATE_BUFFERS``), and the position against an epoch of
        ``steps_per_epoch`` batches of ``num_train`` images."""
        where = str(self.path)
        if self.totals is not None:
            steps, bs = self.totals.steps, self.config.batch_size
            if steps > steps_per_epoch or self.totals.seen != min(steps * bs, num_train):
                shown = brief(self.totals.to_dict())
                raise CheckpointError(
                    f"{where}: 'totals' {shown} do not fit an epoch of {steps_per_epoch} batches of {bs} from "
                    f"{num_train} images"
                )
        _check_optimizer(self.optimizer, optimizer, params, where, buffer)
        if (self.scheduler is None) != (scheduler is None):
            raise CheckpointError(f"{where}: 'scheduler' does not fit the {self.config.schedule} schedule")
        if scheduler is not None:
            _check_like(self.scheduler, scheduler, f"{where}: 'scheduler'", MOVING_SCHEDULE)
            if self.config.schedule == "plateau":  # steps once an evaluation
                done = self.epochs_done
            else:  # steps once a batch
                done = self.epoch * steps_per_epoch + (self.totals.steps if self.totals else steps_per_epoch)
            if self.scheduler.get("last_epoch", done) != done:
                raise CheckpointError(
                    f"{where}: 'scheduler' is at step {self.scheduler['last_epoch']}, but the checkpoint's epoch "
                    f"and totals are at {done}"
                )


def read_resume(path: Path) -> Resume:
    """The checkpoint ``train --resume`` continues from, every field it reads checked."""
    state = load_checkpoint(path)
    where = str(path)
    model = ModelFile.from_state(state, where)
    cfg = TrainConfig.from_dict({**TrainConfig().to_dict(), **model.config}, source=where)
    missing = [
        k
        for k in ("epoch", "totals", "best_top1", "rollbacks", "metrics", "rng", "optimizer", "scheduler")
        if k not in state
    ]
    if missing:
        raise CheckpointError(f"{where}: a damaged checkpoint, it lacks {', '.join(missing)}")
    epoch = state["epoch"]
    if not _whole(epoch) or not epoch < cfg.epochs:
        raise CheckpointError(
            f"{where}: 'epoch' must be a whole number from 0 to {cfg.epochs - 1} (the run's epochs), got {brief(epoch)}"
        )
    totals = None if state["totals"] is None else Totals.from_dict(state["totals"], where)
    if not _whole(state["rollbacks"]):
        raise CheckpointError(
            f"{where}: 'rollbacks' must be a whole number of at least 0, got {brief(state['rollbacks'])}"
        )
    best = state["best_top1"]
    if not (is_number(best) and 0 <= best <= 1):
        raise CheckpointError(f"{where}: 'best_top1' must be a fraction from 0 to 1, got {brief(best)}")
    _check_metrics(state["metrics"], epoch + (1 if totals is None else 0), best, where)
    _check_rng(state["rng"], where)
    if not isinstance(state["optimizer"], dict) or not isinstance(state["scheduler"], (dict, type(None))):
        raise CheckpointError(
            f"{where}: 'optimizer' and 'scheduler' must be objects (the scheduler None for a constant rate)"
        )
    return Resume(
        path,
        cfg,
        model,
        epoch,
        totals,
        float(best),
        state["rollbacks"],
        state["metrics"],
        state["rng"],
        state["optimizer"],
        state["scheduler"],
    )


def _whole(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _check_metrics(metrics, epochs_done: int, best: float, where: str) -> None:
    """The last finished epoch's line, which resume prints and writes back to metrics.jsonl."""
    if epochs_done == 0:
        if metrics != {}:
            raise CheckpointError(
                f"{where}: 'metrics' must be {{}} before the first epoch has finished, got {brief(metrics)}"
            )
        return
    unevaluated = set(METRICS) - set(VALIDATION)
    if not isinstance(metrics, dict) or set(metrics) not in (set(METRICS), unevaluated):
        raise CheckpointError(f"{where}: 'metrics' must be an object of {', '.join(METRICS)}, got {brief(metrics)}")
    bad = [
        k for k in metrics if not (is_number(metrics[k]) and metrics[k] >= 0 and (k not in SHARES or metrics[k] <= 1))
    ]
    if bad:
        raise CheckpointError(
            f"{where}: 'metrics' {bad[0]} must be a number of at least 0 (a fraction for accuracies), got "
            f"{brief(metrics[bad[0]])}"
        )
    if metrics["epoch"] != epochs_done - 1 or metrics.get("val_top1", 0) > best:
        raise CheckpointError(
            f"{where}: 'metrics' are of epoch {metrics['epoch']} with top-1 {metrics.get('val_top1')}, "
            f"but the checkpoint has finished {epochs_done} epoch(s) with a best top-1 of {best}"
        )


def _check_rng(rng, where: str) -> None:
    """The random states to continue dropout's stream: torch's CPU generator state, and CUDA's
    (seed and offset, 16 bytes) or None."""
    sizes = {"torch": torch.get_rng_state().numel(), "cuda": 16}
    if not isinstance(rng, dict) or set(rng) != set(sizes):
        raise CheckpointError(f"{where}: 'rng' must be an object of torch and cuda generator states, got {brief(rng)}")
    for key, size in sizes.items():
        value = rng[key]
        if key == "cuda" and value is None:
            continue
        if not (
            isinstance(value, torch.Tensor)
            and value.layout == torch.strided
            and value.device.type == "cpu"
            and value.dtype == torch.uint8
            and value.shape == (size,)
        ):
            raise CheckpointError(f"{where}: 'rng' {key} must be a generator state of {size} bytes, got {brief(value)}")


def _check_optimizer(saved: dict, fresh: dict, params: list, where: str, buffer: str = "momentum_buffer") -> None:
    """SGD's (or PaperSGD's) state: the run's own parameter groups (rates may have moved), and a
    momentum buffer (``buffer``: its name) per parameter shaped like it, finite."""
    if set(saved) != {"state", "param_groups"}:
        raise CheckpointError(
            f"{where}: 'optimizer' must hold state and param_groups, got {brief(sorted(map(str, saved)))}"
        )
    _check_like(saved["param_groups"], fresh["param_groups"], f"{where}: 'optimizer' param_groups", MOVING_RATES)
    state = saved["state"]
    if not isinstance(state, dict) or not all(type(k) is int and 0 <= k < len(params) for k in state):
        raise CheckpointError(
            f"{where}: 'optimizer' state must map parameter numbers 0..{len(params) - 1} to their state"
        )
    for i, entry in state.items():
        buf = entry.get(buffer) if isinstance(entry, dict) and set(entry) == {buffer} else entry
        fits = isinstance(entry, dict) and (buf is None or (tensor_problem(buf) is None and buf.shape == params[i]))
        if not fits:  # a wrong shape would only fail at the first step, and NaN would poison every step
            raise CheckpointError(
                f"{where}: 'optimizer' state of parameter {i} must be a finite momentum buffer of shape "
                f"{list(params[i])}"
            )


def _check_like(saved, fresh, where: str, moving: tuple[str, ...]) -> None:
    """``saved`` has the structure of ``fresh`` (what the run builds from its settings): objects
    with the same keys, lists as long; an entry named in ``moving`` may hold any value of its
    kind (finite and at least 0 for a number, unless it equals fresh's), every other one must
    equal fresh's."""
    if isinstance(fresh, dict):
        if not isinstance(saved, dict):
            raise CheckpointError(f"{where} must be an object, got {brief(saved)}")
        # torch keeps its own value for bookkeeping ("_...") that the torch which saved did not
        # have; any other difference, an extra entry above all (schedulers take every entry as
        # an attribute), is refused
        odd = [k for k in fresh if k not in saved and not str(k).startswith("_")] + [k for k in saved if k not in fresh]
        if odd:
            raise CheckpointError(
                f"{where} must have the entries {', '.join(map(str, fresh))}; {brief(odd[0])} differs"
            )
        for key in (k for k in fresh if k in saved):
            if key in moving:
                _check_kind(saved[key], fresh[key], f"{where} {key}")
            elif not _equal(saved[key], fresh[key]):
                raise CheckpointError(
                    f"{where} {key} is {brief(saved[key])}, but the run's settings make it {brief(fresh[key])}"
                )
    elif isinstance(fresh, list):
        if not isinstance(saved, list) or len(saved) != len(fresh):
            raise CheckpointError(f"{where} must be a list of {len(fresh)}, got {brief(saved)}")
        for i, (a, b) in enumerate(zip(saved, fresh)):
            _check_like(a, b, f"{where}[{i}]", moving)
    elif not _equal(saved, fresh):
        raise CheckpointError(f"{where} is {brief(saved)}, but the run's settings make it {brief(fresh)}")


def _check_kind(saved, fresh, where: str) -> None:
    if isinstance(fresh, list):
        if not isinstance(saved, list) or len(saved) != len(fresh):
            raise CheckpointError(f"{where} must be a list of {len(fresh)}, got {brief(saved)}")
        for a, b in zip(saved, fresh):
            _check_kind(a, b, where)
    elif is_number(fresh) or isinstance(fresh, float):  # fresh may be -inf (plateau's best before any epoch)
        if not (_equal(saved, fresh) or (is_number(saved) and saved >= 0)):
            raise CheckpointError(f"{where} must be a finite number of at least 0, got {brief(saved)}")
    elif type(saved) is not type(fresh):
        raise CheckpointError(f"{where} must be a {type(fresh).__name__}, got {brief(saved)}")


def _equal(a, b) -> bool:
    """Equal values of the same type, lists and dicts compared entry by entry (never a tensor's
    elementwise ==, whose truth is ambiguous)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b
