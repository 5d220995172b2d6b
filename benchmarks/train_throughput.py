"""Training-step throughput of the AlexNet variants on this CPU, for a grid of settings.

One *step* is what a training run does per batch: forward, cross-entropy, backward and
``SGD(momentum=0.9, weight_decay=5e-4).step()``. Data is one random batch of 1-channel images
(Fashion-MNIST after upscaling) reused every step, so the numbers leave out data loading and
resizing; they answer "how fast can this machine run the network", not "how fast is an epoch".

Each configuration gets ``--warmup`` untimed steps, then ``--repeats`` timed repeats of ``--steps``
steps (airbench style); images/s is reported as mean ± sample std over the repeats, and ``best``
is the fastest repeat. Every (model, image size, mode) group also gets a *baseline* row - fp32,
contiguous, batch 128, eager, the default thread count, PyTorch's default SGD (a per-parameter
for-loop on CPU), default malloc - measured in the same run, and every row prints its speed-up
against that baseline.

    .venv/bin/python benchmarks/train_throughput.py                       # default grid, ~3 min
    .venv/bin/python benchmarks/train_throughput.py --image-sizes 67 --batch-sizes 256 \\
        --dtypes bf16 --memory-formats channels_last --threads 1 2 --optimizers default fused
    .venv/bin/python benchmarks/train_throughput.py --image-sizes 67 --batch-sizes 128 256 \\
        --dtypes fp32 bf16 --compile off on --modes train eval

Timings mean something only on an otherwise idle machine: never run two benchmarks at once. The
``others`` column says how many cores other processes kept busy while a row was being timed;
``--wait-quiet`` waits for them, and ``--rounds`` spreads each config over the run, since on a
shared virtual machine the speed of the same config can swing by ±30% from one minute to the next.
"""

from __future__ import annotations

import argparse
import copy
import gc
import itertools
import os
import platform
import statistics
import time
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
import torchvision

from alexnet.engine import autocast, train_step
from alexnet.models import build_model
from alexnet.runtime import cpu_flags, cpu_name, keep_freed_memory

NUM_CLASSES, IN_CHANNELS = 10, 1  # Fashion-MNIST: 10 classes of grayscale images
LR, MOMENTUM, WEIGHT_DECAY = 0.01, 0.9, 5e-4  # the paper's section 5 recipe
MEMORY_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
OPTIMIZERS = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}
DISTURBED = 0.2  # cores used by other processes above which a timed row counts as disturbed


@dataclass(frozen=True)
class Config:
    """One row of the table."""

    model: str
    image_size: int  # height = width of the (upscaled) input, pixels
    batch_size: int
    dtype: str  # "fp32", or "bf16" = torch.autocast("cpu", dtype=torch.bfloat16)
    memory_format: str  # "contiguous" or "channels_last"
    compile: bool  # torch.compile(model) with the default (inductor) backend
    threads: int  # torch.set_num_threads
    optimizer: str  # "default" (for-loop on CPU), "foreach" or "fused" SGD kernels
    malloc: str  # "default" glibc malloc, or "keep": freed memory stays mapped (see keep_memory)
    mode: str  # "train" (full SGD step) or "eval" (model.eval() forward under no_grad)

    def group(self) -> tuple:
        return (self.model, self.image_size, self.mode)


@dataclass
class Result:
    images_per_s: list[float]  # one value per repeat
    steps: int  # steps per repeat
    first_step_s: float  # the first warm-up step; includes compilation when compile is on
    others_cores: float  # CPU used by other processes while timing, in cores (noise indicator)


def _busy_jiffies() -> tuple[int, int]:
    """(busy CPU time of the whole machine, CPU time of this process), in clock ticks."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(
            int, f.readline().split()[1:9])
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return user + nice + system + irq + softirq + steal, int(fields[11]) + int(fields[12])


def baseline_of(cfg: Config, default_threads: int) -> Config:
    return replace(cfg, batch_size=128, dtype="fp32", memory_format="contiguous", compile=False,
                   threads=default_threads, optimizer="default" if cfg.mode == "train" else "-",
                   malloc="default")


def keep_memory() -> None:
    """alexnet.runtime.keep_freed_memory, as training does; it cannot be undone, so "keep" rows run last."""
    if not keep_freed_memory():
        raise OSError("mallopt refused the settings")


DEVICE = torch.device("cpu")  # set by --device


def sync() -> None:
    """Wait for queued GPU work, so that timers measure it."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def make_step(cfg: Config):
    """Build model, optimizer and batch for ``cfg``; return a function that runs one step."""
    torch.manual_seed(0)
    fmt = MEMORY_FORMATS[cfg.memory_format]
    model = build_model(cfg.model, num_classes=NUM_CLASSES, in_channels=IN_CHANNELS)
    model = model.to(DEVICE, memory_format=fmt)
    x = torch.randn(cfg.batch_size, IN_CHANNELS, cfg.image_size, cfg.image_size, device=DEVICE)
    x = x.contiguous(memory_format=fmt)
    y = torch.randint(0, NUM_CLASSES, (cfg.batch_size,), device=DEVICE)
    precision = cfg.dtype  # "fp32" or "bf16", as alexnet train --precision takes it
    if cfg.compile:
        torch._dynamo.reset()  # every config compiles afresh; avoids the recompile limit
        net = torch.compile(model)
    else:
        net = model

    if cfg.mode == "eval":
        model.eval()

        def step():
            with torch.no_grad(), autocast(DEVICE, precision):
                return net(x)

        return step

    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM,
                          weight_decay=WEIGHT_DECAY, **OPTIMIZERS[cfg.optimizer])
    model.train()

    def step():  # the training run's own step (engine.train_step)
        return train_step(net, x, y, opt, device=DEVICE, precision=precision)[0]

    return step


def wait_for_quiet(max_wait_s: float, threshold: float = 0.15) -> float:
    """Sleep (up to ``max_wait_s``) until other processes use under ``threshold`` cores for 1 s."""
    start = time.perf_counter()
    while True:
        busy0, own0 = _busy_jiffies()
        time.sleep(1.0)
        busy1, own1 = _busy_jiffies()
        others = (busy1 - busy0 - (own1 - own0)) / os.sysconf("SC_CLK_TCK")
        if others < threshold or time.perf_counter() - start > max_wait_s:
            return time.perf_counter() - start


def measure(cfg: Config, args) -> Result:
    """Warm up, then time ``repeats`` x ``steps`` steps (fewer if past ``--max-config-s``)."""
    if args.wait_quiet > 0:
        wait_for_quiet(args.wait_quiet)
    torch.set_num_threads(cfg.threads)
    step = make_step(cfg)
    t0 = time.perf_counter()
    step()
    sync()
    first = time.perf_counter() - t0
    t_step = first
    for _ in range(args.warmup - 1):
        t0 = time.perf_counter()
        step()
        sync()
        t_step = time.perf_counter() - t0
    repeats, steps = args.repeats, args.steps
    if repeats * steps * t_step > args.max_config_s:  # slow config: keep its cost bounded
        steps = 1
        repeats = max(2, min(repeats, int(args.max_config_s / t_step)))
    rates = []
    try:
        busy0, own0, t_start = *_busy_jiffies(), time.perf_counter()
    except OSError:  # no /proc: not Linux
        busy0 = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        rates.append(steps * cfg.batch_size / (time.perf_counter() - t0))
    others = float("nan")
    if busy0 is not None:
        busy1, own1 = _busy_jiffies()
        hz = os.sysconf("SC_CLK_TCK")
        others = max(0.0, (busy1 - busy0 - (own1 - own0)) / hz / (time.perf_counter() - t_start))
    return Result(rates, steps, first, others)


def bf16_sanity(model_name: str, image_size: int, batch_size: int = 128) -> str:
    """Loss of one step in fp32 and under bf16 autocast, same weights, batch and dropout masks.

    Also the fp32 loss after that one SGD step, to see whether the bf16 update lands nearby.
    """
    torch.manual_seed(0)
    ref = build_model(model_name, num_classes=NUM_CLASSES, in_channels=IN_CHANNELS)
    x = torch.randn(batch_size, IN_CHANNELS, image_size, image_size)
    y = torch.randint(0, NUM_CLASSES, (batch_size,))
    before, after = {}, {}
    for dtype in ("fp32", "bf16"):
        model = copy.deepcopy(ref).train()
        opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM,
                              weight_decay=WEIGHT_DECAY)
        torch.manual_seed(1)  # identical dropout masks in both runs
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        before[dtype] = loss.item()
        with torch.no_grad():
            after[dtype] = F.cross_entropy(model.eval()(x), y).item()  # fp32, no dropout
    d0, d1 = abs(before["fp32"] - before["bf16"]), abs(after["fp32"] - after["bf16"])
    # relative, so that a loss that blows up under the paper's init is judged fairly
    rel = max(d0 / max(1.0, before["fp32"]), d1 / max(1.0, after["fp32"]))
    verdict = "match to 1e-2" if rel <= 1e-2 else "DIFFER by more than 1e-2"
    return (f"{model_name} {image_size}px bs{batch_size}: step loss fp32 {before['fp32']:.4f} "
            f"bf16 {before['bf16']:.4f} (|d| {d0:.1e}); fp32 eval loss after the step "
            f"{after['fp32']:.4f} vs {after['bf16']:.4f} (|d| {d1:.1e}) -> {verdict} "
            f"(relative, max(1, loss))")


def machine_header(args) -> str:
    cpu, flags = cpu_name(), cpu_flags()
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    load = os.getloadavg()
    return "\n".join([
        f"machine : {cpu} | {os.cpu_count()} logical cores | flags: {' '.join(isa) or '?'}",
        f"torch   : {torch.__version__} (ATen CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}, "
        f"oneDNN {'on' if torch.backends.mkldnn.is_available() else 'off'}) | torchvision "
        f"{torchvision.__version__} | python {platform.python_version()}",
        f"threads : torch.get_num_threads() = {torch.get_num_threads()} at start | device {DEVICE}"
        + (f" ({torch.cuda.get_device_name(DEVICE)})" if DEVICE.type == "cuda" else "")
        + f" | {IN_CHANNELS} input channel(s), {NUM_CLASSES} classes",
        f"timing  : {args.rounds} round(s) of: {args.warmup} warm-up steps, then {args.repeats} "
        f"repeats x {args.steps} steps (fewer when a config would pass {args.max_config_s:g} s); "
        f"mean ± sample std of images/s over all repeats",
        f"load avg: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1/5/15 min) at start",
    ])


def build_grid(args, default_threads: int) -> list[Config]:
    """Cartesian product of the flags, with each group's baseline first and no duplicates."""
    grid = [Config(*c) for c in itertools.product(
        args.models, args.image_sizes, args.batch_sizes, args.dtypes, args.memory_formats,
        [c == "on" for c in args.compile], args.threads or [default_threads], args.optimizers,
        args.malloc, args.modes)]
    grid = [replace(c, optimizer="-") if c.mode == "eval" else c for c in grid]  # no optimizer
    rows: list[Config] = []
    for cfg in grid:
        for c in (baseline_of(cfg, default_threads), cfg):
            if c not in rows:
                rows.append(c)
    return sorted(rows, key=lambda c: (c.group(), c != baseline_of(c, default_threads)))


COLUMNS = ("model", "size", "batch", "dtype", "format", "compile", "thr", "sgd", "malloc", "mode",
           "n", "images/s", "best", "ms/step", "vs base", "others", "note")


def format_row(cfg: Config, res: Result | str, base: float | None, is_base: bool) -> list[str]:
    cells = [cfg.model, str(cfg.image_size), str(cfg.batch_size), cfg.dtype,
             "cl" if cfg.memory_format == "channels_last" else "contig",
             "on" if cfg.compile else "off", str(cfg.threads),
             cfg.optimizer, cfg.malloc, cfg.mode]
    if isinstance(res, str):
        return cells + ["-"] * 6 + [res]
    mean, std = statistics.mean(res.images_per_s), statistics.stdev(res.images_per_s)
    speedup = "baseline" if is_base else (f"{mean / base:.2f}x" if base else "-")
    note = f"compile+1st step {res.first_step_s:.1f} s" if cfg.compile else ""
    return cells + [f"{len(res.images_per_s)}x{res.steps}", f"{mean:7.1f} ± {std:5.1f}",
                    f"{max(res.images_per_s):7.1f}", f"{1000 * cfg.batch_size / mean:7.1f}",
                    speedup, f"{res.others_cores:.2f}", note]


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [list(COLUMNS)] + rows) for i in range(len(COLUMNS))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    print(line(COLUMNS))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(line(r))


def measure_row(cfg: Config, args, default_threads: int) -> Result | str:
    """:func:`measure`, once more when other processes disturbed it and ``--wait-quiet`` is on."""
    results = []
    for _ in range(2 if args.wait_quiet > 0 else 1):
        try:
            if cfg.malloc == "keep":
                keep_memory()
            results.append(measure(cfg, args))
        except Exception as e:  # torch.compile without a C++ toolchain, mallopt outside glibc
            if not (cfg.compile or cfg.malloc == "keep"):
                raise
            return f"skipped: {type(e).__name__}: {str(e).splitlines()[0][:80]}"
        finally:
            torch.set_num_threads(default_threads)
            gc.collect()  # free this config's model before the next one is built
        if not results[-1].others_cores > DISTURBED:  # also stops on nan (no /proc/stat)
            break
    return min(results, key=lambda r: r.others_cores)


def merge(old: Result | str | None, new: Result | str) -> Result | str:
    """Pool the repeats of several rounds; the first round's first step (cold compile) stays."""
    if old is None or isinstance(old, str):
        return new
    if isinstance(new, str):
        return old
    n_old, n_new = len(old.images_per_s), len(new.images_per_s)
    others = (old.others_cores * n_old + new.others_cores * n_new) / (n_old + n_new)
    return Result(old.images_per_s + new.images_per_s, min(old.steps, new.steps),
                  old.first_step_s, others)


def run(args) -> None:
    default_threads = torch.get_num_threads()
    print(machine_header(args), flush=True)
    grid = build_grid(args, default_threads)
    print(f"{len(grid)} configurations\n", flush=True)
    results: dict[Config, Result | str] = {}
    start = time.perf_counter()
    for malloc in ("default", "keep"):  # keep_memory() is for good: those rows go last
        for r in range(args.rounds):  # rounds spread every config over the whole run
            for cfg in (c for c in grid if c.malloc == malloc):
                res = measure_row(cfg, args, default_threads)
                results[cfg] = merge(results.get(cfg), res)
                rate = "-" if isinstance(res, str) else f"{statistics.mean(res.images_per_s):.1f}"
                print(f"  round {r + 1}: {' '.join(format_row(cfg, res, None, False)[:10])} "
                      f"-> {rate} images/s", flush=True)
    base_rate = {c.group(): statistics.mean(res.images_per_s) for c, res in results.items()
                 if c == baseline_of(c, default_threads) and not isinstance(res, str)}
    print()
    print_table([format_row(c, results[c], base_rate.get(c.group()),
                            c == baseline_of(c, default_threads)) for c in grid])
    print(f"best = fastest repeat; others = CPU cores busy with other processes while timing "
          f"(above {DISTURBED} the row is disturbed: rerun it on a quiet machine)")
    if "bf16" in args.dtypes and not args.no_sanity:
        print("\nbf16 sanity (one training step, fp32 vs autocast bf16):")
        for model_name, size in itertools.product(args.models, args.image_sizes):
            print("  " + bf16_sanity(model_name, size), flush=True)
    load = os.getloadavg()
    print(f"\nwall {time.perf_counter() - start:.0f} s | load avg at end {load[0]:.2f} "
          f"{load[1]:.2f} {load[2]:.2f}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="The grid is the Cartesian product of the list flags.")
    p.add_argument("--models", nargs="+", default=["alexnet"],
                   choices=["alexnet", "alexnet2012", "alexnet_owt"])
    p.add_argument("--image-sizes", nargs="+", type=int, default=[67, 99],
                   help="input height = width after upscaling (e.g. 67 99 131 227)")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[256])
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"],
                   help="bf16 = torch.autocast('cpu', dtype=torch.bfloat16), weights stay fp32")
    p.add_argument("--memory-formats", nargs="+", default=["contiguous", "channels_last"],
                   choices=list(MEMORY_FORMATS))
    p.add_argument("--compile", nargs="+", default=["off"], choices=["off", "on"])
    p.add_argument("--threads", nargs="+", type=int, default=None,
                   help="torch.set_num_threads values (default: the current count only)")
    p.add_argument("--optimizers", nargs="+", default=["fused"], choices=list(OPTIMIZERS),
                   help="SGD kernels; 'default' is PyTorch's choice (a for-loop on CPU)")
    p.add_argument("--malloc", nargs="+", default=["keep"], choices=["default", "keep"],
                   help="keep = glibc keeps freed memory mapped (no page faults per step)")
    p.add_argument("--modes", nargs="+", default=["train"], choices=["train", "eval"],
                   help="eval = model.eval() forward under torch.no_grad (test-set cost)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per config (>= 1)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per config (>= 2)")
    p.add_argument("--steps", type=int, default=2, help="steps per timed repeat")
    p.add_argument("--rounds", type=int, default=1,
                   help="passes over the grid; each adds --repeats repeats per config, so slow "
                        "spells on a shared machine hit every config alike")
    p.add_argument("--max-config-s", type=float, default=15.0,
                   help="timed seconds per config above which steps and repeats are cut")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                   help="before each config wait up to S seconds for other processes to go idle, "
                        "and measure a config again once if they disturbed it")
    p.add_argument("--no-sanity", action="store_true", help="skip the bf16-vs-fp32 loss check")
    p.add_argument("--device", default="cpu", help="cpu or cuda (bf16 = autocast on that device)")
    p.add_argument("--in-channels", type=int, default=1, help="1 as Fashion-MNIST, 3 as photos")
    args = p.parse_args(argv)
    global DEVICE, IN_CHANNELS
    DEVICE, IN_CHANNELS = torch.device(args.device), args.in_channels
    if args.warmup < 1 or args.repeats < 2 or args.steps < 1 or args.rounds < 1:
        p.error("need --warmup >= 1, --repeats >= 2, --steps >= 1 and --rounds >= 1")
    for name, size in itertools.product(args.models, args.image_sizes):
        low = build_model(name, num_classes=NUM_CLASSES, in_channels=IN_CHANNELS).min_size
        if size < low:
            p.error(f"{name} needs --image-sizes >= {low}, got {size}")
    return args


if __name__ == "__main__":
    run(parse_args())
