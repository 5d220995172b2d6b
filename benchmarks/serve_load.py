"""A bounded load test of ``alexnet serve`` on loopback: requests/s and latency percentiles at 1 and
8 concurrent clients, with batching off (``--max-batch 1``, the baseline) and on (``--max-batch 8``).

Each server is ``python -m alexnet serve --port 0`` in its own process; the clients are threads of
this process, each with its own keep-alive ``httpx.Client``, posting the same small PNG as
multipart/form-data (what the page sends). A configuration gets ``--warmup`` untimed requests, then
``--repeats`` timed repeats of ``--requests`` requests split over the clients, in rounds that run
every configuration once (the servers are all up, idle but for their turn); requests/s is the
median over the repeats (min-max beside it) and the latency percentiles pool every timed request.
The clients share the machine with the server, as on a developer's laptop; on 2 cores they take a
visible share of it. ``server CPU ms/req`` is the server process's CPU time (all its threads) per
request, which other processes disturb less than wall time; ``others`` is the CPU that other
processes used meanwhile, in cores.

    .venv/bin/python benchmarks/serve_load.py                         # untrained alexnet, 1x99x99, 10 classes
    .venv/bin/python benchmarks/serve_load.py --checkpoint runs/RUN/checkpoints/best.pt --requests 400

Timings mean something only on an otherwise idle machine: never run two benchmarks at once.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import starlette
import torch
import uvicorn
from PIL import Image

from alexnet.system.runtime import cpu_name


def make_checkpoint(folder: Path, image_size: int) -> Path:
    """An untrained ``alexnet`` for Fashion-MNIST (1 channel, 10 classes) as a training
    checkpoint: serving speed does not depend on what the weights learned."""
    from alexnet.config import TrainConfig
    from alexnet.data.transforms import Preprocess
    from alexnet.formats import FORMAT
    from alexnet.formats.checkpoint import save_checkpoint
    from alexnet.models import build_model

    cfg = TrainConfig(image_size=image_size)
    model = build_model(cfg.model, num_classes=10, in_channels=1)
    preprocess = Preprocess.for_tensors(
        mode="L", source_size=28, image_size=image_size, stats={"mean": [0.286], "std": [0.353]}
    )
    state = {
        "format": FORMAT,
        "model": model.state_dict(),
        "optimizer": None,
        "scheduler": None,
        "epoch": 0,
        "best_top1": 0.0,
        "metrics": {"epoch": 0, "val_top1": 0.0},
        "rng": {"torch": torch.get_rng_state(), "cuda": None},
        "preprocess": preprocess.to_dict(),
        "classes": [str(i) for i in range(10)],
        "config": cfg.to_dict(),
    }
    path = folder / "untrained.pt"
    save_checkpoint(state, path)
    return path


def sample_png() -> bytes:
    """A 28 x 28 grey PNG, a Fashion-MNIST-sized image (about 0.8 kB)."""
    rng = np.random.default_rng(0)
    pixels = np.zeros((28, 28), np.uint8)
    pixels[6:22, 9:19] = rng.integers(150, 255, size=(16, 10))
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


class Server:
    """``alexnet serve`` in a child process on 127.0.0.1 and a free port."""

    def __init__(self, checkpoint: Path, max_batch: int, wait_ms: float):
        cmd = [
            sys.executable,
            "-m",
            "alexnet",
            "serve",
            "--checkpoint",
            str(checkpoint),
            "--port",
            "0",
            "--device",
            "cpu",
            "--max-batch",
            str(max_batch),
            "--batch-wait-ms",
            str(wait_ms),
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        match = re.search(r"http://\S+", line)
        if not match:
            raise SystemExit(f"alexnet serve did not start: {line}{self.proc.stderr.read()}")
        self.url = match.group(0)

    def metric(self, name: str) -> float:
        text = httpx.get(self.url + "metrics", trust_env=False).text
        return float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def cpu_ticks(pid: int) -> tuple[int, int]:
    """(busy CPU time of the whole machine, CPU time of process ``pid``), in clock ticks."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return user + nice + system + irq + softirq + steal, int(fields[11]) + int(fields[12])


def run_load(url: str, image: bytes, requests: int, clients: int) -> tuple[float, list[float], int]:
    """(wall seconds, latency of each request in seconds, count of non-200 answers) for
    ``requests`` requests spread over ``clients`` threads."""
    shares = [requests // clients + (i < requests % clients) for i in range(clients)]
    start_line = threading.Barrier(clients + 1)

    def client(n: int) -> tuple[list[float], int]:
        latencies, failures = [], 0
        with httpx.Client(base_url=url, timeout=120, trust_env=False) as c:
            c.get("health")  # connect before the clock starts
            start_line.wait()
            for _ in range(n):
                t = time.perf_counter()
                r = c.post("predict", files={"file": ("sample.png", image, "image/png")})
                latencies.append(time.perf_counter() - t)
                failures += r.status_code != 200
        return latencies, failures

    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(client, n) for n in shares]
        start_line.wait()
        t0 = time.perf_counter()
        results = [f.result() for f in futures]
        wall = time.perf_counter() - t0
    return wall, [x for lat, _ in results for x in lat], sum(f for _, f in results)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def header(args, checkpoint: Path) -> str:
    load = os.getloadavg()
    return "\n".join(
        [
            f"machine : {cpu_name()} | {os.cpu_count()} logical cores | {platform.system()} {platform.release()}",
            f"versions: python {platform.python_version()} | torch {torch.__version__} ({torch.get_num_threads()} "
            "threads) | "
            f"starlette {starlette.__version__} | uvicorn {uvicorn.__version__} | httpx {httpx.__version__}",
            f"model   : {checkpoint} | served on the CPU | request: a 28x28 grey PNG as multipart/form-data",
            f"timing  : {args.warmup} warm-up requests, then {args.repeats} repeats x {args.requests} "
            "requests per row; "
            "req/s median (min-max) over repeats; latency percentiles over all "
            f"{args.repeats * args.requests} "
            "timed requests",
            f"load avg: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1/5/15 min) at start",
        ]
    )


def measure(servers: dict[int, Server], image: bytes, args) -> dict[tuple[int, int], dict]:
    """{(max_batch, clients): totals} over ``args.repeats`` rounds; each round runs every
    configuration once, so a slow spell of the machine falls on all of them alike."""
    for server in servers.values():
        run_load(server.url, image, args.warmup, 1)
    configs = [(b, c) for c in args.clients for b in servers]
    results = {
        k: {
            "rates": [],
            "latencies": [],
            "failures": 0,
            "others": 0.0,
            "span": 0.0,
            "server_cpu": 0.0,
            "batches": 0.0,
            "images": 0.0,
        }
        for k in configs
    }
    for round_ in range(args.repeats):
        for max_batch, clients in configs:
            server, r = servers[max_batch], results[max_batch, clients]
            counts = server.metric("alexnet_batches_total"), server.metric("alexnet_batch_images_total")
            ticks, t0 = [cpu_ticks(pid) for pid in (os.getpid(), server.proc.pid)], time.perf_counter()
            wall, latencies, failures = run_load(server.url, image, args.requests, clients)
            now, r["span"] = (
                [cpu_ticks(pid) for pid in (os.getpid(), server.proc.pid)],
                r["span"] + time.perf_counter() - t0,
            )
            # CPU that other processes of the machine used meanwhile, in core-seconds: the noise
            r["others"] += (now[0][0] - ticks[0][0] - sum(b[1] - a[1] for a, b in zip(ticks, now))) / os.sysconf(
                "SC_CLK_TCK"
            )
            r["server_cpu"] += (now[1][1] - ticks[1][1]) / os.sysconf("SC_CLK_TCK")
            r["batches"] += server.metric("alexnet_batches_total") - counts[0]
            r["images"] += server.metric("alexnet_batch_images_total") - counts[1]
            r["rates"].append(args.requests / wall)
            r["latencies"] += latencies
            r["failures"] += failures
        print(f"  round {round_ + 1}/{args.repeats} done", flush=True)
    return results


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, default=None, help="default: an untrained alexnet, 1 channel, 10 classes")
    p.add_argument(
        "--image-size", type=int, default=99, help="input size of the untrained model (default: 99, alexnet train's)"
    )
    p.add_argument("--requests", type=int, default=200, help="timed requests per repeat (default: 200)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=16)
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    p.add_argument("--max-batch", type=int, nargs="+", default=[1, 8], help="the first is the baseline (default: 1 8)")
    p.add_argument("--batch-wait-ms", type=float, default=0.0)
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or make_checkpoint(Path(tmp), args.image_size)
        print(header(args, checkpoint), flush=True)
        servers = {}
        try:
            for max_batch in args.max_batch:  # all up at once, idle but for their turn
                servers[max_batch] = Server(checkpoint, max_batch, args.batch_wait_ms)
            results = measure(servers, sample_png(), args)
        finally:
            for server in servers.values():
                server.close()
    rows, baseline = [], {}
    for (max_batch, clients), r in results.items():
        rate = statistics.median(r["rates"])
        baseline.setdefault(clients, rate)
        rows.append(
            [
                f"{max_batch}",
                f"{clients}",
                f"{rate:.1f} ({min(r['rates']):.1f}-{max(r['rates']):.1f})",
                f"{rate / baseline[clients]:.2f}x",
                f"{r['images'] / r['batches']:.2f}",
                *(f"{1000 * percentile(r['latencies'], q):.1f}" for q in (50, 90, 99)),
                f"{1000 * r['server_cpu'] / len(r['latencies']):.1f}",
                f"{r['failures']}",
                f"{r['others'] / r['span']:.2f}",
            ]
        )
    names = [
        "max-batch",
        "clients",
        "req/s median (min-max)",
        "vs max-batch " + str(args.max_batch[0]),
        "mean batch",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "server CPU ms/req",
        "errors",
        "others (cores)",
    ]
    widths = [max(len(n), *(len(r[i]) for r in rows)) for i, n in enumerate(names)]
    print("| " + " | ".join(n.ljust(w) for n, w in zip(names, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.rjust(w) for c, w in zip(r, widths)) + " |")
    load = os.getloadavg()
    print(f"load avg: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1/5/15 min) at the end")


if __name__ == "__main__":
    main()
