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

ModelName = Literal["alexnet", "alexnet2012", "alexnet2012_half", "alexnet_owt", "alexnet_tiny", "convnet4"]
Activation = Literal["relu", "tanh"]
Pooling = Literal["overlap", "plain"]
Init = Literal["paper", "caffe", "kaiming", "torch"]

# Local response normalization, section 3.3: b = a / (k + alpha * sum(a^2))^beta over n = 5
# adjacent maps, k = 2, alpha = 1e-4, beta = 0.75. We follow Krizhevsky's cuda-convnet layer
# configuration and Caffe, which divide alpha by n; that is what nn.LocalResponseNorm computes
# (it averages the squares), so alpha=1e-4 here. The formula as printed in the paper (no division)
# would be nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2). k is a setting (`lrn_k`): BVLC
# trained Caffe's bvlc_alexnet with Caffe's default k = 1, and its weights only match its outputs so.
LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K = 5, 1e-4, 0.75, 2.0

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),  # section 3.1: ReLUs train several times faster
    "tanh": nn.Tanh,  # the saturating baseline of figure 1
}
POOLING = {"overlap": (3, 2), "plain": (2, 2)}  # section 3.4: z=3, s=2 against z=s=2
INITS = get_args(Init)


class AlexNet(nn.Module):
    """``features`` -> ``avgpool`` -> ``classifier``, as in torchvision.

    Built by :func:`build_model`; the layers are written out literally in the builders below.
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


def _act(activation: str) -> nn.Module:
    return ACTIVATIONS[activation]()


def _lrn(lrn: bool, k: float) -> list[nn.Module]:
    return [nn.LocalResponseNorm(LRN_SIZE, alpha=LRN_ALPHA, beta=LRN_BETA, k=k)] if lrn else []


def _pool(pooling: str) -> nn.Module:
    kernel, stride = POOLING[pooling]
    return nn.MaxPool2d(kernel_size=kernel, stride=stride)


def _seed_classifier(num_classes: int, act: str, dropout: float) -> nn.Sequential:
    """Dropout *before* FC6 and FC7, as the document's code and torchvision have it."""
    return nn.Sequential(
        nn.Dropout(p=dropout),
        nn.Linear(256 * 6 * 6, 4096),  # fc6: 4096
        _act(act),
        nn.Dropout(p=dropout),
        nn.Linear(4096, 4096),  # fc7: 4096
        _act(act),
        nn.Linear(4096, num_classes),  # fc8: num_classes (logits)
    )


def _alexnet(num_classes, in_channels, activation, lrn, lrn_k, pooling, dropout):
    # Shapes in the comments are for the native 3 x 227 x 227 input.
    features = nn.Sequential(
        nn.Conv2d(in_channels, 96, kernel_size=11, stride=4, padding=0),  # conv1: 96 x 55 x 55
        _act(activation),
        *_lrn(lrn, lrn_k),
        _pool(pooling),  # pool1: 96 x 27 x 27
        nn.Conv2d(96, 256, kernel_size=5, padding=2),  # conv2: 256 x 27 x 27
        _act(activation),
        *_lrn(lrn, lrn_k),
        _pool(pooling),  # pool2: 256 x 13 x 13
        nn.Conv2d(256, 384, kernel_size=3, padding=1),  # conv3: 384 x 13 x 13
        _act(activation),
        nn.Conv2d(384, 384, kernel_size=3, padding=1),  # conv4: 384 x 13 x 13
        _act(activation),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),  # conv5: 256 x 13 x 13
        _act(activation),
        _pool(pooling),  # pool5: 256 x 6 x 6
    )
    return features, _seed_classifier(num_classes, activation, dropout)


def _alexnet2012(num_classes, in_channels, activation, lrn, lrn_k, pooling, dropout):
    # Figure 2: two towers of 48/128/192/192/128 maps. conv3 and the FC layers see both towers;
    # conv2, conv4 and conv5 see only their own (groups=2). Shapes for 3 x 227 x 227.
    features = nn.Sequential(
        nn.Conv2d(in_channels, 96, kernel_size=11, stride=4),  # conv1: 2 x 48 x 55 x 55
        _act(activation),
        *_lrn(lrn, lrn_k),  # section 3.3: LRN after the ReLU, before pooling
        _pool(pooling),  # pool1: 96 x 27 x 27
        nn.Conv2d(96, 256, kernel_size=5, padding=2, groups=2),  # conv2: 2 x 128 x 27 x 27
        _act(activation),
        *_lrn(lrn, lrn_k),
        _pool(pooling),  # pool2: 256 x 13 x 13
        nn.Conv2d(256, 384, kernel_size=3, padding=1),  # conv3: 2 x 192 x 13 x 13
        _act(activation),
        nn.Conv2d(384, 384, kernel_size=3, padding=1, groups=2),  # conv4: 2 x 192 x 13 x 13
        _act(activation),
        nn.Conv2d(384, 256, kernel_size=3, padding=1, groups=2),  # conv5: 2 x 128 x 13 x 13
        _act(activation),
        _pool(pooling),  # pool5: 256 x 6 x 6
    )
    # Section 4.2: dropout on the outputs of the first two fully-connected layers.
    classifier = nn.Sequential(
        nn.Linear(256 * 6 * 6, 4096),  # fc6: 4096
        _act(activation),
        nn.Dropout(p=dropout),
        nn.Linear(4096, 4096),  # fc7: 4096
        _act(activation),
        nn.Dropout(p=dropout),
        nn.Linear(4096, num_classes),  # fc8: num_classes (logits)
    )
    return features, classifier


def _alexnet2012_half(num_classes, in_channels, activation, lrn, lrn_k, pooling, dropout):
    # Section 3.2 and its footnote 2: "a net with half as many kernels in each convolutional layer
    # trained on one GPU", whose last conv layer and FC layers keep the two-GPU net's sizes.
    # One tower, so no groups anywhere. Shapes for 3 x 227 x 227.
    features = nn.Sequential(
        nn.Conv2d(in_channels, 48, kernel_size=11, stride=4),  # conv1: 48 x 55 x 55
        _act(activation),
        *_lrn(lrn, lrn_k),
        _pool(pooling),  # pool1: 48 x 27 x 27
        nn.Conv2d(48, 128, kernel_size=5, padding=2),  # conv2: 128 x 27 x 27
        _act(activation),
        *_lrn(lrn, lrn_k),
        _pool(pooling),  # pool2: 128 x 13 x 13
        nn.Conv2d(128, 192, kernel_size=3, padding=1),  # conv3: 192 x 13 x 13
        _act(activation),
        nn.Conv2d(192, 192, kernel_size=3, padding=1),  # conv4: 192 x 13 x 13
        _act(activation),
        nn.Conv2d(192, 256, kernel_size=3, padding=1),  # conv5: 256 x 13 x 13 (footnote 2: not halved)
        _act(activation),
        _pool(pooling),  # pool5: 256 x 6 x 6
    )
    _, classifier = _alexnet2012(num_classes, 1, activation, False, lrn_k, "overlap", dropout)  # the same FC6-FC8
    return features, classifier


def _alexnet_owt(num_classes, in_channels, activation, lrn, lrn_k, pooling, dropout):
    # torchvision/models/alexnet.py, layer for layer. Shapes for 3 x 224 x 224.
    features = nn.Sequential(
        nn.Conv2d(in_channels, 64, kernel_size=11, stride=4, padding=2),  # conv1: 64 x 55 x 55
        _act(activation),
        *_lrn(lrn, lrn_k),
        _pool(pooling),  # pool1: 64 x 27 x 27
        nn.Conv2d(64, 192, kernel_size=5, padding=2),  # conv2: 192 x 27 x 27
        _act(activation),
        *_lrn(lrn, lrn_k),
        _pool(pooling),  # pool2: 192 x 13 x 13
        nn.Conv2d(192, 384, kernel_size=3, padding=1),  # conv3: 384 x 13 x 13
        _act(activation),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),  # conv4: 256 x 13 x 13
        _act(activation),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),  # conv5: 256 x 13 x 13
        _act(activation),
        _pool(pooling),  # pool5: 256 x 6 x 6
    )
    return features, _seed_classifier(num_classes, activation, dropout)


def _alexnet_tiny(num_classes, in_channels, activation, lrn, lrn_k, pooling, dropout):
    # _alexnet's layers with the channels and FC widths cut, so a test trains it in milliseconds
    # through the same code. Shapes for 3 x 227 x 227.
    features = nn.Sequential(
        nn.Conv2d(in_channels, 6, kernel_size=11, stride=4, padding=0),  # conv1: 6 x 55 x 55
        _act(activation),
        *_lrn(lrn, lrn_k),
        _pool(pooling),  # pool1: 6 x 27 x 27
        nn.Conv2d(6, 16, kernel_size=5, padding=2),  # conv2: 16 x 27 x 27
        _act(activation),
        *_lrn(lrn, lrn_k),
        _pool(pooling),  # pool2: 16 x 13 x 13
        nn.Conv2d(16, 24, kernel_size=3, padding=1),  # conv3: 24 x 13 x 13
        _act(activation),
        nn.Conv2d(24, 24, kernel_size=3, padding=1),  # conv4: 24 x 13 x 13
        _act(activation),
        nn.Conv2d(24, 16, kernel_size=3, padding=1),  # conv5: 16 x 13 x 13
        _act(activation),
        _pool(pooling),  # pool5: 16 x 6 x 6
    )
    classifier = nn.Sequential(  # dropout before FC6 and FC7, as in the document's network
        nn.Dropout(p=dropout),
        nn.Linear(16 * 6 * 6, 64),  # fc6: 64
        _act(activation),
        nn.Dropout(p=dropout),
        nn.Linear(64, 64),  # fc7: 64
        _act(activation),
        nn.Linear(64, num_classes),  # fc8: num_classes (logits)
    )
    return features, classifier


def _convnet4(num_classes, in_channels, activation, lrn, lrn_k, pooling, dropout):
    # Figure 1's network, after cuda-convnet's CIFAR-10 examples: 5x5 convolutions of 32/32/64 maps,
    # each followed by 3x3/2 pooling (cuda-convnet averaged in the later two), then one FC layer.
    # Those padded every convolution by 2 on 32 px images; here conv1 and conv2 are unpadded, so
    # that the document's minimum input, 67, ends in exactly the 6 x 6 map the adaptive pooling
    # keeps (it is then the identity). Shapes for 1 x 67 x 67.
    features = nn.Sequential(
        nn.Conv2d(in_channels, 32, kernel_size=5),  # conv1: 32 x 63 x 63
        _act(activation),
        *_lrn(lrn, lrn_k),
        _pool(pooling),  # pool1: 32 x 31 x 31
        nn.Conv2d(32, 32, kernel_size=5),  # conv2: 32 x 27 x 27
        _act(activation),
        *_lrn(lrn, lrn_k),
        _pool(pooling),  # pool2: 32 x 13 x 13
        nn.Conv2d(32, 64, kernel_size=5, padding=2),  # conv3: 64 x 13 x 13
        _act(activation),
        _pool(pooling),  # pool3: 64 x 6 x 6
    )
    classifier = nn.Sequential(
        nn.Dropout(p=dropout),  # figure 1 has none ("no regularization"); here so that --dropout means the same
        nn.Linear(64 * 6 * 6, num_classes),  # fc4: num_classes (logits)
    )
    return features, classifier


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
            _alexnet,
            227,
            "kaiming",
            False,
            "the source document's network: 96/256/384/384/256, no LRN, dropout before FC6/FC7, 227x227",
        ),
        Variant(
            "alexnet2012",
            _alexnet2012,
            227,
            "paper",
            True,
            "the 2012 paper's network: two towers (groups=2), LRN, dropout after FC6/FC7, paper init",
        ),
        Variant(
            "alexnet2012_half",
            _alexnet2012_half,
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
            _alexnet_owt,
            224,
            "torch",
            False,
            "torchvision's 'one weird trick' variant: 64/192/384/256/256, pad 2, loads torchvision weights",
        ),
        Variant(
            "alexnet_tiny",
            _alexnet_tiny,
            227,
            "kaiming",
            False,
            "the document's layers at a test size: for tests and quick experiments (6/16/24/24/16, FC 64)",
        ),
        Variant(
            "convnet4",
            _convnet4,
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


def init_weights(model: AlexNet, scheme: str) -> None:
    """Initialize conv and linear layers.

    ``paper``: section 5 - weights N(0, 0.01); biases 1 in conv2, conv4, conv5 and the hidden FC
    layers ("provides the ReLUs with positive inputs"), 0 elsewhere. With these and lr 0.01 many
    users see the loss sit at chance for a long time (Caffe's readme used bias 0.1 instead).
    ``caffe``: the paper's init with the one change Caffe's bvlc_alexnet readme calls necessary:
    those biases 0.1 instead of 1 (Caffe's other filler change, N(0, 0.005) in FC6/FC7, is not
    taken). Measured in docs/paper.md: on small data it sits at chance as the paper's does, so
    ``--recipe paper`` takes ``kaiming`` instead.
    ``kaiming``: He-normal weights (fan_out, ReLU gain) and zero biases, as torchvision does for
    VGG/ResNet; this removes the stall at chance and is the training default for ``alexnet``.
    ``torch``: PyTorch's default layer init, which torchvision's ``alexnet`` keeps.
    """
    if scheme not in INITS:
        raise ConfigError(f"unknown init {scheme!r}; choose one of: {', '.join(INITS)}")
    if scheme == "torch":
        return
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for i, m in enumerate(layers):
        if scheme in ("paper", "caffe"):
            nn.init.normal_(m.weight, mean=0.0, std=0.01)
            # layers 2, 4, 5 (conv) and 6, 7 (FC) in the paper's 1-based numbering
            positive = 1.0 if scheme == "paper" else 0.1
            nn.init.constant_(m.bias, positive if i + 1 in (2, 4, 5, 6, 7) else 0.0)
            continue
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif m is not layers[-1]:
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
        else:
            nn.init.normal_(m.weight, mean=0.0, std=0.01)  # FC8: small logits at the start
        nn.init.zeros_(m.bias)


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
