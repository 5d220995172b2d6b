"""The pieces of training and evaluation: one training step (:func:`train_step`, giving a
:class:`StepResult`), an epoch's metrics from its running sums (:class:`EpochResult`), and one
pass of evaluation (:func:`evaluate`, counted by :class:`Tally`). The loop that drives them, and
decides between steps, is loop.py. No argument parsing and no file I/O here."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from alexnet.formats import Totals
from alexnet.system.distributed import SINGLE, World

CHECK_EVERY_GPU = 50  # steps between the finiteness checks of a GPU's loss (each waits for the device)


def autocast(device: torch.device, precision: str):
    """bf16 autocast on CPU or CUDA when ``precision`` is bf16; a no-op context for fp32."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(device: torch.device, x: torch.Tensor, y: torch.Tensor, channels_last: bool):
    """A batch on the device; images NHWC when the model is (the convolutions' fast layout)."""
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    return (x.contiguous(memory_format=torch.channels_last) if channels_last else x), y


@dataclass(frozen=True)
class StepResult:
    """What one training step gives. ``loss`` and ``correct`` stay tensors on the device: reading
    them waits for it."""

    loss: torch.Tensor  # the mean over this process's images, detached
    correct: torch.Tensor  # this process's images whose top-1 prediction was right
    images: int  # this process's images
    lr: float  # the learning rate after the step (moved on by a per-step schedule)

    @property
    def totals(self) -> Totals:
        """The step as running sums, to add to the epoch's (on the device)."""
        return Totals(self.loss * self.images, self.correct, self.images, 1)


def train_step(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    *,
    device: torch.device,
    precision: str = "fp32",
    label_smoothing: float = 0.0,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    world: World = SINGLE,
) -> StepResult:
    """One SGD step on the batch (x, y) already on the device: forward (under bf16 autocast when
    ``precision`` is bf16), cross-entropy in fp32, backward, update, then ``scheduler`` (a per-step
    schedule: warm-up, one-cycle) stepped if given. The loss is the mean over this process's images.

    With several processes (x, y) is this process's share of the global batch and ``model`` is
    DDP, which averages the gradients over the processes. The shares need not be equal (the last
    batch of an epoch, a batch size the processes do not divide), so each process backpropagates
    its loss sum times ``world.size / images in the global batch``: the average DDP takes is then
    exactly the gradient of the global batch's mean loss, as one process would compute it.
    """
    with autocast(device, precision):
        logits = model(x)
        if world.distributed:
            total = world.sum(torch.tensor([len(y)], device=device, dtype=torch.float32))
            loss_sum = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing, reduction="sum")
            objective, loss = loss_sum * (world.size / total[0]), loss_sum.detach() / max(len(y), 1)
        else:
            objective = loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    objective.backward()
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    correct = (logits.argmax(1) == y).sum()
    return StepResult(loss.detach(), correct, len(y), optimizer.param_groups[0]["lr"])


def check_loss(totals: Totals, step: StepResult, device: torch.device, world: World = SINGLE) -> None:
    """Raise FloatingPointError once the epoch's loss sum (``totals`` on the device) is NaN or
    infinite: checked every step on the CPU, every CHECK_EVERY_GPU steps on a GPU. With several
    processes a loss gone bad in any stops every process at the same step."""
    every = 1 if device.type == "cpu" else CHECK_EVERY_GPU
    if totals.steps % every == 0 and world.any(not torch.isfinite(totals.loss_sum), device):
        raise FloatingPointError(f"the training loss became {step.loss.item()} at step {totals.steps} of the epoch")


@dataclass(frozen=True)
class EpochResult:
    """The metrics of an epoch's training, over every process."""

    loss: float  # mean training loss
    acc: float  # training top-1 accuracy
    images: int
    steps: int
    seconds: float  # of this pass
    images_now: int  # images of this pass: an epoch resumed part-way counts only what it trained
    stopped: bool  # ended part-way (a signal)
    totals: Totals  # its running sums, numbers summed over the processes

    @classmethod
    def of(cls, totals: Totals, carried: Totals, seconds: float, stopped: bool) -> EpochResult:
        """The metrics from the epoch's running sums (:meth:`Totals.summed`); ``carried``: the
        sums it was resumed with. A NaN or infinite mean loss raises FloatingPointError."""
        loss = totals.loss_sum / max(totals.seen, 1)
        if not math.isfinite(loss):
            raise FloatingPointError(f"the training loss became {loss}")
        acc = totals.correct / max(totals.seen, 1)
        return cls(loss, acc, totals.seen, totals.steps, seconds, totals.seen - carried.seen, stopped, totals)


class Tally:
    """Counts of one evaluation: loss, top-1 (from the confusion matrix), top-5, images. Fed
    logits, or the log of averaged probabilities (ten crops, an ensemble): cross-entropy of
    log-probabilities is their negative log-likelihood, and the ranking is the same."""

    def __init__(self, num_classes: int, device: torch.device):
        self.num_classes = num_classes
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)
        self.top5 = torch.zeros((), dtype=torch.long, device=device)
        self.loss_sum = torch.zeros((), device=device)
        self.seen = 0

    def add(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        """Count a batch: ``logits`` (N, K) floats, ``y`` (N,) class indices."""
        k, n = min(5, self.num_classes), self.num_classes
        self.loss_sum += F.cross_entropy(logits, y, reduction="sum")
        self.top5 += (logits.topk(k, dim=1).indices == y[:, None]).any(1).sum()
        # rows: true class, columns: predicted class
        self.confusion += torch.bincount(y * n + logits.argmax(1), minlength=n**2).view(n, n)
        self.seen += len(y)

    def result(self, world: World = SINGLE) -> dict:
        """Top-1, top-5, mean loss, per-class accuracy and the confusion matrix; with several
        processes, of everyone's counts summed."""
        n, confusion, top5, loss_sum, seen = self.num_classes, self.confusion, self.top5, self.loss_sum, self.seen
        if world.distributed:  # one process's numbers from everyone's counts
            device = confusion.device
            sums = world.sum(
                torch.cat(
                    [
                        confusion.flatten().double(),
                        top5.double()[None],
                        loss_sum.double()[None],
                        torch.tensor([float(seen)], dtype=torch.float64, device=device),
                    ]
                )
            )
            confusion = sums[: n**2].round().long().view(n, n)
            top5, loss_sum, seen = sums[-3].round().long(), sums[-2], round(sums[-1].item())
        confusion = confusion.cpu()
        per_class = (confusion.diag().double() / confusion.sum(1).clamp_min(1)).tolist()
        return {
            "loss": loss_sum.item() / max(seen, 1),
            "top1": confusion.diag().sum().item() / max(seen, 1),
            "top5": top5.item() / max(seen, 1),
            "images": seen,
            "per_class": per_class,
            "confusion": confusion.tolist(),
        }


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches,
    num_classes: int,
    *,
    device: torch.device,
    precision: str = "fp32",
    channels_last: bool = False,
    should_stop: Callable[[], bool] | None = None,
    world: World = SINGLE,
) -> dict:
    """Top-1 and top-5 accuracy, mean loss, per-class accuracy and the confusion matrix.

    ``should_stop`` is asked before every batch; when it says True the pass ends there and the
    result has ``stopped=True`` (its numbers cover only the batches seen). With several processes
    each evaluates its share of the images and the counts are summed over all of them, so the
    numbers are exactly one process's (``should_stop`` must then agree across processes).
    """
    model.eval()
    start = time.perf_counter()
    tally = Tally(num_classes, device)
    stopped = False
    for x, y in batches:
        if should_stop is not None and should_stop():
            stopped = True
            break
        x, y = to_device(device, x, y, channels_last)
        with autocast(device, precision):
            logits = model(x).float()
        tally.add(logits, y)
    result = tally.result(world)
    keys = ("loss", "top1", "top5", "images")
    return {
        **{k: result[k] for k in keys},
        "seconds": max(0.0, time.perf_counter() - start),  # a clock set back is no time
        "per_class": result["per_class"],
        "confusion": result["confusion"],
        "stopped": stopped,
    }
