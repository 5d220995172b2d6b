"""Evaluation of trained networks: top-1/top-5, per-class accuracy and the confusion matrix; the
paper's ten-crop testing and its ensembles (section 4.1 and 6: "averaging the predictions of five
similar CNNs").

One pass over the evaluation images serves every number: each batch is cut once (one crop, or the
ten views of ``--ten-crop``) without normalization, and each model normalizes it with its own
statistics (models trained with other seeds sampled other pixels). A model's single-crop number
is its logits on the centre view, exactly what a plain evaluation computes; a ten-crop number
averages the softmax over the ten views; an ensemble averages the models' softmax.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch

from alexnet.config import TrainConfig
from alexnet.data import build_eval_data
from alexnet.data.folder import has_split_folders
from alexnet.data.idx import is_idx_folder
from alexnet.data.shards import is_shards
from alexnet.data.transforms import CENTRE_VIEW
from alexnet.errors import ConfigError
from alexnet.formats import ModelFile, read_model
from alexnet.plots import plot_confusion
from alexnet.system import runtime
from alexnet.system.files import atomic_write, check_writable_folder
from alexnet.training import engine
from alexnet.training.rundir import RunFolder


def evaluate_checkpoint(
    checkpoint: str | Path,
    *,
    data: str | None = None,
    device: str = "auto",
    out: str | Path | None = None,
    ten_crop: bool = False,
) -> dict:
    """Evaluate a training checkpoint or an export (``.safetensors``) on its validation data (or
    on ``data``, same layout). Only the evaluated images are read. See :func:`evaluate_models`."""
    return evaluate_models([checkpoint], data=data, device=device, out=out, ten_crop=ten_crop)


def evaluate_models(
    checkpoints: Sequence[str | Path],
    *,
    data: str | None = None,
    device: str = "auto",
    out: str | Path | None = None,
    ten_crop: bool = False,
) -> dict:
    """Evaluate one model or an ensemble (several checkpoints or exports, softmax averaged) on the
    first one's validation data (or ``data``), single-crop and, with ``ten_crop``, ten-crop.

    The result's top-level numbers are the headline (the ensemble, ten-crop when asked);
    ``table`` holds every model's and the ensemble's, single-crop and ten-crop side by side.
    Writes ``evaluation.json`` and ``confusion.png`` (the headline's) to ``out`` (default: the
    first checkpoint's run folder).
    """
    paths = [Path(c) for c in checkpoints]
    if not paths:
        raise ConfigError("give at least one --checkpoint")
    files = [read_model(p, source=f"--checkpoint {p}") for p in paths]
    folders = [RunFolder.of_checkpoint(p) for p in paths]
    # the result's folder is checked before the evaluation, whose result would otherwise be lost
    out = Path(out) if out is not None else folders[0].path
    where = f"--out {out}" if out != folders[0].path else f"{out} (the model's folder; give --out elsewhere)"
    check_writable_folder(out, where)
    cfgs = [TrainConfig.from_dict({**TrainConfig().to_dict(), **f.config}, source=str(p)) for p, f in zip(paths, files)]
    _check_ensemble(paths, files, cfgs, data)
    # an export keeps only the settings that rebuild the network and its validation set
    cfg = replace(
        cfgs[0], device=device, workers=min(cfgs[0].workers, 2), **({"data": data} if data is not None else {})
    )
    dev = runtime.resolve_device(cfg.device)
    precision = runtime.fast_path(dev, cfg.precision).precision  # bf16 only where torch runs it on the device
    # the files the training runs skipped as bad are not in their hold-out split either
    exclude = set().union(*(f.read_bad_files() for f in folders)) if data is None else set()
    classes = files[0].classes
    pre = files[0].preprocess
    # the batches are RGB pixels in [0, 1], cut as the first model's record says; each model then
    # normalizes them its own way (Preprocess.normalize: channel order, 0..255, mean and std)
    raw = replace(
        pre,
        mean=(0.0,) * pre.channels,
        std=(1.0,) * pre.channels,
        scale=1,
        channel_order="RGB",
        eigval=None,
        eigvec=None,
    )
    images = build_eval_data(
        cfg.data,
        raw,
        classes,
        seed=cfg.seed,
        val_fraction=cfg.val_fraction,
        exclude=exclude,
        skip_bad_images=cfg.skip_bad_images,
        batch_size=cfg.batch_size,
        workers=cfg.workers,
        device=dev,
        ten_crop=ten_crop,
        chosen=cfg.classes is not None,  # trained with --classes: the same classes, by name
    )
    models = [f.network().to(dev).eval() for f in files]
    tallies = _score(models, [f.preprocess for f in files], images.batches, len(classes), dev, precision, ten_crop)
    names = [str(p) for p in paths] + ([f"ensemble of {len(paths)}"] if len(paths) > 1 else [])
    table = [
        {"model": name, "crop": crop, **{k: r[k] for k in ("top1", "top5", "loss", "images")}}
        for (name, crop), r in zip(_entries(names, ten_crop), (t.result() for t in tallies))
    ]
    headline = tallies[-1].result()
    result = {
        **headline,
        "checkpoint": str(paths[0]),
        "checkpoints": [str(p) for p in paths],
        "data": images.source,
        "classes": classes,
        "top1_error": 1 - headline["top1"],
        "top5_error": 1 - headline["top5"],
        "view": "ten-crop" if ten_crop else "single-crop",
        "model": names[-1],
        "table": table,
    }
    atomic_write(out / "evaluation.json", lambda tmp: tmp.write_text(json.dumps(result, indent=2) + "\n"))
    plot_confusion(result["confusion"], classes, out / "confusion.png")
    result["confusion_png"] = str(out / "confusion.png")
    return result


def _entries(names: list[str], ten_crop: bool) -> list[tuple[str, str]]:
    """(model, crop) of each tally, in :func:`_score`'s order: the headline (last) is the ensemble's
    (or the one model's) ten-crop number when asked, else its single-crop number."""
    crops = ("single-crop", "ten-crop") if ten_crop else ("single-crop",)
    return [(name, crop) for name in names for crop in crops]


@torch.no_grad()
def _score(
    models, preprocesses, batches, num_classes: int, device, precision: str, ten_crop: bool
) -> list[engine.Tally]:
    """One pass: a tally per (model, crop), then the ensemble's, in :func:`_entries`' order."""
    views = 10 if ten_crop else 1
    m = len(models)
    tallies = [engine.Tally(num_classes, device) for _ in range((m + (m > 1)) * (1 + ten_crop))]
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        x = x.flatten(0, 1) if ten_crop else x  # (N, 10, C, S, S) -> (N*10, C, S, S), image by image
        probs = []
        for i, (model, pre) in enumerate(zip(models, preprocesses)):
            with engine.autocast(device, precision):
                logits = model(pre.normalize(x)).float().view(len(y), views, num_classes)
            p = logits.softmax(-1)
            probs.append(p)
            single = logits[:, CENTRE_VIEW if ten_crop else 0]
            _add(tallies, i, ten_crop, single, p, y)
        if m > 1:
            p = torch.stack(probs).mean(0)  # (N, views, K): the models' softmax averaged
            _add(tallies, m, ten_crop, _log(p[:, CENTRE_VIEW if ten_crop else 0]), p, y)
    return tallies


def _add(tallies, i: int, ten_crop: bool, single: torch.Tensor, p: torch.Tensor, y: torch.Tensor) -> None:
    """Count entry ``i``'s batch: its single-crop scores, and its softmax averaged over the ten views."""
    if not ten_crop:
        tallies[i].add(single, y)
        return
    tallies[2 * i].add(single, y)
    tallies[2 * i + 1].add(_log(p.mean(1)), y)


def _log(p: torch.Tensor) -> torch.Tensor:
    """Log-probabilities for the tally (a softmax can underflow to 0 in float32)."""
    return p.clamp_min(torch.finfo(p.dtype).tiny).log()


def _check_ensemble(paths: list[Path], files: list[ModelFile], cfgs: list[TrainConfig], data: str | None) -> None:
    """The models of an ensemble are scored on the same images cut the same way: the same classes,
    data kind and input (mode, image size, resize or source size), and for the hold-out of a plain
    image folder the same split (seed and fraction). Refused in one line naming the first odd one."""
    first, where = files[0], f"--checkpoint {paths[0]}"

    def look(f):
        keys = ("kind", "mode", "image_size", "source_size", "resize", "resize_to", "decode")
        return {k: v for k, v in f.preprocess.to_dict().items() if k in keys}

    for path, f, c in zip(paths[1:], files[1:], cfgs[1:]):
        if f.classes != first.classes:
            raise ConfigError(
                f"--checkpoint {path}: its classes differ from {where}'s; an ensemble's models must share their classes"
            )
        if look(f) != look(first):
            raise ConfigError(
                f"--checkpoint {path}: its data kind and input {look(f)} differ from {where}'s {look(first)}; an "
                "ensemble's models must share them"
            )
        if (c.seed, c.val_fraction) != (cfgs[0].seed, cfgs[0].val_fraction) and _holds_out(
            data if data is not None else cfgs[0].data
        ):
            raise ConfigError(
                f"--checkpoint {path}: trained with another hold-out (seed {c.seed}, "
                "val fraction "
                f"{c.val_fraction}) "
                f"than {where}; "
                "a plain image folder's validation images would be another model's training images - give --data "
                "with a val/ split"
            )


def _holds_out(data: str | None) -> bool:
    """Whether ``data`` is a plain image folder, whose validation set is a seeded hold-out."""
    return (
        data is not None
        and not is_shards(data)
        and not is_idx_folder(data)
        and Path(data).is_dir()
        and not has_split_folders(Path(data))
    )


def format_report(result: dict) -> str:
    """Accuracy (every model and view side by side), per-class accuracy and the confusion matrix as text."""
    classes = result["classes"]
    lines = [
        f"{result['model']} on {result['data']} ({result['images']} images), {result['view']}",
        f"top-1 accuracy {100 * result['top1']:.2f}% (error {100 * result['top1_error']:.2f}%)   "
        f"top-5 accuracy {100 * result['top5']:.2f}% (error {100 * result['top5_error']:.2f}%)",
    ]
    if len(result["table"]) > 1:
        lines += ["", *_table(result["table"])]
    lines += ["", "per-class accuracy:"]
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


def _table(rows: list[dict]) -> list[str]:
    """One line per model (and the ensemble): top-1 and top-5 per crop, side by side."""
    crops = list(dict.fromkeys(r["crop"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    width = max(len(m) for m in models + ["model"])
    by = {(r["model"], r["crop"]): r for r in rows}
    out = [
        f"{'':<{width}}  " + "".join(f"{c:<20}" for c in crops),
        f"{'model':<{width}}  " + "".join(f"{'top-1':>8} {'top-5':>8}   " for _ in crops),
    ]
    for m in models:
        out.append(
            f"{m:<{width}}  "
            + "".join(f"{100 * by[m, c]['top1']:7.2f}% {100 * by[m, c]['top5']:7.2f}%   " for c in crops)
        )
    return out
