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
import signal
import subprocess
import sys
import threading
import time
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
    # With AMX tiles oneDNN's bf16 convolutions and matmuls made a training step 1.6-1.9x faster
    # than fp32 here (docs/results.md); without them bf16 is emulated and no faster: stay in fp32.
    try:
        return "amx_bf16" in _cpuinfo() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
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
        "cpu": _cpu_name(),
        "threads": torch.get_num_threads(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "precision": precision,
        "git_commit": commit,
        "started": datetime.now().isoformat(timespec="seconds"),
    }


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux
        return ""


def _cpu_name() -> str:
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


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


class Interrupted(Exception):
    """SIGINT or SIGTERM stopped the run after saving a checkpoint; the message says how to resume."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class _Signals:
    """While active, SIGINT and SIGTERM only set ``received``: the loop saves and stops cleanly.
    A second SIGINT interrupts at once."""

    def __init__(self):
        self.received, self._old = None, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


class _Run:
    """Everything a run holds between steps: built fresh, or restored from a checkpoint."""

    def __init__(self, cfg: TrainConfig, state: dict | None, run_dir: Path | None, argv):
        self.cfg, self.device = cfg, resolve_device(cfg.device)
        self.precision = resolve_precision(cfg.precision, self.device)
        with torch.device("meta"):  # the size limit, before anything is loaded or written
            min_size = build_model(cfg.model, pooling=cfg.pooling, init="torch").min_size
        if cfg.image_size < min_size:
            raise ConfigError(f"--image-size {cfg.image_size} is below the minimum {min_size} for {cfg.model}; use at least {min_size}")
        self.data = build_data(cfg, self.device, stats=state["preprocess"] if state else None)
        self.run_dir = run_dir if state is not None else start_run_folder(cfg, argv)
        torch.manual_seed(cfg.seed)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        else:
            keep_freed_memory()
        self.model = build_model(
            cfg.model, num_classes=len(self.data.classes), in_channels=len(self.data.preprocess["mean"]),
            activation=cfg.activation, lrn=cfg.lrn, pooling=cfg.pooling, dropout=cfg.dropout, init=cfg.init,
        ).to(self.device, memory_format=torch.channels_last if cfg.channels_last else torch.preserve_format)  # fmt: skip
        self.optimizer = make_optimizer(self.model, cfg)
        self.step_sched, self.plateau = make_schedule(self.optimizer, cfg, len(self.data.train))
        self.epoch, self.totals, self.best, self.rollbacks, self.metrics = 0, None, 0.0, 0, {}
        if state is not None:
            self.restore(state)
        else:
            (self.run_dir / "env.json").write_text(json.dumps(environment(self.device, self.precision), indent=2) + "\n")
            if self.data.split is not None:
                (self.run_dir / "split.json").write_text(json.dumps(self.data.split, indent=2) + "\n")
            if self.data.bad_files:
                (self.run_dir / "bad_images.json").write_text(json.dumps(self.data.bad_files, indent=2) + "\n")

    @property
    def scheduler(self):
        return self.step_sched or self.plateau

    def state(self, epoch: int, totals: dict | None) -> dict:
        """The checkpoint: ``totals`` is None after a whole epoch, else the running sums mid-epoch."""
        return {
            "format": FORMAT, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "epoch": epoch, "totals": totals, "best_top1": self.best, "rollbacks": self.rollbacks,
            "metrics": self.metrics,
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None},
            "preprocess": self.data.preprocess, "classes": self.data.classes, "config": self.cfg.to_dict(),
        }  # fmt: skip

    def restore(self, state: dict) -> None:
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scheduler is not None:
                self.scheduler.load_state_dict(state["scheduler"])
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"{self.run_dir}/checkpoints/last.pt does not fit its own settings ({first})") from None
        # a whole epoch done: continue with the next; stopped part-way: continue that epoch
        self.totals = state.get("totals")
        self.epoch = state["epoch"] + (1 if self.totals is None else 0)
        self.best, self.rollbacks, self.metrics = state["best_top1"], state.get("rollbacks", 0), state["metrics"]
        torch.set_rng_state(state["rng"]["torch"])
        if self.device.type == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)

    def save(self, epoch: int, totals: dict | None, best: bool = False) -> None:
        last = self.run_dir / "checkpoints" / "last.pt"
        try:
            save_checkpoint(self.state(epoch, totals), last)
            if best:  # last.pt is replaced by a new file next time; best.pt keeps this one
                link_checkpoint(last, self.run_dir / "checkpoints" / "best.pt")
        except OSError as e:
            raise RunError(
                f"cannot write a checkpoint to {last.parent} ({e.strerror or e}); the previous checkpoint is "
                f"kept - free space or fix the folder, then: alexnet train --resume {self.run_dir}"
            ) from None

    def halve_lr(self) -> None:
        """After a rollback: half the learning rate from here on, for every schedule."""
        for group in self.optimizer.param_groups:
            for key in ("lr", "initial_lr", "max_lr", "min_lr"):  # OneCycleLR keeps its own copies
                if key in group:
                    group[key] *= 0.5
        if hasattr(self.step_sched, "base_lrs"):
            self.step_sched.base_lrs = [lr * 0.5 for lr in self.step_sched.base_lrs]


class RunError(Exception):
    """The run cannot go on (disk full, repeated NaN); the message says what was kept and what to do."""


MAX_ROLLBACKS = 3


def train(cfg: TrainConfig, *, argv: list[str] | None = None, resume: str | Path | None = None, quiet: bool = False) -> dict:
    """Run (or, with ``resume``, continue) training; returns the last epoch's metrics and the run folder."""
    state, run_dir = None, None
    if resume is not None:
        run_dir = Path(resume)
        last = run_dir / "checkpoints" / "last.pt"
        if not last.is_file():
            raise CheckpointError(f"--resume {run_dir}: no checkpoint at {last}; start a new run instead")
        state = load_checkpoint(last)
        cfg = TrainConfig.from_dict(state["config"], source=str(last))
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    with _Signals() as signals:  # from here on SIGINT/SIGTERM end the run at the next step, saved
        run = _Run(cfg, state, run_dir, argv)
        if state is not None:
            _trim_metrics(run.run_dir / "metrics.jsonl", run.epoch)
        d = run.data
        say(
            f"run {run.run_dir}: {cfg.model} on {d.source} ({d.num_train} train / {d.num_val} val images, "
            f"{len(d.classes)} classes) at {cfg.image_size}x{cfg.image_size}, {run.device} {run.precision}"
        )
        if d.bad_files:
            say(f"skipped {len(d.bad_files)} bad image file(s), listed in {run.run_dir / 'bad_images.json'}")
        if run.epoch >= cfg.epochs:
            say(f"{run.run_dir} already finished all {cfg.epochs} epochs")
        writer = _tensorboard(run.run_dir)
        try:
            while run.epoch < cfg.epochs:
                try:
                    _one_epoch(run, signals, say, writer, quiet)
                except FloatingPointError as e:
                    _after_nan(run, e, say)
        finally:
            if writer is not None:
                writer.close()
    return {**run.metrics, "run_dir": str(run.run_dir), "best_top1": run.best}


def _one_epoch(run: _Run, signals: _Signals, say, writer, quiet: bool) -> None:
    cfg, epoch = run.cfg, run.epoch
    run.data.train.set_epoch(epoch, start=run.totals["steps"] if run.totals else 0)
    bar = _progress(epoch, cfg.epochs, run.data.num_train, run.totals["seen"] if run.totals else 0, quiet)
    every_steps, every_seconds = parse_every(cfg.checkpoint_every)
    last_save = time.monotonic()

    def on_step(info: dict) -> bool:
        nonlocal last_save
        if bar is not None:
            bar.update(info)
        due = (every_steps and info["step"] % every_steps == 0) or (
            every_seconds and time.monotonic() - last_save >= every_seconds
        )
        if signals.received is not None or due:
            run.save(epoch, info["totals"]())
            last_save = time.monotonic()
        return signals.received is not None

    tr = engine.train_one_epoch(
        run.model, run.data.train, run.optimizer, device=run.device, precision=run.precision,
        step_scheduler=run.step_sched, label_smoothing=cfg.label_smoothing, channels_last=cfg.channels_last,
        on_step=on_step, totals=run.totals,
    )  # fmt: skip
    if bar is not None:
        bar.close()
    if tr["stopped"]:
        name = signal.Signals(signals.received).name
        raise Interrupted(
            f"{name}: saved a checkpoint at epoch {epoch + 1}, step {tr['steps']}; "
            f"continue with: alexnet train --resume {run.run_dir}", signals.received,
        )  # fmt: skip
    ev = engine.evaluate(run.model, run.data.val, len(run.data.classes), device=run.device, precision=run.precision, channels_last=cfg.channels_last)
    lr = run.optimizer.param_groups[0]["lr"]
    if run.plateau is not None:
        run.plateau.step(ev["top1"])
    is_best = ev["top1"] > run.best
    run.best = max(run.best, ev["top1"])
    run.metrics = {
        "epoch": epoch, "train_loss": tr["loss"], "train_acc": tr["acc"],
        "val_loss": ev["loss"], "val_top1": ev["top1"], "val_top5": ev["top5"],
        "lr": lr, "train_seconds": tr["seconds"], "val_seconds": ev["seconds"],
        "images_per_second": tr["images_now"] / tr["seconds"],
    }  # fmt: skip
    metrics_path = run.run_dir / "metrics.jsonl"
    with metrics_path.open("a") as f:  # before the checkpoint: a resume trims lines it did not keep
        f.write(json.dumps(run.metrics) + "\n")
    run.save(epoch, None, best=is_best)
    run.epoch, run.totals = epoch + 1, None
    plot_curves(metrics_path, run.run_dir / "curves.png")
    if writer is not None:
        for key in ("train_loss", "train_acc", "val_loss", "val_top1", "val_top5", "lr", "images_per_second"):
            writer.add_scalar(key, run.metrics[key], epoch + 1)
        writer.flush()
    say(
        f"epoch {epoch + 1}/{cfg.epochs}: train loss {tr['loss']:.4f} acc {100 * tr['acc']:.2f}% | "
        f"val top-1 {100 * ev['top1']:.2f}% top-5 {100 * ev['top5']:.2f}% loss {ev['loss']:.4f} | "
        f"{tr['seconds']:.0f}s train ({run.metrics['images_per_second']:.0f} img/s) + {ev['seconds']:.0f}s val"
    )


def _after_nan(run: _Run, error: FloatingPointError, say) -> None:
    """``--on-nan stop``: stop, keeping the last good checkpoint. ``rollback``: reload it and halve
    the learning rate, at most MAX_ROLLBACKS times."""
    last = run.run_dir / "checkpoints" / "last.pt"
    kept = f"the last good checkpoint {last} is kept" if last.is_file() else "no checkpoint had been written yet"
    if run.cfg.on_nan != "rollback" or not last.is_file() or run.rollbacks >= MAX_ROLLBACKS:
        tried = f" after {run.rollbacks} rollback(s)" if run.rollbacks else ""
        raise RunError(f"{error}{tried}; {kept}; lower --lr or use --on-nan rollback") from None
    rollbacks = run.rollbacks + 1
    run.restore(load_checkpoint(last))  # its learning rate already holds its own halvings
    for _ in range(rollbacks - run.rollbacks):
        run.halve_lr()
    run.rollbacks = rollbacks
    say(f"{error}: rolled back to {last} and halved the learning rate (rollback {run.rollbacks}/{MAX_ROLLBACKS})")


def _trim_metrics(path: Path, epochs_done: int) -> None:
    """Keep the lines of the epochs the checkpoint has (a crash can fall between the two writes)."""
    if path.is_file():
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        kept = [line for line in lines if json.loads(line)["epoch"] < epochs_done]
        if len(kept) != len(lines):
            path.write_text("".join(line + "\n" for line in kept))


def parse_every(text: str | None) -> tuple[int, float]:
    """``--checkpoint-every``: "500" (steps) or "10m" (minutes) -> (steps, seconds), 0 = off."""
    if not text:
        return 0, 0.0
    if text.endswith("m"):
        return 0, float(text[:-1]) * 60
    return int(text), 0.0


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


def _progress(epoch: int, epochs: int, total: int, done: int, quiet: bool):
    if quiet or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return _Bar(tqdm(total=total, initial=done, desc=f"epoch {epoch + 1}/{epochs}", unit="img", dynamic_ncols=True, leave=False))
