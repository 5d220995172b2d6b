"""Export a trained network in a form that cannot carry code: safetensors weights + a JSON sidecar.

``best.safetensors`` holds the model's state_dict and nothing else (no optimizer, no pickle);
``best.json`` beside it says what the weights are: the variant and its settings, the class names,
the preprocessing (image size, normalization), and which checkpoint and epoch they came from.
``alexnet predict`` and ``alexnet evaluate`` take the ``.safetensors`` file as ``--checkpoint``.

Each format is one function in :data:`EXPORTERS`; another (ONNX, say) is another entry there.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from alexnet.checkpoint import (
    DATA_SETTINGS, MODEL_SETTINGS, WEIGHTS_FORMAT, atomic_write, load_checkpoint, model_from_checkpoint, sidecar_path,
)  # fmt: skip
from alexnet.config import ConfigError


def export_safetensors(checkpoint: str | Path, out: str | Path | None = None, *, force: bool = False) -> tuple[Path, Path]:
    """Write ``checkpoint``'s weights as ``<name>.safetensors`` and its description as ``<name>.json``.

    ``out`` is the ``.safetensors`` path, or an existing folder (default: next to the checkpoint,
    same stem). Existing files are kept unless ``force``: nothing already written is lost.
    Returns (weights path, sidecar path).
    """
    from safetensors.torch import save_file

    checkpoint = Path(checkpoint)
    weights, side = _output_paths(checkpoint, out)
    if not force:  # before the slow part; atomic_write checks again without a race
        for path in (weights, side):
            if path.exists():
                raise FileExistsError(f"{path} already exists; pass --force to replace it")
    state = load_checkpoint(checkpoint)
    model_from_checkpoint(state, source=str(checkpoint))  # refuse to export weights that do not load

    # safetensors stores raw bytes in C order: channels_last weights must be made contiguous
    tensors = {k: v.detach().cpu().contiguous() for k, v in state["model"].items()}
    cfg = state["config"]
    sidecar = {
        "format": WEIGHTS_FORMAT,
        "model": cfg["model"],
        "num_classes": len(state["classes"]),
        "in_channels": len(state["preprocess"]["mean"]),
        "classes": list(state["classes"]),
        "preprocess": state["preprocess"],  # mode, image size, mean and std: what predict applies
        "config": {k: cfg[k] for k in (*MODEL_SETTINGS, *DATA_SETTINGS) if k in cfg},
        "source_checkpoint": str(checkpoint),
        "epoch": state.get("epoch"),
        "metrics": state.get("metrics"),
    }
    atomic_write(weights, lambda tmp: save_file(tensors, tmp, metadata={"format": WEIGHTS_FORMAT}), overwrite=force)
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


EXPORTERS = {"safetensors": export_safetensors}  # format name -> function(checkpoint, out, *, force)


def export(checkpoint: str | Path, *, format: str = "safetensors", out: str | Path | None = None, force: bool = False) -> tuple[Path, ...]:
    """Export ``checkpoint`` in ``format`` (one of :data:`EXPORTERS`); returns the paths written."""
    if format not in EXPORTERS:
        raise ConfigError(f"unknown export format {format!r}; choose one of: {', '.join(EXPORTERS)}")
    return EXPORTERS[format](checkpoint, out, force=force)
