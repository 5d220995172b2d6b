"""``alexnet bench``: the speed benchmarks, each against a baseline run in the same process.

* ``step`` (:mod:`~alexnet.bench.step`): training and inference steps of each variant against
  the network run plainly, and as a fraction of the matmul ceiling measured in the same run; and
  the ``choice`` rows: the step with one of our choices undone (channels-last, fused SGD, bf16);
* ``compile`` (CUDA, not ``--quick``): the training step ``torch.compile``d against eager, the
  compilation timed apart;
* ``pipeline`` (:mod:`~alexnet.bench.pipeline`): the image-folder input pipeline against
  pytorch/examples' ImageNet loader;
* ``e2e``: a training epoch over a JPEG folder against the same model on synthetic data; on CUDA
  also at 227 px, batch 256, with the GPU-fed loader (data/gpudecode.py) against synthetic data
  and against the CPU-worker loader.

On CUDA the step's baseline is torchvision's reference recipe (fp16 autocast with GradScaler) and
the pipeline and e2e groups add the GPU-fed loader's rows;
without CUDA those GPU rows are skipped with a note (``benchmarks/gpu.sh`` runs them).
Every run also checks bf16 autocast's logits against fp32's on the device. :func:`run_bench`
prints the tables and returns (and with ``json_path`` writes) the record documented in
docs/performance.md: ``machine``, ``settings``, ``ceiling_flops``, ``rows``, ``checks``, ``skipped``.
"""

from __future__ import annotations

import json
from pathlib import Path

from alexnet.bench.core import Row, machine, table
from alexnet.system import runtime

GROUPS = ("step", "compile", "pipeline", "e2e")


def run_bench(
    *,
    device: str = "auto",
    only: str | None = None,
    quick: bool = False,
    json_path: str | None = None,
    workers: int = 1,
    warmup: int | None = None,
    repeats: int | None = None,
    batch_size: int | None = None,
    say=print,
) -> dict:
    """Run the benchmarks (``only`` one group of :data:`GROUPS`), print each table, return the record.
    ``batch_size`` sets the step and choice rows' batch (default: :func:`~alexnet.bench.step.batch_for`)."""
    from alexnet.bench.pipeline import e2e_rows, gpu_e2e_rows, pipeline_rows
    from alexnet.bench.step import ablation_rows, bf16_logits_check, compile_rows, step_rows

    dev = runtime.resolve_device(device)
    runtime.prepare(dev)  # what training sets up (allocator, cuDNN autotuning): both sides run under it
    warmup = (1 if quick else 2) if warmup is None else warmup
    repeats = (3 if quick else 5) if repeats is None else repeats
    env = machine(dev, runtime.resolve_precision("auto", dev))
    gpu = f" {env['gpu']}" if env["gpu"] else ""
    say(
        f"machine: {env['cpu']} ({env['cores']} cores, {env['threads']} threads, "
        f"{', '.join(env['cpu_features']) or 'no AVX2'}), device {dev}{gpu}, "
        f"torch {env['torch']}, torchvision {env['torchvision']}, "
        f"precision auto = {env['precision']}; warm-up {warmup}, repeats {repeats}, interleaved"
    )
    common = dict(quick=quick, warmup=warmup, repeats=repeats, say=say)
    rows: list[Row] = []
    record = {
        "machine": env,
        "settings": {
            "quick": quick,
            "only": only,
            "workers": workers,
            "warmup": warmup,
            "repeats": repeats,
            "batch_size": batch_size,
        },
        "ceiling_flops": None,
        "rows": [],
        "checks": [],
        "skipped": [],
    }
    if dev.type != "cuda":
        record["skipped"].append(
            {
                "group": "gpu",
                "reason": "no CUDA device here: the GPU rows (step against fp16 autocast + "
                "GradScaler, bf16 ceiling, torch.compile, GPU decode) run with --device cuda, e.g. benchmarks/gpu.sh",
            }
        )
    if only in (None, "step"):
        step, record["ceiling_flops"] = step_rows(dev, batch_size=batch_size, **common)
        rows += step + ablation_rows(dev, batch_size=batch_size, **common)
        record["checks"].append(bf16_logits_check(dev))
    if only in (None, "compile"):
        compiled, failed = compile_rows(dev, **common)
        rows += compiled
        record["skipped"] += failed
    if only in (None, "pipeline"):
        rows += pipeline_rows(dev, workers=workers, **common)
    if only in (None, "e2e"):
        rows += e2e_rows(dev, workers=workers, **common)
        if dev.type == "cuda":
            rows += gpu_e2e_rows(dev, workers=workers, **common)
    record["rows"] = [r.to_dict() for r in rows]
    say(table(rows))
    for check in record["checks"]:
        say(
            f"{check['check']} on {check['device']}: max relative difference {check['max_relative_difference']:.2e} "
            f"(tolerance {check['tolerance']}), top-1 agreement {check['top1_agreement']:.0%}: "
            f"{'passed' if check['passed'] else 'FAILED'}"
        )
    for s in record["skipped"]:
        say(f"skipped {s['group']}: {s['reason']}")
    if json_path:
        Path(json_path).write_text(json.dumps(record, indent=2) + "\n")
    return record


__all__ = ["GROUPS", "run_bench"]
