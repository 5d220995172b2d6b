"""Probe ``alexnet`` as a hostile user would, and say what happened to each input.

Every case runs in a process of its own, under a time limit and a memory limit (``RLIMIT_AS``), and
is judged against the project's promise for bad input (docs/reliability.md): refused in one line
(exit 1 or 2, one line on stderr that starts ``alexnet CMD: error:``, no traceback), or done
(exit 0) where the input is fine. Anything else - a traceback, several lines, a hang, the memory
limit, a refusal where the input was fine, exit 0 where it was not, a file it should not have
touched - is a defect. HTTP cases go to an ``alexnet serve`` started here; a few cases are Python
snippets, for what no command line can do (a clock set back during ``--time-budget``).

    python scripts/probe.py WORKDIR [--only WORD] [--markdown OUT.md] [--json OUT.json]

WORKDIR is made and filled: a small IDX set, an image folder, a run trained for one epoch at 67 x 67
(seconds on a CPU), its safetensors export, and one folder per case. The table (--markdown) is the
one docs/reliability.md holds. Run it under the machine's CPU lock: it starts about 150 processes.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
MEMORY = 6 << 30  # each case's address space: torch's import takes about 1 GB of it
TIMEOUT = 120


@dataclass
class Case:
    """One input: ``argv`` for ``alexnet`` (``{w}`` is the work folder), what is due (``refuse``,
    ``work`` or ``either``), words the message must hold, and a check of the disk afterwards."""

    surface: str
    what: str
    argv: list[str] | None = None
    due: str = "refuse"
    words: str = ""
    after: Callable[[Path], str | None] | None = None  # a defect in words, or None
    snippet: str | None = None  # Python run instead of argv
    setup: Callable[[Path], None] | None = None
    result: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# The work folder


def _idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def make_work(w: Path) -> None:
    """The data, a trained run and its export every case may point at."""
    rng = np.random.default_rng(0)
    idx = w / "idx"
    idx.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 320), ("t10k", 80)):
        labels = np.repeat(np.arange(10), n // 10)
        images = rng.integers(0, 40, (n, 28, 28))
        for i, k in enumerate(labels):
            images[i, 3 + 2 * k : 6 + 2 * k, 3:-3] = 220  # class k: a bar at row 3 + 2k
        _idx(idx / f"{split}-images-idx3-ubyte", images)
        _idx(idx / f"{split}-labels-idx1-ubyte", labels)
    for c, colour in (("red", (220, 40, 30)), ("blue", (30, 60, 220))):
        (w / "folder" / c).mkdir(parents=True, exist_ok=True)
        for i in range(6):
            pixels = np.clip(np.array(colour) + rng.normal(0, 20, (40, 48, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(w / "folder" / c / f"{i}.png")
    Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(w / "image.png")
    if not (w / "runs" / "base" / "checkpoints" / "best.pt").is_file():
        shutil.rmtree(w / "runs" / "base", ignore_errors=True)
        # a constant rate: a resumed copy may be made longer (--epochs 2), so the resume cases reach what they test
        done = _alexnet(w, ["train", *BASE, "--schedule", "constant", "--out", f"{w}/runs", "--name", "base"])
        if done.returncode != 0:
            raise SystemExit(f"the base run failed: {done.stderr}")
        _alexnet(w, ["export", "--checkpoint", f"{w}/runs/base/checkpoints/best.pt", "--out", f"{w}/base.safetensors"])


BASE = ["--data", "{w}/idx", "--image-size", "67", "--epochs", "1", "--batch-size", "32", "--device", "cpu"]
BASE += ["--workers", "0", "--precision", "fp32"]


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))
    os.setpgrp()  # so a timeout ends the case's children too


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "ALEXNET_CACHE": "/tmp/alexnet-probe-cache"}


def _alexnet(w: Path, argv: list[str], timeout: int = TIMEOUT) -> subprocess.CompletedProcess:
    argv = [a.replace("{w}", str(w)) for a in argv]
    return _process([sys.executable, "-m", "alexnet", *argv], timeout)


def _process(cmd: list[str], timeout: int) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_limits, env=_env())
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, err = proc.communicate()
        return subprocess.CompletedProcess(cmd, "timeout", out.decode(errors="replace"), err.decode(errors="replace"))
    return subprocess.CompletedProcess(cmd, proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


# --------------------------------------------------------------------------------------------
# Judging


def judge(case: Case, done: subprocess.CompletedProcess, w: Path) -> tuple[str, str]:
    """(verdict, what happened): ok, or defect."""
    err = done.stderr.strip()
    said = err.splitlines()[-1][:150] if err else (done.stdout.strip().splitlines() or [""])[-1][:150]
    if done.returncode == "timeout":
        return "defect", f"no answer in {TIMEOUT} s (killed)"
    if "Traceback" in err or "MemoryError" in err:
        return "defect", f"exit {done.returncode}: traceback ending {said!r}"
    if done.returncode == 0:
        if case.due == "refuse":
            return "defect", f"exit 0 where a refusal was due: {said!r}"
    else:
        if case.due == "work":
            return "defect", f"exit {done.returncode} where it should work: {said!r}"
        lines = [line for line in err.splitlines() if line.strip()]
        # argparse's own: the usage (several lines for train's many flags), then one error line
        argparse_usage = (
            bool(lines) and lines[0].startswith("usage:") and ": error: " in lines[-1] and done.returncode == 2
        )
        if len(lines) != 1 and not argparse_usage:
            return "defect", f"exit {done.returncode}, {len(lines)} lines on stderr: {said!r}"
        if done.returncode not in (1, 2, 130, 143):
            return "defect", f"exit {done.returncode}: {said!r}"
        if case.words and not re.search(case.words, err):
            return "defect", f"exit {done.returncode}, the message does not say {case.words!r}: {said!r}"
    if case.after is not None:
        problem = case.after(w)
        if problem:
            return "defect", problem
    return "ok", f"exit {done.returncode}: {said}" if said else f"exit {done.returncode}"


def run_case(case: Case, w: Path) -> None:
    if case.setup is not None:
        case.setup(w)
    start = time.perf_counter()
    if case.snippet is not None:
        code = case.snippet.replace("{w}", str(w))
        done = _process([sys.executable, "-c", code], TIMEOUT)
    else:
        done = _alexnet(w, case.argv)
    verdict, what = judge(case, done, w)
    case.result = {"verdict": verdict, "what": what, "seconds": round(time.perf_counter() - start, 1)}


# --------------------------------------------------------------------------------------------
# The service: requests to one `alexnet serve`, and a second one on its port


def serve_cases(w: Path) -> list[Case]:
    """Start ``alexnet serve`` on a free port, send the HTTP cases, then try a second service on the
    same port. Each request's verdict: a 4xx with one line of JSON for a bad one, 200 for a good one,
    never a 500, and the service answering /health after every one."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "alexnet", "serve", "--checkpoint", f"{w}/runs/base/checkpoints/best.pt", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
        preexec_fn=_limits,
        text=True,
    )
    line = proc.stdout.readline()
    port = int(re.search(r":(\d+)/", line)[1])
    png = (w / "image.png").read_bytes()
    out = []

    def request(what, method, path, body=b"", headers=None, due=400, raw=None):
        case = Case("serve (HTTP)", what)
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            if raw is not None:  # bytes as they go on the wire
                conn.connect()
                conn.sock.sendall(raw)
                answer = conn.sock.recv(4000)
                status, text = int(answer.split(b" ")[1]), answer.split(b"\r\n\r\n", 1)[-1].decode(errors="replace")
            else:
                conn.request(method, path, body=body, headers=headers or {})
                r = conn.getresponse()
                status, text = r.status, r.read().decode(errors="replace")
            health = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            health.request("GET", "/health")
            alive = health.getresponse().status == 200
        except Exception as e:  # the probe's own failure to talk to it counts against the service
            case.result = {"verdict": "defect", "what": f"{type(e).__name__}: {e}", "seconds": 0}
            out.append(case)
            return
        refused = 400 <= status < 500  # a 4xx with its line: what the service promises a bad request
        ok = (status == due or (due in (400, "either") and refused) or (due == "either" and status == 200)) and alive
        case.result = {
            "verdict": "ok" if ok else "defect",
            "what": f"{status} {text[:90]}".strip()
            + ("" if alive else ", then /health failed")
            + (f" (due {due})" if not ok else ""),
            "seconds": 0,
        }
        out.append(case)

    form = lambda name, data: (  # noqa: E731
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="'
        + name
        + b'"\r\nContent-Type: image/png\r\n\r\n'
        + data
        + b"\r\n--b--\r\n"
    )
    multipart = {"Content-Type": "multipart/form-data; boundary=b"}
    request("top=-1", "POST", "/predict?top=-1", png, {"Content-Type": "image/png"})
    request("top=1e3", "POST", "/predict?top=1e3", png, {"Content-Type": "image/png"})
    request("top=+3", "POST", "/predict?top=+3", png, {"Content-Type": "image/png"})
    request("top= (empty)", "POST", "/predict?top=", png, {"Content-Type": "image/png"})
    request("top=3&top=4 (twice)", "POST", "/predict?top=3&top=4", png, {"Content-Type": "image/png"}, due=200)
    request("top=٣ (Arabic-Indic digit)", "POST", "/predict?top=%D9%A3", png, {"Content-Type": "image/png"})
    request("a file name with ESC and a newline", "POST", "/predict", form(b"a\x1b[2J\nb.png", png), multipart, due=200)
    request("a file name of 10 kB", "POST", "/predict", form(b"n" * 10000 + b".png", png), multipart, due="either")
    request(
        "two files in one form",
        "POST",
        "/predict",
        form(b"a.png", png)[:-4] + b"\r\n" + form(b"b.png", png)[4:],
        multipart,
    )
    request("image/png; charset=utf-8", "POST", "/predict", png, {"Content-Type": "image/png; charset=utf-8"}, due=200)
    request("Content-Type IMAGE/PNG", "POST", "/predict", png, {"Content-Type": "IMAGE/PNG"}, due=200)
    request("multipart, boundary missing from the body", "POST", "/predict", b"no parts", multipart)
    request("GET /predict", "GET", "/predict", due=405)
    request("HEAD /health", "HEAD", "/health", due=200)
    request("GET /../../etc/passwd", "GET", "/../../etc/passwd", due=404)
    request("GET /health?x=" + "a" * 20 + "... (60 kB URL)", "GET", "/health?x=" + "a" * 60000, due="either")
    request(
        "Content-Length of 5000 digits",
        None,
        None,
        raw=b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: "
        + b"9" * 5000
        + b"\r\n\r\n",
    )
    request(
        "Content-Length: -1",
        None,
        None,
        raw=b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: -1\r\n\r\n",
    )
    request("a PNG of 1 x 1 pixel", "POST", "/predict", _png((1, 1)), {"Content-Type": "image/png"}, due=200)
    request("a 16-bit grey PNG", "POST", "/predict", _png((30, 30), "I;16"), {"Content-Type": "image/png"}, due=200)
    request("an animated GIF of 50 frames", "POST", "/predict", _gif(50), {"Content-Type": "image/gif"}, due=200)
    # a second service on the first one's port: refused in one line (SO_REUSEADDR is not SO_REUSEPORT)
    second = Case("serve", "a second `alexnet serve` on the first one's port", ["serve", "--port", str(port)])
    second.argv = ["serve", "--checkpoint", f"{w}/runs/base/checkpoints/best.pt", "--port", str(port)]
    second.words = "cannot listen"
    run_case(second, w)
    out.append(second)
    proc.terminate()
    proc.wait(timeout=30)
    return out


def _png(size, mode="L") -> bytes:
    import io

    buf = io.BytesIO()
    Image.new(mode, size, 7).save(buf, format="PNG")
    return buf.getvalue()


def _gif(frames: int) -> bytes:
    import io

    buf = io.BytesIO()
    images = [Image.new("P", (32, 32), i) for i in range(frames)]
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:])
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# Command lines


def _no_folder(name: str) -> Callable[[Path], str | None]:
    return lambda w: f"left {name} behind" if (w / name).exists() else None


def _unchanged(name: str, text: str) -> Callable[[Path], str | None]:
    return lambda w: None if (w / name).read_text() == text else f"changed {name}"


def _write(name: str, text: str | bytes) -> Callable[[Path], None]:
    def setup(w: Path) -> None:
        path = w / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode())

    return setup


def _link(name: str, target: str) -> Callable[[Path], None]:
    def setup(w: Path) -> None:
        path = w / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.exists():
            path.unlink()
        path.symlink_to(target.replace("{w}", str(w)))

    return setup


def _fifo(name: str) -> Callable[[Path], None]:
    def setup(w: Path) -> None:
        path = w / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            os.mkfifo(path)

    return setup


def _copy_run(name: str, change: Callable[[Path], None] | None = None) -> Callable[[Path], None]:
    """A copy of the base run as ``runs/NAME``, changed by ``change(run)``."""

    def setup(w: Path) -> None:
        run = w / "runs" / name
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(w / "runs" / "base", run, symlinks=True, ignore=shutil.ignore_patterns(".lock"))
        if change is not None:
            change(run)

    return setup


def _checkpoint_edit(edit: str) -> Callable[[Path], None]:
    """Rewrite a copy of base's best.pt as ``ckpt-N.pt`` with ``edit`` (Python on ``state``) applied."""

    def setup(w: Path) -> None:
        code = (
            "import torch; state = torch.load({src!r}, weights_only=True); {edit}; torch.save(state, {dst!r})"
        ).format(src=str(w / "runs/base/checkpoints/best.pt"), edit=edit, dst=str(w / f"ckpt-{abs(hash(edit))}.pt"))
        _process([sys.executable, "-c", code], TIMEOUT)

    return setup


def _ckpt(edit: str) -> str:
    return "{w}/" + f"ckpt-{abs(hash(edit))}.pt"


def cli_cases() -> list[Case]:
    train = ["train", *BASE, "--out", "{w}/runs"]
    best = "{w}/runs/base/checkpoints/best.pt"
    cases = []

    def add(surface, what, argv, **kw):
        cases.append(Case(surface, what, argv, **kw))

    # every numeric flag of train at its ends
    for flag, value, due in [
        ("--epochs", str(10**30), "refuse"),
        ("--epochs", "-1", "refuse"),
        ("--batch-size", "-5", "refuse"),
        ("--image-size", "0", "refuse"),
        ("--image-size", str(2**40), "refuse"),
        ("--lr", "1e309", "refuse"),
        ("--lr", "-0.0", "refuse"),
        ("--momentum", "-0.5", "refuse"),
        ("--weight-decay", "nan", "refuse"),
        ("--dropout", "-0.1", "refuse"),
        ("--warmup", "-5", "refuse"),
        ("--label-smoothing", "-1", "refuse"),
        ("--val-fraction", "0", "refuse"),
        ("--workers", "-1", "refuse"),
        ("--subset", "0", "refuse"),
        ("--subset", str(10**30), "refuse"),
        ("--step-log", "-1", "refuse"),
        ("--seed", str(2**64 - 1), "work"),
        ("--lrn-k", "0", "refuse"),
        ("--lrn-k", "inf", "refuse"),
        ("--checkpoint-every", "1e3m", "refuse"),
        ("--checkpoint-every", "9" * 30, "work"),
        ("--time-budget", "nanm", "refuse"),
        ("--time-budget", "0.000000001s", "refuse"),
        ("--epochs", "9" * 5000, "refuse"),
    ]:
        add("train flags", f"{flag} {value[:24]}{'...' if len(value) > 24 else ''}", [*train, flag, value], due=due)
    add("train flags", "--lr 1e30 (trains into NaN)", [*train, "--lr", "1e30", "--name", "nan"], words="NaN|nan|inf")
    add("train flags", "--momentum 1e300 (trains into NaN)", [*train, "--momentum", "1e300", "--name", "nan2"])
    add(
        "train flags",
        "--model-parallel cuda:0,cuda:0 (no GPU)",
        ["train", "--model", "alexnet2012", "--model-parallel", "cuda:0,cuda:0"],
    )
    add(
        "train flags",
        "--model-parallel meta,meta",
        ["train", "--model", "alexnet2012", "--model-parallel", "meta,meta"],
    )
    add("train flags", "--device cuda:99999999999999999999", [*train, "--device", "cuda:" + "9" * 20])
    add("train flags", "--device 'cpu ' (trailing space)", [*train, "--device", "cpu "])
    add(
        "train flags",
        "--decode gpu on a CPU-only run",
        ["train", "--data", "{w}/folder", "--decode", "gpu", "--device", "cpu", "--out", "{w}/runs"],
    )

    # settings files
    for what, text in [
        ("a list", "[1, 2]"),
        ('{"epochs": 1e400}', '{"epochs": 1e400}'),
        ('{"lr": 1e400}', '{"lr": 1e400}'),
        ('{"lr": NaN} (JSON extension)', '{"lr": NaN}'),
        ('{"__proto__": {}}', '{"__proto__": {}}'),
        ("UTF-16 with a BOM", '\ufeff{"epochs": 1}'.encode("utf-16")),
        ("empty", ""),
        ("a 2 MB name", json.dumps({"name": "n" * (2 << 20)})),
        ('{"name": "a\\u001b[31mred"}', '{"name": "a\\u001b[31mred"}'),
        ('{"device": "meta"}', '{"device": "meta"}'),
        ('{"seed": 1.0}', '{"seed": 1.0}'),
    ]:
        name = f"config-{abs(hash(what))}.json"
        # no flags beside: a flag given would win over the file's value
        plain = ["train", "--data", "{w}/idx", "--out", "{w}/runs", "--config", "{w}/" + name]
        add("--config", what, plain, setup=_write(name, text))
    add("--config", "a folder", [*train, "--config", "{w}/idx"])
    add("--config", "a symlink loop", [*train, "--config", "{w}/loop.json"], setup=_link("loop.json", "{w}/loop.json"))
    add("--config", "a FIFO", [*train, "--config", "{w}/pipe.json"], setup=_fifo("pipe.json"))

    # run folder names and places
    add("--name/--out", "--name with a right-to-left override (U+202E)", [*train, "--name", "run\u202egnp.exe"])
    add("--name/--out", "--name of Japanese letters", [*train, "--name", "実験"], due="work")
    add("--name/--out", "--name ' ' (a space)", [*train, "--name", " "], due="work")
    add("--name/--out", "--name . ", [*train, "--name", "."])
    add("--name/--out", "--out a file", [*train[:-2], "--out", "{w}/image.png"])
    add(
        "--name/--out",
        "--out a symlink loop",
        [*train[:-2], "--out", "{w}/outloop"],
        setup=_link("outloop", "{w}/outloop"),
    )
    add("--name/--out", "--out of 5000 characters", [*train[:-2], "--out", "{w}/" + "d" * 5000])
    add(
        "--name/--out",
        "--out with a newline and ESC",
        [*train[:-2], "--out", "{w}/o\n\x1b[2Jut", "--name", "x"],
        due="work",
    )
    add("--name/--out", "--out /proc (not writable)", [*train[:-2], "--out", "/proc/alexnet"])

    # data that is not what it seems
    add("--data", "a FIFO", ["train", "--data", "{w}/pipe.json", "--out", "{w}/runs"], setup=_fifo("pipe.json"))
    add("--data", "/dev/zero", ["train", "--data", "/dev/zero", "--out", "{w}/runs"])
    add(
        "--data",
        "IDX files that are links to /dev/zero",
        ["train", "--data", "{w}/zeroidx", "--out", "{w}/runs"],
        setup=lambda w: [
            _link(f"zeroidx/{n}", "/dev/zero")(w)
            for n in (
                "train-images-idx3-ubyte",
                "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte",
                "t10k-labels-idx1-ubyte",
            )
        ],
    )
    add(
        "--data",
        "an image folder with a symlink loop in a class",
        ["train", "--data", "{w}/loopfolder", *BASE[2:], "--out", "{w}/runs", "--name", "lf"],
        setup=lambda w: (
            shutil.copytree(w / "folder", w / "loopfolder", dirs_exist_ok=True),
            _link("loopfolder/red/again", "{w}/loopfolder/red")(w),
        ),
        due="either",
    )
    add(
        "--data",
        "a class folder named with a newline",
        ["train", "--data", "{w}/nlfolder", *BASE[2:], "--out", "{w}/runs", "--name", "nl"],
        setup=lambda w: (
            shutil.copytree(w / "folder", w / "nlfolder", dirs_exist_ok=True),
            (w / "nlfolder/red").rename(w / "nlfolder/re\nd") if (w / "nlfolder/red").exists() else None,
        ),
        due="either",
    )
    add(
        "--data",
        "an IDX label file of two dimensions",
        ["train", "--data", "{w}/idx2d", "--out", "{w}/runs"],
        setup=lambda w: (
            shutil.copytree(w / "idx", w / "idx2d", dirs_exist_ok=True),
            _idx(w / "idx2d/train-labels-idx1-ubyte", np.zeros((320, 1))),
        ),
    )
    add(
        "--data",
        "IDX gzip with a second gzip member appended",
        ["train", *BASE, "--data", "{w}/idxgz", "--out", "{w}/runs", "--name", "gz"],
        setup=lambda w: _idx_gz(w),
        due="refuse",
    )
    add(
        "--data",
        "shards whose index lists a class as \\udcff",
        ["train", "--data", "{w}/shards", "--out", "{w}/runs"],
        setup=_write(
            "shards/index.json",
            '{"format": "alexnet-shards", "version": 1, "classes": ["\\udcff", "b"], "resize": 64, "mode": "RGB"}',
        ),
    )
    add("--data", "file:///dev/zero", ["train", "--data", "file:///dev/zero", "--out", "{w}/runs"])
    add(
        "--data",
        "http://127.0.0.1:1/ (nothing listens)",
        ["train", "--data", "http://127.0.0.1:1/x", "--out", "{w}/runs"],
    )

    # resume
    add("--resume", "a checkpoint file, not its folder", ["train", "--resume", best])
    add(
        "--resume",
        "config.json a link to /dev/zero, no checkpoint",
        ["train", "--resume", "{w}/runs/zc"],
        setup=lambda w: (
            (w / "runs/zc").mkdir(parents=True, exist_ok=True) or _link("runs/zc/config.json", "/dev/zero")(w)
        ),
    )
    add(
        "--resume",
        "last.pt a folder",
        ["train", "--resume", "{w}/runs/lastdir"],
        setup=_copy_run(
            "lastdir", lambda r: ((r / "checkpoints/last.pt").unlink(), (r / "checkpoints/last.pt").mkdir())
        ),
    )
    add(
        "--resume",
        "metrics.jsonl a FIFO",
        ["train", "--resume", "{w}/runs/mfifo", "--epochs", "2"],
        setup=_copy_run("mfifo", lambda r: ((r / "metrics.jsonl").unlink(), os.mkfifo(r / "metrics.jsonl"))),
    )
    add(
        "--resume",
        "steps.jsonl a link to /dev/zero",
        ["train", "--resume", "{w}/runs/szero", "--epochs", "2"],
        setup=_copy_run(
            "szero",
            lambda r: ((r / "steps.jsonl").unlink(missing_ok=True), (r / "steps.jsonl").symlink_to("/dev/zero")),
        ),
    )
    add("--resume", "--epochs 10**30", ["train", "--resume", "{w}/runs/base", "--epochs", str(10**30)])
    add("--resume", "--epochs -1", ["train", "--resume", "{w}/runs/base", "--epochs", "-1"])
    add(
        "--resume",
        "a symlinked run folder, extended",
        ["train", "--resume", "{w}/runs/linked", "--epochs", "2"],
        setup=lambda w: (_copy_run("real", None)(w), _link("runs/linked", "{w}/runs/real")(w)),
        due="either",
    )
    add(
        "--resume",
        "a checkpoint of an older format (no lrn_k, no scheduler bookkeeping)",
        ["train", "--resume", "{w}/runs/old", "--epochs", "2"],
        setup=_copy_run(
            "old",
            lambda r: _process(
                [
                    sys.executable,
                    "-c",
                    (
                        "import torch; p = {p!r}; s = torch.load(p, weights_only=True); s['config'].pop('lrn_k');"
                        "[s['scheduler'].pop(k, None) for k in ('_get_lr_called_within_step', '_is_initial')];"
                        "torch.save(s, p, _use_new_zipfile_serialization=False)"
                    ).format(p=str(r / "checkpoints/last.pt")),
                ],
                TIMEOUT,
            ),
        ),
        due="either",
    )
    add(
        "--resume",
        "a checkpoint written as format alexnet-checkpoint/0",
        ["train", "--resume", "{w}/runs/fmt0"],
        setup=_copy_run(
            "fmt0",
            lambda r: _process(
                [
                    sys.executable,
                    "-c",
                    (
                        "import torch; p = {p!r}; s = torch.load(p, weights_only=True);"
                        "s['format'] = 'alexnet-checkpoint/0'; torch.save(s, p)"
                    ).format(p=str(r / "checkpoints/last.pt")),
                ],
                TIMEOUT,
            ),
        ),
    )

    # model files
    for what, edit in [
        ("float16 weights", "state['model'] = {k: v.half() for k, v in state['model'].items()}"),
        ("bfloat16 weights", "state['model'] = {k: v.bfloat16() for k, v in state['model'].items()}"),
        ("a class name with ESC", "state['classes'][0] = 'c\\x1b[31mred'"),
        ("a class name with a newline", "state['classes'][0] = 'a\\nb'"),
        ("10 classes named '' and 9 others", "state['classes'][0] = ''"),
        ("a weight of shape [] (a number)", "state['model']['features.0.bias'] = torch.tensor(1.0)"),
        ("weights as a list of tensors", "state['model'] = list(state['model'].values())"),
        ("a weight that is a Python float", "state['model']['features.0.bias'] = 1.5"),
        (
            "a quantized weight",
            "b = state['model']['features.0.bias'];"
            "state['model']['features.0.bias'] = torch.quantize_per_tensor(b, 0.1, 0, torch.qint8)",
        ),
        (
            "weights with negative strides? (a flipped view)",
            "state['model']['features.0.weight'] = state['model']['features.0.weight'].flip(0)",
        ),
    ]:
        cases.append(
            Case(
                "model files",
                what,
                ["predict", "{w}/image.png", "--checkpoint", _ckpt(edit)],
                due="either",
                setup=_checkpoint_edit(edit),
            )
        )
    add(
        "model files",
        "--checkpoint a FIFO",
        ["predict", "{w}/image.png", "--checkpoint", "{w}/pipe.pt"],
        setup=_fifo("pipe.pt"),
    )
    add(
        "model files",
        "--checkpoint a symlink loop",
        ["evaluate", "--checkpoint", "{w}/loop.pt"],
        setup=_link("loop.pt", "{w}/loop.pt"),
    )
    add("model files", "--weights /dev/zero", ["predict", "{w}/image.png", "--weights", "/dev/zero"])
    add(
        "model files",
        "a .safetensors whose sidecar is a FIFO",
        ["predict", "{w}/image.png", "--checkpoint", "{w}/fs.safetensors"],
        setup=lambda w: (shutil.copy(w / "base.safetensors", w / "fs.safetensors"), _fifo("fs.json")(w)),
    )
    add(
        "model files",
        "a .safetensors whose sidecar nests 100,000 deep",
        ["predict", "{w}/image.png", "--checkpoint", "{w}/deep.safetensors"],
        setup=lambda w: (
            shutil.copy(w / "base.safetensors", w / "deep.safetensors"),
            _write("deep.json", "[" * 100000 + "]" * 100000)(w),
        ),
    )
    add(
        "model files",
        "convert a FIFO .caffemodel",
        ["convert", "{w}/pipe.caffemodel", "--to", "{w}/c.pt"],
        setup=_fifo("pipe.caffemodel"),
    )
    add(
        "model files",
        "convert --mean-file /dev/zero",
        ["convert", "{w}/x.caffemodel", "--to", "{w}/c.pt", "--mean-file", "/dev/zero"],
        setup=_write("x.caffemodel", b"\x00"),
    )
    add("model files", "convert a training checkpoint", ["convert", best, "--to", "{w}/c.safetensors"])

    # predict, evaluate, export, report, visualize, summary, prepare, bench, experiment
    add(
        "predict", "an image that is a FIFO", ["predict", "{w}/pipe.png", "--checkpoint", best], setup=_fifo("pipe.png")
    )
    add("predict", "an image that is /dev/zero", ["predict", "/dev/zero", "--checkpoint", best])
    add(
        "predict",
        "an image named with ESC (output escaped)",
        ["predict", "{w}/e\x1b[2Jx.png", "--checkpoint", best],
        setup=lambda w: shutil.copy(w / "image.png", w / "e\x1b[2Jx.png"),
        due="work",
        after=None,
    )
    add("predict", "--top 10**17", ["predict", "{w}/image.png", "--checkpoint", best, "--top", str(10**17)], due="work")
    add("predict", "--top 10**30 (argparse)", ["predict", "{w}/image.png", "--checkpoint", best, "--top", str(10**30)])
    add("predict", "an image path '-'", ["predict", "-", "--checkpoint", best])
    add(
        "evaluate",
        "the same checkpoint twice (an ensemble of one model)",
        ["evaluate", "--checkpoint", best, "--checkpoint", best, "--out", "{w}/ev"],
        due="work",
    )
    add(
        "evaluate",
        "--data an image folder for an IDX model",
        ["evaluate", "--checkpoint", best, "--data", "{w}/folder", "--out", "{w}/ev"],
    )
    add(
        "evaluate",
        "--out a symlink loop",
        ["evaluate", "--checkpoint", best, "--out", "{w}/outloop"],
        setup=_link("outloop", "{w}/outloop"),
    )
    add(
        "export",
        "--format onnx --out /dev/null",
        ["export", "--checkpoint", best, "--format", "onnx", "--out", "/dev/null"],
    )
    add(
        "export",
        "--out a .safetensors that is a FIFO, --force",
        ["export", "--checkpoint", best, "--out", "{w}/ef.safetensors", "--force"],
        setup=_fifo("ef.safetensors"),
        due="either",
    )
    add(
        "export",
        "--out the checkpoint's own folder, sidecar name best.json taken by a folder",
        ["export", "--checkpoint", best, "--out", "{w}/side/best.safetensors", "--force"],
        setup=lambda w: (w / "side/best.json").mkdir(parents=True, exist_ok=True),
    )
    add("report", "--out a folder", ["report", "{w}/runs/base", "--out", "{w}/idx"])
    add(
        "report",
        "--out the run's config.json",
        ["report", "{w}/runs/rc", "--out", "{w}/runs/rc/config.json"],
        setup=_copy_run("rc"),
    )
    add(
        "report",
        "a folder with a symlink loop",
        ["report", "{w}/rloop"],
        setup=lambda w: (_write("rloop/table.md", "| a |\n|---|\n| 1 |\n")(w), _link("rloop/again", "{w}/rloop")(w)),
        due="work",
    )
    add(
        "report",
        "--train-images 10**17",
        ["report", "{w}/runs/rt", "--train-images", str(10**17)],
        setup=_copy_run("rt"),
        due="work",
    )
    add(
        "report",
        "evaluation.json a list",
        ["report", "{w}/runs/re"],
        setup=_copy_run("re", lambda r: (r / "evaluation.json").write_text("[]")),
        due="work",
    )
    add(
        "visualize",
        "predictions --count 10**17",
        ["visualize", "predictions", "--checkpoint", best, "--count", str(10**17), "--out", "{w}/v.png"],
        due="either",
    )
    add(
        "visualize",
        "neighbours --neighbours 10**17",
        [
            "visualize",
            "neighbours",
            "--checkpoint",
            best,
            "--neighbours",
            str(10**17),
            "--out",
            "{w}/v.png",
            "--train-images",
            "64",
        ],
        due="either",
    )
    add("visualize", "filters --out /dev/full", ["visualize", "filters", "--checkpoint", best, "--out", "/dev/full"])
    add("summary", "--num-classes 10**12", ["summary", "--num-classes", str(10**12)], due="work")
    add("summary", "--in-channels 10**6", ["summary", "--in-channels", str(10**6)], due="work")
    add("prepare", "DST inside SRC", ["prepare", "{w}/folder", "{w}/folder/shards"])
    add("prepare", "SRC = DST", ["prepare", "{w}/folder", "{w}/folder"])
    add("prepare", "--val-fraction nan", ["prepare", "{w}/folder", "{w}/pshards", "--val-fraction", "nan"])
    add("prepare", "--resize 10**30", ["prepare", "{w}/folder", "{w}/pshards", "--resize", str(10**30)])
    add("prepare", "--shard-size 0.1 (bytes)", ["prepare", "{w}/folder", "{w}/pshards", "--shard-size", "0.1"])
    add(
        "bench",
        "--only step --quick --batch-size 10**17",
        ["bench", "--only", "step", "--quick", "--batch-size", str(10**17), "--device", "cpu"],
    )
    add(
        "bench", "--only accuracy --seeds -1", ["bench", "--only", "accuracy", "--seeds", "-1", "--train", "--epochs 1"]
    )
    add(
        "bench",
        "--only accuracy --train '--epochs' (a flag without its value)",
        ["bench", "--only", "accuracy", "--train", "--epochs"],
    )
    add("experiment", "--seeds 10**9", ["experiment", "lrn", "--seeds", str(10**9), "--out", "{w}/exp"])
    add("experiment", "--epochs 10**30", ["experiment", "lrn", "--epochs", str(10**30), "--out", "{w}/exp"])
    add("experiment", "--device meta", ["experiment", "lrn", "--device", "meta", "--out", "{w}/exp"])
    add("serve", "--port 65536", ["serve", "--checkpoint", best, "--port", "65536"])
    add("serve", "--port 10**30", ["serve", "--checkpoint", best, "--port", str(10**30)])
    add("serve", "--host 256.0.0.1", ["serve", "--checkpoint", best, "--host", "256.0.0.1"])
    add("serve", "--batch-wait-ms nan", ["serve", "--checkpoint", best, "--batch-wait-ms", "nan"])
    add("serve", "--checkpoint a FIFO", ["serve", "--checkpoint", "{w}/pipe.pt", "--port", "0"], setup=_fifo("pipe.pt"))

    # what no command line can do: a clock that jumps an hour back at every other reading
    cases.append(
        Case(
            "clock",
            "--time-budget while the clock jumps back an hour",
            snippet=_clock([[*train, "--time-budget", "10m", "--name", "clock"]]),
        )
    )
    cases.append(
        Case(
            "clock",
            "training while the clock jumps back an hour, then --resume --epochs 2",
            snippet=_clock(
                [
                    [*train, "--name", "clock2", "--schedule", "constant"],
                    ["train", "--resume", "{w}/runs/clock2", "--epochs", "2"],
                ]
            ),
            due="work",
        )
    )
    return cases


CLOCK = (
    "import sys, time\n"
    "real, n = time.perf_counter, [0]\n"
    "def jumpy():\n"
    "    n[0] += 1\n"
    "    return real() - (3600.0 if n[0] % 2 == 0 else 0.0)\n"
    "time.perf_counter = jumpy\n"
    "from alexnet.cli import main\n"
    "sys.exit(max(main(argv) for argv in {runs!r}))\n"
)


def _clock(runs: list[list[str]]) -> str:
    """Python that runs ``alexnet ARGV`` for each of ``runs`` in one process whose clock jumps."""
    return CLOCK.format(runs=runs)


def _idx_gz(w: Path) -> None:
    folder = w / "idxgz"
    shutil.copytree(w / "idx", folder, dirs_exist_ok=True)
    raw = (folder / "train-images-idx3-ubyte").read_bytes()
    (folder / "train-images-idx3-ubyte").unlink()
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw) + gzip.compress(b"more"))


# --------------------------------------------------------------------------------------------


def table(cases: list[Case]) -> str:
    rows = ["| surface | input | what happened | verdict |", "|---|---|---|---|"]
    for c in cases:
        what = c.result["what"].replace("|", "\\|").replace("\n", " ")
        rows.append(f"| {c.surface} | {c.what.replace('|', '/')} | {what} | {c.result['verdict']} |")
    return "\n".join(rows) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--only", default=None, help="cases whose surface or input holds this word")
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    w = args.work.resolve()
    make_work(w)
    cases = [c for c in cli_cases() if args.only is None or args.only in c.surface + c.what]
    for case in cases:
        run_case(case, w)
        print(f"{case.result['verdict']:6} {case.surface}: {case.what} -> {case.result['what']}", flush=True)
    if args.only is None or "serve" in args.only:
        for case in serve_cases(w):
            print(f"{case.result['verdict']:6} {case.surface}: {case.what} -> {case.result['what']}", flush=True)
            cases.append(case)
    defects = [c for c in cases if c.result["verdict"] != "ok"]
    print(f"{len(cases)} inputs, {len(defects)} defect(s)")
    if args.markdown:
        args.markdown.write_text(table(cases))
    if args.json:
        args.json.write_text(json.dumps([{"surface": c.surface, "input": c.what, **c.result} for c in cases], indent=1))
    return 1 if defects else 0


if __name__ == "__main__":
    sys.exit(main())
