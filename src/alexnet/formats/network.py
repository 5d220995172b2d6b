"""A trained network as a file holds it (:class:`ModelFile`), which network a state_dict is for,
and rebuilding the network from it. Every reader in this package returns a ModelFile; every
writer takes one."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from alexnet.config import TrainConfig
from alexnet.data.base import class_names_problem
from alexnet.data.transforms import Preprocess
from alexnet.errors import CheckpointError, ConfigError, brief, first_line
from alexnet.layers import LRN_K
from alexnet.models import AlexNet, build_model, check_image_size, resolve_lrn
from alexnet.ranges import is_number

# The settings a model file keeps (the rest of TrainConfig only matters to training): those that
# rebuild the network, and those that rebuild its validation set for `alexnet evaluate`.
MODEL_SETTINGS = ("model", "activation", "lrn", "lrn_k", "pooling", "dropout")
# Network settings added after model files were first written: absent means this value.
LATER_SETTINGS = {"lrn_k": LRN_K}
DATA_SETTINGS = ("data", "image_size", "val_fraction", "seed", "batch_size", "classes")


@dataclass
class ModelFile:
    """A trained network: its weights and what is needed to use them."""

    weights: dict[str, torch.Tensor]  # the state_dict
    config: dict  # settings; at least MODEL_SETTINGS
    classes: list[str]
    preprocess: Preprocess
    epoch: int | None = None
    metrics: dict | None = None
    source: str = field(default="model file")  # how messages name the file

    @classmethod
    def from_state(cls, state: Mapping, source: str = "checkpoint") -> ModelFile:
        """From the dict form (a training checkpoint, or a sidecar plus weights), every field checked."""
        for key, kind in (("config", dict), ("classes", list), ("preprocess", dict), ("model", dict)):
            if not isinstance(state.get(key), kind):
                raise CheckpointError(f"{source}: {key!r} must be {'an object' if kind is dict else 'a list'}")
        classes = state["classes"]
        problem = class_names_problem(classes)
        if problem:
            raise CheckpointError(f"{source}: 'classes' {problem}")
        missing = [k for k in MODEL_SETTINGS if k not in state["config"] and k not in LATER_SETTINGS]
        if missing:
            raise CheckpointError(f"{source}: 'config' lacks {', '.join(missing)}")
        try:
            cfg = TrainConfig.from_dict({**TrainConfig().to_dict(), **state["config"]}, source="config")
            preprocess = Preprocess.from_dict(state["preprocess"], source=source)
            check_image_size(preprocess.image_size, cfg.model, cfg.pooling)
        except ConfigError as e:
            raise CheckpointError(f"{source}: {e}") from None
        except ValueError as e:  # Preprocess's own, already naming the file
            raise CheckpointError(str(e)) from None
        if state["config"].get("image_size", preprocess.image_size) != preprocess.image_size:
            raise CheckpointError(
                f"{source}: config image_size {cfg.image_size} differs from preprocess image_size "
                f"{preprocess.image_size}"
            )
        _check_record(state, source)
        check_state_dict(state["model"], source)
        return cls(
            dict(state["model"]),
            {**LATER_SETTINGS, **state["config"]},
            list(classes),
            preprocess,
            state.get("epoch"),
            state.get("metrics"),
            source,
        )

    def network(self) -> AlexNet:
        """The network, rebuilt from the settings with the weights loaded (strict).

        A state_dict of another variant, class count or channel count is refused with a message
        that says which; any other difference names the first key that differs.
        """
        cfg = self.config
        check_weights(self.weights, cfg["model"], len(self.classes), self.preprocess.channels, self.source)
        model = self._build()
        problem = state_dict_mismatch(self.weights, model.state_dict())
        if problem:
            hint = _lrn_hint(self.weights, model.state_dict(), cfg)
            raise CheckpointError(f"{self.source}: weights do not fit model {cfg['model']!r}{hint}: {problem}")
        try:
            model.load_state_dict(self.weights)
        except RuntimeError as e:
            raise CheckpointError(
                f"{self.source}: weights do not fit model {cfg['model']!r}: {first_line(e)}"
            ) from None
        return model

    def parameter_count(self) -> int:
        """How many numbers the network these settings describe holds (built on the meta device:
        no memory), to size a weights file against before it is read."""
        with torch.device("meta"):
            return sum(t.numel() for t in self._build().state_dict().values())

    def _build(self) -> AlexNet:
        cfg = self.config
        return build_model(
            cfg["model"],
            num_classes=len(self.classes),
            in_channels=self.preprocess.channels,
            activation=cfg["activation"],
            lrn=cfg["lrn"],
            lrn_k=cfg.get("lrn_k", LRN_K),
            pooling=cfg["pooling"],
            dropout=cfg["dropout"],
            init="torch",  # about to be overwritten
        )


def state_dict_mismatch(weights: Mapping, expected: Mapping) -> str | None:
    """How ``weights`` differ from the state_dict ``expected`` (a network's own), naming the first
    key missing, unexpected, or of another shape; None when they fit."""
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    shapes = [k for k in expected if k in weights and tuple(weights[k].shape) != tuple(expected[k].shape)]
    if missing:
        return f"{len(missing)} weight(s) missing, the first {missing[0]}"
    if unexpected:
        return f"{len(unexpected)} weight(s) the network has no place for, the first {unexpected[0]}"
    if shapes:
        k = shapes[0]
        return f"weight {k} has shape {list(weights[k].shape)}, the network's is {list(expected[k].shape)}"
    return None


# The types a weight may be stored as: real floating point, which every device here computes in.
WEIGHT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def tensor_problem(value: object) -> str | None:
    """Why ``value`` cannot be a weight or an optimizer's buffer, in words; None when it can: a
    dense tensor (not sparse, quantized or nested) holding values (not on the meta device) of a
    real floating-point type (:data:`WEIGHT_DTYPES`: not float8, complex or integer), finite."""
    if not isinstance(value, torch.Tensor):
        return f"not a tensor but {type(value).__name__}"
    if value.layout != torch.strided or value.is_nested or value.is_quantized:
        kind = "quantized" if value.is_quantized else "nested" if value.is_nested else str(value.layout)
        return f"a {kind} tensor, not a dense one"
    if value.device.type == "meta":
        return "a meta tensor, which holds no values"
    if value.dtype not in WEIGHT_DTYPES:
        return f"of type {value.dtype}, not float16, bfloat16, float32 or float64"
    if not torch.isfinite(value).all():
        return "holding NaN or infinite values"
    return None


def check_state_dict(state_dict: object, source: str) -> None:
    """A state_dict of named weights, each passing :func:`tensor_problem`; else one line naming the weight."""
    if not isinstance(state_dict, dict) or not all(isinstance(k, str) for k in state_dict):
        raise CheckpointError(f"{source}: its weights are not a state_dict of tensors")
    for key, value in state_dict.items():  # NaN weights would predict NaN: "nan%" and exit 0
        problem = tensor_problem(value)
        if problem == "holding NaN or infinite values":
            raise CheckpointError(f"{source}: weight {key} holds NaN or infinite values")
        if problem:
            raise CheckpointError(f"{source}: weight {key} is {problem}")


def describe(model: ModelFile, format: str, source: str = "") -> dict:
    """What an export that holds a graph rather than our weights (ONNX, torch.export) carries beside
    it, JSON-able: its format, the preprocessing, the class names, the network's settings, its source."""
    return {
        "format": format,
        "preprocess": model.preprocess.to_dict(),
        "classes": list(model.classes),
        "config": {k: model.config[k] for k in MODEL_SETTINGS if k in model.config},
        "source": source,
    }


def _check_record(state: Mapping, source: str) -> None:
    """The record a model file keeps of its training (``epoch``, ``metrics``; export copies them
    into the sidecar as JSON): absent, or an epoch number and an object of numbers."""
    epoch, metrics = state.get("epoch"), state.get("metrics")
    if epoch is not None and (not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0):
        raise CheckpointError(f"{source}: 'epoch' must be a whole number of at least 0, got {brief(epoch)}")
    if metrics is not None and not (
        isinstance(metrics, dict) and all(isinstance(k, str) and is_number(v) for k, v in metrics.items())
    ):
        raise CheckpointError(f"{source}: 'metrics' must be an object of finite numbers, got {brief(metrics)}")


def model_from_checkpoint(state: Mapping, *, source: str = "checkpoint") -> AlexNet:
    """Rebuild the trained network from a checkpoint's dict form (see :meth:`ModelFile.network`)."""
    return ModelFile.from_state(state, source).network()


def identify_weights(state_dict: dict) -> dict:
    """Read the variant, class count and input channels off a state_dict's shapes.

    conv1 has 96 filters in ``alexnet`` and ``alexnet2012`` and 64 in ``alexnet_owt``; the 2012
    paper's conv2 is grouped (two towers), so its weight is 256 x 48 x 5 x 5 instead of 256 x 96 x
    5 x 5; its one-GPU baseline ``alexnet2012_half`` has 48 conv1 filters, all seen by conv2; the
    test-size ``alexnet_tiny`` has 6 and figure 1's ``convnet4`` 32, all seen by conv2. The class count
    is the last Linear layer's out_features. Unknown shapes give None.
    """

    def layers(prefix: str, dim: int) -> list[torch.Tensor]:
        found = []
        for key, value in state_dict.items():
            m = re.fullmatch(rf"{prefix}\.(\d+)\.weight", key)
            if m and isinstance(value, torch.Tensor) and value.dim() == dim:
                found.append((int(m[1]), value.shape))
        return [shape for _, shape in sorted(found)]

    convs, linears = layers("features", 4), layers("classifier", 2)
    variant = None
    if len(convs) >= 2:
        if convs[0][0] == 64 and convs[1][1] == 64:
            variant = "alexnet_owt"
        elif convs[0][0] == 96 and convs[1][1] == 96:
            variant = "alexnet"
        elif convs[0][0] == 96 and convs[1][1] == 48:
            variant = "alexnet2012"
        elif convs[0][0] == 48 and convs[1][1] == 48:
            variant = "alexnet2012_half"
        elif convs[0][0] == 6 and convs[1][1] == 6:
            variant = "alexnet_tiny"
        elif convs[0][0] == 32 and convs[1][1] == 32:
            variant = "convnet4"
    return {
        "variant": variant,
        "num_classes": int(linears[-1][0]) if linears else None,
        "in_channels": int(convs[0][1]) if convs else None,
    }


_LOOKS = {  # what tells the variants apart, as a reader of the shapes sees it
    "alexnet": ("conv1 has 96 filters", "conv2 sees all 96 maps"),
    "alexnet2012": ("conv1 has 96 filters", "conv2 is grouped, 48 maps per filter"),
    "alexnet2012_half": ("conv1 has 48 filters", "conv2 sees all 48 maps"),
    "alexnet_owt": ("conv1 has 64 filters", "conv2 sees all 64 maps"),
    "alexnet_tiny": ("conv1 has 6 filters", "conv2 sees all 6 maps"),
    "convnet4": ("conv1 has 32 filters", "conv2 sees all 32 maps"),
}


def check_weights(state_dict: dict, variant: str, num_classes: int, in_channels: int, source: str) -> None:
    """Raise :class:`CheckpointError` saying which, when ``state_dict`` is not for this network."""
    check_state_dict(state_dict, source)
    found = identify_weights(state_dict)
    if found["variant"] is not None and found["variant"] != variant and variant in _LOOKS:
        part = 0 if _LOOKS[found["variant"]][0] != _LOOKS[variant][0] else 1
        raise CheckpointError(
            f"{source}: weights are {found['variant']}'s ({_LOOKS[found['variant']][part]}), "
            f"not {variant}'s ({_LOOKS[variant][part]})"
        )
    if found["num_classes"] is not None and found["num_classes"] != num_classes:
        raise CheckpointError(
            f"{source}: weights are for {found['num_classes']} classes, the checkpoint says {num_classes}"
        )
    if found["in_channels"] is not None and found["in_channels"] != in_channels:
        raise CheckpointError(f"{source}: weights have {found['in_channels']} input channels, expected {in_channels}")


def _lrn_hint(weights: dict, expected: dict, cfg: dict) -> str:
    # LRN layers have no weights but shift the indices of every later layer in `features`
    if set(weights) != set(expected) and len(weights) == len(expected):
        return (
            f" (its layers are numbered as with lrn={not resolve_lrn(cfg['model'], cfg['lrn'])}, the checkpoint "
            f"says lrn={cfg['lrn']})"
        )
    return ""
