"""formats/network.py: the variant, class count and input channels read off a state_dict's shapes,
and a message that says which when the weights do not fit the checkpoint's settings."""

from __future__ import annotations

import math

import pytest
import torch

from alexnet.formats import CheckpointError, identify_weights, model_from_checkpoint
from alexnet.models import MODELS

from helpers import PREPROCESS, _checkpoint, _fake_weights


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize(("num_classes", "in_channels"), [(1000, 3), (10, 1)])
def test_identify_weights_reads_variant_classes_and_channels(name, num_classes, in_channels):
    weights = _fake_weights(name, num_classes=num_classes, in_channels=in_channels)
    assert identify_weights(weights) == {"variant": name, "num_classes": num_classes, "in_channels": in_channels}


def test_identify_weights_sees_through_lrn_layers():
    # LRN shifts every later index in `features`; conv2 is then features.4, not features.3
    weights = _fake_weights("alexnet", lrn=True)
    assert identify_weights(weights)["variant"] == "alexnet"
    assert identify_weights(_fake_weights("alexnet2012", lrn=False))["variant"] == "alexnet2012"


@pytest.mark.parametrize(
    ("weights", "checkpoint", "message"),
    [
        (
            ("alexnet_owt", 10, 1),
            {},
            "weights are alexnet_owt's (conv1 has 64 filters), not alexnet's (conv1 has 96 filters)",
        ),
        (
            ("alexnet2012", 10, 1),
            {},
            "weights are alexnet2012's (conv2 is grouped, 48 maps per filter), not alexnet's (conv2 sees all 96 maps)",
        ),
        (
            ("alexnet", 10, 1),
            {"model": "alexnet_owt"},
            "weights are alexnet's (conv1 has 96 filters), not alexnet_owt's (conv1 has 64 filters)",
        ),
        (
            ("alexnet_tiny", 10, 1),
            {},
            "weights are alexnet_tiny's (conv1 has 6 filters), not alexnet's (conv1 has 96 filters)",
        ),
        (
            ("alexnet", 10, 1),
            {"model": "alexnet_tiny"},
            "weights are alexnet's (conv1 has 96 filters), not alexnet_tiny's (conv1 has 6 filters)",
        ),
        (
            ("convnet4", 10, 1),
            {},
            "weights are convnet4's (conv1 has 32 filters), not alexnet's (conv1 has 96 filters)",
        ),
        (("alexnet", 1000, 1), {}, "weights are for 1000 classes, the checkpoint says 10"),
        (("alexnet", 10, 3), {}, "weights have 3 input channels, expected 1"),
    ],
)
def test_model_from_checkpoint_says_which_mismatch(weights, checkpoint, message):
    name, num_classes, in_channels = weights
    state = _checkpoint(_fake_weights(name, num_classes=num_classes, in_channels=in_channels), **checkpoint)
    with pytest.raises(CheckpointError) as e:
        model_from_checkpoint(state, source="ckpt.pt")
    assert str(e.value) == f"ckpt.pt: {message}"


def test_model_from_checkpoint_names_an_lrn_mismatch():
    state = _checkpoint(_fake_weights("alexnet", num_classes=10, in_channels=1, lrn=True))  # config: lrn=None
    with pytest.raises(CheckpointError, match=r"lrn=True, the checkpoint says lrn=None"):
        model_from_checkpoint(state)


FOLDER_RGB = {"kind": "folder", "mode": "RGB", "image_size": 67, "resize": 77, "mean": [0.5] * 3, "std": [0.25] * 3}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # a folder model: its mode, its mean and std, and the weights' input channels agree
        ({"preprocess": FOLDER_RGB}, "weights have 1 input channels, expected 3"),
        (
            {"preprocess": {**FOLDER_RGB, "mode": "L"}},
            "preprocess mean and std must be lists of one finite number per channel of mode L",
        ),
        ({"preprocess": {**FOLDER_RGB, "std": [0.25, 0.25]}}, "one finite number per channel of mode RGB"),
        ({"classes": ["a", "b"]}, "weights are for 10 classes, the checkpoint says 2"),
        ({"classes": ["c"] * 10}, "'classes' must be a non-empty list of distinct names"),
        ({"classes": [str(i) for i in range(9)] + [""]}, "'classes' must be a non-empty list of distinct names"),
        # sizes the network cannot take, or a pipeline cannot make
        (
            {"preprocess": {**PREPROCESS, "image_size": 50}, "config_image_size": 50},
            "--image-size 50 is below the minimum 67",
        ),
        (
            {"preprocess": {**PREPROCESS, "image_size": 99}},
            "config image_size 67 differs from preprocess image_size 99",
        ),
        ({"preprocess": {**PREPROCESS, "source_size": 5000}}, "'source_size' 5000 is above the maximum 4096"),
        ({"preprocess": {**PREPROCESS, "std": [1e-300]}}, "pixel std [1e-300] is outside [0.001, 1]"),
        (
            {"preprocess": {**PREPROCESS, "mean": [10**400]}},
            "preprocess mean and std must be lists of one finite number",
        ),
        ({"epoch": True}, "'epoch' must be a whole number"),
        (
            {"metrics": {"val_top1": torch.tensor(0.5)}},
            "'metrics' must be an object of finite numbers, got {'val_top1': tensor(0.5000)}",
        ),
    ],
    ids=[
        "folder-rgb-1-channel-weights",
        "folder-l-with-rgb-stats",
        "rgb-with-2-stds",
        "classes-vs-weights",
        "classes-twice",
        "class-without-a-name",
        "image-size-50",
        "image-sizes-disagree",
        "source-size-5000",
        "std-1e-300",
        "mean-huge-int",
        "epoch-a-bool",
        "metrics-a-tensor",
    ],
)
def test_every_model_file_field_is_checked_before_the_network_runs(change, message):
    change = dict(change)
    size = change.pop("config_image_size", None)
    state = {**_checkpoint(_fake_weights("alexnet", num_classes=10, in_channels=1)), **change}
    if size is not None:
        state["config"] = {**state["config"], "image_size": size}
    with pytest.raises(CheckpointError) as e:
        model_from_checkpoint(state, source="ckpt.pt")
    assert str(e.value).startswith("ckpt.pt: ") and message in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_nan_weights_and_odd_keys_are_refused_naming_them():
    """Before: NaN weights predicted NaN probabilities, printed as "nan%" with exit code 0."""
    weights = _fake_weights("alexnet", num_classes=10, in_channels=1)
    with pytest.raises(CheckpointError, match=r"ckpt.pt: weight classifier.4.weight holds NaN or infinite values"):
        model_from_checkpoint(
            _checkpoint({**weights, "classifier.4.weight": torch.full((), math.inf).expand(4096, 4096)}),
            source="ckpt.pt",
        )
    with pytest.raises(CheckpointError, match=r"its weights are not a state_dict of tensors"):
        model_from_checkpoint(_checkpoint({**weights, 7: torch.zeros(1)}), source="ckpt.pt")


def _sparse(shape):
    return torch.zeros(shape).to_sparse()


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (_sparse, "a torch.sparse_coo tensor, not a dense one"),
        (lambda shape: torch.zeros(shape, device="meta"), "a meta tensor, which holds no values"),
        (lambda shape: torch.zeros(shape).to(torch.float8_e4m3fn), "of type torch.float8_e4m3fn"),
        (lambda shape: torch.zeros(shape, dtype=torch.complex64), "of type torch.complex64"),
        (lambda shape: torch.zeros(shape, dtype=torch.int64), "of type torch.int64"),
    ],
    ids=["sparse", "meta", "float8", "complex", "integer"],
)
def test_weights_that_are_not_dense_real_floating_point_are_refused_naming_them(make, words):
    """Before: tracebacks from the finiteness check (sparse, meta, float8), or complex weights
    accepted with their imaginary part dropped."""
    weights = _fake_weights("alexnet", num_classes=10, in_channels=1)
    weights["features.3.weight"] = make(weights["features.3.weight"].shape)
    with pytest.raises(CheckpointError) as e:
        model_from_checkpoint(_checkpoint(weights), source="ckpt.pt")
    assert str(e.value).startswith(f"ckpt.pt: weight features.3.weight is {words}"), str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"features.0.bias": None}, "1 weight(s) missing, the first features.0.bias"),
        ({"features.99.weight": torch.zeros(1)}, "the network has no place for, the first features.99.weight"),
        ({"features.0.bias": torch.zeros(95)}, "weight features.0.bias has shape [95], the network's is [96]"),
    ],
    ids=["missing", "unexpected", "shape"],
)
def test_weights_that_do_not_fit_name_the_key(change, words):
    """Before: the message stopped at torch's "Error(s) in loading state_dict for AlexNet:"."""
    weights = {**_fake_weights("alexnet", num_classes=10, in_channels=1), **change}
    weights = {k: v for k, v in weights.items() if v is not None}
    with pytest.raises(CheckpointError) as e:
        model_from_checkpoint(_checkpoint(weights), source="ckpt.pt")
    assert words in str(e.value) and "\n" not in str(e.value), str(e.value)
