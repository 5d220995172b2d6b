"""distributed.py and training under torchrun, on the CPU with gloo over loopback (127.0.0.1) only.

The references: one process with the same global batch (the steps two processes take must be its
steps), the one-process evaluation of the same weights (sharded counts must add up to exactly its
numbers), torch.tensor_split (how a batch is cut), and torchrun itself (launching, restarting,
two-node rendezvous) with real processes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch

from alexnet.cli import main
from alexnet.data import Preprocess, TensorBatches
from alexnet.data.loader import EpochBatches
from alexnet.errors import ConfigError
from alexnet.formats import load_checkpoint
from alexnet.models import build_model
from alexnet.system import distributed
from alexnet.system.distributed import SINGLE, World
from alexnet.training import engine

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------------------------
# How a global batch is shared (no processes needed: a World is only a rank and a size)


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_parts_are_tensor_splits_chunks_and_cover_every_item_once(size):
    for n in range(0, 23):
        items = torch.arange(n)
        parts = [items[World(rank=r, size=size).part(n)] for r in range(size)]
        for ours, reference in zip(parts, torch.tensor_split(items, size)):
            assert torch.equal(ours, reference)
        assert torch.equal(torch.cat(parts), items)


@pytest.mark.parametrize("n, batch, size", [(37, 8, 2), (37, 10, 3), (41, 8, 2), (9, 4, 3)])
def test_epoch_batches_of_all_ranks_are_the_one_process_batches(n, batch, size):
    """Per step, the ranks' batches side by side are the one-process batch, with the same crop
    seeds: every image once per epoch, and the same number of steps on every rank."""

    def batches(world, epoch, start=0):
        sampler = EpochBatches(n, batch_size=batch, shuffle=True, seed=4, world=world)
        sampler.set_epoch(epoch, start)
        return list(sampler)

    for epoch in (0, 1):
        one = batches(SINGLE, epoch)
        per_rank = [batches(World(rank=r, size=size), epoch) for r in range(size)]
        assert {len(b) for b in per_rank} == {len(one)} == {-(-n // batch)}
        for step, whole in enumerate(one):
            assert sum((b[step] for b in per_rank), []) == whole
        seen = [i for b in per_rank for step in b for i, _ in step]
        assert sorted(seen) == list(range(n))
        resumed = batches(World(rank=1, size=size), epoch, start=2)
        assert resumed == per_rank[1][2:]


def test_tensor_batches_of_all_ranks_are_the_one_process_batch(idx_folder):
    """Images, labels and augmentation (crops and flips drawn for the global batch)."""
    pre = Preprocess.for_tensors(mode="L", source_size=28, image_size=67, stats={"mean": [0.2], "std": [0.3]})

    def epoch(world, train):
        b = TensorBatches(
            idx_folder.train_images[:, None],
            idx_folder.train_labels,
            batch_size=33,
            preprocess=pre,
            train=train,
            device="cpu",
            seed=5,
            world=world,
        )
        b.set_epoch(1)
        return list(b)

    for train in (True, False):
        one = epoch(SINGLE, train)
        ranks = [epoch(World(rank=r, size=2), train) for r in range(2)]
        assert len(ranks[0]) == len(ranks[1]) == len(one) == 10  # 320 images: 9 batches of 33 and one of 23
        for step, (x, y) in enumerate(one):
            assert torch.equal(torch.cat([r[step][0] for r in ranks]), x)
            assert torch.equal(torch.cat([r[step][1] for r in ranks]), y)


def test_the_world_comes_from_torchruns_variables(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(key, raising=False)
    assert distributed.from_environment() == SINGLE
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "2")  # one machine's count: the attempt is agreed on joining
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job7")
    world = distributed.from_environment()
    assert world == World(rank=3, size=4, local_rank=1, restart=0, run_id="job7")
    assert not world.writer and world.distributed
    assert distributed.device_for("cuda", world) == "cuda:1"
    assert distributed.device_for("cpu", world) == "cpu"
    with pytest.raises(ConfigError, match="each takes its own device"):
        distributed.device_for("cuda:0", world)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ConfigError, match="outside WORLD_SIZE=4"):
        distributed.from_environment()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ConfigError, match="not whole numbers"):
        distributed.from_environment()


def test_a_global_batch_smaller_than_the_world_is_refused(idx_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(distributed, "from_environment", lambda: World(rank=0, size=4))
    monkeypatch.setattr(distributed, "start", lambda world, device: world)
    rc = main(["train", "--data", str(idx_folder.path), "--batch-size", "3", "--out", str(tmp_path), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "--batch-size 3 is the global batch and must be at least the 4 processes" in err
    assert len(err.strip().splitlines()) == 1 and not any(tmp_path.iterdir())


# --------------------------------------------------------------------------------------------
# Real processes under torchrun (gloo, 127.0.0.1)

# The test-size network (models.py): what is shared and summed is the same whatever the network's size.
MODEL = "alexnet_tiny"
# a global batch of 45: shares of 23 and 22, and a last batch of 5 (3 and 2)
SETTINGS = [
    "--model",
    MODEL,
    "--epochs",
    "3",
    "--batch-size",
    "45",
    "--image-size",
    "67",
    "--seed",
    "3",
    "--schedule",
    "constant",
    "--lr",
    "0.001",
    "--dropout",
    "0",
    "--precision",
    "fp32",
    "--device",
    "cpu",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(
    argv: list[str],
    *,
    procs: int = 2,
    nodes: int = 1,
    port: int | None = None,
    run_id: str | None = None,
    restarts: int = 0,
) -> subprocess.Popen:
    """``torchrun ... -m alexnet ARGV`` with its rendezvous and gloo on loopback only."""
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nnodes={nodes}",
        f"--nproc-per-node={procs}",
        f"--max-restarts={restarts}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint=127.0.0.1:{port or _free_port()}",
        f"--rdzv-id={run_id or uuid.uuid4().hex}",
        "--local-addr=127.0.0.1",
        "-m",
        "alexnet",
        *argv,
    ]
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def _finish(proc: subprocess.Popen, timeout: float = 240) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"torchrun did not finish:\n{out[-3000:]}") from None
    assert proc.returncode == 0, out[-3000:]
    return out


def _train(idx_folder, out: Path, name: str, *extra: str) -> list[str]:
    return ["train", "--data", str(idx_folder.path), "--out", str(out), "--name", name, *SETTINGS, *extra]


def _weights(run: Path) -> dict:
    return load_checkpoint(run / "checkpoints" / "last.pt")["model"]


def _assert_same_steps(a: dict, b: dict) -> None:
    """The same steps, summed in another order: training amplifies float rounding, so two runs that
    differ only in it end apart by a little of how far the weights moved (measured with SETTINGS:
    one process with 1 thread against 2 threads, 1.46%; two processes against one, 1.49%); a wrong
    share or scale moves them by far more. One step, where nothing amplifies, is compared to 1e-6
    below (test_one_step_of_unequal_shares_is_the_one_process_step)."""
    torch.manual_seed(3)  # SETTINGS' seed: the initial weights
    init = build_model(MODEL, num_classes=10, in_channels=1, dropout=0.0).state_dict()
    assert a.keys() == b.keys()
    for key in a:
        moved = (a[key] - init[key]).norm()
        assert (a[key] - b[key]).norm() <= 0.05 * moved, key


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def one_process(idx_folder, tmp_path_factory):
    """The reference: one process, the same global batch of 45, 3 epochs of 8 steps."""
    out = tmp_path_factory.mktemp("one")
    assert main(_train(idx_folder, out, "one")) == 0
    return out / "one"


@pytest.mark.slow
def test_two_processes_take_the_steps_of_one_and_evaluate_to_its_counts(idx_folder, one_process, tmp_path):
    out = _finish(_torchrun(_train(idx_folder, tmp_path, "two")))
    run = tmp_path / "two"
    assert out.count("done: validation") == 1  # rank 0 alone speaks
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two"]
    _assert_same_steps(_weights(run), _weights(one_process))
    env = json.loads((run / "env.json").read_text())
    assert env["processes"] == 2
    # the sharded evaluation's numbers are the one-process evaluation of the same weights
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    model = build_model(MODEL, num_classes=10, in_channels=1, dropout=0.0)
    model.load_state_dict(ckpt["model"])
    pre = Preprocess.from_dict(ckpt["preprocess"])
    val = TensorBatches(
        idx_folder.test_images[:, None],
        idx_folder.test_labels,
        batch_size=45,
        preprocess=pre,
        train=False,
        device="cpu",
    )
    reference = engine.evaluate(model, val, 10, device=torch.device("cpu"))
    last = _metrics(run)[-1]
    assert (last["val_top1"], last["val_top5"]) == (reference["top1"], reference["top5"])
    assert last["val_loss"] == pytest.approx(reference["loss"], rel=1e-5)
    assert [row["epoch"] for row in _metrics(run)] == [0, 1, 2]


@pytest.mark.slow
def test_a_run_moves_between_world_sizes_at_epoch_ends_and_mid_epoch(idx_folder, one_process, tmp_path):
    """2 processes (stopped by SIGTERM mid-epoch), then 1, then 4: the steps of one process."""
    proc = _torchrun(_train(idx_folder, tmp_path, "moved", "--epochs", "2", "--checkpoint-every", "2"))
    last = tmp_path / "moved" / "checkpoints" / "last.pt"
    end = time.monotonic() + 180
    while not last.is_file() and proc.poll() is None and time.monotonic() < end:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)  # as a cluster stops a job: torchrun and its workers
    out, _ = proc.communicate(timeout=120)
    if proc.returncode != 0:  # stopped part-way: every process at the same step, saved once
        assert "saved a checkpoint at epoch" in out or "saved a checkpoint after epoch" in out, out[-3000:]
        assert main(["train", "--resume", str(tmp_path / "moved")]) == 0  # one process finishes epoch 2
    assert [row["epoch"] for row in _metrics(tmp_path / "moved")] == [0, 1]
    _finish(_torchrun(["train", "--resume", str(tmp_path / "moved"), "--epochs", "3"], procs=4))
    assert [row["epoch"] for row in _metrics(tmp_path / "moved")] == [0, 1, 2]
    _assert_same_steps(_weights(tmp_path / "moved"), _weights(one_process))


def _pid_of_rank(rank: int, run_id: str) -> int | None:
    """The worker process of ``rank`` in the torchrun launch ``run_id`` (read from its environment)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and f"TORCHELASTIC_RUN_ID={run_id}".encode() in env and b"alexnet" in cmdline:
            return int(entry.name)
    return None


@pytest.mark.slow
def test_a_rank_killed_under_max_restarts_continues_from_its_checkpoint_by_itself(idx_folder, tmp_path):
    run_id = uuid.uuid4().hex
    proc = _torchrun(
        ["train", "--data", str(idx_folder.path), "--out", str(tmp_path), *SETTINGS, "--checkpoint-every", "2"],
        restarts=1,
        run_id=run_id,
    )
    end = time.monotonic() + 180
    while not list(tmp_path.glob("*/checkpoints/last.pt")) and proc.poll() is None and time.monotonic() < end:
        time.sleep(0.05)
    victim = _pid_of_rank(1, run_id)
    assert victim is not None and proc.poll() is None
    os.kill(victim, signal.SIGKILL)
    out = _finish(proc)
    assert "torchrun restarted the run (restart 1): continuing" in out
    (run,) = tmp_path.iterdir()  # one run folder, continued: not a second one started afresh
    assert [row["epoch"] for row in _metrics(run)] == [0, 1, 2]


@pytest.mark.slow
def test_two_nodes_meet_on_loopback_and_write_one_run_folder(idx_folder, tmp_path):
    port, run_id = _free_port(), uuid.uuid4().hex
    argv = _train(idx_folder, tmp_path, "nodes", "--epochs", "1")
    nodes = [_torchrun(argv, procs=1, nodes=2, port=port, run_id=run_id) for _ in range(2)]
    outs = [_finish(node) for node in nodes]
    assert sum(o.count("done: validation") for o in outs) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nodes"]
    assert json.loads((tmp_path / "nodes" / "env.json").read_text())["processes"] == 2
    assert len(_metrics(tmp_path / "nodes")) == 1


ONE_STEP = f"""
import sys, torch
from alexnet.system import distributed
from alexnet.training import engine
from alexnet.models import build_model
world = distributed.from_environment()
distributed.start(world, torch.device("cpu"))
torch.manual_seed(0)
model = build_model("{MODEL}", num_classes=10, in_channels=1, dropout=0.0)
x, y = torch.load(sys.argv[1])
part = world.part(len(y))
net = distributed.wrap(model, world, torch.device("cpu"))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
engine.train_step(net, x[part], y[part], optimizer, device=torch.device("cpu"), world=world)
if world.writer:
    torch.save(model.state_dict(), sys.argv[2])
distributed.finish(world)  # as train's loop ends: every process leaves together (gloo aborts an early leaver)
del net  # DDP's reducer goes before the process group it uses
distributed.stop()
"""


@pytest.mark.slow
@pytest.mark.parametrize("n", [45, 3])  # shares of 23 and 22; of 2 and 1, and with 3 processes one empty
def test_one_step_of_unequal_shares_is_the_one_process_step(tmp_path, n):
    """The loss scale (world size / images in the global batch) makes DDP's average the global
    batch's gradient exactly, whatever the shares; a process with no images still takes the step."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(n, 1, 67, 67, generator=g), torch.randint(0, 10, (n,), generator=g)
    torch.save((x, y), tmp_path / "batch.pt")
    (tmp_path / "step.py").write_text(ONE_STEP)
    torch.manual_seed(0)
    model = build_model(MODEL, num_classes=10, in_channels=1, dropout=0.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    engine.train_step(model, x, y, optimizer, device=torch.device("cpu"))
    for procs in (2, 4) if n == 3 else (2,):
        env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo"}
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                f"--nproc-per-node={procs}",
                "--master-addr=127.0.0.1",
                f"--master-port={_free_port()}",
                "--local-addr=127.0.0.1",
                str(tmp_path / "step.py"),
                str(tmp_path / "batch.pt"),
                str(tmp_path / "after.pt"),
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        after = torch.load(tmp_path / "after.pt", weights_only=True)
        for key, value in model.state_dict().items():
            torch.testing.assert_close(after[key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_a_restart_continues_only_its_own_launchs_folder(tmp_path):
    """The folder of this launch (its rendezvous id and command), never another run's of the same
    --name or command; with torchrun's default id "none" nothing tells launches apart: none."""
    from alexnet.config import TrainConfig
    from alexnet.training.rundir import RunFolder

    def make(name: str, run_id: str | None, argv: list[str]) -> None:
        folder = RunFolder.create(TrainConfig(out=str(tmp_path), name=name), argv)
        folder.write_json("env.json", {"torchrun_id": run_id, "processes": 2})
        folder.close()

    argv = ["alexnet", "train", "--name", "exp"]
    make("exp", "old-launch", argv)
    cfg = TrainConfig(out=str(tmp_path), name="exp")
    assert RunFolder.find_launch(cfg, argv, "new-launch") is None  # an older run of the same --name
    assert RunFolder.find_launch(cfg, argv, "old-launch") == str(tmp_path / "exp")
    make("a", "job1", ["alexnet", "train"])
    make("b", "job1", ["alexnet", "train", "--epochs", "9"])
    unnamed = TrainConfig(out=str(tmp_path))
    assert RunFolder.find_launch(unnamed, ["alexnet", "train"], "job1") == str(tmp_path / "a")
    assert RunFolder.find_launch(unnamed, ["alexnet", "train"], "none") is None
    assert RunFolder.find_launch(unnamed, ["alexnet", "train"], None) is None
