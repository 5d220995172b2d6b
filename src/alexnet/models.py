"""The networks called AlexNet, built by name, and a small one for tests.

``alexnet``
    The source document's PyTorch class, exactly: 96/256/384/384/256 channels, no LRN, dropout
    *before* FC6 and FC7, input 3x227x227 (conv1 has no padding, so 227 - not the paper's "224" -
    is what makes the arithmetic work). A state_dict saved from the document's ``AlexNet`` loads
    into it with the same keys and gives identical outputs.
``alexnet2012``
    The 2012 paper (Krizhevsky, Sutskever & Hinton, NIPS 2012, section 3 and figure 2): the same
    layer sizes split into two towers (``groups=2`` in conv2, conv4 and conv5, whose kernels only
    see the maps of their own GPU), local response normalization after the ReLUs of conv1 and conv2
    (section 3.3), dropout *after* the FC6 and FC7 ReLUs (section 4.2), and the paper's
    initialization (section 5).
``alexnet2012_half``
    The paper's one-GPU baseline of section 3.2 (the towers' "-1.7 / -1.2 points"): one tower with
    half as many kernels in conv1-conv4 (48/128/192/192) and no groups. Footnote 2: its conv5 keeps
    256 kernels and its FC layers 4096 units, so that the two nets have about the same parameters
    (most sit in FC6). Otherwise ``alexnet2012``: LRN, dropout after FC6/FC7, the paper's init.
``alexnet_owt``
    torchvision's ``alexnet``: the single-tower variant of "One weird trick for parallelizing
    convolutional neural networks" (Krizhevsky, 2014) with 64/192/384/256/256 channels and padding
    2 in conv1, input 224. ``torchvision.models.alexnet().state_dict()`` loads with strict=True.
``alexnet_tiny``
    ``alexnet``'s layers at a test size: the same kernels, strides, paddings, pooling and dropout
    placement (so the same code paths and the same minimum input 67), with 6/16/24/24/16 channels
    and FC layers 64 wide: 122,848 parameters with 1000 classes against 62 million. Not a network
    of the document or the paper; it is there so that tests and quick experiments whose claim is
    not the network's size run in a fraction of the time.
``convnet4``
    Not an AlexNet: the small network of the paper's figure 1 ("a four-layer convolutional neural
    network" on CIFAR-10, ReLU against tanh), after the CIFAR-10 examples of Krizhevsky's
    cuda-convnet: three 5x5 convolutions of 32/32/64 maps, each followed by 3x3/2 pooling, and
    one FC layer; native input 67, the document's minimum, which ends in a 6 x 6 map (its own
    minimum is 27). ``alexnet experiment relu-vs-tanh`` compares the activations on it and on
    ``alexnet``, since the paper says the speed-up "varies with network architecture".

All of them end in ``AdaptiveAvgPool2d((6, 6))`` as torchvision does, so FC6 always sees a 6x6 map
(256x6x6 = 9216 inputs in the full-size networks, ``convnet4``'s FC 64x6x6): at the native size the
pooling is the identity, at other sizes the weights stay the same shape. Every variant takes ``num_classes``,
``in_channels`` and the ablation options of :func:`build_model`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import nn

from alexnet.errors import ConfigError
from alexnet.layers import (
    ACTIVATIONS,
    LRN_K,
    POOLING,
    Init,
    alexnet2012_half_layers,
    alexnet2012_layers,
    alexnet_layers,
    alexnet_owt_layers,
    alexnet_tiny_layers,
    convnet4_layers,
    init_weights,
)

ModelName = Literal["alexnet", "alexnet2012", "alexnet2012_half", "alexnet_owt", "alexnet_tiny", "convnet4"]


class AlexNet(nn.Module):
    """``features`` -> ``avgpool`` -> ``classifier``, as in torchvision.

    Built by :func:`build_model`; the layers are written out literally in :mod:`alexnet.layers`.
    """

    def __init__(self, features: nn.Sequential, classifier: nn.Sequential, min_size: int):
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = classifier
        self.min_size = min_size  # smallest input height/width the layers accept

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self._pooled(x))  # logits: the softmax lives in the loss and in prediction

    def embed(self, x: torch.Tensor, layer: str = "fc7") -> torch.Tensor:
        """FC7's output (N, 4096; N, 64 in ``alexnet_tiny``) after its activation: the features whose
        Euclidean neighbours the paper shows in figure 4 (right); ``layer="fc6"``: FC6's (DeCAF6).
        Call it in eval mode, where dropout is the identity."""
        linears = [i for i, m in enumerate(self.classifier) if isinstance(m, nn.Linear)]
        if layer not in ("fc6", "fc7"):
            raise ValueError(f"--layer {layer}: give fc6 or fc7")
        return self.classifier[: linears[("fc6", "fc7").index(layer)] + 2](self._pooled(x))  # through its activation

    def check_input_size(self, height: int, width: int) -> None:
        """Refuse an input below :attr:`min_size` (from :func:`min_input_size`) in one line."""
        if min(height, width) < self.min_size:
            raise ValueError(
                f"input of {height}x{width} is below the minimum image size "
                f"{self.min_size} for this network; resize it to at least {self.min_size}"
            )

    def _pooled(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_size(*x.shape[-2:])
        x = self.avgpool(self.features(x))
        return torch.flatten(x, 1)  # (N, 256, 6, 6) -> (N, 9216) in the full-size networks


@dataclass(frozen=True)
class Variant:
    """One of the networks called AlexNet, as ``alexnet models`` lists it."""

    name: str
    build: Callable  # (num_classes, in_channels, activation, lrn, lrn_k, pooling, dropout) -> (features, classifier)
    image_size: int  # the input height/width the variant was designed for
    init: Init  # its default initialization (see init_weights)
    lrn: bool  # whether it has local response normalization unless told otherwise
    description: str


MODELS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant(
            "alexnet",
            alexnet_layers,
            227,
            "kaiming",
            False,
            "the source document's network: 96/256/384/384/256, no LRN, dropout before FC6/FC7, 227x227",
        ),
        Variant(
            "alexnet2012",
            alexnet2012_layers,
            227,
            "paper",
            True,
            "the 2012 paper's network: two towers (groups=2), LRN, dropout after FC6/FC7, paper init",
        ),
        Variant(
            "alexnet2012_half",
            alexnet2012_half_layers,
            227,
            "paper",
            True,
            (
                "the paper's one-GPU baseline (section 3.2): one tower of half the kernels 48/128/192/192, conv5 256 "
                "and FC kept"
            ),
        ),
        Variant(
            "alexnet_owt",
            alexnet_owt_layers,
            224,
            "torch",
            False,
            "torchvision's 'one weird trick' variant: 64/192/384/256/256, pad 2, loads torchvision weights",
        ),
        Variant(
            "alexnet_tiny",
            alexnet_tiny_layers,
            227,
            "kaiming",
            False,
            "the document's layers at a test size: for tests and quick experiments (6/16/24/24/16, FC 64)",
        ),
        Variant(
            "convnet4",
            convnet4_layers,
            67,
            "kaiming",
            False,
            "not an AlexNet: the paper's figure-1 four-layer CNN (conv 32/32/64 of 5x5, FC), for relu-vs-tanh",
        ),
    )
}
assert tuple(MODELS) == get_args(ModelName)


def variant(name: str) -> Variant:
    """The variant called ``name``; an unknown name is a :class:`ConfigError` listing the known ones."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    return MODELS[name]


def native_image_size(name: str) -> int:
    """The input height/width the variant was designed for (227, or 224 for ``alexnet_owt``)."""
    return variant(name).image_size


def resolve_lrn(name: str, lrn: bool | None) -> bool:
    """``lrn`` as given, or the variant's own default (on for ``alexnet2012`` only) when None."""
    return variant(name).lrn if lrn is None else lrn


@functools.cache
def min_input_size(name: str, pooling: str = "overlap") -> int:
    """Smallest square input ``name`` accepts with ``pooling``: 67 for the AlexNets with the
    paper's overlapping pooling (63 for ``alexnet_owt``, 27 for ``convnet4``). Worked out from the
    layers themselves (built on the meta device)."""
    with torch.device("meta"):
        features, _ = variant(name).build(1, 1, "relu", False, LRN_K, pooling, 0.0)
    return min_image_size(features)


# The largest input side: conv1 alone then holds 96 maps of 1022 x 1022 floats, 0.4 GB an image
# (forward only; training keeps that and more for the backward pass): one image still fits a
# large GPU, a batch hardly does. FC6 stays 9216 wide at any size (the adaptive pooling), so the
# bound is about activations, not weights; it is 18 times the native 227 on each side.
MAX_IMAGE_SIZE = 4096


def check_image_size(size: int, name: str, pooling: str = "overlap") -> None:
    """Refuse an input size below :func:`min_input_size` or above :data:`MAX_IMAGE_SIZE`, naming
    the flag and the bound."""
    least = min_input_size(name, pooling)
    if size < least:
        raise ConfigError(f"--image-size {size} is below the minimum {least} for {name}; use at least {least}")
    if size > MAX_IMAGE_SIZE:
        raise ConfigError(
            f"--image-size {size} is above the maximum {MAX_IMAGE_SIZE} (memory for activations grows with its "
            f"square); use at most {MAX_IMAGE_SIZE}"
        )


def _out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def min_image_size(features: nn.Sequential) -> int:
    """Smallest square input for which every convolution and pooling of ``features`` has output."""
    for size in range(1, 1024):
        s = size
        for m in features:
            if isinstance(m, (nn.Conv2d, nn.MaxPool2d)):
                k, st, p = (_pair0(m.kernel_size), _pair0(m.stride), _pair0(m.padding))
                s = _out(s, k, st, p)
                if s < 1:
                    break
        else:
            return size
    raise ValueError("these layers accept no input size below 1024")


def _pair0(v) -> int:
    return v[0] if isinstance(v, tuple) else v


def build_model(
    name: str = "alexnet",
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    activation: str = "relu",
    lrn: bool | None = None,
    lrn_k: float = LRN_K,
    pooling: str = "overlap",
    dropout: float = 0.5,
    init: str | None = None,
) -> AlexNet:
    """Build an AlexNet variant by name (see :data:`MODELS` and ``alexnet models``).

    Args:
        name: ``alexnet``, ``alexnet2012``, ``alexnet2012_half``, ``alexnet_owt``, ``alexnet_tiny`` or ``convnet4``.
        num_classes: outputs of FC8.
        in_channels: 3 for RGB, 1 for grayscale.
        activation: ``relu`` or ``tanh`` (the paper's figure-1 ablation).
        lrn: local response normalization after conv1 and conv2; default on for ``alexnet2012``
            only (the paper's section 3.3 ablation).
        lrn_k: the LRN's additive constant k (the paper's 2; Caffe's bvlc_alexnet 1).
        pooling: ``overlap`` (3x3 stride 2, the paper's) or ``plain`` (2x2 stride 2, section 3.4).
        dropout: dropout probability in the classifier (0.5 in the paper).
        init: ``paper``, ``caffe``, ``kaiming`` or ``torch``; default per variant (see :func:`init_weights`).
    """
    spec = variant(name)
    if activation not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {activation!r}; choose one of: {', '.join(ACTIVATIONS)}")
    if pooling not in POOLING:
        raise ConfigError(f"unknown pooling {pooling!r}; choose one of: {', '.join(POOLING)}")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout {dropout} must be in [0, 1)")
    if not 0.0 < lrn_k < float("inf"):
        raise ConfigError(f"lrn_k {lrn_k} must be a positive number")
    if num_classes < 1 or in_channels < 1:
        raise ConfigError("num_classes and in_channels must be at least 1")
    features, classifier = spec.build(
        num_classes, in_channels, activation, resolve_lrn(name, lrn), lrn_k, pooling, dropout
    )
    model = AlexNet(features, classifier, min_input_size(name, pooling))
    init_weights(model, init or spec.init)
    return model
