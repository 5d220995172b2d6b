"""train.py end to end, through the CLI, on small data the tests generate: train -> evaluate ->
predict -> resume, an image folder; and crash-safe runs: exact resume after SIGKILL at random
points, SIGINT/SIGTERM, NaN, disk full.

Each crash-safety promise is listed in docs/reliability.md with the test that proves it.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

import alexnet.formats.checkpoint
from alexnet.cli import main
from alexnet.data import Preprocess, TensorBatches
from alexnet.formats import load_checkpoint
from alexnet.training import engine

from helpers import _run as _cli
from helpers import _run_stdout as _run

# The test-size network (models.py): what these tests prove is the loop's, whatever the network's size.
TINY = ["--model", "alexnet_tiny"]
SMALL = ["--batch-size", "32", "--image-size", "67", "--seed", "1"]
FAST = [*TINY, *SMALL]


def test_train_evaluate_predict(idx_folder, tmp_path, capsys):
    rc, out = _run(
        capsys, "train", "--data", str(idx_folder.path), "--epochs", "2", *FAST, "--out", str(tmp_path), "--name", "r"
    )
    assert rc == 0, out
    run = tmp_path / "r"
    for name in (
        "config.json",
        "command.txt",
        "env.json",
        "metrics.jsonl",
        "curves.png",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
    ):
        assert (run / name).is_file(), name
    assert list((run / "tb").glob("events.out.tfevents.*"))
    config = json.loads((run / "config.json").read_text())
    assert config["epochs"] == 2 and config["batch_size"] == 32 and config["data"] == str(idx_folder.path)
    env = json.loads((run / "env.json").read_text())
    assert env["torch"] == torch.__version__ and env["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1]
    assert {"train_loss", "train_acc", "val_top1", "val_top5", "lr"} <= set(rows[-1])

    # evaluate the last checkpoint: the same numbers the run logged for its last epoch
    rc, out = _run(capsys, "evaluate", "--checkpoint", str(run / "checkpoints/last.pt"), "--json")
    assert rc == 0
    result = json.loads(out)
    assert result["top1"] == pytest.approx(rows[-1]["val_top1"])
    assert result["top5"] == pytest.approx(rows[-1]["val_top5"])
    assert sum(map(sum, result["confusion"])) == len(idx_folder.test_labels)
    assert (run / "confusion.png").is_file() and (run / "evaluation.json").is_file()

    # predict a test image saved as PNG: the same top class as the evaluation batch gives
    image = tmp_path / "test0.png"
    Image.fromarray(idx_folder.test_images[0].numpy(), mode="L").save(image)
    rc, out = _run(capsys, "predict", str(image), "--checkpoint", str(run / "checkpoints/last.pt"), "--json")
    assert rc == 0
    preds = json.loads(out)[0]["predictions"]
    probs = [p["probability"] for p in preds]
    assert len(preds) == 5 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    state = load_checkpoint(run / "checkpoints/last.pt")
    model = _model(state).eval()
    batches = TensorBatches(
        idx_folder.test_images[:1].unsqueeze(1),
        idx_folder.test_labels[:1],
        batch_size=1,
        preprocess=Preprocess.from_dict(state["preprocess"]),
        train=False,
        device="cpu",
    )
    x, _ = next(iter(batches))
    with torch.no_grad():  # predict runs the model in fp32 on the CPU
        expected = model(x).argmax(1).item()
    assert preds[0]["index"] == expected and preds[0]["class"] == state["classes"][expected]


def test_alexnet_tiny_trains_evaluates_and_exports_through_the_cli(idx_folder, tmp_path, capsys):
    """The test-size network goes every way a variant goes: trained by name, recognised from its
    weights alone, evaluated from its checkpoint and from its export to the numbers the run logged."""
    from alexnet.formats import identify_weights
    from alexnet.models import build_model

    argv = ["train", "--data", idx_folder.path, "--epochs", "1", *FAST]
    rc, out, _ = _cli(capsys, *argv, "--out", tmp_path, "--name", "tiny")
    assert rc == 0, out
    run = tmp_path / "tiny"
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["config"]["model"] == "alexnet_tiny"
    assert identify_weights(last["model"]) == {"variant": "alexnet_tiny", "num_classes": 10, "in_channels": 1}
    expected = build_model("alexnet_tiny", num_classes=10, in_channels=1).state_dict()
    assert {k: v.shape for k, v in last["model"].items()} == {k: v.shape for k, v in expected.items()}
    logged = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    rc, out, _ = _cli(
        capsys, "export", "--checkpoint", run / "checkpoints" / "last.pt", "--out", tmp_path / "tiny.safetensors"
    )
    assert rc == 0, out
    for model in (run / "checkpoints" / "last.pt", tmp_path / "tiny.safetensors"):
        rc, out, err = _cli(capsys, "evaluate", "--checkpoint", model, "--json", "--out", tmp_path / "eval")
        assert rc == 0, err
        result = json.loads(out)
        assert (result["top1"], result["top5"]) == pytest.approx((logged["val_top1"], logged["val_top5"]))
    rc, out, _ = _cli(capsys, "summary", "--model", "alexnet_tiny", "--json")
    assert rc == 0 and json.loads(out)["totals"]["params"] == sum(
        v.numel() for v in build_model("alexnet_tiny").state_dict().values()
    )


def _model(state):
    from alexnet.formats import model_from_checkpoint

    return model_from_checkpoint(state)


def test_resume_is_exact(idx_folder, tmp_path, capsys, monkeypatch):
    """A run stopped after its first epoch and resumed ends with the same weights as one that ran through."""
    # bit-exact resume is promised on the CPU; cuDNN's autotuned kernels are not deterministic
    args = [
        "train",
        "--data",
        str(idx_folder.path),
        "--epochs",
        "2",
        *FAST,
        "--out",
        str(tmp_path),
        "--precision",
        "fp32",
        "--device",
        "cpu",
    ]
    assert _run(capsys, *args, "--name", "through")[0] == 0

    import alexnet.training.loop

    real = alexnet.training.loop._train_epoch
    calls = []

    def stop_in_second_epoch(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(alexnet.training.loop, "_train_epoch", stop_in_second_epoch)
    assert _run(capsys, *args, "--name", "stopped")[0] == 130
    assert load_checkpoint(tmp_path / "stopped/checkpoints/last.pt")["epoch"] == 0
    monkeypatch.setattr(alexnet.training.loop, "_train_epoch", real)

    rc, out = _run(capsys, "train", "--resume", str(tmp_path / "stopped"))
    assert rc == 0, out
    a = load_checkpoint(tmp_path / "through/checkpoints/last.pt")
    b = load_checkpoint(tmp_path / "stopped/checkpoints/last.pt")
    assert b["epoch"] == 1
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    strip = lambda r: {k: v for k, v in r.items() if "second" not in k}  # noqa: E731
    lines = lambda n: [strip(json.loads(s)) for s in (tmp_path / n / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert lines("through") == lines("stopped")


def test_resume_rejects_new_settings_and_empty_folders(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path), "--lr", "0.1"]) == 2  # only --epochs may be given
    assert "--lr" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path)]) == 1
    assert "no checkpoint" in capsys.readouterr().err


def test_train_on_image_folder(image_folder, tmp_path, capsys):
    rc, out = _run(
        capsys,
        "train",
        "--data",
        str(image_folder),
        "--epochs",
        "1",
        # the document's network: best.pt needs a top-1 above 0 on the 3 held-out images, which alexnet_tiny misses
        *SMALL,
        "--workers",
        "0",
        "--out",
        str(tmp_path),
        "--name",
        "f",
    )
    assert rc == 0, out
    run = tmp_path / "f"
    split = json.loads((run / "split.json").read_text())
    assert split["seed"] == 1 and split["val"]
    state = load_checkpoint(run / "checkpoints/last.pt")
    assert state["classes"] == sorted(p.name for p in image_folder.iterdir() if p.is_dir())
    assert state["preprocess"]["kind"] == "folder" and len(state["preprocess"]["mean"]) == 3
    image = next(p for p in sorted(image_folder.rglob("*")) if p.is_file())
    rc, out = _run(
        capsys, "predict", str(image), "--checkpoint", str(run / "checkpoints/best.pt"), "--top", "2", "--json"
    )
    assert rc == 0
    assert len(json.loads(out)[0]["predictions"]) == 2


# --------------------------------------------------------------------------------------------
# Crash-safe runs


ROOT = Path(__file__).resolve().parents[2]


def _args(idx_folder, out: Path, name: str, *extra: str) -> list[str]:
    return [
        "train",
        "--data",
        str(idx_folder.path),
        "--epochs",
        "2",
        "--batch-size",
        "32",
        *TINY,
        "--image-size",
        "67",
        "--seed",
        "3",
        "--precision",
        "fp32",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--name",
        name,
        *extra,
    ]


def _weights(run: Path) -> dict:
    return load_checkpoint(run / "checkpoints" / "last.pt")["model"]


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def reference(idx_folder, tmp_path_factory):
    """An uninterrupted run (2 epochs of 10 steps) to compare interrupted ones against."""
    out = tmp_path_factory.mktemp("reference")
    assert main(_args(idx_folder, out, "ref")) == 0
    return out / "ref"


def _spawn(argv: list[str], patch: str = "") -> subprocess.Popen:
    """``alexnet ARGV`` in a child process, after ``patch`` (Python run first) when given."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    code = f"import sys\n{patch}\nfrom alexnet.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.Popen(
        [sys.executable, *(("-c", code) if patch else ("-m", "alexnet")), *argv],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_checkpoint(proc: subprocess.Popen, last: Path, newer_than: float, timeout: float = 120) -> bool:
    """Wait until ``last`` is replaced after ``newer_than``; False if the process ended first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if last.is_file() and last.stat().st_mtime > newer_than:
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    raise TimeoutError("no checkpoint appeared")


# alexnet_tiny trains an epoch here in well under a second, and the next two tests signal a run at
# moments measured in seconds: a pause in every training step keeps the run going that long, on any
# machine, where the full network's arithmetic used to (a step of it took about as long).
STEP_SECONDS = 0.25


def _slow_steps(tmp_path: Path) -> str:
    return _pause_in("alexnet.training.engine:train_step", tmp_path / "stepping", STEP_SECONDS)


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_is_bit_identical(idx_folder, reference, tmp_path):
    """Killed with SIGKILL three times at random points (mid-epoch checkpoints every 3 steps) and
    resumed each time, the run ends with exactly the weights of the uninterrupted run."""
    rng = random.Random(7)
    run = tmp_path / "killed"
    last = run / "checkpoints" / "last.pt"
    argv = _args(idx_folder, tmp_path, "killed", "--checkpoint-every", "3")
    kills = 0
    for attempt in range(3):
        proc = _spawn(argv if attempt == 0 else ["train", "--resume", str(run)], _slow_steps(tmp_path))
        before = last.stat().st_mtime if last.is_file() else 0.0
        if _wait_for_checkpoint(proc, last, before):
            time.sleep(rng.uniform(0.0, 1.5))  # anywhere: mid-step, mid-save, mid-evaluation
            proc.send_signal(signal.SIGKILL)
            kills += proc.wait() == -signal.SIGKILL
        else:
            proc.wait()
        load_checkpoint(last)  # whatever instant the kill hit, the checkpoint on disk loads
    assert kills >= 2
    rc = _spawn(["train", "--resume", str(run)]).wait()
    assert rc == 0
    _assert_same_weights(_weights(reference), _weights(run))
    strip = lambda line: {k: v for k, v in json.loads(line).items() if "second" not in k}  # noqa: E731
    rows = lambda r: [strip(line) for line in (r / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert rows(run) == rows(reference)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_sigint_and_sigterm_save_and_exit_cleanly(idx_folder, reference, tmp_path, sig):
    run = tmp_path / "stopped"
    proc = _spawn(_args(idx_folder, tmp_path, "stopped"), _slow_steps(tmp_path))
    assert proc.stdout.readline().startswith("run ")  # training is about to start
    time.sleep(1.0)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"alexnet train --resume {run}" in err
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["epoch"] == 0 and state["totals"]["steps"] >= 1  # saved mid-epoch, where it stopped
    assert main(["train", "--resume", str(run)]) == 0
    _assert_same_weights(_weights(reference), _weights(run))


def _nan_after(monkeypatch, calls: set[int]):
    """Make the training loss NaN on the given (1-based) training steps."""
    real = engine.F.cross_entropy
    count = {"n": 0}

    def cross_entropy(logits, target, *args, **kwargs):
        loss = real(logits, target, *args, **kwargs)
        if torch.is_grad_enabled():
            count["n"] += 1
            if count["n"] in calls:
                return loss * float("nan")
        return loss

    monkeypatch.setattr(engine.F, "cross_entropy", cross_entropy)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(idx_folder, tmp_path, monkeypatch, capsys):
    _nan_after(monkeypatch, {5})
    rc = main(_args(idx_folder, tmp_path, "nan", "--checkpoint-every", "2"))
    err = capsys.readouterr().err
    assert rc == 1 and len(err.strip().splitlines()) == 1
    assert "nan" in err and "last good checkpoint" in err and "--on-nan rollback" in err
    state = load_checkpoint(tmp_path / "nan" / "checkpoints" / "last.pt")
    assert state["totals"]["steps"] == 4  # the checkpoint of step 4, written before the NaN
    assert all(torch.isfinite(t).all() for t in state["model"].values())


def test_nan_loss_rollback_halves_the_learning_rate_and_finishes(idx_folder, tmp_path, monkeypatch, capsys):
    _nan_after(monkeypatch, {5})
    rc = main(_args(idx_folder, tmp_path, "rb", "--checkpoint-every", "2", "--on-nan", "rollback", "--lr", "0.01"))
    out = capsys.readouterr().out
    assert rc == 0 and "rolled back" in out
    state = load_checkpoint(tmp_path / "rb" / "checkpoints" / "last.pt")
    assert state["epoch"] == 1 and state["totals"] is None and state["rollbacks"] == 1
    assert state["optimizer"]["param_groups"][0]["max_lr"] == pytest.approx(0.005)
    assert all(torch.isfinite(t).all() for t in state["model"].values())


def test_nan_loss_rollback_gives_up_after_three(idx_folder, tmp_path, monkeypatch, capsys):
    _nan_after(monkeypatch, set(range(3, 100)))
    rc = main(_args(idx_folder, tmp_path, "rb3", "--checkpoint-every", "2", "--on-nan", "rollback"))
    err = capsys.readouterr().err
    assert rc == 1 and "after 3 rollback(s)" in err


def test_disk_full_while_saving_keeps_the_previous_checkpoint(idx_folder, tmp_path, monkeypatch, capsys):
    real = torch.save
    count = {"n": 0}

    def save(obj, f, *args, **kwargs):
        count["n"] += 1
        if count["n"] == 2:
            f.write(b"partial")  # the disk fills up part-way through the write (torch writes to a file object)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(alexnet.formats.checkpoint.torch, "save", save)
    rc = main(_args(idx_folder, tmp_path, "full", "--checkpoint-every", "3"))
    err = capsys.readouterr().err
    assert rc == 1 and len(err.strip().splitlines()) == 1
    assert "No space left on device" in err and "--resume" in err
    folder = tmp_path / "full" / "checkpoints"
    assert load_checkpoint(folder / "last.pt")["totals"]["steps"] == 3  # the first save, intact
    assert [p.name for p in folder.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_image_folder_resumes_mid_epoch_exactly(image_folder, tmp_path, monkeypatch, capsys):
    """A folder run stopped by SIGTERM after its 2nd step and resumed has the same weights as one
    that ran through: the sampler's position and each image's augmentation seed are restored."""
    import alexnet.training.loop

    base = [
        "train",
        "--data",
        str(image_folder),
        "--epochs",
        "1",
        "--batch-size",
        "4",
        *TINY,
        "--image-size",
        "67",
        "--workers",
        "0",
        "--precision",
        "fp32",
        "--device",
        "cpu",
        "--seed",
        "5",
        "--out",
        str(tmp_path),
    ]
    assert main([*base, "--name", "through"]) == 0

    real = engine.train_step
    steps = []

    def stop_after_two_steps(*args, **kwargs):
        step = real(*args, **kwargs)
        steps.append(step)
        if len(steps) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # the run's handler turns it into a flag
        return step

    monkeypatch.setattr(alexnet.training.loop.engine, "train_step", stop_after_two_steps)
    assert main([*base, "--name", "stopped"]) == 128 + signal.SIGTERM
    assert load_checkpoint(tmp_path / "stopped/checkpoints/last.pt")["totals"]["steps"] == 2
    monkeypatch.setattr(alexnet.training.loop.engine, "train_step", real)
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "stopped")]) == 0
    _assert_same_weights(_weights(tmp_path / "through"), _weights(tmp_path / "stopped"))


# --------------------------------------------------------------------------------------------
# Resuming: longer runs, runs stopped before their first checkpoint, folders of runs


def _metric_rows(run: Path) -> list[dict]:
    strip = lambda r: {k: v for k, v in r.items() if "second" not in k}  # noqa: E731
    return [strip(json.loads(s)) for s in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_resume_with_epochs_extends_a_plateau_run_exactly(idx_folder, tmp_path, capsys):
    """One epoch, then --resume --epochs 2, ends where an uninterrupted two-epoch run ends."""
    common = ["train", "--data", idx_folder.path, *FAST, "--schedule", "plateau", "--out", tmp_path]
    assert _cli(capsys, *common, "--epochs", "2", "--name", "through")[0] == 0
    assert _cli(capsys, *common, "--epochs", "1", "--name", "short")[0] == 0
    rc, out, _ = _cli(capsys, "train", "--resume", tmp_path / "short", "--epochs", "2")
    assert rc == 0, out
    a, b = _weights(tmp_path / "through"), _weights(tmp_path / "short")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _metric_rows(tmp_path / "short") == _metric_rows(tmp_path / "through")
    assert json.loads((tmp_path / "short" / "config.json").read_text())["epochs"] == 2


def test_resume_with_epochs_refuses_a_onecycle_run(idx_folder, tmp_path, capsys):
    run = tmp_path / "one"
    assert (
        _cli(capsys, "train", "--data", idx_folder.path, *FAST, "--epochs", "1", "--out", tmp_path, "--name", "one")[0]
        == 0
    )
    before = {p.name: p.stat().st_mtime_ns for p in (run / "config.json", run / "checkpoints" / "last.pt")}
    rc, _, err = _cli(capsys, "train", "--resume", run, "--epochs", "3")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "onecycle" in err and "start a new run with --epochs 3" in err
    assert {p.name: p.stat().st_mtime_ns for p in (run / "config.json", run / "checkpoints" / "last.pt")} == before


def test_resume_of_a_folder_of_runs_takes_the_newest(idx_folder, tmp_path, capsys):
    for name in ("a", "b"):
        assert (
            _cli(capsys, "train", "--data", idx_folder.path, *FAST, "--epochs", "1", "--out", tmp_path, "--name", name)[
                0
            ]
            == 0
        )
    rc, out, _ = _cli(capsys, "train", "--resume", tmp_path)
    assert rc == 0 and f"holds 2 runs; resuming the newest, {tmp_path / 'b'} (others: a)" in out
    assert "already finished all 1 epochs" in out


@pytest.mark.slow
def test_a_run_killed_before_its_first_checkpoint_resumes_to_the_same_weights(idx_folder, tmp_path, capsys):
    args = ["train", "--data", str(idx_folder.path), *FAST, "--epochs", "2", "--out", str(tmp_path)]
    assert _cli(capsys, *args, "--name", "through")[0] == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "alexnet", *args, "--name", "killed"], stdout=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline()  # "run ...": the data is built and the run folder written
        assert line.startswith("run "), line
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    killed = tmp_path / "killed"
    assert (killed / "config.json").is_file() and not (killed / "checkpoints" / "last.pt").exists()
    rc, out, _ = _cli(capsys, "train", "--resume", killed)
    assert rc == 0 and "stopped before its first checkpoint: starting it again from step 0" in out
    a, b = _weights(tmp_path / "through"), _weights(killed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _metric_rows(killed) == _metric_rows(tmp_path / "through")


# --------------------------------------------------------------------------------------------
# Signals as clusters send them: to the whole process group, loader workers running, any phase


def _spawn_group(argv: list[str], patch: str = "") -> subprocess.Popen:
    """``alexnet ARGV`` in its own process group (so a group signal reaches its loader workers and
    not pytest), after ``patch`` - Python run first, to hold the run in the phase under test."""
    code = f"import sys\n{patch}\nfrom alexnet.cli import main\nsys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", code, *argv],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.05)


def _folder_args(image_folder, out: Path, name: str, *extra: str) -> list[str]:
    return [
        "train",
        "--data",
        str(image_folder),
        "--epochs",
        "2",
        "--batch-size",
        "8",
        *TINY,
        "--image-size",
        "67",
        "--workers",
        "2",
        "--seed",
        "3",
        "--precision",
        "fp32",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--name",
        name,
        *extra,
    ]


@pytest.fixture(scope="module")
def folder_reference(image_folder, tmp_path_factory):
    """An uninterrupted image-folder run with loader workers (2 epochs), to compare interrupted ones against."""
    out = tmp_path_factory.mktemp("folder_reference")
    assert main(_folder_args(image_folder, out, "ref")) == 0
    return out / "ref"


def _assert_clean_stop(proc: subprocess.Popen, sig: int, *phrases: str) -> str:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and "DataLoader worker" not in err, err
    for phrase in phrases:
        assert phrase in err, err
    return err


def _pause_in(target: str, mark: Path, seconds: float) -> str:
    """Python that makes ``module:function`` touch ``mark`` and pause ``seconds`` before it runs:
    the run is then held in the phase under test, and the test knows when it got there."""
    module, function = target.split(":")
    return (
        f"import pathlib, time\nimport {module} as m\nreal = m.{function}\n"
        f"def paused(*a, **k):\n    pathlib.Path({str(mark)!r}).touch(); time.sleep({seconds}); return real(*a, **k)\n"
        f"m.{function} = paused\n"
    )


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_group_signal_while_training_with_workers_saves_and_resumes_exactly(
    image_folder, folder_reference, tmp_path, sig
):
    out = tmp_path / "runs"
    mark = tmp_path / "training"
    patch = _pause_in("alexnet.training.engine:train_step", mark, 0.3)
    proc = _spawn_group(_folder_args(image_folder, out, "stopped"), patch)
    _wait_for(mark, proc)
    os.killpg(proc.pid, sig)  # what Ctrl-C, Slurm and Kubernetes do: the main process and its workers
    _assert_clean_stop(proc, sig, f"alexnet train --resume {out / 'stopped'}", "saved a checkpoint at epoch 1")
    assert main(["train", "--resume", str(out / "stopped")]) == 0
    _assert_same_weights(_weights(folder_reference), _weights(out / "stopped"))


@pytest.mark.slow
def test_a_group_signal_during_evaluation_saves_the_epoch_and_resumes_exactly(image_folder, folder_reference, tmp_path):
    out = tmp_path / "runs"
    mark = tmp_path / "evaluating"
    patch = _pause_in("alexnet.training.engine:evaluate", mark, 1.5)
    proc = _spawn_group(_folder_args(image_folder, out, "stopped"), patch)
    _wait_for(mark, proc)
    os.killpg(proc.pid, signal.SIGTERM)
    _assert_clean_stop(proc, signal.SIGTERM, "after epoch 1's training, before its evaluation", "--resume")
    state = load_checkpoint(out / "stopped" / "checkpoints" / "last.pt")
    held_out = len(json.loads((out / "stopped" / "split.json").read_text())["val"])
    assert state["epoch"] == 0 and state["totals"]["seen"] == 24 - held_out  # the whole epoch's training images
    assert main(["train", "--resume", str(out / "stopped")]) == 0
    _assert_same_weights(_weights(folder_reference), _weights(out / "stopped"))

    def rows(r):
        return [
            {k: v for k, v in json.loads(s).items() if "second" not in k}
            for s in (r / "metrics.jsonl").read_text().splitlines()
        ]

    assert [r["val_top1"] for r in rows(out / "stopped")] == [r["val_top1"] for r in rows(folder_reference)]


@pytest.mark.slow
def test_a_group_signal_during_the_image_scan_stops_at_once_leaving_no_run_folder(image_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path / "cache"))  # an empty scan cache: the scan decodes every file
    mark = tmp_path / "scanning"
    patch = _pause_in("alexnet.data.folder:open_image", mark, 1.0)
    proc = _spawn_group(_folder_args(image_folder, tmp_path / "runs", "scan"), patch)
    _wait_for(mark, proc)
    os.killpg(proc.pid, signal.SIGTERM)
    _assert_clean_stop(
        proc, signal.SIGTERM, "stopped while preparing the run, before any training step; run the same command again"
    )
    assert not (tmp_path / "runs" / "scan").exists()


@pytest.mark.slow
def test_a_signal_during_a_checkpoint_write_lets_the_write_finish(idx_folder, reference, tmp_path):
    mark = tmp_path / "saving.mark"
    patch = _pause_in("alexnet.formats.checkpoint:torch.save", mark, 1.0)
    proc = _spawn_group(_args(idx_folder, tmp_path, "saving", "--checkpoint-every", "2"), patch)
    _wait_for(mark, proc)
    os.killpg(proc.pid, signal.SIGTERM)
    _assert_clean_stop(proc, signal.SIGTERM, "saved a checkpoint at epoch 1, step 2")
    assert load_checkpoint(tmp_path / "saving" / "checkpoints" / "last.pt")["totals"]["steps"] == 2
    assert main(["train", "--resume", str(tmp_path / "saving")]) == 0
    _assert_same_weights(_weights(reference), _weights(tmp_path / "saving"))


@pytest.mark.slow
def test_a_closed_stdout_never_stops_training(idx_folder, reference, tmp_path):
    proc = _spawn(_args(idx_folder, tmp_path, "headless"))
    assert proc.stdout.readline().startswith("run ")
    proc.stdout.close()  # `alexnet train | head -1`
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert len((tmp_path / "headless" / "metrics.jsonl").read_text().splitlines()) == 2
    _assert_same_weights(_weights(reference), _weights(tmp_path / "headless"))


# --------------------------------------------------------------------------------------------
# One run folder, one writer


@pytest.mark.slow
def test_a_second_process_on_a_running_run_is_refused_and_a_killed_ones_lock_does_not_block(
    idx_folder, tmp_path, capsys
):
    mark = tmp_path / "training"
    patch = _pause_in("alexnet.training.engine:train_step", mark, 0.5)
    proc = _spawn_group(_args(idx_folder, tmp_path, "busy"), patch)
    try:
        _wait_for(mark, proc)
        for argv in (_args(idx_folder, tmp_path, "busy"), ["train", "--resume", str(tmp_path / "busy")]):
            assert main(argv) == 1
            err = capsys.readouterr().err
            assert len(err.strip().splitlines()) == 1 and f"is in use by alexnet process {proc.pid}" in err, err
        assert json.loads((tmp_path / "busy" / "config.json").read_text())["seed"] == 3  # untouched
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # a crash: the lock file stays, the kernel drops the lock
        proc.wait(timeout=60)
    assert (tmp_path / "busy" / ".lock").exists()
    assert main(["train", "--resume", str(tmp_path / "busy")]) == 0


def test_name_cannot_escape_out(tmp_path, capsys):
    for name in ("../escape", "a/b", "..", "/abs"):
        assert main(["train", "--name", name, "--out", str(tmp_path / "runs")]) == 2
        err = capsys.readouterr().err
        assert "--name" in err and "plain folder name" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "escape").exists() and not (tmp_path / "runs").exists()


def test_a_torn_metrics_file_does_not_block_resume(idx_folder, reference, tmp_path, capsys):
    import shutil

    run = tmp_path / "torn"
    shutil.copytree(reference, run)
    good = (run / "metrics.jsonl").read_text()
    (run / "metrics.jsonl").write_text(good[: len(good) - 40] + "\x00\x00")  # the last line torn by a crash
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert f"{run / 'metrics.jsonl'}: dropped 1 damaged line(s)" in out and "already finished all 2 epochs" in out
    assert (run / "metrics.jsonl").read_text() == good  # the last epoch's line restored from the checkpoint
