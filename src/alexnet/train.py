"""A training run: build the data and the model, loop over epochs, write the run folder.

The run folder (``<out>/<name>/``) holds everything needed to understand and repeat the run:
``config.json`` (resolved settings), ``command.txt``, ``env.json`` (versions, device, git commit),
``metrics.jsonl`` (one line per epoch), ``checkpoints/last.pt`` and ``best.pt``, ``curves.png``,
``split.json`` (the hold-out split of a plain image folder) and TensorBoard event files in ``tb/``.
"""

from __future__ import annotations

import ctypes
import json
import platform
import shlex
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import torch

from alexnet import engine
from alexnet.checkpoint import FORMAT, CheckpointError, link_checkpoint, load_checkpoint, save_checkpoint
from alexnet.config import ConfigError, TrainConfig
from alexnet.data import build_data
from alexnet.models import build_model
from alexnet.plots import plot_curves


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when present, else the CPU; anything else must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` picks bf16 autocast where the hardware has fast bf16 matrix units, else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if _cpu_has_amx() else "fp32"


def _cpu_has_amx() -> bool:
    # AMX tiles make oneDNN's bf16 convolutions and matmuls several times faster than fp32;
    # on CPUs with only AVX-512 bf16 or emulated bf16 it is no faster, so stay in fp32 there.
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (OSError, RuntimeError):
        return False


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory instead of returning it to the OS.

    Each CPU training step allocates and frees the same few hundred MB of activations and
    gradients; by default glibc serves blocks that large with mmap and unmaps them on free, so
    every step page-faults them in again (a third of the step in system time on 2 cores). With
    mmap off and trimming off the blocks are reused. Measured in benchmarks/train_throughput.py.
    Returns False where this is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))


def environment(device: torch.device, precision: str) -> dict:
    """Versions, hardware and git commit, written to env.json."""
    import torchvision

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "precision": precision,
        "git_commit": commit,
        "started": datetime.now().isoformat(timespec="seconds"),
    }


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.SGD:
    """Section 5: SGD with momentum 0.9 and weight decay 0.0005 on every weight and bias.

    PyTorch's update v <- m*v + (g + wd*w); w <- w - lr*v equals the paper's
    v <- 0.9v - 0.0005*lr*w - lr*g; w <- w + v while the learning rate is constant.
    """
    # fused: one kernel for the whole update instead of a loop over tensors (CPU and CUDA alike)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, fused=True)


def make_schedule(optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """Returns (per-step scheduler or None, per-epoch plateau scheduler or None)."""
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "onecycle":
        # Linear warm-up from lr/25 to lr over the first `warmup` of the steps, then cosine decay to
        # ~0: a stable start from scratch (no stall at chance) and most of the budget at high lr.
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=cfg.lr, total_steps=total, pct_start=cfg.warmup,
            anneal_strategy="cos", cycle_momentum=False, div_factor=25.0, final_div_factor=1e3,
        ), None  # fmt: skip
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total), None
    if cfg.schedule == "plateau":
        # The paper: divide by 10 when the validation error stops improving.
        return None, torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.1, patience=1)
    return None, None


def start_run_folder(cfg: TrainConfig, argv: list[str] | None) -> Path:
    name = cfg.name or f"{cfg.model}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(cfg.out) / name
    if (run_dir / "checkpoints" / "last.pt").exists():
        raise ConfigError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or pick another --name")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    except OSError as e:
        raise ConfigError(f"--out {cfg.out}: cannot write the run folder there ({e.strerror}); pick a writable --out") from None
    (run_dir / "command.txt").write_text(shlex.join(argv if argv is not None else sys.argv) + "\n")
    return run_dir


def train(cfg: TrainConfig, *, argv: list[str] | None = None, resume: str | Path | None = None, quiet: bool = False) -> dict:
    """Run (or, with ``resume``, continue) training; returns the last epoch's metrics and the run folder."""
    state = None
    if resume is not None:
        run_dir = Path(resume)
        last = run_dir / "checkpoints" / "last.pt"
        if not last.is_file():
            raise CheckpointError(f"--resume {run_dir}: no checkpoint at {last}; start a new run instead")
        state = load_checkpoint(last)
        cfg = TrainConfig.from_dict(state["config"], source=str(last))

    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    with torch.device("meta"):  # the size limit, before anything is loaded or written
        min_size = build_model(cfg.model, pooling=cfg.pooling, init="torch").min_size
    if cfg.image_size < min_size:
        raise ConfigError(f"--image-size {cfg.image_size} is below the minimum {min_size} for {cfg.model}; use at least {min_size}")
    data = build_data(cfg, device, stats=state["preprocess"] if state else None)
    if state is None:
        run_dir = start_run_folder(cfg, argv)
    torch.manual_seed(cfg.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    else:
        keep_freed_memory()
    model = build_model(
        cfg.model, num_classes=len(data.classes), in_channels=len(data.preprocess["mean"]),
        activation=cfg.activation, lrn=cfg.lrn, pooling=cfg.pooling, dropout=cfg.dropout, init=cfg.init,
    ).to(device)  # fmt: skip
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg)
    step_sched, plateau = make_schedule(optimizer, cfg, len(data.train))
    first_epoch, best = 0, 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if step_sched is not None:
            step_sched.load_state_dict(state["scheduler"])
        if plateau is not None:
            plateau.load_state_dict(state["scheduler"])
        first_epoch, best = state["epoch"] + 1, state["best_top1"]
        torch.set_rng_state(state["rng"]["torch"])
        if device.type == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"], device)
    else:
        (run_dir / "env.json").write_text(json.dumps(environment(device, precision), indent=2) + "\n")
        if data.split is not None:
            (run_dir / "split.json").write_text(json.dumps(data.split, indent=2) + "\n")

    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    say(
        f"run {run_dir}: {cfg.model} on {data.source} ({data.num_train} train / {data.num_val} val images, "
        f"{len(data.classes)} classes) at {cfg.image_size}x{cfg.image_size}, {device} {precision}"
    )
    writer = _tensorboard(run_dir)
    metrics_path = run_dir / "metrics.jsonl"
    record = {}
    for epoch in range(first_epoch, cfg.epochs):
        data.train.set_epoch(epoch)
        bar = _progress(epoch, cfg.epochs, data.num_train, quiet)
        tr = engine.train_one_epoch(
            model, data.train, optimizer, device=device, precision=precision, step_scheduler=step_sched,
            label_smoothing=cfg.label_smoothing, channels_last=cfg.channels_last, on_step=bar.update if bar else None,
        )  # fmt: skip
        if bar:
            bar.close()
        ev = engine.evaluate(model, data.val, len(data.classes), device=device, precision=precision, channels_last=cfg.channels_last)
        lr = optimizer.param_groups[0]["lr"]
        if plateau is not None:
            plateau.step(ev["top1"])
        is_best = ev["top1"] > best
        best = max(best, ev["top1"])
        record = {
            "epoch": epoch, "train_loss": tr["loss"], "train_acc": tr["acc"],
            "val_loss": ev["loss"], "val_top1": ev["top1"], "val_top5": ev["top5"],
            "lr": lr, "train_seconds": tr["seconds"], "val_seconds": ev["seconds"],
            "images_per_second": tr["images"] / tr["seconds"],
        }  # fmt: skip
        with metrics_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        ckpt = {
            "format": FORMAT, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": (step_sched or plateau).state_dict() if (step_sched or plateau) else None,
            "epoch": epoch, "best_top1": best, "metrics": record,
            "rng": {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None},
            "preprocess": data.preprocess, "classes": data.classes, "config": cfg.to_dict(),
        }  # fmt: skip
        save_checkpoint(ckpt, run_dir / "checkpoints" / "last.pt")
        if is_best:  # last.pt is replaced by a new file next epoch; best.pt keeps this one
            link_checkpoint(run_dir / "checkpoints" / "last.pt", run_dir / "checkpoints" / "best.pt")
        plot_curves(metrics_path, run_dir / "curves.png")
        if writer is not None:
            for key in ("train_loss", "train_acc", "val_loss", "val_top1", "val_top5", "lr", "images_per_second"):
                writer.add_scalar(key, record[key], epoch + 1)
            writer.flush()
        say(
            f"epoch {epoch + 1}/{cfg.epochs}: train loss {tr['loss']:.4f} acc {100 * tr['acc']:.2f}% | "
            f"val top-1 {100 * ev['top1']:.2f}% top-5 {100 * ev['top5']:.2f}% loss {ev['loss']:.4f} | "
            f"{tr['seconds']:.0f}s train ({record['images_per_second']:.0f} img/s) + {ev['seconds']:.0f}s val"
        )
    if writer is not None:
        writer.close()
    if not record and state is not None:
        record = state["metrics"]
        say(f"{run_dir} already finished all {cfg.epochs} epochs")
    return {**record, "run_dir": str(run_dir), "best_top1": best}


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency; stay usable if someone removed it
        return None
    return SummaryWriter(log_dir=str(run_dir / "tb"))


class _Bar:
    """tqdm progress bar in images, with loss and learning rate; reads the loss every 20 steps."""

    def __init__(self, bar):
        self.bar, self.steps = bar, 0

    def update(self, info: dict) -> None:
        self.steps += 1
        self.bar.update(info["images"])
        if self.steps % 20 == 1:
            self.bar.set_postfix(loss=f"{info['loss'].item():.3f}", lr=f"{info['lr']:.4g}", refresh=False)

    def close(self) -> None:
        self.bar.close()


def _progress(epoch: int, epochs: int, total: int, quiet: bool):
    if quiet or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return _Bar(tqdm(total=total, desc=f"epoch {epoch + 1}/{epochs}", unit="img", unit_scale=False, dynamic_ncols=True, leave=False))
