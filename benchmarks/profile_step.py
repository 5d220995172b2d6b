"""Where a CPU training step's time goes: torch.profiler over a few steps of ``alexnet train``'s
step (engine.train_step, fused SGD) at the default size, per op kind and per layer.

    .venv/bin/python benchmarks/profile_step.py                        # fp32, channels-last, batch 32
    .venv/bin/python benchmarks/profile_step.py --contiguous --batch-size 128 --steps 3

Per layer: each layer run alone, forward and backward, on the input it gets in the step (the
profiler's own op names cannot tell two layers' matmuls apart).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from alexnet.config import TrainConfig
from alexnet.models import build_model
from alexnet.system import runtime
from alexnet.training.engine import train_step
from alexnet.training.optim import make_optimizer


def per_layer(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> list[tuple[str, str, float, float]]:
    """(name, layer, forward ms, backward ms) of each layer of ``model`` run alone on the input it
    gets in a forward pass of ``x`` (median of ``repeats``)."""
    inputs = {}
    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children())]
    hooks = [
        m.register_forward_pre_hook(lambda mod, inp, n=n: inputs.__setitem__(n, inp[0].detach().clone()) or None)
        for n, m in leaves
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    rows = []
    for name, module in leaves:
        fwd, bwd = [], []
        for _ in range(repeats + 1):  # the first is a warm-up
            inp = inputs[name].clone().requires_grad_(name != leaves[0][0])
            start = time.perf_counter()
            out = module(inp if not getattr(module, "inplace", False) else inp * 1)
            mid = time.perf_counter()
            out.backward(torch.ones_like(out))
            fwd.append(mid - start)
            bwd.append(time.perf_counter() - mid)
        rows.append((name, type(module).__name__, statistics.median(fwd[1:]) * 1e3, statistics.median(bwd[1:]) * 1e3))
    model.zero_grad(set_to_none=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image-size", type=int, default=TrainConfig().image_size)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--contiguous", action="store_true", help="NCHW instead of channels-last")
    p.add_argument("--classes", type=int, default=10)
    args = p.parse_args()
    device = torch.device("cpu")
    runtime.prepare(device)
    fmt = torch.contiguous_format if args.contiguous else torch.channels_last
    model = build_model("alexnet", num_classes=args.classes).to(memory_format=fmt)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size).contiguous(memory_format=fmt)
    y = torch.randint(0, args.classes, (args.batch_size,))
    opt = make_optimizer(model, TrainConfig())
    train_step(model, x, y, opt, device=device)  # warm-up: oneDNN primitives, allocator
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(args.steps):
            train_step(model, x, y, opt, device=device)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    print(
        f"{runtime.cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}; alexnet "
        f"{args.image_size}px "
        f"batch {args.batch_size} fp32 {'NCHW' if args.contiguous else 'channels-last'}; {args.steps} steps, "
        f"{total / 1e3 / args.steps:.0f} ms a step (profiled)\n"
    )
    print("| op | self CPU ms/step | share |\n|---|---:|---:|")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:12]:
        print(f"| {e.key} | {e.self_cpu_time_total / 1e3 / args.steps:.1f} | {e.self_cpu_time_total / total:.0%} |")
    rows = per_layer(model, x, args.steps)
    layers = sum(f + b for _, _, f, b in rows)
    print(f"\nPer layer, each run alone ({args.steps} repeats, median; {layers:.0f} ms in all):\n")
    print("| layer | kind | forward ms | backward ms | share |\n|---|---|---:|---:|---:|")
    for name, kind, f, b in rows:
        print(f"| {name} | {kind} | {f:.1f} | {b:.1f} | {(f + b) / layers:.0%} |")


if __name__ == "__main__":
    main()
