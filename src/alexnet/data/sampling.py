"""One seeded, resumable epoch order, shared by the in-memory and the image-folder pipelines.

The order of an epoch is a function of (seed, epoch) alone, so any epoch can be replayed: from
its start, or from a saved batch when a run resumes part-way. The same generator then draws the
epoch's augmentation (after the permutation), so crops and flips replay too.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The random stream of one epoch (order and augmentation): a function of (seed, epoch) alone."""
    # torch takes 64-bit seeds; folding keeps every seed below 2**64 / 1_000_003 as it always was
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**64)


class EpochOrder:
    """The order of ``n`` items in batches of ``batch_size``: a seeded permutation per epoch when
    ``shuffle``, else 0..n-1. ``set_epoch(epoch, start)`` selects the epoch and skips its first
    ``start`` batches (resuming mid-epoch). The last batch holds the remainder (no item dropped)."""

    def __init__(self, n: int, *, batch_size: int, shuffle: bool, seed: int):
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        """Batches in a whole epoch, also while resuming part-way."""
        return math.ceil(self.n / self.batch_size)

    def draw(self) -> tuple[torch.Generator, torch.Tensor]:
        """The epoch's generator, already past the permutation, and the permutation itself."""
        g = epoch_generator(self.seed, self.epoch)
        order = torch.randperm(self.n, generator=g) if self.shuffle else torch.arange(self.n)
        return g, order

    def batches(self, order: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
        """(batch number, item indices) of every batch of the epoch, skipped ones included: a
        caller that draws augmentation per batch must draw for those too, to stay on the stream."""
        for b, start in enumerate(range(0, self.n, self.batch_size)):
            yield b, order[start : start + self.batch_size]


def subset_indices(n: int, size: int | None, seed: int) -> torch.Tensor | None:
    """The sorted indices of a seeded random ``size`` of ``n`` items (``--subset``), or None when
    all are kept (``size`` None or at least ``n``). A function of (seed, n, size) alone, so two runs
    with one seed - the arms of an experiment - train on the same images."""
    if size is None or size >= n:
        return None
    g = torch.Generator().manual_seed((seed * 1_000_003 + 999_983) % 2**64)  # a stream apart from the epochs'
    return torch.randperm(n, generator=g)[:size].sort().values


def subset_per_class(labels: torch.Tensor, size: int | None, seed: int) -> torch.Tensor | None:
    """The sorted indices of a seeded random ``size`` of each class's items (``--subset-per-class``;
    every item of a class that has no more), or None when ``size`` is None. A function of (seed,
    labels, size) alone: every arm of an experiment trains on the same images."""
    if size is None:
        return None
    g = torch.Generator().manual_seed((seed * 1_000_003 + 999_979) % 2**64)  # apart from --subset's stream
    order = torch.randperm(len(labels), generator=g)
    shuffled = labels[order]
    keep = [order[shuffled == k][:size] for k in torch.unique(labels).tolist()]
    return torch.cat(keep).sort().values
