"""formats/network.py: the variant, class count and input channels read off a state_dict's shapes,
and a message that says which when the weights do not fit the checkpoint's settings."""

from __future__ import annotations

import pytest

from alexnet.formats import CheckpointError, identify_weights, model_from_checkpoint
from alexnet.models import MODELS
from helpers import _checkpoint, _fake_weights


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
        (("alexnet_owt", 10, 1), {}, "weights are alexnet_owt's (conv1 has 64 filters), not alexnet's (conv1 has 96 filters)"),
        (("alexnet2012", 10, 1), {}, "weights are alexnet2012's (conv2 is grouped, 48 maps per filter), not alexnet's (conv2 sees all 96 maps)"),
        (("alexnet", 10, 1), {"model": "alexnet_owt"}, "weights are alexnet's (conv1 has 96 filters), not alexnet_owt's (conv1 has 64 filters)"),
        (("alexnet", 1000, 1), {}, "weights are for 1000 classes, the checkpoint says 10"),
        (("alexnet", 10, 3), {}, "weights have 3 input channels, expected 1"),
    ],
)  # fmt: skip
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
