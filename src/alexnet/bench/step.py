"""Benchmark 1: the model step, training and inference, of each variant at 227 and at the default
size, against the network run plainly, and as a fraction of the matmul ceiling measured in the
same run; and what each of our choices gives alone (:func:`ablation_rows`, the ``choice`` rows).

Ours is what ``alexnet train`` runs (:func:`alexnet.training.engine.train_step`, the precision ``auto``
resolves to, channels-last, fused SGD). The baseline on a CPU is the source document's class
(tests/reference_seed.py, loaded when the source tree is there; otherwise, and at sizes the class
cannot take, the same variant from :func:`build_model`) in fp32, NCHW, eager, with PyTorch's
default SGD; on CUDA it is torchvision's reference recipe: fp16 autocast with GradScaler, NCHW,
eager, at the same batch size. On CUDA the rows run at batch 256 with each variant at its native
size (alexnet_owt 224, the others 227), each timed repeat CUDA_STEPS steps, and
:func:`compile_rows` adds ``torch.compile`` against eager with the compilation timed apart.
"""

from __future__ import annotations

import importlib.util
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from alexnet.bench.core import Row, compare, rates
from alexnet.config import TrainConfig
from alexnet.models import MODELS, build_model, check_image_size
from alexnet.system import runtime
from alexnet.training.engine import autocast, train_step
from alexnet.training.optim import make_optimizer

NUM_CLASSES = 1000
DEFAULT_SIZE = 99  # the step rows' smaller input, as docs/performance.md measures them (not the recipe's default)
_REFERENCE = Path(__file__).resolve().parents[3] / "tests" / "reference_seed.py"


def matmul_ceiling(device: torch.device, dtype: torch.dtype, repeats: int, n: int = 2048) -> float:
    """FLOP/s of an n x n matmul in ``dtype``: the most this device gives a dense layer - the
    fastest repeat, since a ceiling is a best case (on a shared machine the median dips with load)."""
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    count = 8 if device.type != "cpu" else 2

    def run() -> int:
        for _ in range(count):
            torch.mm(a, b)
        return count * 2 * n**3

    run()
    return max(rates(run, device, repeats))


def _reference_class():
    """The source document's AlexNet class, from the source tree's tests/, or None."""
    if not _REFERENCE.is_file():
        return None
    spec = importlib.util.spec_from_file_location("alexnet_reference_seed", _REFERENCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.AlexNet


def _baseline_model(name: str, size: int) -> tuple[torch.nn.Module, str]:
    reference = _reference_class() if name == "alexnet" and size == 227 else None
    if reference is not None:
        return reference(num_classes=NUM_CLASSES), "document class"
    return build_model(name, num_classes=NUM_CLASSES), f"{name} (build_model)"


def flops_per_image(model: torch.nn.Module, x: torch.Tensor, train: bool) -> float:
    """Floating-point operations of one image's forward (and backward when ``train``), counted."""
    with FlopCounterMode(display=False) as counter:
        out = model(x[:1])
        if train:
            F.cross_entropy(out, torch.zeros(1, dtype=torch.long, device=x.device)).backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def _ours(
    name: str,
    size: int,
    batch: int,
    device: torch.device,
    precision: str,
    train: bool,
    *,
    channels_last: bool = True,
    fused: bool = True,
):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(name, num_classes=NUM_CLASSES).to(device, memory_format=fmt)
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, NUM_CLASSES, (batch,), device=device)
    if train:
        model.train()
        opt = make_optimizer(model, TrainConfig(), fused=fused)

        def step() -> int:
            train_step(model, x, y, opt, device=device, precision=precision)
            return batch

        return step

    model.eval()

    def infer() -> int:
        with torch.inference_mode(), autocast(device, precision):
            model(x)
        return batch

    return infer


def _baseline(name: str, size: int, batch: int, device: torch.device, train: bool):
    model, what = _baseline_model(name, size)
    model = model.to(device)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, NUM_CLASSES, (batch,), device=device)
    amp = device.type == "cuda"  # torchvision's reference recipe: fp16 autocast + GradScaler
    cast = lambda: torch.autocast("cuda", dtype=torch.float16) if amp else torch.autocast("cpu", enabled=False)  # noqa: E731
    if train:
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        scaler = torch.amp.GradScaler("cuda", enabled=amp)

        def step() -> int:
            with cast():
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            return batch

        return step, what
    model.eval()

    def infer() -> int:
        with torch.no_grad(), cast():
            model(x)
        return batch

    return infer, what


# A GPU step of batch 256 takes milliseconds: each timed repeat runs this many, so a repeat is
# long enough for the timer and the launch queue is full as in training.
CUDA_STEPS = 10
CUDA_BATCH = 256


def _cases(device: torch.device, quick: bool) -> list[tuple[str, int]]:
    """(variant, size) of the step rows: on CUDA each variant at its native size (ImageNet-sized
    work: alexnet and alexnet2012 at 227, alexnet_owt at 224) and alexnet at the default size;
    on the CPU every variant but the test-size alexnet_tiny at 227 and at the default size."""
    if device.type == "cuda":
        cases = [("alexnet", 227), ("alexnet_owt", 224)] + (
            [] if quick else [("alexnet2012", 227), ("alexnet", DEFAULT_SIZE)]
        )
        return cases
    names = ["alexnet"] if quick else [n for n in MODELS if n != "alexnet_tiny"]  # the test-size net is no benchmark
    return [(name, size) for name in names for size in sorted({227, DEFAULT_SIZE})]


def _repeated(fn, device: torch.device):
    """``fn`` run CUDA_STEPS times per call on CUDA (once elsewhere): items done."""
    if device.type != "cuda":
        return fn
    return lambda: sum(fn() for _ in range(CUDA_STEPS))


def batch_for(device: torch.device, quick: bool, batch_size: int | None = None) -> int:
    """The step rows' batch: ``batch_size`` when given, else 256 on CUDA, 32 with ``quick``, else 128."""
    if batch_size is not None:
        return batch_size
    return CUDA_BATCH if device.type == "cuda" else 32 if quick else 128


def step_rows(
    device: torch.device, *, quick: bool, warmup: int, repeats: int, say, batch_size: int | None = None
) -> tuple[list[Row], dict]:
    """The step rows and the ceilings ({"fp32": FLOP/s, "bf16": FLOP/s})."""
    precision = runtime.resolve_precision("auto", device)
    ceiling = {
        "fp32": matmul_ceiling(device, torch.float32, repeats),
        "bf16": matmul_ceiling(device, torch.bfloat16, repeats),
    }
    say(
        f"matmul 2048x2048 ceiling: fp32 {ceiling['fp32'] / 1e9:,.0f} GFLOP/s, bf16 {ceiling['bf16'] / 1e9:,.0f} "
        "GFLOP/s"
    )
    batch = batch_for(device, quick, batch_size)
    plain = (
        "fp16 autocast + GradScaler, NCHW, eager, default SGD"
        if device.type == "cuda"
        else "fp32, NCHW, eager, default SGD"
    )
    rows = []
    for name, size in _cases(device, quick):
        try:
            check_image_size(size, name)
        except Exception:  # a variant that cannot take this size (ConfigError): no row
            continue
        for train in (True, False):
            base_fn, base_what = _baseline(name, size, batch, device, train)
            our_fn = _ours(name, size, batch, device, precision, train)
            base_fn, our_fn = _repeated(base_fn, device), _repeated(our_fn, device)
            probe = build_model(name, num_classes=NUM_CLASSES).to(device)
            flops = flops_per_image(probe, torch.randn(1, 3, size, size, device=device), train)
            row = compare(
                "step",
                f"{name} {size}px {'train' if train else 'inference'} b{batch}",
                "images/s",
                (f"{base_what}, {plain}", base_fn),
                (f"{precision}, channels-last, " + ("fused SGD" if train else "inference_mode"), our_fn),
                device=device,
                warmup=warmup,
                repeats=repeats,
            )
            base_ceiling = ceiling["bf16" if device.type == "cuda" else "fp32"]  # fp16 runs at bf16's tensor-core rate
            row.extra = {
                "flops_per_image": flops,
                "baseline_ceiling_fraction": flops * statistics.median(row.baseline_rates) / base_ceiling,
                "ours_ceiling_fraction": flops * statistics.median(row.ours_rates) / ceiling[precision],
            }
            say(f"  {row.name}: {statistics.median(row.ratios):.2f}x")
            rows.append(row)
    return rows, ceiling


def ablation_rows(
    device: torch.device, *, quick: bool, warmup: int, repeats: int, say, batch_size: int | None = None
) -> list[Row]:
    """What each choice of ours gives on its own: the training step at the default size with one
    choice undone (channels-last, fused SGD, the precision auto picks) against all of them."""
    fast = runtime.fast_path(device)
    batch = batch_for(device, quick, batch_size)
    undo = {
        "NCHW instead of channels-last": dict(channels_last=False),
        "PyTorch's foreach SGD instead of fused": dict(fused=False),
    }
    if fast.precision == "bf16":
        undo["fp32 instead of bf16 autocast"] = dict(precision="fp32")
    rows = []
    for what, change in undo.items():
        settings = {"precision": fast.precision, **change}
        mine = _repeated(_ours("alexnet", DEFAULT_SIZE, batch, device, fast.precision, True), device)
        theirs = _repeated(
            _ours("alexnet", DEFAULT_SIZE, batch, device, settings.pop("precision"), True, **settings), device
        )
        row = compare(
            "choice",
            f"alexnet {DEFAULT_SIZE}px train b{batch}: {what}",
            "images/s",
            (what, theirs),
            (f"{fast.precision}, channels-last, fused SGD", mine),
            device=device,
            warmup=warmup,
            repeats=repeats,
        )
        say(f"  {row.name}: {statistics.median(row.ratios):.2f}x")
        rows.append(row)
    return rows


def compile_rows(device: torch.device, *, quick: bool, warmup: int, repeats: int, say) -> tuple[list[Row], list[dict]]:
    """On CUDA: our training step (alexnet, 227 px, batch 256) eager against ``torch.compile``d, the
    compilation timed apart (``compile_seconds``: the first step, outside the rates). A compiler
    that fails gives no row but a ``skipped`` entry naming the error."""
    if device.type != "cuda" or quick:
        return [], []
    precision, size = runtime.resolve_precision("auto", device), 227
    eager = _repeated(_ours("alexnet", size, CUDA_BATCH, device, precision, True), device)
    model = build_model("alexnet", num_classes=NUM_CLASSES).to(device, memory_format=torch.channels_last)
    compiled = torch.compile(model)
    x = torch.randn(CUDA_BATCH, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, NUM_CLASSES, (CUDA_BATCH,), device=device)
    opt = make_optimizer(model, TrainConfig(), fused=True)

    def step() -> int:
        train_step(compiled, x, y, opt, device=device, precision=precision)
        return CUDA_BATCH

    try:
        start = time.perf_counter()
        step()
        torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    except Exception as e:  # no Triton, no compiler on the machine, ...: the eager rows stand
        return [], [
            {
                "group": "compile",
                "reason": f"torch.compile failed: {type(e).__name__}: {' '.join(str(e).split())[:200]}",
            }
        ]
    row = compare(
        "choice",
        f"alexnet {size}px train b{CUDA_BATCH}: torch.compile",
        "images/s",
        ("eager (what alexnet train runs)", eager),
        (f"torch.compile(model), {precision}, channels-last, fused SGD", _repeated(step, device)),
        device=device,
        warmup=warmup,
        repeats=repeats,
        extra={"compile_seconds": seconds},
    )
    say(f"  {row.name}: {statistics.median(row.ratios):.2f}x (compiled in {seconds:.0f} s)")
    return [row], []


def bf16_logits_check(device: torch.device, size: int = DEFAULT_SIZE, batch: int = 8) -> dict:
    """bf16 autocast against fp32 on the same network and batch: the largest logit difference,
    relative to the largest fp32 logit; within 5% it passes (bf16 keeps 8 bits of mantissa)."""
    torch.manual_seed(0)
    model = build_model("alexnet", num_classes=NUM_CLASSES).to(device).eval()
    x = torch.randn(batch, 3, size, size, device=device)
    with torch.inference_mode():
        exact = model(x).float()
        with autocast(device, "bf16"):
            low = model(x).float()
    rel = ((low - exact).abs().max() / exact.abs().max()).item()
    same_top1 = (low.argmax(1) == exact.argmax(1)).float().mean().item()
    return {
        "check": "bf16 vs fp32 logits",
        "device": str(device),
        "max_relative_difference": rel,
        "top1_agreement": same_top1,
        "tolerance": 0.05,
        "passed": rel <= 0.05,
    }
