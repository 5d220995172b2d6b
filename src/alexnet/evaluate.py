"""Evaluation of a checkpoint: top-1/top-5, per-class accuracy and the confusion matrix."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from alexnet import engine
from alexnet.checkpoint import load_checkpoint, model_from_checkpoint
from alexnet.config import TrainConfig
from alexnet.data import build_data
from alexnet.plots import plot_confusion
from alexnet.train import resolve_device, resolve_precision


def evaluate_checkpoint(checkpoint: str | Path, *, data: str | None = None, device: str = "auto", out: str | Path | None = None) -> dict:
    """Evaluate a training checkpoint or an export (``.safetensors``) on its validation data (or
    on ``data``, same layout).

    Writes ``evaluation.json`` and ``confusion.png`` to ``out`` (default: the run folder).
    """
    checkpoint = Path(checkpoint)
    state = load_checkpoint(checkpoint)
    # an export keeps only the settings that rebuild the network and its validation set
    cfg = TrainConfig.from_dict({**TrainConfig().to_dict(), **state["config"]}, source=str(checkpoint))
    cfg = replace(cfg, device=device, workers=min(cfg.workers, 2), **({"data": data} if data is not None else {}))
    dev = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, dev)
    batches = build_data(cfg, dev, stats=state["preprocess"])
    classes = state["classes"]
    if batches.classes != classes:
        raise ValueError(f"--data {cfg.data}: its classes {batches.classes[:5]}... differ from the checkpoint's {classes[:5]}...")
    model = model_from_checkpoint(state, source=f"--checkpoint {checkpoint}").to(dev)
    result = engine.evaluate(model, batches.val, len(classes), device=dev, precision=precision)
    result.update({"checkpoint": str(checkpoint), "data": batches.source, "classes": classes,
                   "top1_error": 1 - result["top1"], "top5_error": 1 - result["top5"]})  # fmt: skip
    if out is None:
        out = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_text(json.dumps(result, indent=2) + "\n")
    plot_confusion(result["confusion"], classes, out / "confusion.png")
    result["confusion_png"] = str(out / "confusion.png")
    return result


def format_report(result: dict) -> str:
    """Accuracy, per-class accuracy and the confusion matrix as text."""
    classes = result["classes"]
    lines = [
        f"{result['checkpoint']} on {result['data']} ({result['images']} images)",
        f"top-1 accuracy {100 * result['top1']:.2f}% (error {100 * result['top1_error']:.2f}%)   "
        f"top-5 accuracy {100 * result['top5']:.2f}% (error {100 * result['top5_error']:.2f}%)",
        "",
        "per-class accuracy:",
    ]
    width = max(len(c) for c in classes)
    lines += [f"  {c:<{width}}  {100 * a:6.2f}%" for c, a in zip(classes, result["per_class"])]
    if len(classes) <= 30:
        lines += ["", "confusion matrix (rows: true class, columns: predicted class):"]
        cell = max(5, max(len(str(v)) for row in result["confusion"] for v in row) + 1)
        lines.append(" " * (width + 2) + "".join(f"{j:>{cell}}" for j in range(len(classes))))
        for i, (c, row) in enumerate(zip(classes, result["confusion"])):
            lines.append(f"  {c:<{width}}" + "".join(f"{v:>{cell}}" for v in row) + f"   {i}")
    lines.append(f"\nconfusion matrix image: {result['confusion_png']}")
    return "\n".join(lines)
