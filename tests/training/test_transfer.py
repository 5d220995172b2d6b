"""--init-from, --freeze, --freeze-epochs, --transfer-lr-mult: what a run copies, adapts and keeps,
checked against the source file's own tensors (bit for bit where the weights are frozen), against
torch's convolution for conv1's adaptation, against torchvision's own model written to a file, and
torch's SGD against the claim the freezing rests on: it skips a parameter without a gradient."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from alexnet.config import TrainConfig
from alexnet.data.transforms import resize_size
from alexnet.models import build_model
from alexnet.training import transfer
from alexnet.training.loop import train
from alexnet.training.optim import STATE_BUFFERS, PaperSGD, make_optimizer, start_buffers

from helpers import PREPROCESS, _checkpoint, _main, _one_line_error

MODEL = "alexnet_tiny"  # the document's layers at a test size: the claims here are not about the network's size
# alexnet_tiny has the document's layers, no LRN: conv1..conv5 are features 0, 3, 6, 8, 10; fc6..fc8 classifier 1, 4, 6
KEYS = {
    "conv1": "features.0",
    "conv2": "features.3",
    "conv3": "features.6",
    "conv4": "features.8",
    "conv5": "features.10",
    "fc6": "classifier.1",
    "fc7": "classifier.4",
    "fc8": "classifier.6",
}
RUN = dict(model=MODEL, image_size=67, batch_size=32, checkpoint_every=None, step_log=0)


def _source(path, *, classes=None, in_channels=1, seed=5):
    """A checkpoint of a gray alexnet_tiny with random weights (alexnet convert's kind of file)."""
    torch.manual_seed(seed)
    names = classes or [str(i) for i in range(10)]
    weights = build_model(MODEL, num_classes=len(names), in_channels=in_channels).state_dict()
    state = _checkpoint(weights, model=MODEL, classes=len(names))
    state["classes"] = names
    torch.save(state, path)
    return path, weights


def _weights(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]


def _same(a, b, layer):
    return all(torch.equal(a[f"{KEYS[layer]}.{p}"], b[f"{KEYS[layer]}.{p}"]) for p in ("weight", "bias"))


@pytest.mark.parametrize("kind", ["fused", "foreach", "paper"])
def test_sgd_skips_a_parameter_without_a_gradient(kind):
    """What --freeze-epochs relies on: a parameter in the optimizer whose requires_grad is off gets
    no momentum and no weight decay step, with torch's fused and foreach SGD and the paper's; once
    it trains (a zero buffer given, as fused SGD needs) it follows the steps torch's own first step
    starts, the foreach update being the reference."""

    def run(kind, buffers):
        torch.manual_seed(0)
        still, moving = torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(3))
        if kind == "paper":
            optimizer = PaperSGD([still, moving], lr=0.1, momentum=0.9, weight_decay=0.1)
        else:
            optimizer = torch.optim.SGD([still, moving], lr=0.1, momentum=0.9, weight_decay=0.1, **{kind: True})
        before = still.detach().clone()
        still.requires_grad_(False)
        for step in range(6):
            if step == 3:  # unfrozen
                assert torch.equal(still.detach(), before) and still not in optimizer.state
                assert moving in optimizer.state
                still.requires_grad_(True)
                if buffers:
                    start_buffers(optimizer, STATE_BUFFERS["paper" if kind == "paper" else "sgd"])
            optimizer.zero_grad(set_to_none=True)
            (torch.arange(12.0).view(4, 3) * still + moving).sum().backward()
            optimizer.step()
        return still.detach()

    torch.testing.assert_close(run(kind, buffers=True), run("foreach" if kind != "paper" else kind, buffers=False))


def test_frozen_layers_keep_the_source_bit_for_bit_through_training_and_resume(idx_folder, tmp_path):
    src, weights = _source(tmp_path / "source.pt")
    cfg = TrainConfig(
        data=str(idx_folder.path),
        init_from=str(src),
        freeze="conv3",
        epochs=1,
        schedule="constant",
        out=str(tmp_path),
        name="ft",
        **RUN,
    )
    train(cfg, quiet=True)
    run = tmp_path / "ft"
    record = json.loads((run / "transfer.json").read_text())
    src.unlink()  # a resumed run needs only its checkpoint
    train(TrainConfig(), resume=run, epochs=2, quiet=True)  # one more epoch, from the checkpoint alone
    after = _weights(run)
    assert all(_same(after, weights, layer) for layer in ("conv1", "conv2", "conv3"))
    assert not any(_same(after, weights, layer) for layer in ("conv4", "conv5", "fc6", "fc7", "fc8"))
    assert record["copied"] == list(KEYS) and record["new"] == [] and record["frozen"] == ["conv1", "conv2", "conv3"]
    config = json.loads((run / "config.json").read_text())
    assert config["init_from"] == str(src) and config["init_sha256"] == record["sha256"] and len(record["sha256"]) == 64
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["optimizer"]
    assert len(state["param_groups"][0]["params"]) == len(weights) - 6  # conv1..conv3's six tensors are not in it


def test_freeze_epochs_trains_the_copied_layers_from_that_epoch(idx_folder, tmp_path):
    src, weights = _source(tmp_path / "source.pt", classes=[f"c{i}" for i in range(10)])  # other names: new fc8
    cfg = TrainConfig(
        data=str(idx_folder.path),
        init_from=str(src),
        freeze_epochs=1,
        epochs=1,
        schedule="constant",
        out=str(tmp_path),
        name="ft",
        **RUN,
    )
    train(cfg, quiet=True)
    first = _weights(tmp_path / "ft")
    assert all(_same(first, weights, layer) for layer in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"))
    assert not _same(first, weights, "fc8")  # the head: new, and trained in the frozen epoch
    train(TrainConfig(), resume=tmp_path / "ft", epochs=2, quiet=True)  # epoch 2: the copied layers train
    second = _weights(tmp_path / "ft")
    assert not any(_same(second, weights, layer) for layer in ("conv1", "conv5", "fc7"))


def test_the_head_is_new_only_when_the_classes_differ(tmp_path):
    names = [str(i) for i in range(10)]
    src, weights = _source(tmp_path / "source.pt", classes=names)
    source = transfer.read_source(src)
    for classes, copied in ((names, True), (names[::-1], False), (names[:4], False)):
        torch.manual_seed(0)
        net = build_model(MODEL, num_classes=len(classes), in_channels=1)
        torch.manual_seed(0)
        fresh = build_model(MODEL, num_classes=len(classes), in_channels=1).state_dict()
        record = transfer.initialise(net, source, TrainConfig(init_from=str(src)), classes)
        got = net.state_dict()
        assert _same(got, weights, "fc7")
        assert _same(got, weights if copied else fresh, "fc8"), classes
        assert ("fc8" in record["copied"]) == copied and (record["new"] == ([] if copied else ["fc8"]))


def test_copy_up_to_copies_the_layers_below_and_initialises_the_rest(tmp_path):
    src, weights = _source(tmp_path / "source.pt")
    torch.manual_seed(1)
    net = build_model(MODEL, num_classes=10, in_channels=1)
    torch.manual_seed(1)
    fresh = build_model(MODEL, num_classes=10, in_channels=1).state_dict()
    record = transfer.initialise(
        net, transfer.read_source(src), TrainConfig(init_from=str(src), copy_up_to="conv4"), []
    )
    got = net.state_dict()
    assert all(_same(got, weights, n) for n in ("conv1", "conv2", "conv3", "conv4"))
    assert all(_same(got, fresh, n) for n in ("conv5", "fc6", "fc7", "fc8"))
    assert record["new"] == ["conv5", "fc6", "fc7", "fc8"]


def test_layers_are_matched_by_place_not_by_state_dict_index(tmp_path):
    """A file with LRN layers (features indices shifted) fits the same network without them."""
    torch.manual_seed(2)
    with_lrn = build_model("alexnet2012", num_classes=10, in_channels=1, lrn=True)
    state = _checkpoint(with_lrn.state_dict(), model="alexnet2012", lrn=True)
    torch.save(state, tmp_path / "lrn.pt")
    net = build_model("alexnet2012", num_classes=10, in_channels=1, lrn=False)
    transfer.initialise(net, transfer.read_source(tmp_path / "lrn.pt"), TrainConfig(init_from="x"), state["classes"])
    convs = [m for m in net.features if isinstance(m, torch.nn.Conv2d)]
    theirs = [m for m in with_lrn.features if isinstance(m, torch.nn.Conv2d)]
    assert all(torch.equal(a.weight, b.weight) for a, b in zip(convs, theirs)) and len(convs) == 5


@pytest.mark.parametrize("have, want", [(3, 1), (1, 3)])
def test_conv1_adapted_to_the_datas_channels_responds_as_the_source(tmp_path, have, want):
    """RGB -> gray sums the kernels; gray -> RGB repeats them / 3: the adapted conv1 on a gray image
    (or on it given as RGB) equals the source's conv1 on the same image given its way."""
    src, weights = _source(tmp_path / "source.pt", in_channels=have)
    if have == 3:
        state = torch.load(src, weights_only=True)
        state["preprocess"] = {**PREPROCESS, "mode": "RGB", "mean": [0.3] * 3, "std": [0.3] * 3}
        torch.save(state, src)
    net = build_model(MODEL, num_classes=10, in_channels=want)
    record = transfer.initialise(
        net, transfer.read_source(src), TrainConfig(init_from=str(src)), [str(i) for i in range(10)]
    )
    w = weights["features.0.weight"]
    expected = w[:, 0:1] + w[:, 1:2] + w[:, 2:3] if have == 3 else torch.cat([w, w, w], 1) / 3
    assert torch.allclose(net.features[0].weight, expected, rtol=1e-6, atol=1e-7) and "conv1" in record["adapted"]
    gray = torch.rand(2, 1, 67, 67)
    ours = F.conv2d(gray if want == 1 else gray.repeat(1, 3, 1, 1), net.features[0].weight, stride=4)
    theirs = F.conv2d(gray.repeat(1, 3, 1, 1) if have == 3 else gray, w, stride=4)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_transfer_lr_mult_gives_the_copied_layers_their_own_rate(tmp_path):
    src, _ = _source(tmp_path / "source.pt")
    cfg = TrainConfig(init_from=str(src), freeze="conv2", transfer_lr_mult=0.1, lr=0.02, schedule="constant")
    net = build_model(MODEL, num_classes=10, in_channels=1)
    groups = make_optimizer(net, cfg, fused=False).param_groups
    params = dict(net.named_parameters())
    by_layer = {k: [params[f"{v}.weight"], params[f"{v}.bias"]] for k, v in KEYS.items()}
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert [g["lr"] for g in groups] == [0.02, pytest.approx(0.002)]
    assert ids(groups[0]["params"]) == ids(by_layer["fc8"])
    assert ids(groups[1]["params"]) == ids(p for n in ("conv3", "conv4", "conv5", "fc6", "fc7") for p in by_layer[n])


def test_torchvision_weights_fine_tune_on_an_rgb_folder(image_folder, tmp_path, capsys):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(3)
    tv = torchvision.models.alexnet().state_dict()
    torch.save(tv, tmp_path / "alexnet-owt-test.pth")
    rc, out, err = _main(
        capsys,
        "train",
        "--init-from",
        str(tmp_path / "alexnet-owt-test.pth"),
        "--data",
        str(image_folder),
        "--freeze",
        "features",
        "--epochs",
        "1",
        "--image-size",
        "67",
        "--batch-size",
        "8",
        "--workers",
        "0",
        "--val-fraction",
        "0.25",
        "--out",
        str(tmp_path),
        "--name",
        "rgb",
    )
    assert rc == 0, err
    run = tmp_path / "rgb"
    assert "copied conv1..fc7, new fc8" in out
    assert json.loads((run / "config.json").read_text())["model"] == "alexnet_owt"  # from the file
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    for i in (0, 3, 6, 8, 10):  # torchvision's conv1..conv5, frozen
        assert torch.equal(ckpt["model"][f"features.{i}.weight"], tv[f"features.{i}.weight"])
    assert ckpt["model"]["classifier.6.weight"].shape == (3, 4096)
    pre = ckpt["preprocess"]  # torchvision's ImageNet normalization and shorter-side 256/224 rule
    assert pre["mean"] == pytest.approx([0.485, 0.456, 0.406]) and pre["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert pre["resize"] == resize_size(67) and pre.get("resize_to", "shorter") == "shorter"
    rc, _, err = _main(capsys, "evaluate", "--checkpoint", str(run / "checkpoints" / "last.pt"), "--json")
    assert rc == 0, err


def test_torchvision_weights_fine_tune_on_grayscale_data(idx_folder, tmp_path, capsys):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(4)
    tv = torchvision.models.alexnet().state_dict()
    torch.save(tv, tmp_path / "alexnet-owt-test.pth")
    rc, out, err = _main(
        capsys,
        "train",
        "--init-from",
        str(tmp_path / "alexnet-owt-test.pth"),
        "--data",
        str(idx_folder.path),
        "--freeze",
        "conv1",
        "--epochs",
        "1",
        "--image-size",
        "67",
        "--batch-size",
        "32",
        "--out",
        str(tmp_path),
        "--name",
        "gray",
    )
    assert rc == 0, err
    ckpt = torch.load(tmp_path / "gray" / "checkpoints" / "last.pt", weights_only=True)
    w = tv["features.0.weight"]
    assert torch.allclose(ckpt["model"]["features.0.weight"], w[:, :1] + w[:, 1:2] + w[:, 2:], rtol=1e-6, atol=1e-7)
    pre = ckpt["preprocess"]  # gray: the mean of ImageNet's three means and of its three stds
    assert pre["mean"] == pytest.approx([(0.485 + 0.456 + 0.406) / 3]) and pre["std"] == pytest.approx([0.226])
    assert pre["kind"] == "tensor" and ckpt["config"]["image_size"] == 67


def test_transfer_errors_are_one_line(idx_folder, tmp_path, capsys):
    src, _ = _source(tmp_path / "source.pt")
    common = ["--data", str(idx_folder.path), "--epochs", "1", "--out", str(tmp_path)]
    rc, _, err = _main(capsys, "train", "--init-from", str(src), "--model", "alexnet_owt", *common)
    line = _one_line_error(err)
    assert rc == 2 and f"{MODEL}'s layers" in line and "--model alexnet_owt" in line
    rc, _, err = _main(capsys, "train", "--init-from", str(src), "--freeze", "conv6", *common)
    line = _one_line_error(err)
    assert rc == 2 and "--freeze 'conv6' is not one of: conv1, conv2" in line
    rc, _, err = _main(capsys, "train", "--init-from", str(src), "--classes", "3,sandal", *common)
    line = _one_line_error(err)
    assert rc == 1 and "--classes sandal" in line and "0, 1, 2" in line
    rc, _, err = _main(capsys, "train", "--freeze", "conv2", *common)
    assert rc == 2 and "give --init-from FILE" in _one_line_error(err)
    rc, _, err = _main(capsys, "train", "--init-from", str(src), "--copy-up-to", "conv2", "--freeze", "conv4", *common)
    assert rc == 2 and "freeze at most conv2" in _one_line_error(err)
    rc, _, err = _main(capsys, "train", "--init-from", str(tmp_path / "missing.pt"), *common)
    assert rc == 2 and "no such file" in _one_line_error(err)
