"""signals.py: loader workers leave SIGINT/SIGTERM to the main process, and the main process ends
them at exit even when a loader was never shut down. (The runs' own stops are in test_train.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from alexnet.system.signals import Stop, StopSignals, ignore_in_worker

ROOT = Path(__file__).resolve().parents[2]


def test_a_process_with_a_loader_left_running_exits_promptly(image_folder):
    code = (
        "import torch\nfrom alexnet.config import TrainConfig\nfrom alexnet.data import build_data\n"
        f"data = build_data(TrainConfig(data={str(image_folder)!r}, workers=2, "
        "batch_size=8, image_size=67), torch.device('cpu'))\n"
        "next(iter(data.train))  # persistent workers alive, waiting for work, never shut down\n"
        "KEEP = data\n"
    )
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert time.monotonic() - start < 60


def test_workers_ignore_stop_signals():
    code = (
        "import os, signal, time\nfrom alexnet.system.signals import "
        "ignore_in_worker\nignore_in_worker(0)\nos.kill(os.getpid(), signal.SIGTERM)\nos.kill(os.getpid(), "
        "signal.SIGINT)\nprint('alive')"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "alive"


def test_stop_signals_raise_while_preparing_and_defer_while_training():
    with StopSignals() as signals:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        except Stop as e:
            assert e.signum == signal.SIGTERM
        else:
            raise AssertionError("no Stop while preparing")
        signals.received = None
        signals.defer()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)
        assert signals.stopping and signals.name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored


def test_ignore_in_worker_is_every_loaders_worker_init():
    import alexnet.data.folder as folder
    import alexnet.data.loader as loader

    source = Path(folder.__file__).read_text() + Path(loader.__file__).read_text()
    assert source.count("worker_init_fn=ignore_in_worker") == 2 and ignore_in_worker
