"""AlexNet in PyTorch: the source document's network, the 2012 paper's and torchvision's.

The names a script needs come from here: ``from alexnet import build_model, TrainConfig, train``.
Everything but the models is imported on first use, so ``import alexnet`` stays light.
"""

from __future__ import annotations

import importlib

from alexnet.models import MODELS, AlexNet, build_model, native_image_size

_LAZY = {  # name -> the module that owns it
    "TrainConfig": "alexnet.config",
    "summarize": "alexnet.summary",
    "format_table": "alexnet.summary",
    "train": "alexnet.training.loop",
    "evaluate_checkpoint": "alexnet.inference.evaluate",
    "Predictor": "alexnet.inference.predict",
    "read_model": "alexnet.formats",
}

__all__ = ["MODELS", "AlexNet", "build_model", "native_image_size", *_LAZY]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'alexnet' has no attribute {name!r}")
