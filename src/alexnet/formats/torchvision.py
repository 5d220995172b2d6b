"""torchvision's AlexNet weights (``alexnet-owt-*.pth``, a bare state_dict) read into ``alexnet_owt``,
with ImageNet's class names (shipped inside torchvision: nothing is downloaded) and torchvision's
preprocessing."""

from __future__ import annotations

from pathlib import Path

from alexnet.data.transforms import Preprocess
from alexnet.errors import CheckpointError
from alexnet.formats.checkpoint import FORMAT
from alexnet.formats.network import ModelFile, check_weights, identify_weights
from alexnet.system.files import load_torch_file

SUFFIXES = (".pth", ".pt")

# torchvision's AlexNet_Weights.IMAGENET1K_V1.transforms(): shorter side 256, centre crop 224,
# ImageNet mean and std.
PREPROCESS = Preprocess("folder", "RGB", 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), resize=256)
CONFIG = {
    "model": "alexnet_owt",
    "activation": "relu",
    "lrn": False,
    "pooling": "overlap",
    "dropout": 0.5,
    "image_size": 224,
}


def read(path: Path, source: str) -> ModelFile:
    """A torchvision AlexNet state_dict as a :class:`ModelFile` of ``alexnet_owt``."""
    from torchvision.models import AlexNet_Weights

    if path.suffix == ".safetensors":
        raise CheckpointError(f"{source}: an alexnet export; load it with --checkpoint")
    state = load_torch_file(path)
    if isinstance(state, dict) and state.get("format") == FORMAT:
        raise CheckpointError(f"{source}: a training checkpoint; load it with --checkpoint")
    if not isinstance(state, dict) or "features.0.weight" not in state:
        raise CheckpointError(f"{source}: not a torchvision AlexNet state_dict (expected keys like features.0.weight)")
    found = identify_weights(state)
    if found["variant"] not in (None, "alexnet_owt"):
        raise CheckpointError(
            f"{source}: these are {found['variant']}'s weights, not torchvision's alexnet_owt; "
            "load a training checkpoint or an export of them with --checkpoint"
        )
    classes = list(AlexNet_Weights.IMAGENET1K_V1.meta["categories"])
    num_classes = found["num_classes"] or len(classes)
    check_weights(state, "alexnet_owt", num_classes, 3, source)  # torchvision's inputs are RGB
    if num_classes != len(classes):
        classes = [str(i) for i in range(num_classes)]
    return ModelFile(dict(state), dict(CONFIG), classes, PREPROCESS, source=source)
