"""An export that cannot carry code: ``NAME.safetensors`` (the state_dict and nothing else: no
optimizer, no pickle) and ``NAME.json`` beside it, the sidecar that says what the weights are -
the variant and its settings, the class names, the preprocessing, and the checkpoint and epoch
they came from. Writer and reader side by side; ``alexnet predict`` and ``alexnet evaluate``
take the ``.safetensors`` file as ``--checkpoint``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from alexnet.errors import CheckpointError, ConfigError, brief, first_line
from alexnet.formats.network import DATA_SETTINGS, MODEL_SETTINGS, ModelFile
from alexnet.system.files import atomic_write, check_regular, read_json

WEIGHTS_FORMAT = "alexnet-weights/1"
SUFFIXES = (".safetensors",)
# A sidecar holds settings, preprocessing and class names: a few kB, or a few MB for a model of
# many thousands of classes.
MAX_SIDECAR_BYTES = 64 << 20
MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit on the JSON header before the tensors


def sidecar_path(weights: str | Path) -> Path:
    """The JSON file that describes ``weights``: same folder, same stem, ``.json``."""
    return Path(weights).with_suffix(".json")


def write(model: ModelFile, out: str | Path | None, *, checkpoint: Path, force: bool = False) -> tuple[Path, Path]:
    """Write ``model`` as ``<name>.safetensors`` plus ``<name>.json``.

    ``out`` is the ``.safetensors`` path, or an existing folder (default: next to ``checkpoint``,
    same stem). Existing files are kept unless ``force``: nothing already written is lost.
    Returns (weights path, sidecar path).
    """
    from safetensors.torch import save

    weights, side = _output_paths(checkpoint, out)
    if not force:  # before the slow part; atomic_write checks again without a race
        for path in (weights, side):
            if path.exists():
                raise FileExistsError(f"{path} already exists; pass --force to replace it")
    elif os.path.lexists(side) and not _is_sidecar(side):  # --force names the weights, never this file
        raise FileExistsError(
            f"{side} exists and is not an alexnet export's sidecar; --force replaces only a sidecar there (give "
            "--out another name)"
        )
    # safetensors stores raw bytes in C order: channels_last weights must be made contiguous
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.weights.items()}
    cfg = model.config
    sidecar = {
        "format": WEIGHTS_FORMAT,
        "model": cfg["model"],
        "num_classes": len(model.classes),
        "in_channels": model.preprocess.channels,
        "classes": list(model.classes),
        "preprocess": model.preprocess.to_dict(),  # mode, image size, mean and std: what predict applies
        "config": {k: cfg[k] for k in (*MODEL_SETTINGS, *DATA_SETTINGS) if k in cfg},
        "source_checkpoint": str(checkpoint),
        "epoch": model.epoch,
        "metrics": model.metrics,
    }
    # written by Python, so that a full disk is an OSError naming itself
    data = save(tensors, metadata={"format": WEIGHTS_FORMAT})
    atomic_write(weights, lambda tmp: tmp.write_bytes(data), overwrite=force)
    try:
        atomic_write(side, lambda tmp: tmp.write_text(json.dumps(sidecar, indent=2) + "\n"), overwrite=force)
    except BaseException:
        if not force:  # the weights file is ours (it did not exist); no weights without a sidecar
            weights.unlink(missing_ok=True)
        raise
    return weights, side


def _output_paths(checkpoint: Path, out: str | Path | None) -> tuple[Path, Path]:
    if out is None:
        weights = checkpoint.with_suffix(".safetensors")
    elif Path(out).is_dir() or str(out).endswith(os.sep):
        weights = Path(out) / f"{checkpoint.stem}.safetensors"
    elif Path(out).suffix == ".safetensors":
        weights = Path(out)
    else:
        raise ConfigError(f"--out {out}: give a .safetensors file name or an existing folder")
    if weights.resolve() == checkpoint.resolve():
        raise ConfigError(f"--out {out}: would overwrite the checkpoint itself")
    return weights, sidecar_path(weights)


def read(path: Path, source: str) -> ModelFile:
    """Read a ``.safetensors`` export and its JSON sidecar; both are untrusted input, every field
    checked, and the weights file's size against the network the sidecar describes before any
    tensor is read."""
    from safetensors import safe_open

    side = sidecar_path(path)
    info = check_regular(path, error=CheckpointError)
    if not os.path.lexists(side):
        raise CheckpointError(f"{path}: its sidecar {side} is missing (alexnet export writes both; keep them together)")
    meta = read_json(side, limit=MAX_SIDECAR_BYTES, error=CheckpointError)
    if not isinstance(meta, dict) or meta.get("format") != WEIGHTS_FORMAT:
        raise CheckpointError(f'{side}: not an alexnet export sidecar (expected "format": "{WEIGHTS_FORMAT}")')
    described = ModelFile.from_state(
        {**meta, "model": {}}, str(side)
    )  # the sidecar's fields, before the weights are read
    _check_summary(meta, described, side)
    most = 8 * described.parameter_count() + MAX_HEADER_BYTES
    if info.st_size > most:  # a header may declare tensors the network has no place for (a sparse file)
        raise CheckpointError(
            f"{path}: {info.st_size:,} bytes, more than the {most:,} the {described.config['model']} its sidecar "
            "describes takes even in float64; not that network's weights"
        )
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            weights = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # damaged bytes fail in safetensors' header parser (SafetensorError) or in torch
        raise CheckpointError(f"{path}: not a readable safetensors file ({first_line(e)})") from None
    if metadata.get("format") != WEIGHTS_FORMAT:
        raise CheckpointError(f"{path}: not an alexnet export (its metadata lacks format {WEIGHTS_FORMAT})")
    return ModelFile.from_state({**meta, "model": weights}, source)


def _is_sidecar(path: Path) -> bool:
    try:
        value = read_json(path, limit=MAX_SIDECAR_BYTES, error=CheckpointError)
    except CheckpointError:
        return False
    return isinstance(value, dict) and value.get("format") == WEIGHTS_FORMAT


def _check_summary(meta: dict, model: ModelFile, side: Path) -> None:
    """The fields the sidecar repeats for people reading it (``model``, ``num_classes``,
    ``in_channels``, ``source_checkpoint``) must agree with the fields the reader uses."""
    expected = {
        "model": model.config["model"],
        "num_classes": len(model.classes),
        "in_channels": model.preprocess.channels,
    }
    for key, value in expected.items():
        if key in meta and (meta[key] != value or type(meta[key]) is not type(value)):
            raise CheckpointError(
                f"{side}: {key!r} is {brief(meta[key])} but its config, classes and preprocess say {value!r}"
            )
    if not isinstance(meta.get("source_checkpoint", ""), str):
        raise CheckpointError(f"{side}: 'source_checkpoint' must be a path, got {brief(meta['source_checkpoint'])}")
