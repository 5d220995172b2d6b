"""Transfer learning: a run that starts from another model file's weights (``--init-from``), and
which of its layers train (``--freeze``, ``--freeze-epochs``, ``--transfer-lr-mult``).

* **Layers** are named as summary.py names them: conv1 .. conv5 are the convolutions of
  ``features`` in order, fc6 .. fc8 the linear layers of ``classifier``. They are found by their
  place, never by state_dict index, so a file with LRN layers fits a network without them.
* **Copying** (:func:`initialise`): every layer conv1 .. fc7 (up to ``--copy-up-to``), and FC8 when
  the file's classes are the run's, names and order alike (timm's ``load_pretrained`` rule); a
  network whose layers differ from the file's is refused. conv1 meets the data's channels as
  timm's ``adapt_input_conv`` does: RGB -> grayscale sums the three kernels, grayscale -> RGB
  repeats the kernel and divides by 3.
* **Preprocessing** (:func:`source_stats`): the file's normalization and pixel convention become
  the run's, since the copied features were learned on them. Gray data with RGB weights takes the
  mean of the three channel means and of the three stds (docs/transfer.md says why).
* **Freezing** (:func:`frozen`): ``--freeze L`` keeps conv1 .. L out of the optimizer with
  ``requires_grad`` off for the whole run (no gradient, no momentum, no weight decay: bit for bit
  the source's weights). ``--freeze-epochs N`` turns ``requires_grad`` off for every copied layer
  in epochs 0 .. N-1 while they stay in the optimizer: torch's SGD skips a parameter without a
  gradient, so they do not move (tests/training/test_transfer.py checks that). It is set from the
  epoch number at the start of every epoch (:func:`set_trainable`), so a resume keeps it, and
  every process of a torchrun launch computes the same set. FC8, the head, always trains at the
  full rate.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from alexnet.config import TrainConfig
from alexnet.data.idx import is_idx_folder
from alexnet.data.shards import ShardIndex, is_shards
from alexnet.errors import ConfigError
from alexnet.formats import FORMAT, ModelFile, check_weights, identify_weights, load_torch_file, read_model
from alexnet.ranges import LAYERS, layer_index

HEAD = "fc8"
# The settings of the file's network that a run from it takes unless told otherwise (with its image size).
NETWORK_SETTINGS = ("model", "activation", "lrn", "lrn_k", "pooling")


@dataclass
class Source:
    """The model file a run starts from, and what identifies it."""

    path: Path
    model: ModelFile
    format: str  # checkpoint, safetensors, torchvision or caffe
    sha256: str


def sha256(path: Path) -> str:
    """The file's SHA-256, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(1 << 20), b""):
            digest.update(piece)
    return digest.hexdigest()


def read_source(path: str | Path, expected_sha256: str | None = None) -> Source:
    """The model file ``--init-from`` names, in any format the project reads: a checkpoint, a
    ``.safetensors`` export, a ``.caffemodel``, or else torchvision's bare state_dict. With
    ``expected_sha256`` a file that has changed since is refused."""
    path = Path(path)
    where = f"--init-from {path}"
    if not path.is_file():
        raise ConfigError(f"{where}: no such file; give a checkpoint, an export, torchvision's or Caffe's weights")
    if path.suffix in (".safetensors", ".caffemodel", ".onnx", ".pt2"):  # read_model tells these by suffix
        model, fmt = read_model(path, source=where), "caffe" if path.suffix == ".caffemodel" else "safetensors"
    else:
        state = load_torch_file(path)
        if isinstance(state, dict) and state.get("format") == FORMAT:  # ours: last.pt, best.pt, convert's .pt
            model, fmt = ModelFile.from_state(state, where), "checkpoint"
        else:  # torchvision's alexnet-owt-*.pth is a bare state_dict
            model, fmt = read_model(path, "torchvision", source=where), "torchvision"
    check_weights(model.weights, model.config["model"], len(model.classes), model.preprocess.channels, where)
    digest = sha256(path)
    if expected_sha256 is not None and digest != expected_sha256:
        raise ConfigError(
            f"{where}: its SHA-256 is {digest}, the run's settings say {expected_sha256} (the file changed since); "
            "give the file the run started from, or drop --init-sha256"
        )
    return Source(path, model, fmt, digest)


def source_settings(path: str | Path) -> dict:
    """What a run from ``path`` takes from the file unless told otherwise: its network (variant,
    activation, LRN, pooling) and its input size. The command line puts these under its flags."""
    model = read_source(path).model
    cfg = model.config
    return {**{k: cfg[k] for k in NETWORK_SETTINGS if k in cfg}, "image_size": model.preprocess.image_size}


def named_layers(state_dict: dict) -> dict[str, str]:
    """conv1 .. conv5 and fc6 .. fc8 -> their prefix in ``state_dict`` (``features.0``, ...): the
    convolutions of ``features`` and the linear layers of ``classifier``, in order."""

    def prefixes(part: str, dim: int) -> list[str]:
        found = [
            (int(m[1]), m[0].removesuffix(".weight"))
            for key, value in state_dict.items()
            if (m := re.fullmatch(rf"{part}\.(\d+)\.weight", key)) and value.dim() == dim
        ]
        return [prefix for _, prefix in sorted(found)]

    convs, linears = prefixes("features", 4), prefixes("classifier", 2)
    first_fc = max(5, len(convs)) + 1
    return {
        **{f"conv{i + 1}": p for i, p in enumerate(convs)},
        **{f"fc{first_fc + i}": p for i, p in enumerate(linears)},
    }


def _variant(model_file: ModelFile) -> str:
    return identify_weights(model_file.weights)["variant"] or model_file.config["model"]


def check_layers(network: nn.Module, source: Source, cfg: TrainConfig) -> None:
    """The network's layers conv1 .. fc7 are the file's (conv1 may read another channel count):
    otherwise one line naming both variants and the first layer that differs."""
    ours, theirs = network.state_dict(), source.model.weights
    mine, its = named_layers(ours), named_layers(theirs)
    where = f"--init-from {source.path}"
    for name in LAYERS:
        if name not in mine or name not in its:
            raise ConfigError(f"{where}: {_variant(source.model)}'s layers have no {name} to match --model {cfg.model}")
        a, b = ours[f"{mine[name]}.weight"].shape, theirs[f"{its[name]}.weight"].shape
        if (a[:1] + a[2:] if name == "conv1" else a) != (b[:1] + b[2:] if name == "conv1" else b):
            raise ConfigError(
                f"{where}: holds {_variant(source.model)}'s layers, --model {cfg.model}'s differ ({name} "
                f"{list(b)} there, {list(a)} here); give --model {_variant(source.model)} or leave --model out"
            )


def copied(cfg: TrainConfig) -> list[str]:
    """The body layers a run copies from ``--init-from``: conv1 .. ``--copy-up-to`` (fc7 unless given)."""
    if cfg.init_from is None:
        return []
    return list(LAYERS[: layer_index(cfg.copy_up_to or "fc7") + 1])


def frozen(cfg: TrainConfig, epoch: int | None = None) -> list[str]:
    """The layers kept at the source's weights in ``epoch``: every copied layer during the first
    ``--freeze-epochs``, else conv1 .. ``--freeze``. ``epoch`` None: those frozen for the whole
    run, which are left out of the optimizer."""
    if epoch is not None and epoch < cfg.freeze_epochs:
        return copied(cfg)
    return list(LAYERS[: layer_index(cfg.freeze) + 1]) if cfg.freeze else []


def initialise(network: nn.Module, source: Source, cfg: TrainConfig, classes: list[str]) -> dict:
    """Copy the source's layers into ``network`` (built and seeded for the run, on the CPU) and
    return the record of what happened (``transfer.json``): layers copied, adapted and new."""
    check_layers(network, source, cfg)
    state = network.state_dict()
    mine, its = named_layers(state), named_layers(source.model.weights)
    take = copied(cfg) + ([HEAD] if cfg.copy_up_to is None and source.model.classes == list(classes) else [])
    adapted = {}
    for name in take:
        for part in ("weight", "bias"):
            value = source.model.weights[f"{its[name]}.{part}"].detach().float()
            want = state[f"{mine[name]}.{part}"]
            if name == "conv1" and part == "weight" and value.shape[1] != want.shape[1]:
                value, adapted[name] = adapt_input_conv(value, want.shape[1], source.path)
            state[f"{mine[name]}.{part}"] = value.to(want.dtype)
    network.load_state_dict(state)
    return {
        "init_from": str(source.path),
        "sha256": source.sha256,
        "format": source.format,
        "source_model": _variant(source.model),
        "source_classes": len(source.model.classes),
        "copied": take,
        "adapted": adapted,
        "new": [name for name in mine if name not in take],
        "frozen": frozen(cfg),
        "freeze_epochs": cfg.freeze_epochs,
        "transfer_lr_mult": cfg.transfer_lr_mult,
        "preprocess": source.model.preprocess.to_dict(),
    }


def adapt_input_conv(weight: torch.Tensor, channels: int, path: Path) -> tuple[torch.Tensor, str]:
    """conv1's kernels (out, c, k, k) for input of ``channels`` channels, as timm and fastai do:
    3 -> 1 sums the kernels over RGB; 1 -> 3 repeats the kernel and divides by 3 (the response to
    a gray image given as RGB is then the gray network's). Returns the kernels and what was done."""
    have = weight.shape[1]
    if (have, channels) == (3, 1):
        return weight.sum(1, keepdim=True), "RGB kernels summed into one grayscale kernel"
    if (have, channels) == (1, 3):
        return weight.repeat(1, 3, 1, 1) / 3, "grayscale kernel repeated over RGB and divided by 3"
    raise ConfigError(
        f"--init-from {path}: conv1 reads {have} channels, the data has {channels}; give 1- or 3-channel data"
    )


def data_channels(cfg: TrainConfig) -> int:
    """The channels of ``cfg.data``'s images, from its kind alone: IDX sets are grayscale, prepared
    shards say in their index, image folders are read as RGB."""
    if is_shards(cfg.data):
        return 1 if ShardIndex.read(cfg.data).mode == "L" else 3
    return 1 if cfg.data is None or is_idx_folder(cfg.data) else 3


def source_stats(source: Source, channels: int) -> dict:
    """The source's normalization for data of ``channels`` channels, as ``build_data`` takes it
    (``stats``). RGB -> gray: the mean of the three means and of the three stds (exact when the
    channels' statistics are equal, as conv1's summed kernel assumes); gray -> RGB: repeated.
    Caffe's 0..255 scale and BGR order come along (BGR only to RGB data: gray has no order)."""
    pre = source.model.preprocess
    stats = pre.stats
    mean, std = list(pre.mean), list(pre.std)
    if len(mean) == 3 and channels == 1:
        mean, std = [sum(mean) / 3], [sum(std) / 3]
    elif len(mean) == 1 and channels == 3:
        mean, std = mean * 3, std * 3
    out = {"mean": mean, "std": std, **{k: stats[k] for k in ("scale", "resize_to") if k in stats}}
    if channels == 3 and "channel_order" in stats:
        out["channel_order"] = stats["channel_order"]
    return out


def _layer_of(name: str, prefixes: dict[str, str]) -> str | None:
    """The layer a parameter belongs to; a two-tower network's names start with ``towers.N.``."""
    key = re.sub(r"^towers\.\d+\.", "", name).rpartition(".")[0]
    return next((layer for layer, prefix in prefixes.items() if prefix == key), None)


def _parameters(network: nn.Module) -> list[tuple[str | None, nn.Parameter]]:
    prefixes = named_layers(network.state_dict())
    return [(_layer_of(name, prefixes), p) for name, p in network.named_parameters()]


def set_trainable(network: nn.Module, cfg: TrainConfig, epoch: int) -> bool:
    """``requires_grad`` of every parameter for ``epoch`` (off in the layers :func:`frozen` names);
    whether anything changed (a DDP wrapper must then be made again: it reduces the gradients of
    the parameters that required them when it was made)."""
    still = set(frozen(cfg, epoch))
    changed = False
    for layer, p in _parameters(network):
        want = layer not in still
        changed |= p.requires_grad != want
        p.requires_grad_(want)
    return changed


def param_groups(network: nn.Module, cfg: TrainConfig) -> list[dict]:
    """The optimizer's parameter groups: every parameter but those frozen for the whole run, the
    copied layers at ``--lr`` x ``--transfer-lr-mult`` in a group of their own when that is not 1."""
    out, body = set(frozen(cfg)), set(copied(cfg))
    params = [(layer, p) for layer, p in _parameters(network) if layer not in out]
    if cfg.transfer_lr_mult == 1:
        return [{"params": [p for _, p in params], "lr": cfg.lr}]
    groups = [
        {"params": [p for layer, p in params if layer not in body], "lr": cfg.lr},
        {"params": [p for layer, p in params if layer in body], "lr": cfg.lr * cfg.transfer_lr_mult},
    ]
    return [g for g in groups if g["params"]]


def describe(record: dict) -> str:
    """One line for the run's opening: what came from where."""
    adapted = "".join(f"; {name}: {how}" for name, how in record["adapted"].items())
    frozen_part = f"; frozen: {_span(record['frozen'])}" if record["frozen"] else ""
    if record["freeze_epochs"]:
        frozen_part += f"; every copied layer frozen for the first {record['freeze_epochs']} epoch(s)"
    rate = f"; copied layers at {record['transfer_lr_mult']:g}x the rate" if record["transfer_lr_mult"] != 1 else ""
    return (
        f"from {record['init_from']} ({record['format']}, {record['source_model']}): copied "
        f"{_span(record['copied'])}, new {_span(record['new']) or 'none'}{adapted}{frozen_part}{rate}"
    )


def _span(layers: list[str]) -> str:
    return f"{layers[0]}..{layers[-1]}" if len(layers) > 2 else ", ".join(layers)
