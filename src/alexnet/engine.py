"""One epoch of training and one pass of evaluation. No argument parsing and no file I/O here."""

from __future__ import annotations

import contextlib
import math
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


def autocast(device: torch.device, precision: str):
    """bf16 autocast on CPU or CUDA when ``precision`` is bf16; a no-op context for fp32."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


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
    on_step: Callable[[dict], None] | None = None,
) -> dict:
    """Train for one pass over ``batches``; returns mean loss, accuracy, images and seconds.

    ``step_scheduler`` (if given) is stepped after every optimizer step (warm-up, one-cycle);
    ``on_step`` receives a small dict after every step for progress display.
    """
    model.train()
    start = time.perf_counter()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    for x, y in batches:
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step_scheduler is not None:
            step_scheduler.step()
        loss_sum += loss.detach() * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
        if on_step is not None:
            on_step({"loss": loss, "images": len(y), "lr": optimizer.param_groups[0]["lr"]})
    seconds = time.perf_counter() - start
    loss_mean = loss_sum.item() / max(seen, 1)
    if not math.isfinite(loss_mean):
        raise FloatingPointError(f"the training loss became {loss_mean}")
    return {"loss": loss_mean, "acc": correct.item() / max(seen, 1), "images": seen, "seconds": seconds}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches,
    num_classes: int,
    *,
    device: torch.device,
    precision: str = "fp32",
    channels_last: bool = False,
) -> dict:
    """Top-1 and top-5 accuracy, mean loss, per-class accuracy and the confusion matrix."""
    model.eval()
    start = time.perf_counter()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)
    top5 = torch.zeros((), dtype=torch.long, device=device)
    loss_sum = torch.zeros((), device=device)
    seen = 0
    k = min(5, num_classes)
    for x, y in batches:
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            logits = model(x).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        top5 += (logits.topk(k, dim=1).indices == y[:, None]).any(1).sum()
        # rows: true class, columns: predicted class
        confusion += torch.bincount(y * num_classes + logits.argmax(1), minlength=num_classes**2).view(num_classes, num_classes)
        seen += len(y)
    confusion = confusion.cpu()
    per_class_total = confusion.sum(1)
    per_class = (confusion.diag().double() / per_class_total.clamp_min(1)).tolist()
    top1 = confusion.diag().sum().item() / max(seen, 1)
    return {
        "loss": loss_sum.item() / max(seen, 1),
        "top1": top1,
        "top5": top5.item() / max(seen, 1),
        "images": seen,
        "seconds": time.perf_counter() - start,
        "per_class": per_class,
        "confusion": confusion.tolist(),
    }
