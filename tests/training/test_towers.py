"""towers.py: alexnet2012's two towers on two devices, against the one-device network.

The reference is ``build_model("alexnet2012")`` itself (grouped convolutions and LRN over all
channels on one device): the split network must give its logits, its state_dict, its SGD step, and
a two-tower training run must write a checkpoint the one-device network evaluates. On the CPU the
towers are ``cpu,cpu`` (the same code: every exchange is a ``.to(device)`` and a ``cat``); the
CUDA tests run where the machine has the devices.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from alexnet.config import TrainConfig
from alexnet.formats import read_model
from alexnet.models import AlexNet, build_model
from alexnet.system import runtime
from alexnet.training import engine, towers
from alexnet.training.optim import make_optimizer
from alexnet.training.towers import TwoTowers

from conftest import write_idx_set
from helpers import _main, _one_line_error

CPU2 = ("cpu", "cpu")
TIGHT = dict(rtol=1e-5, atol=1e-5)


def _loud(model: AlexNet) -> AlexNet:
    """Kaiming-initialized weights leave conv1's maps near 1, where LRN (k=2, alpha=1e-4) hardly
    changes anything; conv1 100 times louder makes the normalization - and its border maps - count."""
    with torch.no_grad():
        model.features[0].weight.mul_(100)
    return model


def _reference(seed=0, **kw) -> AlexNet:
    torch.manual_seed(seed)
    return _loud(build_model("alexnet2012", init="kaiming", dropout=0.0, **kw))


@pytest.fixture(scope="module")
def pair() -> tuple[AlexNet, TwoTowers]:
    """A one-device alexnet2012 of 7 classes (FC8 splits 4 + 3) and its split on cpu,cpu, in eval
    mode; tests that train or load other weights work on copies."""
    ref = _reference(num_classes=7).eval()
    return ref, TwoTowers(ref, CPU2).eval()


def _per_tower_lrn(layers, hs):
    """LRN within each tower's own maps, borrowing nothing: what the split would do without the border maps."""
    return [layer(h) for layer, h in zip(layers, hs)]


def _check_logits(ref: AlexNet, split: TwoTowers, x: torch.Tensor, monkeypatch) -> None:
    with torch.no_grad():
        expected, got = ref(x), split(x)
        assert got.shape == expected.shape
        assert torch.allclose(got, expected, **TIGHT), (got - expected).abs().max()
        assert torch.allclose(split.embed(x), ref.embed(x), **TIGHT)
        if any(isinstance(m, nn.LocalResponseNorm) for m in ref.features):
            # the test can fail: without the 2 borrowed border maps the logits differ
            monkeypatch.setattr(towers, "_lrn_borrowing", _per_tower_lrn)
            assert not torch.allclose(split(x), expected, **TIGHT)


@pytest.mark.parametrize("size", [227, 67])
def test_split_gives_the_one_device_logits(pair, size, monkeypatch):
    _check_logits(*pair, torch.randn(3, 3, size, size), monkeypatch)


def test_split_gives_the_one_device_logits_for_gray_images_without_lrn(monkeypatch):
    ref = _reference(num_classes=3, in_channels=1, lrn=False).eval()
    _check_logits(ref, TwoTowers(ref, CPU2).eval(), torch.randn(3, 1, 67, 67), monkeypatch)


def test_lrn_borrowing_matches_lrn_over_all_channels():
    """Straight against nn.LocalResponseNorm over all 96 maps, with activations large enough that
    every map's neighbours change its value."""
    lrn = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)
    h = torch.rand(2, 96, 9, 9) * 300
    full = lrn(h)
    got = torch.cat(towers._lrn_borrowing([lrn, lrn], [h[:, :48], h[:, 48:]]), 1)
    assert torch.allclose(got, full, rtol=1e-6, atol=0)
    own = torch.cat(_per_tower_lrn([lrn, lrn], [h[:, :48], h[:, 48:]]), 1)
    border = [46, 47, 48, 49]  # the maps whose window crosses the towers' boundary
    assert not torch.allclose(own[:, border], full[:, border], rtol=1e-3, atol=0)
    assert torch.equal(torch.cat([own[:, :46], own[:, 50:]], 1), torch.cat([full[:, :46], full[:, 50:]], 1))


def test_state_dict_has_the_one_device_keys_and_loads_both_ways(pair):
    ref, split = pair
    got, expected = split.state_dict(), ref.state_dict()
    assert list(got) == list(expected)
    for key, value in expected.items():
        assert got[key].shape == value.shape and torch.equal(got[key], value), key

    # each device holds its own half of every parameter: no full-size copy behind the towers
    assert sum(p.numel() for p in split.parameters()) == sum(p.numel() for p in ref.parameters())
    assert len(list(split.parameters())) == 2 * len(list(ref.parameters()))

    # a one-device state_dict (other weights) into a split network, strict
    other = build_model("alexnet2012", num_classes=7, init="torch").eval()
    assert not torch.equal(other.state_dict()["features.0.weight"], expected["features.0.weight"])
    copy_ = copy.deepcopy(split)
    copy_.load_state_dict(other.state_dict())
    loaded = copy_.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in other.state_dict().items())
    # ... and the split network's state_dict into the one-device network, strict
    other.load_state_dict(split.state_dict())
    x = torch.randn(2, 3, 67, 67)
    with torch.no_grad():
        assert torch.allclose(other(x), split(x), **TIGHT)


def test_loading_names_the_one_device_keys_that_do_not_fit(pair):
    ref, split = pair  # every load below offers ref's own values: split is left as it was
    state = ref.state_dict()
    del state["features.0.bias"]
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "features.0.bias"\.'):
        split.load_state_dict(state)
    result = split.load_state_dict(state, strict=False)
    assert result.missing_keys == ["features.0.bias"] and result.unexpected_keys == []
    state = {**ref.state_dict(), "classifier.6.weight": torch.zeros(5, 4096)}  # FC8 of 5 classes, not 7
    with pytest.raises(RuntimeError, match=r"size mismatch for classifier.6.weight: .*\[5, 4096\].*\[7, 4096\]"):
        split.load_state_dict(state)
    with pytest.raises(RuntimeError, match=r'Unexpected key\(s\) in state_dict: "extra"'):
        split.load_state_dict({**ref.state_dict(), "extra": torch.zeros(1)})
    unchanged = split.state_dict()
    assert all(torch.equal(unchanged[k], v) for k, v in ref.state_dict().items())


@pytest.mark.slow
def test_sgd_steps_give_the_one_device_weights(pair):
    """Two training steps (fused SGD, momentum, weight decay) with dropout 0, then one under bf16
    autocast on the two CPU devices."""
    ref, split = (copy.deepcopy(m).train() for m in pair)
    cfg = TrainConfig(model="alexnet2012", lr=0.01)
    opt_ref, opt_split = make_optimizer(ref, cfg), make_optimizer(split, cfg)
    cpu = torch.device("cpu")
    for step in range(2):
        x, y = torch.randn(8, 3, 67, 67), torch.randint(0, 7, (8,))
        loss_ref = engine.train_step(ref, x, y, opt_ref, device=cpu).loss
        loss_split = engine.train_step(split, x, y, opt_split, device=cpu).loss
        assert torch.allclose(loss_split, loss_ref, rtol=1e-5), step
    before, after, moved = pair[0].state_dict(), split.state_dict(), 0
    for key, value in ref.state_dict().items():
        assert torch.allclose(after[key], value, rtol=1e-4, atol=1e-6), key
        moved += not torch.equal(value, before[key])
    assert moved == len(before)  # every parameter took the steps

    with torch.no_grad(), engine.autocast(cpu, "bf16"):
        expected, got = ref.eval()(x).float(), split.eval()(x).float()
    assert torch.allclose(got, expected, rtol=0.05, atol=0.05 * expected.abs().max().item())
    loss = engine.train_step(split.train(), x, y, opt_split, device=cpu, precision="bf16").loss
    assert torch.isfinite(loss)


# --------------------------------------------------------------------------------------------
# The setting and a real run


@pytest.mark.parametrize(
    "argv, names",
    [
        (["--model", "alexnet2012", "--model-parallel", "cpu"], "exactly two devices"),
        (["--model", "alexnet2012", "--model-parallel", "cpu,cpu,cpu"], "exactly two devices"),
        (["--model", "alexnet2012", "--model-parallel", "cpu,"], "exactly two devices"),
        (["--model-parallel", "cpu,cpu"], "does not apply to --model alexnet"),
        (["--model", "alexnet_owt", "--model-parallel", "cpu,cpu"], "does not apply to --model alexnet_owt"),
        (["--model", "alexnet2012", "--model-parallel", "cpu,gpu0"], "'gpu0' is not a device"),
        (["--model", "alexnet2012", "--model-parallel", "cpu,cuda:0"], "devices of one kind"),
        (["--model", "alexnet2012", "--model-parallel", "cpu,cpu", "--device", "cpu"], "leave out --device cpu"),
    ],
    ids=["one", "three", "empty", "alexnet", "alexnet_owt", "unknown", "mixed", "with-device"],
)
def test_bad_values_are_refused_in_one_line(capsys, tmp_path, idx_folder, argv, names):
    code, _, err = _main(capsys, "train", "--data", str(idx_folder.path), *argv, "--out", str(tmp_path), "--name", "r")
    assert code == 2 and names in _one_line_error(err), err
    assert err.startswith("alexnet train: error: --model-parallel")
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(torch.cuda.device_count() >= 2, reason="this machine has two CUDA devices")
def test_devices_this_machine_lacks_are_refused_in_one_line(capsys, tmp_path, idx_folder):
    code, _, err = _main(
        capsys,
        "train",
        "--data",
        str(idx_folder.path),
        "--model",
        "alexnet2012",
        "--model-parallel",
        "cuda:0,cuda:1",
        "--out",
        str(tmp_path),
        "--name",
        "r",
    )
    assert code == 2 and "is not on this machine" in _one_line_error(err)
    assert not (tmp_path / "r").exists()


def _train(capsys, data, out, name, *extra):
    args = [
        "train",
        "--data",
        str(data),
        "--model",
        "alexnet2012",
        "--init",
        "kaiming",
        "--dropout",
        "0",
        "--precision",
        "fp32",
        "--batch-size",
        "64",
        "--image-size",
        "67",
        "--seed",
        "1",
        "--schedule",
        "constant",
        "--lr",
        "0.01",
        "--out",
        str(out),
        "--name",
        name,
        *extra,
    ]
    code, stdout, err = _main(capsys, *args)
    assert code == 0, err
    return out / name


@pytest.mark.slow
def test_a_two_tower_run_writes_a_checkpoint_the_one_device_network_evaluates(capsys, tmp_path, idx_folder):
    # 128 training images: 2 steps an epoch of 64
    data = write_idx_set(
        tmp_path / "data",
        idx_folder,
        train_images=idx_folder.train_images[:128],
        train_labels=idx_folder.train_labels[:128],
    )
    run = _train(capsys, data, tmp_path, "split", "--epochs", "1", "--model-parallel", "cpu,cpu")
    assert json.loads((run / "config.json").read_text())["model_parallel"] == "cpu,cpu"
    # --resume rebuilds the towers and continues from their optimizer state, exactly
    code, _, err = _main(capsys, "train", "--resume", str(run), "--epochs", "2")
    assert code == 0, err
    through = _train(capsys, data, tmp_path, "through", "--epochs", "2", "--model-parallel", "cpu,cpu")
    resumed, uninterrupted = (read_model(r / "checkpoints/last.pt").weights for r in (run, through))
    assert all(torch.equal(resumed[k], v) for k, v in uninterrupted.items())
    plain = _train(capsys, data, tmp_path, "plain", "--epochs", "2")

    model_file = read_model(run / "checkpoints/last.pt")
    network = model_file.network()  # strict load into the one-device alexnet2012
    assert type(network) is AlexNet and any(getattr(m, "groups", 1) == 2 for m in network.features)
    reference = read_model(plain / "checkpoints/last.pt").weights
    assert list(model_file.weights) == list(reference)
    for key, value in reference.items():  # 4 SGD steps from the same seed, one device or two
        assert torch.allclose(model_file.weights[key], value, rtol=1e-3, atol=1e-5), key

    # the one-device network evaluates the checkpoint to what the towers measured in training
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    code, out, err = _main(capsys, "evaluate", "--checkpoint", str(run / "checkpoints/last.pt"), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["top1"] == pytest.approx(metrics[-1]["val_top1"]) and result["loss"] == pytest.approx(
        metrics[-1]["val_loss"], rel=1e-4
    )


# --------------------------------------------------------------------------------------------
# CUDA: skipped unless the machine has the devices


def _cuda_case(devices: str, needed: int):
    return pytest.param(
        devices, marks=pytest.mark.skipif(torch.cuda.device_count() < needed, reason=f"needs {needed} CUDA device(s)")
    )


@pytest.mark.parametrize("devices", [_cuda_case("cuda:0,cuda:1", 2), _cuda_case("cuda:0,cuda:0", 1)])
def test_cuda_towers_give_the_one_device_logits_and_step(devices, monkeypatch):
    devs = runtime.resolve_devices(devices)
    ref = _reference(num_classes=10, dropout=0.0).to(devs[0])
    split = TwoTowers(ref, devs, channels_last=True)
    assert [p.device for p in split.towers[1].parameters()][0] == devs[1]
    x = torch.randn(4, 3, 227, 227, device=devs[0])
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # fp32 convolutions, for a tight comparison
    with torch.no_grad():
        expected, got = ref.eval()(x), split.eval()(x)
    assert got.device == devs[0] and torch.allclose(got, expected, rtol=1e-4, atol=1e-4)
    cfg = TrainConfig(model="alexnet2012", lr=0.01)
    y = torch.randint(0, 10, (4,), device=devs[0])
    for model in (ref, split):
        engine.train_step(model.train(), x, y, make_optimizer(model, cfg), device=devs[0], precision="fp32")
    after = split.state_dict()
    for key, value in ref.state_dict().items():
        assert torch.allclose(after[key], value, rtol=1e-3, atol=1e-5), key
    loss = engine.train_step(split, x, y, make_optimizer(split, cfg), device=devs[0], precision="bf16").loss
    assert torch.isfinite(loss)
