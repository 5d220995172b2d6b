"""Fixed-seed CPU runs, reduced to hashes: run it before and after a refactor that must change nothing.

    .venv/bin/python scripts/fingerprint.py OUT.json [--work DIR]

Trains a few short runs that cover the main paths (Fashion-MNIST IDX in fp32 and bf16, a stop and
resume mid-epoch, an image folder with loader workers, the two towers, a model file evaluated and
embedded) and writes, per run, the SHA-256 of every weight and optimizer tensor and the lines of
metrics.jsonl and steps.jsonl without their timings. Two OUT.json files from the same machine and
torch are equal when the code's arithmetic is.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

TIMINGS = {"train_seconds", "val_seconds", "images_per_second", "seconds"}
PATHS = {"checkpoint", "checkpoints", "confusion_png", "model", "table"}  # evaluate's paths (its table holds them too)


def _hash(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().contiguous().cpu().view(-1).view(torch.uint8).numpy().tobytes()).hexdigest()[:16]


def _tensors(obj, prefix=""):
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k in sorted(obj, key=str):
            yield from _tensors(obj[k], f"{prefix}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{prefix}[{i}]")


def _lines(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [
        {k: v for k, v in json.loads(s).items() if k not in TIMINGS} for s in path.read_text().splitlines() if s.strip()
    ]


def _run_record(run: Path) -> dict:
    ckpt = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    return {
        "model": {k: _hash(v) for k, v in _tensors(ckpt["model"])},
        "optimizer": {k: _hash(v) for k, v in _tensors(ckpt["optimizer"])},
        "metrics": _lines(run / "metrics.jsonl"),
        "steps": _lines(run / "steps.jsonl"),
    }


def _alexnet(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("alexnet")
    return subprocess.run([str(exe), *args], check=check, capture_output=True, text=True)


def _folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for c, colour in enumerate(((200, 40, 30), (30, 200, 40), (30, 60, 220))):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(24):
            rgb = np.clip(np.array(colour) + rng.normal(0, 30, size=(80 + i, 90, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(rgb).save(root / f"class{c}" / f"{i}.png")
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--work", default=None, help="folder for the runs (default: a temporary one)")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="alexnet-fingerprint-"))
    runs = work / "runs"
    common = ["--image-size", "67", "--out", str(runs), "--seed", "3", "--step-log", "2"]
    record: dict = {"torch": torch.__version__}
    plans = {
        "idx-fp32": [
            "--device",
            "cpu",
            "--subset",
            "1024",
            "--batch-size",
            "64",
            "--epochs",
            "2",
            "--precision",
            "fp32",
        ],
        "idx-bf16-plateau": [
            "--device",
            "cpu",
            "--subset",
            "256",
            "--batch-size",
            "64",
            "--epochs",
            "2",
            "--precision",
            "bf16",
            "--schedule",
            "plateau",
            "--label-smoothing",
            "0.1",
        ],
        "towers": [
            "--model",
            "alexnet2012",
            "--model-parallel",
            "cpu,cpu",
            "--subset",
            "128",
            "--batch-size",
            "32",
            "--epochs",
            "1",
            "--precision",
            "fp32",
        ],
        "folder": [
            "--device",
            "cpu",
            "--data",
            str(_folder(work / "photos")),
            "--batch-size",
            "16",
            "--epochs",
            "2",
            "--workers",
            "2",
            "--precision",
            "fp32",
            "--model",
            "alexnet_owt",
        ],
    }
    for name, flags in plans.items():
        _alexnet("train", *common, "--name", name, *flags)
        record[name] = _run_record(runs / name)
    # a run stopped at a step and resumed must equal one that never stopped
    _alexnet("train", *common, "--name", "resumed", *plans["idx-bf16-plateau"], "--epochs", "1")
    _alexnet("train", "--resume", str(runs / "resumed"), "--epochs", "2")
    record["resumed"] = _run_record(runs / "resumed")
    # a model file evaluated: the numbers of evaluation.json
    model = runs / "idx-fp32" / "checkpoints" / "last.pt"
    out = _alexnet("evaluate", "--checkpoint", str(model), "--device", "cpu", "--json")
    record["evaluate"] = {k: v for k, v in json.loads(out.stdout).items() if k not in TIMINGS | PATHS}
    Path(args.out).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    same = record["resumed"]["model"] == record["idx-bf16-plateau"]["model"]
    print(f"wrote {args.out}; the resumed run equals the straight one: {same}")


if __name__ == "__main__":
    main()
