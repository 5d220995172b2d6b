"""engine.py: the training step on its own - it drives 32 generated images to (near) zero
training loss."""

from __future__ import annotations

import pytest
import torch

from alexnet.data import Preprocess, TensorBatches
from alexnet.models import build_model
from alexnet.training import engine


@pytest.mark.slow
def test_overfits_a_tiny_set(idx_folder):
    """The network and the training step can drive 32 images to (near) zero training loss."""
    torch.manual_seed(0)
    images, labels = idx_folder.train_images[:32].unsqueeze(1), idx_folder.train_labels[:32]
    preprocess = Preprocess.for_tensors(mode="L", source_size=28, image_size=67, stats={"mean": [0.2], "std": [0.3]})
    batches = TensorBatches(images, labels, batch_size=32, preprocess=preprocess, train=False, device="cpu")
    model = build_model("alexnet", num_classes=10, in_channels=1, dropout=0.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9)  # 0.01 spikes on 32 images
    for _ in range(40):
        for x, y in batches:  # one batch: all 32
            step = engine.train_step(model, x, y, opt, device=torch.device("cpu"))
    assert step.loss.item() < 0.05 and step.correct.item() == 32
