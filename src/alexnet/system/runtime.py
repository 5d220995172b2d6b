"""Where a run computes and what it records about the machine: the device (``auto`` = CUDA, else
Apple's MPS, else the CPU), the precision and the other per-device speed choices (:func:`fast_path`),
the allocator setting for CPU training, and the
environment record written to ``env.json``. Shared by training, evaluation, prediction and the
benchmarks, so each choice is made the same way everywhere."""

from __future__ import annotations

import ctypes
import functools
import platform
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch

from alexnet.errors import ConfigError


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


# The device types this program computes on; torch names others (meta holds no data, xpu, hpu,
# ...) that its kernels here were never run on.
DEVICE_TYPES = ("cpu", "cuda", "mps")
DEVICE_WORDS = "auto, cpu, cuda, cuda:N or mps"


def parse_device(name: str, flag: str = "--device") -> torch.device | None:
    """The words of a device flag, checked before anything runs or is written: ``auto`` (None: see
    :func:`resolve_device`), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``. Anything else - not a device,
    or a device type torch knows but this program does not run on (``meta``, ``xpu``, ...) - is one
    :class:`ConfigError` line naming ``flag``. Whether the machine has it is :func:`resolve_device`'s."""
    if name == "auto":
        return None
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"{flag} {name!r} is not a device; use {DEVICE_WORDS}") from None
    if device.type not in DEVICE_TYPES:
        raise ConfigError(f"{flag} {name!r}: this program runs on {DEVICE_WORDS}, not on {device.type} devices")
    if device.type != "cuda" and device.index not in (None, 0):
        raise ConfigError(f"{flag} {name!r}: there is one {device.type} device; use {device.type}")
    return device


def resolve_device(name: str, flag: str = "--device") -> torch.device:
    """``auto`` is CUDA when present, else Apple's MPS when present, else the CPU; anything else
    must be a device :func:`parse_device` takes and this machine has."""
    device = parse_device(name, flag)
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise ConfigError(f"{flag} {name}: CUDA is not available on this machine; use {flag} cpu")
        if (device.index or 0) >= count:
            raise ConfigError(f"{flag} {name}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    if device.type == "mps" and not _mps_available():
        raise ConfigError(f"{flag} {name}: Apple's MPS is not available on this machine; use {flag} cpu")
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` picks bf16 autocast where the hardware has bf16 matrix units (:func:`cpu_has_bf16_units`, a GPU "
    "that supports bf16), else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_bf16_units() else "fp32"
    return "fp32"  # MPS: bf16 autocast there is not known to be faster; stay exact


@dataclass(frozen=True)
class FastPath:
    """The speed choices a run makes on its device, each one torch supports there."""

    precision: str  # fp32 or bf16 (autocast)
    channels_last: bool  # NHWC model and batches
    fused_sgd: bool  # one fused kernel for the SGD update, else torch's foreach loop
    notes: tuple[str, ...] = ()  # each fall-back taken, in words (printed when a run starts)


def fast_path(device: torch.device, precision: str = "auto", channels_last: bool = True) -> FastPath:
    """The one place the fast-path choices are made for ``device``, from what was asked
    (``--precision``, ``--channels-last``) and what torch supports there:

    * precision: ``auto`` as :func:`resolve_precision`; bf16 autocast on Apple's MPS needs macOS 14
      (torch refuses bf16 tensors there before it): fp32 otherwise.
    * channels-last: off on MPS. Its 2-D convolution backward ran channels-last through MPSGraph's
      strided path, ~30x slower than NCHW (pytorch/pytorch#193349, fixed upstream by #193623),
      and conv2d on channel slices of a channels-last tensor - what the two towers of alexnet2012
      take - gave wrong results (#180984); NCHW is what MPS's convolution graphs are built in.
    * fused SGD: where torch's own list has a fused kernel for the device type (torch 2.14's:
      CPU, CUDA, MPS and others); elsewhere the foreach update, which computes the same.
    """
    notes = []
    chosen = resolve_precision(precision, device)
    if device.type == "mps" and chosen == "bf16" and not _mps_has_bf16():
        chosen = "fp32"
        notes.append("bf16 autocast on MPS needs macOS 14 or newer: running fp32")
    if device.type == "mps" and channels_last:
        channels_last = False
        notes.append(
            "channels-last is off on MPS (slow convolution backward, wrong sliced convolutions in some torch versions)"
        )
    fused = device.type in _fused_sgd_devices()
    if not fused:
        notes.append(f"torch has no fused SGD kernel for {device.type}: using the foreach update")
    return FastPath(chosen, channels_last, fused, tuple(notes))


def _mps_has_bf16() -> bool:
    mps = getattr(torch.backends, "mps", None)
    try:
        return bool(mps is not None and mps.is_macos_or_newer(14, 0))
    except (AttributeError, RuntimeError):  # an older torch, or not macOS
        return False


def _fused_sgd_devices() -> list[str]:
    """The device types torch's optimizers have fused kernels for (torch's own list)."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        return list(_get_fused_kernels_supported_devices())
    except ImportError:  # the private helper moved: the CPU and CUDA, which have had fused SGD longest
        return ["cpu", "cuda"]


def cpu_has_bf16_units() -> bool:
    """Whether this CPU does bf16 matrix arithmetic natively - AMX tiles (``amx_bf16``, Intel since
    Sapphire Rapids) or AVX512-BF16 dot products (``avx512_bf16``, AMD since Zen 4, Intel Cooper
    Lake) - and torch's oneDNN can use them."""
    # oneDNN runs bf16 convolutions and matmuls on these units, faster than fp32 on both kinds
    # (docs/results.md, docs/performance.md); without either, bf16 is emulated and no faster: stay in fp32.
    try:
        return bool({"amx_bf16", "avx512_bf16"} & set(cpu_flags())) and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return False


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory instead of returning it to the OS.

    Each CPU training step allocates and frees the same few hundred MB of activations and
    gradients; by default glibc serves blocks that large with mmap and unmaps them on free, so
    every step page-faults them in again (a third of the step in system time on 2 cores). With
    mmap off and trimming off the blocks are reused. Measured: docs/performance.md.
    Returns False where this is not glibc or glibc refused.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))


def prepare(device: torch.device) -> None:
    """Process-wide settings for fast training on ``device``."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # AlexNet's shapes are fixed: autotune once
    elif device.type == "cpu":
        keep_freed_memory()


@functools.cache
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux
        return ""


def cpu_name() -> str:
    """The processor's model name (from /proc/cpuinfo on Linux)."""
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The instruction-set flags of the first processor (avx512f, amx_bf16, ...) on Linux."""
    for line in _cpuinfo().splitlines():
        if line.startswith("flags"):
            return line.split(":", 1)[1].split()
    return []


def git_commit() -> str | None:
    """The commit of the source tree this package runs from, when it is a git checkout."""
    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device, precision: str) -> dict:
    """Versions, hardware and git commit: what ``env.json`` records for every run."""
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "precision": precision,
        "git_commit": git_commit(),
        "started": datetime.now().isoformat(timespec="seconds"),
    }


def parse_devices(spec: str) -> tuple[torch.device, torch.device]:
    """``--model-parallel``'s value: exactly two devices of one kind, comma-separated (``cuda:0,cuda:1``;
    ``cpu,cpu`` runs the same code on the CPU). Checks the words only, not that the machine has them
    (a checkpoint of a GPU run is still evaluated on a laptop): see :func:`resolve_devices`."""
    parts = [p.strip() for p in spec.split(",")]
    if len(parts) != 2 or not all(parts):
        raise ConfigError(
            f"--model-parallel {spec!r}: give exactly two devices separated by a comma, one per tower "
            "(cuda:0,cuda:1, or cpu,cpu)"
        )
    devices = []
    for part in parts:
        if part == "auto":
            raise ConfigError(f"--model-parallel {spec!r}: name each tower's device (cuda:0,cuda:1, or cpu,cpu)")
        devices.append(parse_device(part, f"--model-parallel {spec!r}:"))
    if devices[0].type != devices[1].type:  # one autocast context covers one kind of device
        raise ConfigError(
            f"--model-parallel {spec!r}: both towers must be on devices of one kind, got {devices[0].type} and "
            f"{devices[1].type}"
        )
    return devices[0], devices[1]


def resolve_devices(spec: str) -> tuple[torch.device, torch.device]:
    """:func:`parse_devices`, and each device present on this machine (else a one-line ConfigError)."""
    devices = parse_devices(spec)
    for d in devices:
        if d.type == "cuda" and (not torch.cuda.is_available() or (d.index or 0) >= torch.cuda.device_count()):
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            raise ConfigError(
                f"--model-parallel {spec}: {d} is not on this machine ({count} CUDA device(s)); name devices it "
                "has, or cpu,cpu"
            )
        if d.type == "mps" and not torch.backends.mps.is_available():
            raise ConfigError(f"--model-parallel {spec}: Apple's MPS is not available on this machine; use cpu,cpu")
    return devices
