"""The AlexNet variants (and figure 1's convnet4): shapes, gradients, exact sizes, and parity with their references.

The strongest tests here compare against an outside reference: the source document's own class
(tests/reference_seed.py, copied verbatim) and torchvision's ``alexnet``. Models are built once per
module where a test does not change them; building one costs about half a second on 2 CPU cores.
"""

import pytest
import torch
import torchvision
from torch import nn

from alexnet.models import MODELS, build_model, native_image_size

from helpers import MIN_SIZE
from reference_seed import AlexNet as SeedAlexNet

VARIANTS = list(MODELS)

# Exact totals for 3 x 227 x 227 (224 for alexnet_owt) and 1000 classes; see docs/paper.md, "The networks".
# alexnet_tiny's is worked out layer by layer in test_tiny_parameters_by_hand; convnet4's (67 x 67) in
# test_convnet4_parameters_by_hand.
PARAMS = {
    "alexnet": 62_378_344,
    "alexnet2012": 60_965_224,
    "alexnet2012_half": 59_798_312,
    "alexnet_owt": 61_100_840,
    "alexnet_tiny": 122_848,
    "convnet4": 2_384_328,
}
NATIVE = {
    "alexnet": 227,
    "alexnet2012": 227,
    "alexnet2012_half": 227,
    "alexnet_owt": 224,
    "alexnet_tiny": 227,
    "convnet4": 67,
}
# ReLUs and dropout layers: five convolutions and FC6/FC7 in the AlexNets, three and none in convnet4
ACTIVATIONS = {name: 3 if name == "convnet4" else 7 for name in PARAMS}
DROPOUTS = {name: 1 if name == "convnet4" else 2 for name in PARAMS}


@pytest.fixture(scope="module")
def default_models():
    """Each variant with its default settings, built once for the read-only tests."""
    return {name: build_model(name) for name in VARIANTS}


def test_registry_matches_the_variants_under_test():
    assert set(MODELS) == set(PARAMS)
    for name in VARIANTS:
        assert native_image_size(name) == NATIVE[name]


@pytest.mark.parametrize("name", VARIANTS)
def test_parameter_count_is_exact(default_models, name):
    assert sum(p.numel() for p in default_models[name].parameters()) == PARAMS[name]


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("num_classes, in_channels", [(1000, 3), (10, 1), (7, 3)])
def test_output_shape(name, num_classes, in_channels):
    model = build_model(name, num_classes=num_classes, in_channels=in_channels, init="torch").eval()
    assert model.features[0].weight.shape[1] == in_channels
    with torch.no_grad():
        for size in (MIN_SIZE[name], 99, NATIVE[name]):
            out = model(torch.randn(2, in_channels, size, size))
            assert out.shape == (2, num_classes), size


@pytest.mark.parametrize("name", VARIANTS)
def test_backward_gives_finite_gradients_everywhere(default_models, name):
    model = default_models[name].train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    size = MIN_SIZE[name]
    out = model(torch.randn(2, 3, size, size))
    loss = nn.functional.cross_entropy(out, torch.tensor([1, 2]))
    loss.backward()
    assert torch.isfinite(out).all() and torch.isfinite(loss)
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    model.zero_grad(set_to_none=True)
    model.eval()


# Parity with the source document's class --------------------------------------------------------


def test_seed_state_dict_loads_strict_and_gives_identical_logits():
    torch.manual_seed(0)
    reference = SeedAlexNet().eval()
    model = build_model("alexnet", init="torch").eval()
    model.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 227, 227)
    with torch.no_grad():
        expected, got = reference(x), model(x)
    # AdaptiveAvgPool2d((6, 6)) on a 6 x 6 map averages windows of one value: the identity.
    assert torch.allclose(got, expected, rtol=0, atol=1e-6)
    # ... and the other way round: our keys are the document's keys.
    back = SeedAlexNet()
    back.load_state_dict(model.state_dict(), strict=True)


def test_seed_parity_in_train_mode_with_the_same_dropout_masks():
    """Dropout sits in the same places (before FC6 and FC7): the same seed draws the same masks."""
    torch.manual_seed(1)
    reference = SeedAlexNet().train()
    model = build_model("alexnet", init="torch").train()
    model.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 227, 227)
    with torch.no_grad():
        torch.manual_seed(2)
        expected = reference(x)
        torch.manual_seed(2)
        got = model(x)
    assert torch.allclose(got, expected, rtol=0, atol=1e-6)


# Parity with torchvision --------------------------------------------------------------------------


def test_torchvision_alexnet_loads_into_alexnet_owt_and_back():
    torch.manual_seed(0)
    tv = torchvision.models.alexnet(weights=None).eval()
    model = build_model("alexnet_owt").eval()
    model.load_state_dict(tv.state_dict(), strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(model(x), tv(x), rtol=0, atol=1e-6)

    torch.manual_seed(1)
    ours = build_model("alexnet_owt").eval()
    tv_back = torchvision.models.alexnet(weights=None).eval()
    tv_back.load_state_dict(ours.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.allclose(tv_back(x), ours(x), rtol=0, atol=1e-6)


# The 2012 paper's network ------------------------------------------------------------------------


def _layers(model, kind):
    return [m for m in model.modules() if isinstance(m, kind)]


def _params(k: int, c_in: int, c_out: int) -> int:
    """k*k*c_in*c_out weights and c_out biases (the formula of docs/paper.md; k = input size for FC)."""
    return k * k * c_in * c_out + c_out


@pytest.mark.parametrize("num_classes, in_channels", [(1000, 3), (10, 1)])
def test_half_width_tower_parameters_by_hand(num_classes, in_channels):
    """Section 3.2's one-GPU net: 48/128/192/192 kernels with no groups, conv5 256 and the FC
    layers as alexnet2012's (footnote 2), counted layer by layer with the formula."""
    expected = (
        _params(11, in_channels, 48)
        + _params(5, 48, 128)
        + _params(3, 128, 192)
        + _params(3, 192, 192)
        + _params(3, 192, 256)
        + _params(6, 256, 4096)
        + _params(1, 4096, 4096)
        + _params(1, 4096, num_classes)
    )
    model = build_model("alexnet2012_half", num_classes=num_classes, in_channels=in_channels)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert all(c.groups == 1 for c in _layers(model, nn.Conv2d))
    two = build_model("alexnet2012", num_classes=num_classes, in_channels=in_channels)
    # about the same size as the two-tower net (footnote 2): within 3%
    assert abs(expected / sum(p.numel() for p in two.parameters()) - 1) < 0.03


@pytest.mark.parametrize("num_classes, in_channels", [(1000, 3), (10, 1)])
def test_tiny_parameters_by_hand(num_classes, in_channels):
    """The test-size network: the document's layers with 6/16/24/24/16 kernels and FC layers of
    64, counted layer by layer with the formula (FC6 reads the 16 x 6 x 6 map)."""
    expected = (
        _params(11, in_channels, 6)
        + _params(5, 6, 16)
        + _params(3, 16, 24)
        + _params(3, 24, 24)
        + _params(3, 24, 16)
        + _params(6, 16, 64)
        + _params(1, 64, 64)
        + _params(1, 64, num_classes)
    )
    model = build_model("alexnet_tiny", num_classes=num_classes, in_channels=in_channels)
    assert sum(p.numel() for p in model.parameters()) == expected
    if (num_classes, in_channels) == (1000, 3):
        assert expected == PARAMS["alexnet_tiny"]


def _shapes(modules, x: torch.Tensor) -> list[tuple[int, ...]]:
    """The output shape (batch dimension dropped) of each module of ``modules`` in turn."""
    shapes = []
    for m in modules:
        x = m(x)
        shapes.append(tuple(x.shape[1:]))
    return shapes


@pytest.mark.parametrize("size", [67, 99, 227])
def test_tiny_has_the_documents_layers_with_fewer_channels(size):
    """Layer by layer, alexnet_tiny's maps have the document's network's spatial sizes (the same
    kernels, strides, paddings and pooling) and the same kinds of layers, dropout included; only
    the channels and FC widths differ."""
    torch.manual_seed(0)
    reference, tiny = SeedAlexNet().eval(), build_model("alexnet_tiny").eval()
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        ours, theirs = _shapes(tiny.features, x), _shapes(reference.features, x)
    assert [type(m) for m in tiny.features] == [type(m) for m in reference.features]
    assert [type(m) for m in tiny.classifier] == [type(m) for m in reference.classifier]
    assert [s[1:] for s in ours] == [s[1:] for s in theirs]  # H x W after every layer
    assert [s[0] for s in ours] == [6, 6, 6, 16, 16, 16, 24, 24, 24, 24, 16, 16, 16]
    assert [s[0] for s in theirs] == [96, 96, 96, 256, 256, 256, 384, 384, 384, 384, 256, 256, 256]
    with torch.no_grad():  # the classifier: 16 x 6 x 6 into FC6, FC layers of 64, 1000 logits
        assert _shapes(tiny.classifier, torch.flatten(tiny.avgpool(tiny.features(x)), 1)) == [
            (576,),
            (64,),
            (64,),
            (64,),
            (64,),
            (64,),
            (1000,),
        ]


@pytest.mark.parametrize("num_classes, in_channels", [(1000, 3), (10, 1)])
def test_convnet4_parameters_by_hand(num_classes, in_channels):
    """Figure 1's four layers: 5x5 convolutions of 32/32/64 maps, then one FC layer reading the
    64 x 6 x 6 map (its input at 67 px: 63 -> 31 -> 27 -> 13 -> 13 -> 6)."""
    expected = _params(5, in_channels, 32) + _params(5, 32, 32) + _params(5, 32, 64) + _params(6, 64, num_classes)
    model = build_model("convnet4", num_classes=num_classes, in_channels=in_channels)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert [type(m) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))] == [nn.Conv2d] * 3 + [nn.Linear]
    assert model.features(torch.zeros(1, in_channels, 67, 67)).shape == (1, 64, 6, 6)  # the avgpool is the identity


def test_alexnet2012_has_two_towers(default_models):
    convs = _layers(default_models["alexnet2012"], nn.Conv2d)
    assert [c.groups for c in convs] == [1, 2, 1, 2, 2]  # conv3 sees both towers (figure 2)
    assert [c.out_channels for c in convs] == [96, 256, 384, 384, 256]


def test_alexnet2012_lrn_follows_the_relus_of_conv1_and_conv2(default_models):
    types = [type(m) for m in default_models["alexnet2012"].features]
    # section 3.3: conv -> ReLU -> LRN -> pool, in layers 1 and 2 only
    assert types[:8] == [nn.Conv2d, nn.ReLU, nn.LocalResponseNorm, nn.MaxPool2d] * 2
    assert types.count(nn.LocalResponseNorm) == 2
    for lrn in _layers(default_models["alexnet2012"], nn.LocalResponseNorm):
        assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (5, 1e-4, 0.75, 2)


def test_alexnet2012_dropout_follows_the_fc6_and_fc7_relus(default_models):
    types = [type(m) for m in default_models["alexnet2012"].classifier]
    assert types == [nn.Linear, nn.ReLU, nn.Dropout] * 2 + [nn.Linear]
    assert all(d.p == 0.5 for d in _layers(default_models["alexnet2012"], nn.Dropout))


def test_alexnet2012_uses_the_paper_init(default_models):
    layers = _layers(default_models["alexnet2012"], (nn.Conv2d, nn.Linear))
    fc6 = layers[5].weight  # 37.7 M draws: the sample std is within ~1e-6 of the true one
    assert fc6.mean().abs().item() < 1e-4
    assert fc6.std().item() == pytest.approx(0.01, rel=1e-3)
    for layer in layers:
        assert layer.weight.std().item() == pytest.approx(0.01, rel=0.05)
    # section 5: biases 1 in conv2, conv4, conv5, fc6, fc7; 0 in conv1, conv3, fc8
    for number, layer in enumerate(layers, start=1):
        value = 1.0 if number in (2, 4, 5, 6, 7) else 0.0
        assert torch.equal(layer.bias, torch.full_like(layer.bias, value)), number


# Ablation options -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VARIANTS)
def test_ablations_build_and_run(name):
    options = dict(activation="tanh", pooling="plain", dropout=0.2, lrn=name != "alexnet2012")
    model = build_model(name, num_classes=10, init="torch", **options)
    assert not _layers(model, nn.ReLU) and len(_layers(model, nn.Tanh)) == ACTIVATIONS[name]
    assert all(p.kernel_size == 2 and p.stride == 2 for p in _layers(model, nn.MaxPool2d))
    assert [d.p for d in _layers(model, nn.Dropout)] == [0.2] * DROPOUTS[name]
    assert len(_layers(model, nn.LocalResponseNorm)) == (0 if name == "alexnet2012" else 2)
    model.train()
    out = model(torch.randn(2, 3, model.min_size, model.min_size))
    out.sum().backward()
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_lrn_is_off_by_default_except_in_the_paper_nets(default_models):
    counts = {n: len(_layers(m, nn.LocalResponseNorm)) for n, m in default_models.items()}
    assert counts == {
        "alexnet": 0,
        "alexnet2012": 2,
        "alexnet2012_half": 2,
        "alexnet_owt": 0,
        "alexnet_tiny": 0,
        "convnet4": 0,
    }


def test_alexnet_with_lrn_runs_at_227():
    model = build_model("alexnet", lrn=True, init="torch").eval()
    assert len(_layers(model, nn.LocalResponseNorm)) == 2
    with torch.no_grad():
        assert model(torch.randn(1, 3, 227, 227)).shape == (1, 1000)


# Input size and argument checks -----------------------------------------------------------------


@pytest.mark.parametrize("name", VARIANTS)
def test_minimum_image_size(default_models, name):
    model = default_models[name].eval()
    smallest = MIN_SIZE[name]
    assert model.min_size == smallest
    with torch.no_grad():
        assert model(torch.randn(1, 3, smallest, smallest)).shape == (1, 1000)
        with pytest.raises(ValueError, match=str(smallest)):
            model(torch.randn(1, 3, smallest - 1, smallest - 1))
        # the guard is honest: the layers themselves fail one pixel below the minimum
        with pytest.raises(RuntimeError):
            model.avgpool(model.features(torch.randn(1, 3, smallest - 1, smallest - 1)))


@pytest.mark.parametrize(
    "kwargs, choices",
    [
        (dict(name="alexnet3"), list(MODELS)),
        (dict(name="alexnet", activation="sigmoid"), ["relu", "tanh"]),
        (dict(name="alexnet", pooling="average"), ["overlap", "plain"]),
    ],
)
def test_unknown_options_raise_naming_the_choices(kwargs, choices):
    with pytest.raises(ValueError) as info:
        build_model(**kwargs)
    for choice in choices:
        assert choice in str(info.value)
