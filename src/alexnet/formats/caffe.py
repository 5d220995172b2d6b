"""Caffe's ``bvlc_alexnet.caffemodel`` (BVLC's replication of the 2012 network: two towers, LRN,
57.1% top-1 on ILSVRC 2012 validation with a centre crop) read into ``alexnet2012``.

The file is a protobuf ``NetParameter``, read with the schema in ``caffe_pb2.py`` (compiled from
Caffe's own ``caffe.proto``, trimmed: see ``caffe.proto`` beside it); no Caffe install is needed.
Both layer formats are read: ``layer`` (``LayerParameter``, type names; releases since 2015) and
the older ``layers`` (``V1LayerParameter``, type enums) of earlier downloads.

What BVLC's network does differently from the paper is carried over, so that outputs match
Caffe's: LRN with Caffe's ``k`` (read from the file: 1, where the paper has 2), and the input
Caffe's data layer gave it (recorded in the model's :class:`Preprocess`): BGR channels, pixels in
0..255 less the per-channel mean of ``ilsvrc_2012_mean`` (the mean image reduced to one number a
channel, as Caffe's own ``classification.cpp`` and its classification notebook subtract it),
images warped to 256 x 256 and centre-cropped to 227.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from alexnet.data.transforms import Preprocess
from alexnet.errors import CheckpointError, first_line
from alexnet.formats.network import ModelFile
from alexnet.layers import LRN_ALPHA, LRN_BETA, LRN_SIZE
from alexnet.models import build_model
from alexnet.system.files import read_bytes

SUFFIXES = (".caffemodel",)
# protobuf reads a message of at most 2 GB; bvlc_alexnet.caffemodel is 233 MB
MAX_PROTO_BYTES = 2**31 - 1

# ilsvrc_2012_mean.npy (Caffe's data/ilsvrc12, a 256 x 256 BGR image) averaged per channel: B, G, R
IMAGENET_BGR_MEAN = (104.00698793, 116.66876762, 122.67891434)
PREPROCESS = Preprocess(
    "folder",
    "RGB",
    227,
    IMAGENET_BGR_MEAN,
    (1.0, 1.0, 1.0),
    resize=256,
    channel_order="BGR",
    scale=255,
    resize_to="square",
)

# alexnet2012's LRN (but k, which is read) and pooling, in Caffe's terms
LRN = {"local_size": LRN_SIZE, "alpha": LRN_ALPHA, "beta": LRN_BETA, "norm_region": "ACROSS_CHANNELS"}
POOL = {"pool": "MAX", "kernel": 3, "stride": 2, "pad": 0}
# bvlc_alexnet's deploy.prototxt, the layers that compute (data, loss, accuracy, split and softmax
# layers are skipped): name, type, and the settings alexnet2012's layers have. CaffeNet
# (bvlc_reference_caffenet) pools before it normalizes, and is refused by this order.
LAYERS = (
    ("conv1", "Convolution", {"num_output": 96, "kernel": 11, "stride": 4, "pad": 0, "group": 1}),
    ("relu1", "ReLU", {}),
    ("norm1", "LRN", LRN),
    ("pool1", "Pooling", POOL),
    ("conv2", "Convolution", {"num_output": 256, "kernel": 5, "stride": 1, "pad": 2, "group": 2}),
    ("relu2", "ReLU", {}),
    ("norm2", "LRN", LRN),
    ("pool2", "Pooling", POOL),
    ("conv3", "Convolution", {"num_output": 384, "kernel": 3, "stride": 1, "pad": 1, "group": 1}),
    ("relu3", "ReLU", {}),
    ("conv4", "Convolution", {"num_output": 384, "kernel": 3, "stride": 1, "pad": 1, "group": 2}),
    ("relu4", "ReLU", {}),
    ("conv5", "Convolution", {"num_output": 256, "kernel": 3, "stride": 1, "pad": 1, "group": 2}),
    ("relu5", "ReLU", {}),
    ("pool5", "Pooling", POOL),
    ("fc6", "InnerProduct", {}),
    ("relu6", "ReLU", {}),
    ("drop6", "Dropout", {}),
    ("fc7", "InnerProduct", {}),
    ("relu7", "ReLU", {}),
    ("drop7", "Dropout", {}),
    ("fc8", "InnerProduct", {}),
)
COMPUTING = {"Convolution", "ReLU", "LRN", "Pooling", "InnerProduct", "Dropout"}
# V1LayerParameter's enum names for the same types
V1_TYPES = {
    "CONVOLUTION": "Convolution",
    "RELU": "ReLU",
    "LRN": "LRN",
    "POOLING": "Pooling",
    "INNER_PRODUCT": "InnerProduct",
    "DROPOUT": "Dropout",
}


def read(path: Path, source: str) -> ModelFile:
    """A ``.caffemodel`` of bvlc_alexnet's layers as a :class:`ModelFile` of ``alexnet2012``, with
    Caffe's LRN ``k`` and input (BGR, 0..255 less the mean, 256 x 256 warped, 227 crop) recorded."""
    layers = _computing_layers(_parse(path, source), source)
    found = [(name, kind) for name, kind, _ in layers]
    expected = [(name, kind) for name, kind, _ in LAYERS]
    if found != expected:
        raise CheckpointError(
            f"{source}: not bvlc_alexnet's layers: found {_names(found)}, expected {_names(expected)}"
        )
    params = {name: layer for name, _, layer in layers}
    for name, kind, settings in LAYERS:
        got = _settings(kind, params[name])
        differ = {key: value for key, value in got.items() if settings.get(key) != value}
        if differ:  # a network that only shares the names would load the shapes and compute something else
            raise CheckpointError(
                f"{source}: layer {name} has {differ}, alexnet2012 has { ({key: settings.get(key) for key in differ}) }"
            )
    k = params["norm1"].lrn_param.k
    if params["norm2"].lrn_param.k != k or not k > 0:
        raise CheckpointError(
            f"{source}: norm1 and norm2 have k {k} and {params['norm2'].lrn_param.k}; alexnet2012 has one k above 0"
        )
    dropout = params["drop6"].dropout_param.dropout_ratio
    fc8 = params["fc8"]
    # fc8's outputs: its weight is (outputs, inputs), or (inputs, outputs) when transposed
    num_classes = 0
    if fc8.blobs:
        shape = _blob(fc8.blobs[0], "fc8", source, ndim=2)[1]
        if len(shape) != 2:
            raise CheckpointError(f"{source}: layer fc8's weight has shape {list(shape)}, expected outputs x inputs")
        num_classes = shape[1 if fc8.inner_product_param.transpose else 0]
    weights = _weights(params, num_classes, float(k), source)
    config = {
        "model": "alexnet2012",
        "activation": "relu",
        "lrn": True,
        "lrn_k": float(k),
        "pooling": "overlap",
        "dropout": float(dropout),
        "image_size": PREPROCESS.image_size,
    }
    return ModelFile.from_state(
        {"model": weights, "config": config, "classes": _classes(num_classes), "preprocess": PREPROCESS.to_dict()},
        source,
    )


def read_mean(path: Path, source: str) -> tuple[float, float, float]:
    """A Caffe mean file (``imagenet_mean.binaryproto``: one BlobProto of 1 x 3 x H x W, BGR, 0..255)
    reduced to one mean a channel, B, G, R, as Caffe's ``classification.cpp`` reduces it."""
    from google.protobuf.message import DecodeError

    from alexnet.formats import caffe_pb2

    raw = read_bytes(path, limit=MAX_PROTO_BYTES, error=CheckpointError, source=source)
    try:
        blob = caffe_pb2.BlobProto.FromString(raw)
    except DecodeError as e:
        raise CheckpointError(
            f"{source}: not a Caffe mean file (a BlobProto), or a damaged one ({first_line(e)})"
        ) from None
    values, shape = _blob(blob, "mean", source, ndim=3)
    if len(shape) != 3 or shape[0] != 3 or not values.size:
        raise CheckpointError(f"{source}: a mean image of shape {list(shape)}, expected 3 x H x W (BGR)")
    mean = tuple(float(m) for m in values.reshape(3, -1).mean(1, dtype=np.float64))
    if not all(0 <= m <= 255 for m in mean):
        raise CheckpointError(f"{source}: per-channel mean {[round(m, 3) for m in mean]} is outside 0..255")
    return mean


def _parse(path: Path, source: str):
    from google.protobuf.message import DecodeError

    from alexnet.formats import caffe_pb2

    raw = read_bytes(path, limit=MAX_PROTO_BYTES, error=CheckpointError, source=source)
    if not raw:
        raise CheckpointError(f"{source}: an empty file, not a Caffe model")
    try:
        return caffe_pb2.NetParameter.FromString(raw)
    except DecodeError as e:
        raise CheckpointError(
            f"{source}: not a Caffe model (a NetParameter protobuf), or a damaged one ({first_line(e)})"
        ) from None


def _computing_layers(net, source: str) -> list[tuple[str, str, object]]:
    """(name, type, layer) of the layers that compute, from ``layer`` or the older ``layers``."""
    if net.layer and net.layers:
        raise CheckpointError(
            f"{source}: holds layers in both Caffe formats (layer and layers); Caffe itself refuses that"
        )
    if net.layers:
        enum = type(net.layers[0]).LayerType
        layers = [
            (layer.name, V1_TYPES.get(enum.Name(layer.type), enum.Name(layer.type)), layer) for layer in net.layers
        ]
    else:
        layers = [(layer.name, layer.type, layer) for layer in net.layer]
    if not layers:
        raise CheckpointError(f"{source}: holds no layers: not a Caffe model")
    return [(name, kind, layer) for name, kind, layer in layers if kind in COMPUTING]


def _names(layers: list[tuple[str, str]]) -> str:
    return " ".join(f"{name}({kind})" for name, kind in layers) or "none"


def _settings(kind: str, layer) -> dict:
    """What the file says of how a layer computes, in the terms of :data:`LAYERS` (nothing where it
    keeps no settings: the shapes of the blobs are checked anyway)."""
    if kind == "Convolution" and layer.HasField("convolution_param"):
        p = layer.convolution_param  # a repeated field holds one value for both sides; _h/_w override it
        return {
            "num_output": p.num_output,
            "kernel": p.kernel_h or (p.kernel_size or [0])[0],
            "stride": p.stride_h or (p.stride or [1])[0],
            "pad": p.pad_h or (p.pad or [0])[0],
            "group": p.group,
        }
    if kind == "LRN" and layer.HasField("lrn_param"):
        p = layer.lrn_param  # alpha and beta are float32 in the file
        return {
            "local_size": p.local_size,
            "alpha": round(p.alpha, 9),
            "beta": round(p.beta, 6),
            "norm_region": p.NormRegion.Name(p.norm_region),
        }
    if kind == "Pooling" and layer.HasField("pooling_param"):
        p = layer.pooling_param
        return {
            "pool": p.PoolMethod.Name(p.pool),
            "kernel": p.kernel_h or p.kernel_size,
            "stride": p.stride_h or p.stride,
            "pad": p.pad_h or p.pad,
        }
    return {}


def _blob(blob, name: str, source: str, ndim: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """A BlobProto's values and shape (``shape``, or the legacy num, channels, height, width), the
    leading 1s legacy blobs pad with dropped down to ``ndim`` dimensions (4 for a convolution's
    weight, 2 for a fully-connected one's, 1 for a bias)."""
    shape = tuple(
        int(d)
        for d in (blob.shape.dim if blob.HasField("shape") else (blob.num, blob.channels, blob.height, blob.width))
    )
    if any(d < 1 for d in shape):
        raise CheckpointError(
            f"{source}: layer {name} has a blob of shape {list(shape)}; every dimension must be at least 1"
        )
    values = np.array(blob.data, dtype=np.float32) if len(blob.data) else np.array(blob.double_data, dtype=np.float32)
    if values.size != math.prod(shape):  # Python integers: no overflow to fake a match
        raise CheckpointError(f"{source}: layer {name} holds {values.size} values for a blob of shape {list(shape)}")
    while len(shape) > ndim and shape[0] == 1:
        shape = shape[1:]
    return values.reshape(shape), shape


def _weights(params: dict, num_classes: int, k: float, source: str) -> dict[str, torch.Tensor]:
    """Caffe's blobs under alexnet2012's state_dict keys: conv1..conv5 and fc6..fc8 in order, each
    weight and bias of the shape our layer has (Caffe's grouped kernels are laid out as PyTorch's)."""
    with torch.device("meta"):
        ours = build_model("alexnet2012", num_classes=max(num_classes, 1), lrn=True, lrn_k=k, init="torch")
    prefixes = [n for n, m in ours.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    names = [name for name, kind, _ in LAYERS if kind in ("Convolution", "InnerProduct")]
    expected = ours.state_dict()
    weights = {}
    for name, prefix in zip(names, prefixes):
        layer = params[name]
        if len(layer.blobs) != 2:
            raise CheckpointError(
                f"{source}: layer {name} holds {len(layer.blobs)} blobs, expected a weight and a bias"
            )
        for blob, part in zip(layer.blobs, ("weight", "bias")):
            values, shape = _blob(blob, name, source, ndim=len(expected[f"{prefix}.{part}"].shape))
            if part == "weight" and layer.HasField("inner_product_param") and layer.inner_product_param.transpose:
                values, shape = values.T, shape[::-1]  # stored (inputs, outputs)
            want = tuple(expected[f"{prefix}.{part}"].shape)
            if shape != want:
                raise CheckpointError(
                    f"{source}: layer {name}'s {part} has shape {list(shape)}, alexnet2012's is {list(want)}"
                )
            weights[f"{prefix}.{part}"] = torch.from_numpy(np.ascontiguousarray(values))
    return weights


def _classes(num_classes: int) -> list[str]:
    """ImageNet's class names for 1000 outputs: Caffe's synset_words.txt and torchvision's list are
    both in the order of the sorted WordNet ids, so torchvision's names (shipped with it) fit."""
    from torchvision.models import AlexNet_Weights

    names = list(AlexNet_Weights.IMAGENET1K_V1.meta["categories"])
    return names if num_classes == len(names) else [str(i) for i in range(num_classes)]
