"""The benchmark harness: a baseline and ours timed in the same process, interleaved, after a
warm-up; each :class:`Row` keeps every repeat's rate and reports median, spread and the ratio.
A shared or drifting machine slows both sides of a repeat alike, so the per-repeat ratio is
steadier than either rate: it is what the tables lead with."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from alexnet.system import runtime


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so a timer measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def rates(fn: Callable[[], int], device: torch.device, repeats: int) -> list[float]:
    """``fn`` run ``repeats`` times; each run returns the items it did: items per second of each."""
    out = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        items = fn()
        sync(device)
        out.append(items / (time.perf_counter() - start))
    return out


@dataclass
class Row:
    """One comparison: rates (``unit``) of the baseline and of ours, one per repeat, paired."""

    group: str  # step, pipeline, e2e
    name: str
    unit: str
    baseline: str  # what the baseline is, in words
    ours: str
    baseline_rates: list[float]
    ours_rates: list[float]
    extra: dict = field(default_factory=dict)

    @property
    def ratios(self) -> list[float]:
        return [o / b for o, b in zip(self.ours_rates, self.baseline_rates)]

    def to_dict(self) -> dict:
        """The JSON form: every repeat, and median and spread (min, max) of each column."""
        d = asdict(self)
        extra = d.pop("extra")
        for key, values in (("baseline", self.baseline_rates), ("ours", self.ours_rates), ("ratio", self.ratios)):
            d[f"{key}_median"] = statistics.median(values)
            d[f"{key}_spread"] = [min(values), max(values)]
        return {**d, **extra}


def compare(
    group: str,
    name: str,
    unit: str,
    baseline: tuple[str, Callable[[], int]],
    ours: tuple[str, Callable[[], int]],
    *,
    device: torch.device,
    warmup: int,
    repeats: int,
    extra: dict | None = None,
) -> Row:
    """Time ``baseline`` and ``ours`` (each a description and a function returning the items it
    did) ``repeats`` times, interleaved and in alternating order, after ``warmup`` untimed runs each."""
    (base_name, base_fn), (our_name, our_fn) = baseline, ours
    for _ in range(warmup):
        base_fn(), our_fn()
        sync(device)
    base, mine = [], []
    for r in range(repeats):
        pair = [(base_fn, base), (our_fn, mine)]
        for fn, into in pair if r % 2 == 0 else pair[::-1]:
            into += rates(fn, device, 1)
    return Row(group, name, unit, base_name, our_name, base, mine, extra or {})


def machine(device: torch.device, precision: str) -> dict:
    """What the numbers were measured on: CPU, cores, threads, versions, device, precision."""
    env = runtime.environment(device, precision)
    env.pop("started", None)
    flags = runtime.cpu_flags()
    env["cores"] = os.cpu_count()
    env["cpu_features"] = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return env


def fmt(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def table(rows: list[Row]) -> str:
    """The rows as a markdown table: median [min-max] of each side and of the paired ratio."""
    lines = ["| group | case | unit | baseline | ours | ours / baseline |", "|---|---|---|---:|---:|---:|"]
    for r in rows:
        b, o, q = r.baseline_rates, r.ours_rates, r.ratios
        cell = lambda v: f"{fmt(statistics.median(v))} [{fmt(min(v))}-{fmt(max(v))}]"  # noqa: E731
        lines.append(
            f"| {r.group} | {r.name} | {r.unit} | {cell(b)} | {cell(o)} | "
            f"{statistics.median(q):.2f}x [{min(q):.2f}-{max(q):.2f}] |"
        )
    return "\n".join(lines)
