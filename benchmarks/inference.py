"""Inference speed of an ONNX export in onnxruntime against PyTorch, on this CPU.

``alexnet`` at 227 x 227, 1000 classes, seeded random weights (speed does not depend on their
values), at batch 1 and batch 64. Rows, all in this one process:

* ``torch fp32``: eager PyTorch, fp32, contiguous, as ``Predictor`` runs the network - the baseline;
* ``torch default``: what ``alexnet evaluate`` runs - the precision ``--precision auto`` resolves
  to on this machine (bf16 autocast where the CPU has AMX or AVX512-BF16 units, else fp32) and channels-last memory;
* ``onnxruntime``: the export ``alexnet export --format onnx`` writes (formats.onnx.to_onnx), run by
  onnxruntime's CPU provider with all graph optimizations and as many threads as torch uses.

Each row: ``--warmup`` untimed batches, then ``--repeats`` timed repeats of ``--batches`` batches
(``--batches`` x 8 at batch 1); the table shows the median of images/s over the repeats, the spread
(min - max), the ratio to the baseline at the same batch size, the largest difference of its
logits from the baseline's, and how many cores other processes kept busy meanwhile (a shared
machine's noise). Never run two benchmarks at once.

    .venv/bin/python benchmarks/inference.py                 # ~2 min on 2 cores
    .venv/bin/python benchmarks/inference.py --repeats 9 --batch-sizes 1 16 64
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import onnx
import onnxruntime
import torch

from alexnet.data.transforms import Preprocess
from alexnet.formats.network import ModelFile
from alexnet.formats.onnx import INPUT, OPSET, to_onnx
from alexnet.models import build_model
from alexnet.system import runtime
from alexnet.training.engine import autocast

MODEL, IMAGE_SIZE, CLASSES = "alexnet", 227, 1000


def _busy_jiffies() -> tuple[int, int]:
    """(busy CPU time of the whole machine, CPU time of this process), in clock ticks."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return user + nice + system + irq + softirq + steal, int(fields[11]) + int(fields[12])


def model_file() -> ModelFile:
    torch.manual_seed(0)
    net = build_model(MODEL, num_classes=CLASSES)
    preprocess = Preprocess.for_folder(
        image_size=IMAGE_SIZE, stats={"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    )
    config = {
        "model": MODEL,
        "activation": "relu",
        "lrn": None,
        "pooling": "overlap",
        "dropout": 0.5,
        "image_size": IMAGE_SIZE,
    }
    return ModelFile(net.state_dict(), config, [f"class {i}" for i in range(CLASSES)], preprocess, source="benchmark")


def runners(model: ModelFile, threads: int) -> dict[str, tuple[str, callable]]:
    """name -> (what it is, run(x: numpy batch) -> numpy logits)."""
    cpu = torch.device("cpu")
    eager = model.network().eval()
    default = model.network().eval().to(memory_format=torch.channels_last)
    precision = runtime.resolve_precision("auto", cpu)

    def torch_fp32(x):
        with torch.no_grad():
            return eager(torch.from_numpy(x)).numpy()

    def torch_default(x):
        with torch.no_grad(), autocast(cpu, precision):
            return default(torch.from_numpy(x).contiguous(memory_format=torch.channels_last)).float().numpy()

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = onnxruntime.InferenceSession(
        to_onnx(model).SerializeToString(), options, providers=["CPUExecutionProvider"]
    )

    def ort(x):
        return session.run(None, {INPUT: x})[0]

    return {
        "torch fp32": ("eager, contiguous (Predictor)", torch_fp32),
        "torch default": (f"{precision}, channels_last (evaluate)", torch_default),
        "onnxruntime": (f"fp32, CPU provider, opset {OPSET}", ort),
    }


def measure(run, x: np.ndarray, args) -> tuple[list[float], float]:
    """Images/s of each repeat, and other processes' busy cores meanwhile."""
    for _ in range(args.warmup):
        run(x)
    batches = args.batches * (8 if len(x) == 1 else 1)
    busy0, own0, start = *_busy_jiffies(), time.perf_counter()
    rates = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for _ in range(batches):
            run(x)
        rates.append(batches * len(x) / (time.perf_counter() - t0))
    busy1, own1 = _busy_jiffies()
    others = max(0.0, (busy1 - busy0 - (own1 - own0)) / os.sysconf("SC_CLK_TCK") / (time.perf_counter() - start))
    return rates, others


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=int, default=2, help="batches per timed repeat (x 8 at batch 1)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = model_file()
    rows = runners(model, args.threads)
    print(
        f"machine: {runtime.cpu_name()}, {os.cpu_count()} cores; threads {args.threads} (torch and onnxruntime "
        "intra-op)"
    )
    print(
        f"versions: python {platform.python_version()}, torch {torch.__version__}, onnxruntime "
        f"{onnxruntime.__version__}, onnx {onnx.__version__}"
    )
    print(
        f"model: {MODEL} {IMAGE_SIZE}x{IMAGE_SIZE}, {CLASSES} classes; {args.repeats} repeats of {args.batches} "
        f"batches (x 8 at batch 1) after {args.warmup} warm-up"
    )
    print()
    print(
        f"| {'runtime':<14} | {'how':<36} | batch | images/s (median) | spread (min - max) | vs torch fp32 | max "
        "abs diff | others' cores |"
    )
    print(
        f"|{'-' * 16}|{'-' * 38}|------:|------------------:|-------------------:"
        "|--------------:|-------------:|--------------:|"
    )
    for batch in args.batch_sizes:
        x = torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(batch)).numpy()
        reference = rows["torch fp32"][1](x)
        baseline = None
        for name, (how, run) in rows.items():
            rates, others = measure(run, x, args)
            median = statistics.median(rates)
            baseline = baseline or median
            diff = float(np.abs(run(x) - reference).max())
            print(
                f"| {name:<14} | {how:<36} | {batch:>5} | {median:>17.1f} | {min(rates):>7.1f} - {max(rates):<8.1f} "
                f"| {median / baseline:>12.2f}x | {diff:>12.1e} | {others:>13.2f} |"
            )


if __name__ == "__main__":
    main()
