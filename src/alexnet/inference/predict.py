"""Prediction: a :class:`Predictor` loads a trained network once and answers for image files, PIL
images or tensors. The command line, the figures and a service share it."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from PIL import Image

from alexnet.data import Preprocess, preprocess_image
from alexnet.data.images import convert
from alexnet.formats import read_model
from alexnet.system import runtime

ImageLike = str | Path | Image.Image | torch.Tensor


class Predictor:
    """A network in eval mode with its class names and preprocessing.

    Images may be file paths, PIL images (any mode: converted as training converts) or tensors
    that are already model input, (C, S, S) or (N, C, S, S).
    """

    def __init__(
        self, model: torch.nn.Module, classes: list[str], preprocess: Preprocess, device: str | torch.device = "cpu"
    ):
        self.device = runtime.resolve_device(str(device)) if not isinstance(device, torch.device) else device
        self.model = model.eval().to(self.device)
        self.classes, self.preprocess = list(classes), preprocess

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        format: str | None = None,
        device: str | torch.device = "cpu",
        source: str | None = None,
    ) -> Predictor:
        """Load a model file once: a training checkpoint, an export (``.safetensors``), or with
        ``format="torchvision"`` torchvision's weights. ``source`` names it in error messages."""
        model_file = read_model(path, format, source=source)
        return cls(model_file.network(), model_file.classes, model_file.preprocess, device)

    def inputs(self, images: Iterable[ImageLike]) -> torch.Tensor:
        """The model input (N, C, S, S) for ``images``, each made exactly as evaluation makes it."""
        batch = []
        for item in images:
            if isinstance(item, torch.Tensor):
                batch.extend(item if item.dim() == 4 else [item])
            elif isinstance(item, Image.Image):
                batch.append(self.preprocess(convert(item, self.preprocess.mode)))
            else:
                batch.append(preprocess_image(item, self.preprocess))
        return torch.stack(batch).to(self.device)

    @torch.no_grad()
    def probabilities(self, images: Iterable[ImageLike]) -> torch.Tensor:
        """Softmax probabilities (N, classes)."""
        return self.model(self.inputs(images)).float().softmax(1)

    @torch.no_grad()
    def embed(self, images: Iterable[ImageLike], layer: str = "fc7") -> torch.Tensor:
        """FC7 features (N, 4096), as the paper compares images in figure 4 (``layer="fc6"``: FC6's)."""
        return self.model.embed(self.inputs(images), layer).float()

    def predict(self, images: Iterable[ImageLike], top: int = 5) -> list[dict]:
        """The ``top`` classes of each image with their probabilities, one image at a time so that
        a bad file is named on its own."""
        if top < 1:
            raise ValueError(f"--top must be at least 1, got {top}")
        results = []
        for item in images:
            results.append(
                {
                    "image": str(item) if isinstance(item, (str, Path)) else type(item).__name__,
                    "predictions": self.ranked(self.probabilities([item])[0], top),
                }
            )
        return results

    def ranked(self, probabilities: torch.Tensor, top: int = 5) -> list[dict]:
        """One image's ``top`` classes, most likely first, from its probabilities (classes,): what
        :meth:`predict` answers per image, and the prediction service per request."""
        p, idx = probabilities.topk(min(top, len(self.classes)))
        return [{"class": self.classes[i], "index": int(i), "probability": float(q)} for q, i in zip(p, idx)]
