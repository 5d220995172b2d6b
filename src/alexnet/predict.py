"""Prediction: the top-k classes of image files, from a training checkpoint, an export
(``.safetensors`` + sidecar, see export.py) or torchvision weights."""

from __future__ import annotations

from pathlib import Path

import torch

from alexnet.checkpoint import FORMAT, CheckpointError, check_weights, identify_weights, load_checkpoint, load_file, model_from_checkpoint
from alexnet.data import DataError, preprocess_image
from alexnet.models import AlexNet, build_model

# torchvision's AlexNet_Weights.IMAGENET1K_V1.transforms(): shorter side 256, centre crop 224,
# ImageNet mean and std. Stored in the same form as our own checkpoints' preprocessing.
TORCHVISION_PREPROCESS = {
    "kind": "folder", "mode": "RGB", "image_size": 224, "resize": 256,
    "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
}  # fmt: skip


def load_torchvision_weights(path: str | Path) -> tuple[AlexNet, list[str], dict]:
    """A torchvision ``alexnet-owt-*.pth`` state_dict in ``alexnet_owt``, with ImageNet's class names
    (shipped inside torchvision, nothing is downloaded) and torchvision's preprocessing."""
    from torchvision.models import AlexNet_Weights

    if Path(path).suffix == ".safetensors":
        raise CheckpointError(f"--weights {path}: an alexnet export; load it with --checkpoint")
    state = load_file(path)
    if isinstance(state, dict) and state.get("format") == FORMAT:
        raise CheckpointError(f"--weights {path}: a training checkpoint; load it with --checkpoint")
    if not isinstance(state, dict) or "features.0.weight" not in state:
        raise CheckpointError(f"--weights {path}: not a torchvision AlexNet state_dict (expected keys like features.0.weight)")
    found = identify_weights(state)
    if found["variant"] not in (None, "alexnet_owt"):
        raise CheckpointError(
            f"--weights {path}: these are {found['variant']}'s weights, not torchvision's alexnet_owt; "
            "load a training checkpoint or an export of them with --checkpoint"
        )
    classes = list(AlexNet_Weights.IMAGENET1K_V1.meta["categories"])
    num_classes = found["num_classes"] or len(classes)
    check_weights(state, "alexnet_owt", num_classes, 3, f"--weights {path}")  # torchvision's inputs are RGB
    model = build_model("alexnet_owt", num_classes=num_classes, init="torch")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"--weights {path}: does not fit torchvision's alexnet: {str(e).splitlines()[0]}") from None
    if num_classes != len(classes):
        classes = [str(i) for i in range(num_classes)]
    return model, classes, TORCHVISION_PREPROCESS


def load_for_inference(checkpoint: str | Path | None = None, weights: str | Path | None = None):
    """(model in eval mode, class names, preprocessing) from exactly one of the two sources;
    ``checkpoint`` is a training checkpoint (``.pt``) or an export (``.safetensors``)."""
    if (checkpoint is None) == (weights is None):
        raise ValueError("give exactly one of --checkpoint or --weights")
    if weights is not None:
        model, classes, preprocess = load_torchvision_weights(weights)
    else:
        state = load_checkpoint(checkpoint)
        model = model_from_checkpoint(state, source=f"--checkpoint {checkpoint}")
        classes, preprocess = state["classes"], state["preprocess"]
    return model.eval(), classes, preprocess


@torch.no_grad()
def predict(images: list[str | Path], *, checkpoint=None, weights=None, top: int = 5) -> list[dict]:
    """Top-``top`` classes with softmax probabilities for each image file."""
    model, classes, preprocess = load_for_inference(checkpoint, weights)
    if top < 1:
        raise ValueError(f"--top must be at least 1, got {top}")
    top = min(top, len(classes))
    results = []
    for path in images:
        try:
            x = preprocess_image(path, preprocess)
        except FileNotFoundError:
            raise DataError(f"{path}: no such image file") from None
        except (OSError, ValueError) as e:  # PIL.UnidentifiedImageError is an OSError
            raise DataError(f"{path}: not a readable image ({e})") from None
        probs = model(x.unsqueeze(0)).softmax(1)[0]
        p, idx = probs.topk(top)
        results.append({
            "image": str(path),
            "predictions": [{"class": classes[i], "index": int(i), "probability": float(q)} for q, i in zip(p, idx)],
        })  # fmt: skip
    return results
