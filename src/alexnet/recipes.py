"""The named recipes (``--recipe``): the settings each sets over :class:`~alexnet.config.TrainConfig`'s
defaults, each value with where it comes from. Precedence: defaults < recipe < ``--config`` <
flags (:meth:`TrainConfig.from_dict` applies them; ``alexnet recipes`` lists them; docs/paper.md).
"""

from __future__ import annotations

from typing import Any

RECIPES: dict[str, dict[str, Any]] = {
    # the defaults: kaiming init, one-cycle at lr 0.02, Nesterov momentum, 67x67 inputs, 2 epochs
    # without crops or flips, label smoothing 0.1: the most accuracy measured in about six minutes of
    # a 2-core CPU (docs/performance.md)
    "fast": {},
    # the earlier default, four epochs at 99 px with the paper's crops and flips: slower, and the
    # augmentation pays only as runs grow long enough to overfit (docs/performance.md)
    "augmented": {"image_size": 99, "epochs": 4, "augment": True, "label_smoothing": 0.0, "nesterov": False},
    "paper": {
        "model": "alexnet2012",  # two towers (groups=2), dropout after FC6/FC7 (figure 2, section 4.2)
        "lrn": True,  # section 3.3: after the ReLUs of conv1 and conv2
        "image_size": 227,  # photos: shorter side 256, random 227 crops and flips (section 4.1)
        "augment": True,  # section 4.1: random 224 crops (here 227) and horizontal flips
        "lighting": True,  # section 4.1: PCA colour augmentation
        "optimizer": "paper",  # section 5: v <- 0.9v - 0.0005*eps*w - eps*grad; w <- w + v
        "nesterov": False,  # the paper's heavy-ball momentum
        "batch_size": 128,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "dropout": 0.5,
        "lr": 0.01,
        "schedule": "plateau",  # /10 when validation stops improving, three times at most
        "epochs": 90,  # "roughly 90 cycles through the training set"
        "label_smoothing": 0.0,
        # the one departure (docs/paper.md): He-normal weights and zero biases. The paper's init and
        # Caffe's bias 0.1 both sat at chance in the measured budget; --init paper is the faithful form
        "init": "kaiming",
    },
}
