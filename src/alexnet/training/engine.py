"""One epoch of training and one pass of evaluation. No argument parsing and no file I/O here."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from alexnet.system.distributed import SINGLE, World


def autocast(device: torch.device, precision: str):
    """bf16 autocast on CPU or CUDA when ``precision`` is bf16; a no-op context for fp32."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(device: torch.device, x: torch.Tensor, y: torch.Tensor, channels_last: bool):
    """A batch on the device; images NHWC when the model is (the convolutions' fast layout)."""
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    return (x.contiguous(memory_format=torch.channels_last) if channels_last else x), y


def train_step(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    *,
    device: torch.device,
    precision: str = "fp32",
    label_smoothing: float = 0.0,
    world: World = SINGLE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step on the batch (x, y) already on the device: forward (under bf16 autocast when
    ``precision`` is bf16), cross-entropy in fp32, backward, update. Returns (loss, logits), the
    loss being the mean over this process's images.

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
    return loss, logits


def train_one_epoch(
    model: nn.Module,
    batches,
    optimizer: torch.optim.Optimizer,
    *,
    device: torch.device,
    precision: str = "fp32",
    step_scheduler=None,
    label_smoothing: float = 0.0,
    channels_last: bool = False,
    on_step: Callable[[dict], bool | None] | None = None,
    totals: dict | None = None,
    world: World = SINGLE,
) -> dict:
    """Train for one pass over ``batches``; returns mean loss, accuracy, images and steps of the
    epoch, and the seconds and images (``images_now``) of this call.

    ``step_scheduler`` (if given) is stepped after every optimizer step (warm-up, one-cycle).
    ``on_step`` receives a dict after every step (``step``: batches done in this epoch, ``loss``,
    ``images``, ``lr``, ``totals()``: the running sums); when it returns True the epoch stops there
    and the result has ``stopped=True``. ``totals`` continues the running sums of an epoch that was
    stopped part-way (``{"loss_sum", "correct", "seen", "steps"}``), so its metrics come out as if
    it had never stopped. A NaN or infinite loss raises FloatingPointError.

    With several processes (``world``) ``batches`` are this process's shares; the sums, the
    results and ``totals()`` are over all processes (``totals`` passed in are such sums: rank 0
    carries them on), and a non-finite loss anywhere stops every process at the same step.
    ``totals()`` is then a collective: every process calls it at the same step.
    """
    model.train()
    start = time.perf_counter()
    totals = totals or {"loss_sum": 0.0, "correct": 0, "seen": 0, "steps": 0}
    if not world.writer:  # the sums so far are rank 0's to carry; the steps are everyone's
        totals = {"loss_sum": 0.0, "correct": 0, "seen": 0, "steps": totals["steps"]}
    loss_sum = torch.tensor(totals["loss_sum"], device=device)
    correct = torch.tensor(totals["correct"], device=device, dtype=torch.long)
    seen, step = totals["seen"], totals["steps"]
    seen_before = seen
    check_every = 1 if device.type == "cpu" else 50  # a finiteness check syncs a GPU: do it rarely
    stopped = False

    def running() -> dict:
        if world.distributed:
            sums = world.sum(
                torch.stack(
                    [loss_sum.double(), correct.double(), torch.tensor(float(seen), device=device, dtype=torch.float64)]
                )
            )
            return {
                "loss_sum": sums[0].item(),
                "correct": round(sums[1].item()),
                "seen": round(sums[2].item()),
                "steps": step,
            }
        return {"loss_sum": loss_sum.item(), "correct": correct.item(), "seen": seen, "steps": step}

    for x, y in batches:
        x, y = to_device(device, x, y, channels_last)
        loss, logits = train_step(
            model, x, y, optimizer, device=device, precision=precision, label_smoothing=label_smoothing, world=world
        )
        if step_scheduler is not None:
            step_scheduler.step()
        loss_sum += loss.detach() * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
        step += 1
        if step % check_every == 0 and world.any(not torch.isfinite(loss_sum), device):
            raise FloatingPointError(f"the training loss became {loss.item()} at step {step} of the epoch")
        if on_step is not None and on_step(
            {"step": step, "loss": loss, "images": len(y), "lr": optimizer.param_groups[0]["lr"], "totals": running}
        ):
            stopped = True
            break
    if world.distributed:
        seen_before = world.sum(torch.tensor([float(seen_before)], dtype=torch.float64, device=device)).item()
    final = running()
    loss_mean = final["loss_sum"] / max(final["seen"], 1)
    if not math.isfinite(loss_mean):
        raise FloatingPointError(f"the training loss became {loss_mean}")
    return {
        "loss": loss_mean,
        "acc": final["correct"] / max(final["seen"], 1),
        "images": final["seen"],
        "steps": step,
        "seconds": time.perf_counter() - start,
        "images_now": final["seen"] - round(seen_before),
        "stopped": stopped,
        "totals": final,
    }


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
        "seconds": time.perf_counter() - start,
        "per_class": result["per_class"],
        "confusion": result["confusion"],
        "stopped": stopped,
    }
