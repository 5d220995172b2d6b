"""AlexNet in PyTorch: the source document's network, the 2012 paper's and torchvision's."""

from alexnet.models import MODELS, AlexNet, build_model, native_image_size

__all__ = ["MODELS", "AlexNet", "build_model", "native_image_size"]
__version__ = "0.1.0"
