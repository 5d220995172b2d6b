"""ONNX export (``NAME.onnx``): the network in eval mode as one ONNX graph with a dynamic batch
dimension, input ``image`` (N, C, S, S) float32 - already preprocessed - and output ``logits``
(N, classes). The preprocessing, class names and settings travel in the model's
``metadata_props`` as JSON (keys in :data:`METADATA`), so a runtime without this package knows how
to make the input and name the outputs.

Written with torch.onnx's dynamo exporter (``torch.export`` then onnxscript; opset 20), which works
offline. The older TorchScript exporter cannot export ``AdaptiveAvgPool2d`` once the batch is
dynamic (it loses the map sizes after the LRN). onnxruntime runs the file; ``alexnet predict`` and
``evaluate`` do not read it (:func:`alexnet.formats.read_model` refuses it in one line).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from alexnet.formats.network import ModelFile, describe
from alexnet.system.files import atomic_write, output_path

SUFFIXES = (".onnx",)
ONNX_FORMAT = "alexnet-onnx/1"
OPSET = 20
INPUT, OUTPUT = "image", "logits"
METADATA = ("alexnet.format", "alexnet.preprocess", "alexnet.classes", "alexnet.config", "alexnet.source")


def write(model: ModelFile, out: str | Path | None, *, checkpoint: Path, force: bool = False) -> tuple[Path]:
    """Write ``model`` as ``<name>.onnx`` (``out``: an ``.onnx`` name or a folder; default next
    to ``checkpoint``); an existing file is kept unless ``force``."""
    import onnx

    path = output_path(checkpoint, out, ".onnx", force=force)
    proto = to_onnx(model, source=str(checkpoint))
    atomic_write(path, lambda tmp: onnx.save_model(proto, str(tmp)), overwrite=force)
    return (path,)


def to_onnx(model: ModelFile, *, source: str = ""):
    """``model`` as an ``onnx.ModelProto``: fp32, eval mode, batch dimension ``batch``, metadata set."""
    net = model.network().float().eval()
    size, channels = model.preprocess.image_size, model.preprocess.channels
    example = torch.zeros(2, channels, size, size)
    batch = torch.export.Dim("batch", min=1, max=65536)
    with warnings.catch_warnings():  # the exporter's notes on its own internals are not the user's business
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            net,
            (example,),
            dynamo=True,
            opset_version=OPSET,
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_shapes={"x": {0: batch}},
            optimize=True,
            verbose=False,
        )
    proto = program.model_proto
    proto.producer_name = "alexnet"
    proto.doc_string = (
        f"{model.config['model']}: input {INPUT} (N, {channels}, {size}, {size}) preprocessed as "
        f"alexnet.preprocess says; output {OUTPUT}"
    )
    del proto.metadata_props[:]
    for key, value in describe(
        model, ONNX_FORMAT, source
    ).items():  # strings: the format and source as they are, the rest JSON
        entry = proto.metadata_props.add()
        entry.key, entry.value = f"alexnet.{key}", value if isinstance(value, str) else json.dumps(value)
    return proto
