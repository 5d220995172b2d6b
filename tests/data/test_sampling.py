"""data/sampling.py: the order of an epoch and its augmentation are a function of (seed, epoch)
alone, checked through the batches ``TensorBatches`` gives."""

from __future__ import annotations

import torch

from helpers import _batches


def test_training_order_is_fixed_by_seed_and_epoch(idx_folder):
    images, n = idx_folder.train_images[:64].unsqueeze(1), 64

    def epoch(seed, e):
        b = _batches(images, torch.arange(n), train=True, seed=seed)
        b.set_epoch(e)
        x, y = map(torch.cat, zip(*b))
        return x, y

    x0, y0 = epoch(0, 0)
    x0b, y0b = epoch(0, 0)
    assert torch.equal(y0, y0b) and torch.equal(x0, x0b)  # same augmentation too
    assert not torch.equal(y0, epoch(0, 1)[1])
    assert not torch.equal(y0, epoch(1, 0)[1])
    assert not torch.equal(y0, torch.arange(n))
