"""Evaluation of a trained network: top-1/top-5, per-class accuracy and the confusion matrix."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from alexnet import engine, runtime
from alexnet.config import TrainConfig
from alexnet.data import build_eval_data
from alexnet.formats import read_model
from alexnet.plots import plot_confusion
from alexnet.rundir import RunFolder


def evaluate_checkpoint(checkpoint: str | Path, *, data: str | None = None, device: str = "auto", out: str | Path | None = None) -> dict:
    """Evaluate a training checkpoint or an export (``.safetensors``) on its validation data (or
    on ``data``, same layout). Only the evaluated images are read.

    Writes ``evaluation.json`` and ``confusion.png`` to ``out`` (default: the run folder).
    """
    checkpoint = Path(checkpoint)
    model_file = read_model(checkpoint, source=f"--checkpoint {checkpoint}")
    # an export keeps only the settings that rebuild the network and its validation set
    cfg = TrainConfig.from_dict({**TrainConfig().to_dict(), **model_file.config}, source=str(checkpoint))
    cfg = replace(cfg, device=device, workers=min(cfg.workers, 2), **({"data": data} if data is not None else {}))
    dev = runtime.resolve_device(cfg.device)
    precision = runtime.fast_path(dev, cfg.precision).precision  # bf16 only where torch runs it on the device
    run_folder = RunFolder.of_checkpoint(checkpoint)
    # the files the training run skipped as bad are not in its hold-out split either
    exclude = run_folder.read_bad_files() if data is None else set()
    classes = model_file.classes
    images = build_eval_data(
        cfg.data, model_file.preprocess, classes, seed=cfg.seed, val_fraction=cfg.val_fraction, exclude=exclude,
        skip_bad_images=cfg.skip_bad_images, batch_size=cfg.batch_size, workers=cfg.workers, device=dev,
    )  # fmt: skip
    model = model_file.network().to(dev)
    result = engine.evaluate(model, images.batches, len(classes), device=dev, precision=precision)
    del result["stopped"]  # a whole pass: nothing asked it to stop
    result.update({"checkpoint": str(checkpoint), "data": images.source, "classes": classes,
                   "top1_error": 1 - result["top1"], "top5_error": 1 - result["top5"]})  # fmt: skip
    out = Path(out) if out is not None else run_folder.path
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
