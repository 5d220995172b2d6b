"""formats/caffe.py and ``alexnet convert``: a ``.caffemodel`` written here with Caffe's schema
from known tensors (bvlc_alexnet's layers, in both of Caffe's layer formats) becomes an
``alexnet2012`` whose outputs are those of an independent forward pass written below in plain
tensor ops, the way Caffe computes (LRN with k = 1, BGR input in 0..255 less the mean), and whose
recorded preprocessing :class:`Predictor` applies."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from alexnet.data.transforms import Preprocess
from alexnet.formats import CheckpointError, read_model
from alexnet.formats import caffe_pb2 as pb
from alexnet.formats.caffe import IMAGENET_BGR_MEAN
from alexnet.inference.predict import Predictor

from helpers import _one_line_error, _run

# bvlc_alexnet's deploy.prototxt: (name, type, settings, weight shape) of the layers with weights
CONVS = {
    "conv1": dict(num_output=96, kernel_size=11, stride=4, pad=0, group=1, shape=(96, 3, 11, 11)),
    "conv2": dict(num_output=256, kernel_size=5, stride=1, pad=2, group=2, shape=(256, 48, 5, 5)),
    "conv3": dict(num_output=384, kernel_size=3, stride=1, pad=1, group=1, shape=(384, 256, 3, 3)),
    "conv4": dict(num_output=384, kernel_size=3, stride=1, pad=1, group=2, shape=(384, 192, 3, 3)),
    "conv5": dict(num_output=256, kernel_size=3, stride=1, pad=1, group=2, shape=(256, 192, 3, 3)),
}
FCS = {"fc6": (4096, 9216), "fc7": (4096, 4096), "fc8": (None, 4096)}
DEPLOY = [  # (name, type) in order; Input and Softmax are the deploy net's ends
    ("data", "Input"),
    ("conv1", "Convolution"),
    ("relu1", "ReLU"),
    ("norm1", "LRN"),
    ("pool1", "Pooling"),
    ("conv2", "Convolution"),
    ("relu2", "ReLU"),
    ("norm2", "LRN"),
    ("pool2", "Pooling"),
    ("conv3", "Convolution"),
    ("relu3", "ReLU"),
    ("conv4", "Convolution"),
    ("relu4", "ReLU"),
    ("conv5", "Convolution"),
    ("relu5", "ReLU"),
    ("pool5", "Pooling"),
    ("fc6", "InnerProduct"),
    ("relu6", "ReLU"),
    ("drop6", "Dropout"),
    ("fc7", "InnerProduct"),
    ("relu7", "ReLU"),
    ("drop7", "Dropout"),
    ("fc8", "InnerProduct"),
    ("prob", "Softmax"),
]
V1_TYPE = {
    "Convolution": "CONVOLUTION",
    "ReLU": "RELU",
    "LRN": "LRN",
    "Pooling": "POOLING",
    "InnerProduct": "INNER_PRODUCT",
    "Dropout": "DROPOUT",
    "Softmax": "SOFTMAX",
    "Input": "MEMORY_DATA",
}


def known_tensors(num_classes: int, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Weights and biases in Caffe's shapes, He-scaled so activations stay in the range where LRN's
    k and the mean matter (conv1 sees pixels of +-128: its maps reach ~100)."""
    rng = np.random.default_rng(seed)
    shapes = {name: c["shape"] for name, c in CONVS.items()} | {n: (o or num_classes, i) for n, (o, i) in FCS.items()}
    out = {}
    for name, shape in shapes.items():
        fan_in = int(np.prod(shape[1:]))
        scale = 0.05 if name == "conv1" else np.sqrt(2 / fan_in)
        out[name] = (
            (rng.standard_normal(shape) * scale).astype(np.float32),
            (rng.standard_normal(shape[0]) * 0.1).astype(np.float32),
        )
    return out


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _blob(values: np.ndarray, legacy: bool) -> pb.BlobProto:
    """A BlobProto of ``values``: shape in ``shape`` (current Caffe) or in num, channels, height,
    width padded with leading 1s (legacy). The floats go in as protobuf's packed encoding of field
    5 (``data``), parsed by the schema: 60 M floats through ``extend`` would take most of a minute."""
    blob = pb.BlobProto()
    if legacy:
        blob.num, blob.channels, blob.height, blob.width = (1,) * (4 - values.ndim) + values.shape
    else:
        blob.shape.dim.extend(values.shape)
    raw = values.astype("<f4").tobytes()
    blob.MergeFromString(bytes([5 << 3 | 2]) + _varint(len(raw)) + raw)
    return blob


def write_caffemodel(path, tensors, *, v1: bool = False, order=DEPLOY, k: float = 1.0) -> None:
    """bvlc_alexnet's net with ``tensors``, as Caffe writes it: ``layer`` entries, or V1 ``layers``."""
    net = pb.NetParameter(name="AlexNet")
    for name, kind in order:
        layer = net.layers.add() if v1 else net.layer.add()
        layer.name = name
        if v1:
            layer.type = pb.V1LayerParameter.LayerType.Value(V1_TYPE[kind])
        else:
            layer.type = kind
        if kind == "Convolution":
            c = CONVS[name]
            p = layer.convolution_param
            p.num_output, p.group = c["num_output"], c["group"]
            p.kernel_size.append(c["kernel_size"])
            p.stride.append(c["stride"])
            p.pad.append(c["pad"])
        elif kind == "LRN":
            layer.lrn_param.local_size, layer.lrn_param.alpha, layer.lrn_param.beta, layer.lrn_param.k = (
                5,
                1e-4,
                0.75,
                k,
            )
        elif kind == "Pooling":
            layer.pooling_param.pool, layer.pooling_param.kernel_size, layer.pooling_param.stride = 0, 3, 2
        elif kind == "InnerProduct":
            layer.inner_product_param.num_output = (
                tensors[name][0].shape[0] if name in tensors else FCS[name][0] or 1000
            )
        elif kind == "Dropout":
            layer.dropout_param.dropout_ratio = 0.5
        if name in tensors:
            layer.blobs.extend(_blob(t, legacy=v1) for t in tensors[name])
    path.write_bytes(net.SerializeToString())


def caffe_forward(x: torch.Tensor, tensors, k: float = 1.0) -> torch.Tensor:
    """Caffe's forward pass of bvlc_alexnet on ``x`` (N, 3, 227, 227): BGR, 0..255 less the mean.
    Groups as Caffe computes them (each half of the inputs through its half of the filters), LRN
    as Caffe's formula x / (k + alpha/n * sum of x^2 over n maps)^beta, pooling rounding up."""
    t = {name: (torch.from_numpy(w), torch.from_numpy(b)) for name, (w, b) in tensors.items()}

    def conv(x, name):
        (w, b), c = t[name], CONVS[name]
        xs, ws, bs = x.chunk(c["group"], 1), w.chunk(c["group"], 0), b.chunk(c["group"], 0)
        return torch.cat(
            [F.conv2d(xi, wi, bi, stride=c["stride"], padding=c["pad"]) for xi, wi, bi in zip(xs, ws, bs)], 1
        )

    def lrn(x, n=5, alpha=1e-4, beta=0.75):
        squares = F.pad(x * x, (0, 0, 0, 0, n // 2, n // 2))  # zero maps beyond the ends, as Caffe pads
        window = sum(squares[:, i : i + x.shape[1]] for i in range(n))
        return x / (k + alpha / n * window) ** beta

    def pool(x):
        return F.max_pool2d(x, 3, 2, ceil_mode=True)

    x = pool(lrn(conv(x, "conv1").relu()))
    x = pool(lrn(conv(x, "conv2").relu()))
    x = pool(conv(conv(conv(x, "conv3").relu(), "conv4").relu(), "conv5").relu()).flatten(1)
    for name in ("fc6", "fc7"):
        x = F.linear(x, *t[name]).relu()
    return F.linear(x, *t["fc8"])


@pytest.fixture(scope="module")
def caffemodels(tmp_path_factory):
    """The same net in both formats: ImageNet's 1000 classes (layer), 10 classes (V1 layers)."""
    root = tmp_path_factory.mktemp("caffe")
    made = {}
    for fmt, classes in (("layer", 1000), ("v1", 10)):
        tensors = known_tensors(classes, seed=classes)
        path = root / f"bvlc_alexnet_{fmt}.caffemodel"
        write_caffemodel(path, tensors, v1=fmt == "v1")
        made[fmt] = (path, tensors)
    return made


def caffe_input(n: int, seed: int = 1) -> torch.Tensor:
    """Images as Caffe's network takes them: BGR pixels 0..255 less the mean."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 227, 227), generator=g).float() - torch.tensor(IMAGENET_BGR_MEAN).view(
        1, 3, 1, 1
    )


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["layer", "v1"])
def test_caffemodel_gives_caffes_outputs(fmt, caffemodels):
    path, tensors = caffemodels[fmt]
    model = read_model(path)  # .caffemodel: read by its suffix
    assert model.config["model"] == "alexnet2012" and model.config["lrn_k"] == 1.0
    assert len(model.classes) == len(tensors["fc8"][1])
    assert model.classes[0] == ("tench" if fmt == "layer" else "0")
    net = model.network().eval()
    assert [m.k for m in net.modules() if isinstance(m, torch.nn.LocalResponseNorm)] == [1.0, 1.0]
    x = caffe_input(2)
    with torch.no_grad():
        ours, theirs = net(x), caffe_forward(x, tensors)
    assert theirs.abs().max() > 1  # the comparison has something to compare
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4 * float(theirs.abs().max()))
    with torch.no_grad():  # and the paper's k = 2 would not have matched: the test can fail
        assert not torch.allclose(
            net(x), caffe_forward(x, tensors, k=2.0), rtol=1e-2, atol=1e-2 * float(theirs.abs().max())
        )


def _stripes() -> Image.Image:
    """512 x 256: red, green, blue and white quarters, left to right, with some noise."""
    rng = np.random.default_rng(3)
    colours = np.repeat(np.array([[250, 5, 5], [5, 250, 5], [5, 5, 250], [250, 250, 250]], np.uint8), 128, axis=0)
    pixels = np.clip(np.broadcast_to(colours, (256, 512, 3)) + rng.integers(-3, 4, (256, 512, 3)), 0, 255).astype(
        np.uint8
    )
    return Image.fromarray(pixels, "RGB")


@pytest.mark.slow
def test_predictor_applies_caffes_preprocessing(caffemodels, tmp_path, capsys):
    path, tensors = caffemodels["layer"]
    rc, out, _ = _run(capsys, "convert", path, "--to", tmp_path / "bvlc.pt")
    assert rc == 0 and "bvlc.pt" in out
    predictor = Predictor.load(tmp_path / "bvlc.pt")
    # A 256 x 256 image is only cropped: the input must be its centre 227, BGR, 0..255 less the mean
    rgb = np.random.default_rng(4).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    image = tmp_path / "photo.png"
    Image.fromarray(rgb, "RGB").save(image)
    expected = torch.from_numpy(rgb[14:241, 14:241, ::-1].astype(np.float32).transpose(2, 0, 1).copy())
    expected -= torch.tensor(IMAGENET_BGR_MEAN).view(3, 1, 1)
    torch.testing.assert_close(predictor.inputs([str(image)])[0], expected, rtol=0, atol=1e-4)
    # A 512 x 256 image is warped to 256 x 256, not cut to its middle: the crop spans all four stripes
    warped = predictor.inputs([_stripes()])[0] + torch.tensor(IMAGENET_BGR_MEAN).view(3, 1, 1)
    left, right = warped[:, 113, 0], warped[:, 113, -1]  # BGR
    assert left[2] > 200 and left[0] < 40, left  # red
    assert right.min() > 200, right  # white
    # and the probabilities are those of Caffe's forward pass on that input
    probabilities = predictor.probabilities([str(image)])[0]
    torch.testing.assert_close(
        probabilities, caffe_forward(expected[None], tensors).softmax(1)[0], rtol=1e-3, atol=1e-5
    )


@pytest.mark.slow
def test_evaluate_applies_caffes_preprocessing(caffemodels, tmp_path, monkeypatch):
    from alexnet.inference.evaluate import evaluate_checkpoint
    from alexnet.system import runtime

    monkeypatch.setattr(
        runtime, "cpu_has_bf16_units", lambda: False
    )  # fp32 where auto would pick bf16: the reference is fp32
    path, tensors = caffemodels["v1"]  # classes "0".."9"
    rng = np.random.default_rng(5)
    inputs, labels = [], []
    for split, count in (("train", 1), ("val", 2)):
        for label in range(10):  # evaluate wants every class of the model
            (tmp_path / "data" / split / str(label)).mkdir(parents=True)
            for i in range(count):  # 256 x 256: only cropped, so the input is known exactly
                rgb = np.clip(rng.integers(0, 256, 3) + rng.integers(-20, 21, (256, 256, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(rgb, "RGB").save(tmp_path / "data" / split / str(label) / f"{i}.png")
                inputs.append(torch.from_numpy(rgb[14:241, 14:241, ::-1].astype(np.float32).transpose(2, 0, 1).copy()))
                labels.append(label)
    x = torch.stack(inputs[10:]) - torch.tensor(IMAGENET_BGR_MEAN).view(1, 3, 1, 1)  # the val images
    logits, y = caffe_forward(x, tensors), torch.tensor(labels[10:])
    result = evaluate_checkpoint(path, data=str(tmp_path / "data"), device="cpu", out=tmp_path / "eval")
    assert result["images"] == 20
    # the mean loss is continuous in every logit: any difference in how the input is made shows
    assert result["loss"] == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-4)
    expected = torch.zeros(10, 10, dtype=torch.long)
    expected.index_put_((y, logits.argmax(1)), torch.ones(20, dtype=torch.long), accumulate=True)
    assert torch.equal(torch.tensor(result["confusion"]), expected)


@pytest.mark.slow
def test_converted_files_keep_what_caffe_needs(caffemodels, tmp_path, capsys):
    path, _ = caffemodels["v1"]
    source = read_model(path)
    for out in ("bvlc.pt", "bvlc.safetensors"):
        rc, _, err = _run(capsys, "convert", path, "--to", tmp_path / out)
        assert rc == 0, err
        again = read_model(tmp_path / out)
        assert again.preprocess == source.preprocess
        assert (again.preprocess.channel_order, again.preprocess.scale, again.preprocess.resize_to) == (
            "BGR",
            255,
            "square",
        )
        assert again.config["lrn_k"] == 1.0 and again.classes == source.classes
        assert all(torch.equal(again.weights[k], v) for k, v in source.weights.items())
    # an existing --to is kept without --force, and replaced with it
    before = (tmp_path / "bvlc.pt").read_bytes()
    rc, _, err = _run(capsys, "convert", path, "--to", tmp_path / "bvlc.pt")
    assert rc == 1 and "already exists; pass --force" in _one_line_error(err)
    assert (tmp_path / "bvlc.pt").read_bytes() == before
    # a mean image of Caffe's (B, G, R planes of 4 x 4) replaces the default mean with its per-channel one
    planes = np.stack([np.full((4, 4), 100.0), np.arange(16.0).reshape(4, 4) + 110, np.full((4, 4), 130.0)])[
        None
    ].astype(np.float32)
    (tmp_path / "mean.binaryproto").write_bytes(_blob(planes, legacy=True).SerializeToString())
    rc, _, err = _run(
        capsys, "convert", path, "--to", tmp_path / "bvlc.pt", "--force", "--mean-file", tmp_path / "mean.binaryproto"
    )
    assert rc == 0, err
    assert read_model(tmp_path / "bvlc.pt").preprocess.mean == (100.0, 117.5, 130.0)


def test_a_mean_file_is_for_caffe_weights_and_is_checked(tmp_path, capsys):
    weights = tmp_path / "alexnet-owt.pth"
    rc, _, err = _run(
        capsys, "convert", weights, "--to", tmp_path / "out.pt", "--mean-file", tmp_path / "mean.binaryproto"
    )
    assert rc == 2 and "only Caffe's weights (.caffemodel) take a Caffe mean file" in _one_line_error(err)
    (tmp_path / "mean.binaryproto").write_bytes(_blob(np.zeros((1, 96), np.float32), legacy=True).SerializeToString())
    rc, _, err = _run(
        capsys,
        "convert",
        tmp_path / "bvlc.caffemodel",
        "--to",
        tmp_path / "out.pt",
        "--mean-file",
        tmp_path / "mean.binaryproto",
    )
    assert rc == 1 and "a mean image of shape [1, 1, 96], expected 3 x H x W (BGR)" in _one_line_error(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mean.binaryproto"]


def test_caffenet_and_other_nets_are_refused_naming_the_layer(tmp_path):
    caffenet = [
        ("pool1", "Pooling") if n == "norm1" else ("norm1", "LRN") if n == "pool1" else (n, t) for n, t in DEPLOY
    ]
    path = tmp_path / "caffenet.caffemodel"
    write_caffemodel(path, {}, order=caffenet)  # the order is checked before any weight
    with pytest.raises(
        Exception,
        match=r"not bvlc_alexnet's layers: found conv1\(Convolution\) relu1\(ReLU\) pool1\(Pooling\) norm1\(LRN\)",
    ):
        read_model(path)
    for change, message in (
        (
            lambda net: net.layer[1].convolution_param.stride.__setitem__(0, 2),
            "layer conv1 has {'stride': 2}, alexnet2012 has {'stride': 4}",
        ),
        (
            lambda net: setattr(net.layer[3].lrn_param, "local_size", 3),
            "layer norm1 has {'local_size': 3}, alexnet2012 has {'local_size': 5}",
        ),
        (
            lambda net: setattr(net.layer[8].pooling_param, "pool", 1),
            "layer pool2 has {'pool': 'AVE'}, alexnet2012 has {'pool': 'MAX'}",
        ),
        (lambda net: setattr(net.layer[7].lrn_param, "k", 2.0), "norm1 and norm2 have k 1.0 and 2.0"),
    ):
        write_caffemodel(path, {})
        net = pb.NetParameter.FromString(path.read_bytes())
        change(net)
        path.write_bytes(net.SerializeToString())
        with pytest.raises(Exception, match=re.escape(message)):
            read_model(path)
    rng = np.random.default_rng(0)  # conv1 and a conv2 that sees all 96 maps: refused before fc6 is read
    tensors = {
        "conv1": (rng.standard_normal((96, 3, 11, 11), np.float32), np.zeros(96, np.float32)),
        "conv2": (rng.standard_normal((128, 96, 5, 5), np.float32), np.zeros(128, np.float32)),
    }
    write_caffemodel(path, tensors)
    with pytest.raises(
        Exception, match=r"layer conv2's weight has shape \[128, 96, 5, 5\], alexnet2012's is \[256, 48, 5, 5\]"
    ):
        read_model(path)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.caffemodel", b"", "an empty file, not a Caffe model"),
        ("noise.caffemodel", bytes(range(256)) * 40, "not a Caffe model (a NetParameter protobuf), or a damaged one"),
        ("text.caffemodel", b'name: "AlexNet"\nlayer { name: "conv1" }\n', "not a Caffe model"),
        ("photo.png", None, "not a PyTorch file"),
        ("notes.pth", b"just some notes\n", "not a readable PyTorch file"),
    ],
)
def test_convert_of_a_file_that_is_neither_is_one_line_naming_it(name, content, message, tmp_path, capsys):
    path = tmp_path / name
    if content is None:
        Image.new("RGB", (64, 64)).save(path)
    else:
        path.write_bytes(content)
    rc, _, err = _run(capsys, "convert", path, "--to", tmp_path / "out.pt")
    line = _one_line_error(err)
    assert (
        rc == 1
        and str(path) in line
        and message in line
        and "convert reads torchvision's alexnet-owt-*.pth and Caffe's" in line
    ), line
    assert not (tmp_path / "out.pt").exists() and [p.name for p in tmp_path.iterdir()] == [name]  # nothing half-written


def test_preprocess_records_old_and_new_fields_and_checks_them():
    old = {
        "kind": "folder",
        "mode": "RGB",
        "image_size": 224,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "resize": 256,
    }
    p = Preprocess.from_dict(old)  # written before the fields existed: the defaults
    assert (p.channel_order, p.scale, p.resize_to) == ("RGB", 1, "shorter")
    assert p.to_dict() == old  # and written as before
    caffe = {
        **old,
        "image_size": 227,
        "mean": [104.0, 117.0, 123.0],
        "std": [1, 1, 1],
        "channel_order": "BGR",
        "scale": 255,
        "resize_to": "square",
    }
    assert Preprocess.from_dict(caffe).to_dict() == {**caffe, "std": [1.0, 1.0, 1.0]}
    for bad, words in (
        ({"channel_order": "GBR"}, "'channel_order' must be RGB, or BGR"),
        ({"scale": 2}, "'scale' must be 1"),
        ({"scale": True}, "'scale' must be 1"),
        ({"resize_to": "fit"}, "'resize_to' must be shorter, or square"),
        ({"scale": 1}, "pixel mean [104.0, 117.0, 123.0] is outside [0, 1]"),
        ({"std": [0.1, 0.1, 0.1]}, "outside [0.255, 255]"),
    ):
        with pytest.raises(ValueError, match=re.escape(words)):
            Preprocess.from_dict({**caffe, **bad})
    grey = {"kind": "tensor", "mode": "L", "image_size": 67, "source_size": 28, "mean": [0.3], "std": [0.3]}
    with pytest.raises(ValueError, match="BGR for mode RGB"):
        Preprocess.from_dict({**grey, "channel_order": "BGR"})
    with pytest.raises(ValueError, match="square for kind folder"):
        Preprocess.from_dict({**grey, "resize_to": "square"})


def test_a_model_file_without_lrn_k_has_the_papers():
    from alexnet.formats import ModelFile

    from helpers import _checkpoint, _fake_weights

    state = _checkpoint(_fake_weights("alexnet2012", num_classes=10, in_channels=1), model="alexnet2012")
    del state["config"]["lrn_k"]
    net = ModelFile.from_state(state).network()
    assert [m.k for m in net.modules() if isinstance(m, torch.nn.LocalResponseNorm)] == [2.0, 2.0]


def test_a_one_dimensional_transposed_fc8_is_one_line(tmp_path):
    """Before: an IndexError from reading the second dimension of a 1-D blob."""
    path = tmp_path / "flat.caffemodel"
    write_caffemodel(path, {"fc8": (np.zeros(10, np.float32), np.zeros(10, np.float32))})
    net = pb.NetParameter.FromString(path.read_bytes())
    next(layer for layer in net.layer if layer.name == "fc8").inner_product_param.transpose = True
    path.write_bytes(net.SerializeToString())
    with pytest.raises(CheckpointError, match=r"layer fc8's weight has shape \[10\], expected outputs x inputs") as e:
        read_model(path)
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)
