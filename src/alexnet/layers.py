"""The layers of every network in :mod:`alexnet.models`, written out literally as torchvision writes
``alexnet.py``: one comment per layer with its output shape, the paper's section where a choice
comes from, local response normalization, and the initializations beside the layers they set.

Each ``*_layers`` function takes ``(num_classes, in_channels, activation, lrn, lrn_k, pooling,
dropout)`` and returns ``(features, classifier)``; :func:`alexnet.models.build_model` wraps them in
:class:`alexnet.models.AlexNet`. Which document or paper each variant follows: :mod:`alexnet.models`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

from torch import nn

from alexnet.errors import ConfigError

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


def alexnet_layers(num_classes, in_channels, activation, lrn, lrn_k, pooling, dropout):
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


def alexnet2012_layers(num_classes, in_channels, activation, lrn, lrn_k, pooling, dropout):
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


def alexnet2012_half_layers(num_classes, in_channels, activation, lrn, lrn_k, pooling, dropout):
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
    _, classifier = alexnet2012_layers(num_classes, 1, activation, False, lrn_k, "overlap", dropout)  # the same FC6-FC8
    return features, classifier


def alexnet_owt_layers(num_classes, in_channels, activation, lrn, lrn_k, pooling, dropout):
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


def alexnet_tiny_layers(num_classes, in_channels, activation, lrn, lrn_k, pooling, dropout):
    # alexnet_layers' with the channels and FC widths cut, so a test trains it in milliseconds
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


def convnet4_layers(num_classes, in_channels, activation, lrn, lrn_k, pooling, dropout):
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


def init_weights(model: nn.Module, scheme: str) -> None:
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
