"""summarize() and format_table(): exact totals, the document's formula, an outside MAC count."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from alexnet.models import MODELS, build_model
from alexnet.summary import format_table, summarize

from helpers import MIN_SIZE

VARIANTS = list(MODELS)

# (image size, parameters, multiply-accumulates per image) for 3 channels and 1000 classes;
# alexnet_owt's are torchvision's own meta (61,100,840 parameters, 0.714 GFLOPS); docs/paper.md, "The networks".
EXPECTED = {
    "alexnet": (227, 62_378_344, 1_135_256_096),
    "alexnet2012": (227, 60_965_224, 724_406_816),
    "alexnet2012_half": (227, 59_798_312, 391_514_384),  # test_models.py works both out by hand
    "alexnet_owt": (224, 61_100_840, 714_188_480),
    "alexnet_tiny": (227, 122_848, 10_487_234),  # test_models.py works its parameters out by hand
    "convnet4": (67, 2_384_328, 39_144_800),  # test_convnet4_rows_by_hand works these out
}


@pytest.fixture(scope="module")
def default_models():
    return {name: build_model(name, init="torch").eval() for name in VARIANTS}


@pytest.mark.parametrize("name", VARIANTS)
def test_totals_are_exact(default_models, name):
    size, params, macs = EXPECTED[name]
    totals = summarize(default_models[name], size)["totals"]
    assert totals["params"] == params
    assert totals["params_formula"] == params
    assert totals["macs"] == macs


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("in_channels, num_classes, size", [(3, 1000, None), (1, 10, 99)])
def test_formula_matches_the_count_on_every_row(default_models, name, in_channels, num_classes, size):
    if (in_channels, num_classes) == (3, 1000):
        model = default_models[name]
    else:
        model = build_model(name, in_channels=in_channels, num_classes=num_classes, init="torch")
    size = size or EXPECTED[name][0]
    summary = summarize(model, size, in_channels=in_channels)
    for row in summary["rows"]:
        assert row["params_formula"] == row["params"], row
    assert summary["totals"]["params"] == sum(p.numel() for p in model.parameters())
    assert (summary["num_classes"], summary["in_channels"], summary["image_size"]) == (
        num_classes,
        in_channels,
        size,
    )


def test_alexnet_rows_read_like_the_paper(default_models):
    rows = summarize(default_models["alexnet"], 227)["rows"]
    spatial = [r["shape"][1] for r in rows if r["type"] in ("Conv2d", "MaxPool2d")]
    assert spatial == [55, 27, 27, 13, 13, 13, 13, 6]  # docs/paper.md's errata: the shapes corrected
    assert [r["name"] for r in rows] == [
        "conv1",
        "relu1",
        "pool1",
        "conv2",
        "relu2",
        "pool2",
        "conv3",
        "relu3",
        "conv4",
        "relu4",
        "conv5",
        "relu5",
        "pool5",
        "avgpool",
        "drop6",
        "fc6",
        "relu6",
        "drop7",
        "fc7",
        "relu7",
        "fc8",
    ]
    assert [r["module"] for r in rows][:3] == ["features.0", "features.1", "features.2"]
    by_name = {r["name"]: r for r in rows}
    assert by_name["fc6"]["shape"] == [4096] and by_name["fc8"]["shape"] == [1000]
    assert by_name["conv1"]["activation_bytes"] == 96 * 55 * 55 * 4
    assert by_name["conv1"]["macs"] == 55 * 55 * 96 * 11 * 11 * 3


def test_alexnet2012_names_its_lrn_and_dropout_layers(default_models):
    names = [r["name"] for r in summarize(default_models["alexnet2012"], 227)["rows"]]
    assert names[:8] == ["conv1", "relu1", "lrn1", "pool1", "conv2", "relu2", "lrn2", "pool2"]
    assert names[-7:] == ["fc6", "relu6", "drop6", "fc7", "relu7", "drop7", "fc8"]


def test_convnet4_rows_by_hand(default_models):
    """Figure 1's net at 67 px: each layer's map, parameters (k^2 c_in c_out + c_out) and MACs
    (output pixels x c_out x k^2 x c_in) worked out here."""
    rows = {r["name"]: r for r in summarize(default_models["convnet4"], 67)["rows"]}
    expected = {  # name: (shape, params, macs)
        "conv1": ([32, 63, 63], 25 * 3 * 32 + 32, 63 * 63 * 32 * 25 * 3),
        "pool1": ([32, 31, 31], 0, 0),
        "conv2": ([32, 27, 27], 25 * 32 * 32 + 32, 27 * 27 * 32 * 25 * 32),
        "pool2": ([32, 13, 13], 0, 0),
        "conv3": ([64, 13, 13], 25 * 32 * 64 + 64, 13 * 13 * 64 * 25 * 32),
        "pool3": ([64, 6, 6], 0, 0),
        "avgpool": ([64, 6, 6], 0, 0),
        "fc4": ([1000], 36 * 64 * 1000 + 1000, 2304 * 1000),
    }
    for name, (shape, params, macs) in expected.items():
        assert (rows[name]["shape"], rows[name]["params"], rows[name]["macs"]) == (shape, params, macs), name
    assert sum(p for _, p, _ in expected.values()) == EXPECTED["convnet4"][1]
    assert sum(m for _, _, m in expected.values()) == EXPECTED["convnet4"][2]


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("size", [None, 99])
def test_macs_match_torch_flop_counter(default_models, name, size):
    """An outside count: FlopCounterMode counts 2 FLOPs per multiply-accumulate (conv and mm)."""
    model = default_models[name]
    size = size or EXPECTED[name][0]
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    assert summarize(model, size)["totals"]["macs"] * 2 == counter.get_total_flops()


def test_summarize_leaves_the_model_alone(default_models):
    model = default_models["alexnet_owt"].train()
    before = model.features[0].weight.clone()
    summarize(model, 224)
    assert model.training
    assert model.features[0].weight.device.type == "cpu"
    assert torch.equal(model.features[0].weight, before)
    model.eval()


def test_format_table_shows_the_totals_with_thousands_separators(default_models):
    summary = summarize(default_models["alexnet"], 227)
    table = format_table(summary)
    lines = table.splitlines()
    assert "62,378,344" in lines[-1] and "1,135,256,096" in lines[-1]
    assert len(lines) == len(summary["rows"]) + 5  # title, header, rule, rows, rule, total
    assert len({len(line) for line in lines[1:]}) == 1  # every column aligned
    assert "96×55×55" in table and "MiB" in table and "KiB" in table


@pytest.mark.parametrize("name", VARIANTS)
def test_below_minimum_size_raises_naming_the_minimum(default_models, name):
    model = default_models[name]
    smallest = MIN_SIZE[name]
    with pytest.raises(ValueError, match=str(smallest)):
        summarize(model, smallest - 1)
    rows = summarize(model, smallest)["rows"]
    assert rows[-1]["shape"] == [1000]
