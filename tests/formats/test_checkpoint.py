"""formats/checkpoint.py: a damaged ``.pt`` is a one-line error, the command line refuses a
checkpoint whose weights are another network's, saying which, and every field ``train --resume``
reads is checked, naming the file and the field - one by one, and under fuzzing of the structure
(keys deleted, values of other types) for predict, evaluate and resume. Checkpoints are made by
hand (helpers.py), or changed copies of one tiny real run made once for the module."""

from __future__ import annotations

import math
import shutil

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")  # the fuzz tests; the rest of the suite runs without it
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from alexnet.cli import main
from alexnet.formats import CheckpointError, load_checkpoint, save_checkpoint
from alexnet.training.rundir import RunFolder

from fuzz import FUZZ_CLI, changed, changes
from helpers import _checkpoint, _fake_weights, _one_line_error, _refused_in_one_line, _run


@pytest.mark.parametrize("damage", ["truncated", "garbage", "text", "empty"])
def test_corrupt_checkpoint_is_one_line_error(damage, tmp_path, capsys):
    path = tmp_path / "broken.pt"
    save_checkpoint(_checkpoint(_fake_weights("alexnet", num_classes=10, in_channels=1)), path)
    data = path.read_bytes()
    garbage = (
        torch.randint(0, 256, (4096,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)).numpy().tobytes()
    )
    path.write_bytes(
        {"truncated": data[: len(data) // 2], "garbage": garbage, "text": b"hello world", "empty": b""}[damage]
    )
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    rc, _, err = _run(capsys, "evaluate", "--checkpoint", path)
    assert rc == 1 and str(path) in _one_line_error(err)


def test_cli_refuses_a_mismatched_checkpoint(tmp_path, capsys):
    path = tmp_path / "owt.pt"
    save_checkpoint(_checkpoint(_fake_weights("alexnet_owt", num_classes=10, in_channels=1)), path)
    image = tmp_path / "image.png"
    Image.new("L", (28, 28)).save(image)
    rc, _, err = _run(capsys, "predict", image, "--checkpoint", path)
    assert rc == 1
    assert f"--checkpoint {path}: weights are alexnet_owt's" in _one_line_error(err)


# --------------------------------------------------------------------------------------------
# Every field checked where it is read: train --resume on a real checkpoint with one field wrong


@pytest.fixture(scope="module")
def trained(idx_folder, tmp_path_factory):
    """One tiny real run (one epoch of alexnet_tiny, 10 batches at 67 px on the IDX look-alike, on the CPU): its
    settings file, its finished checkpoint ("last") and the one saved after 9 steps ("mid", with
    running totals), as dicts to change copies of."""
    root = tmp_path_factory.mktemp("trained")
    real = RunFolder.save

    def save(self, state, *, best=False):  # keep the mid-epoch checkpoint the end of the epoch replaces
        real(self, state, best=best)
        if state["totals"] is not None:
            shutil.copy(self.last, root / "mid.pt")

    with pytest.MonkeyPatch.context() as m:
        m.setattr(RunFolder, "save", save)
        argv = [
            "train",
            "--data",
            str(idx_folder.path),
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--model",
            "alexnet_tiny",  # the test-size network: the checks are of the file's fields, not of its size
            "--image-size",
            "67",
            "--checkpoint-every",
            "9",
            "--device",
            "cpu",
            "--precision",
            "fp32",
            "--out",
            str(root),
            "--name",
            "run",
        ]
        assert main(argv) == 0
    run = root / "run"
    return {
        "last": load_checkpoint(run / "checkpoints" / "last.pt"),
        "mid": load_checkpoint(root / "mid.pt"),
        "config": (run / "config.json").read_text(),
    }


def _resume(capsys, folder, trained, state) -> tuple[int, str, str]:
    """``alexnet train --resume`` of a run folder holding the run's settings and ``state`` as its checkpoint."""
    (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
    for stale in ("metrics.jsonl", "curves.png"):
        (folder / stale).unlink(missing_ok=True)
    (folder / "config.json").write_text(trained["config"])
    save_checkpoint(state, folder / "checkpoints" / "last.pt")
    try:
        return _run(capsys, "train", "--resume", folder)
    finally:  # one checkpoint per case: removed, so that the cases do not pile up in the temporary folders
        for ckpt in (folder / "checkpoints").glob("*.pt"):
            ckpt.unlink()


def _set(*path_and_value):
    return [(list(path_and_value[:-1]), "replace", path_and_value[-1])]


def _del(*path):
    return [(list(path), "delete", None)]


# id: (the checkpoint changed, the change, words of the one line); conv1's bias is parameter 1, of
# alexnet_tiny's 6 filters
RESUME_FIELDS = {
    "epoch-a-string": ("last", _set("epoch", "0"), "'epoch' must be a whole number of at least 0, got '0'"),
    "epoch-a-float": ("last", _set("epoch", 0.0), "'epoch'"),
    "epoch-past-the-run": (
        "last",
        _set("epoch", 7),
        "'epoch' must be a whole number from 0 to 0 (the run's epochs), got 7",
    ),
    "epoch-negative": ("mid", _set("epoch", -1), "'epoch'"),
    "no-totals": ("mid", _del("totals"), "a damaged checkpoint, it lacks totals"),
    "totals-a-list": (
        "mid",
        _set("totals", [9, 288]),
        "'totals' must be None or an object of loss_sum, correct, seen, steps",
    ),
    "totals-lack-seen": ("mid", _del("totals", "seen"), "'totals'"),
    "totals-nan-loss": ("mid", _set("totals", "loss_sum", math.nan), "'totals'"),
    "totals-more-right-than-seen": ("mid", _set("totals", "correct", 10**6), "'totals'"),
    "totals-past-the-epoch": (
        "mid",
        _set("totals", {"loss_sum": 1.0, "correct": 0, "seen": 320, "steps": 11}),
        "do not fit an epoch of 10 batches of 32 from 320 images",
    ),
    "totals-seen-wrong": ("mid", _set("totals", "seen", 280), "do not fit an epoch"),
    "best-nan": ("last", _set("best_top1", math.nan), "'best_top1' must be a fraction from 0 to 1, got nan"),
    "best-above-one": ("last", _set("best_top1", 2), "'best_top1'"),
    "rollbacks-negative": ("last", _set("rollbacks", -1), "'rollbacks'"),
    "metrics-a-list": ("last", _set("metrics", [0.5]), "'metrics'"),
    "metrics-empty-after-an-epoch": ("last", _set("metrics", {}), "'metrics' must be an object of epoch, train_loss"),
    "metrics-lack-val-top1": ("last", _del("metrics", "val_top1"), "'metrics'"),
    "metrics-nan": ("last", _set("metrics", "val_top1", math.nan), "'metrics' must be an object of finite numbers"),
    "metrics-accuracy-above-one": (
        "last",
        _set("metrics", "val_top1", 1.5),
        "'metrics' val_top1 must be a number of at least 0 (a fraction for accuracies), got 1.5",
    ),
    "metrics-a-tensor": ("last", _set("metrics", "lr", torch.zeros(3)), "'metrics'"),
    "metrics-of-another-epoch": ("last", _set("metrics", "epoch", 3), "'metrics' are of epoch 3"),
    "metrics-before-the-first-epoch": (
        "mid",
        _set("metrics", {"epoch": 0}),
        "'metrics' must be {} before the first epoch has finished",
    ),
    "rng-none": ("mid", _set("rng", None), "'rng'"),
    "rng-short": (
        "mid",
        _set("rng", "torch", torch.zeros(10, dtype=torch.uint8)),
        "'rng' torch must be a generator state of 5056 bytes",
    ),
    "rng-floats": ("mid", _set("rng", "torch", torch.zeros(5056)), "'rng' torch"),
    "optimizer-none": ("mid", _set("optimizer", None), "'optimizer'"),
    "optimizer-lacks-param-groups": (
        "mid",
        _del("optimizer", "param_groups"),
        "'optimizer' must hold state and param_groups",
    ),
    "momentum-of-another-shape": (
        "mid",
        _set("optimizer", "state", 1, "momentum_buffer", torch.zeros(3)),
        "'optimizer' state of parameter 1 must be a finite momentum buffer of shape [6]",
    ),
    "momentum-nan": (
        "mid",
        _set("optimizer", "state", 1, "momentum_buffer", torch.full((6,), math.nan)),
        "'optimizer' state of parameter 1",
    ),
    "momentum-state-none": ("mid", _set("optimizer", "state", 1, None), "'optimizer' state of parameter 1"),
    "lr-nan": (
        "mid",
        _set("optimizer", "param_groups", 0, "lr", math.nan),
        "'optimizer' param_groups[0] lr must be a finite number",
    ),
    "lr-negative": ("mid", _set("optimizer", "param_groups", 0, "max_lr", -0.02), "'optimizer' param_groups[0] max_lr"),
    "maximize": (
        "mid",
        _set("optimizer", "param_groups", 0, "maximize", True),
        "'optimizer' param_groups[0] maximize is True, but the run's settings make it False",
    ),
    "momentum-not-the-runs": ("mid", _set("optimizer", "param_groups", 0, "momentum", 0.5), "momentum is 0.5"),
    "scheduler-none": ("mid", _set("scheduler", None), "'scheduler' does not fit the onecycle schedule"),
    "scheduler-ahead": (
        "mid",
        _set("scheduler", "last_epoch", 999),
        "'scheduler' is at step 999, but the checkpoint's epoch and totals are at 9",
    ),
    "scheduler-extra-entry": ("mid", _set("scheduler", "optimizer", None), "'scheduler' must have the entries"),
    "scheduler-total-steps": (
        "mid",
        _set("scheduler", "total_steps", 10**6),
        "'scheduler' total_steps is 1000000, but the run's settings make it 10",
    ),
    "config-epochs-a-string": ("last", _set("config", "epochs", "1"), "config: epochs must be int"),
    "preprocess-std-zero": ("last", _set("preprocess", "std", [0.0]), "preprocess pixel std [0.0] is outside"),
    "preprocess-mean-nan": ("last", _set("preprocess", "mean", [math.nan]), "preprocess mean and std"),
    "preprocess-image-size-negative": (
        "last",
        _set("preprocess", "image_size", -67),
        "preprocess 'image_size' must be a positive integer",
    ),
    "classes-twice": ("last", _set("classes", 1, "0"), "'classes' must be a non-empty list of distinct names"),
    "weights-nan": (
        "mid",
        _set("model", "classifier.6.bias", torch.full((10,), math.nan)),
        "weight classifier.6.bias holds NaN",
    ),
    "weights-of-another-shape": (
        "mid",
        _set("model", "features.0.weight", torch.zeros(96, 3, 11, 11)),
        "weights have 3 input channels, expected 1",
    ),
}


@pytest.mark.parametrize("case", RESUME_FIELDS.values(), ids=RESUME_FIELDS.keys())
def test_resume_names_the_file_and_the_field(trained, tmp_path, capsys, case):
    """Before: a traceback for most (TypeError, KeyError, RuntimeError from set_rng_state or the
    first step), or a run that went on with a NaN rate, a wrong-shaped momentum or gradient ascent."""
    base, edits, words = case
    folder = tmp_path / "run"
    rc, _, err = _resume(capsys, folder, trained, changed(trained[base], edits))
    line = _one_line_error(err)
    assert (
        rc == 1 and line.startswith(f"alexnet train: error: {folder / 'checkpoints' / 'last.pt'}") and words in line
    ), line
    assert not (folder / "metrics.jsonl").exists()  # nothing was written


@pytest.mark.parametrize(
    ("edits", "words"),
    [
        (
            _set("classes", [f"c{i}" for i in range(10)]),
            "its classes ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'] differ from those",
        ),
        (_set("preprocess", "source_size", 32), "its images give preprocess source_size 28, but"),
    ],
    ids=["classes", "image-size"],
)
def test_resume_refuses_data_that_changed_since(trained, idx_folder, tmp_path, capsys, edits, words):
    # the checkpoint says the run trained on other classes or images than --data gives now
    rc, _, err = _resume(capsys, tmp_path / "run", trained, changed(trained["last"], edits))
    line = _one_line_error(err)
    assert rc == 1 and line.startswith(f"alexnet train: error: --data {idx_folder.path}: ") and words in line, line


def test_real_checkpoints_pass_every_check(trained, tmp_path, capsys):
    # the finished run (nothing left to do) and the one stopped after 9 of 10 steps (one more step)
    for base in ("last", "mid"):
        rc, out, err = _resume(capsys, tmp_path / base, trained, trained[base])
        assert rc == 0 and err == "" and "done: validation top-1" in out, err


def test_predict_refuses_nan_weights_instead_of_printing_nan(tmp_path, capsys):
    """Before: "  nan%  c0" for every class, exit code 0."""
    weights = _fake_weights("alexnet", num_classes=10, in_channels=1)
    weights["classifier.6.bias"] = torch.full((), math.nan).expand(10)
    path = tmp_path / "nan.pt"
    save_checkpoint(_checkpoint(weights), path)
    image = tmp_path / "image.png"
    Image.new("L", (28, 28)).save(image)
    rc, out, err = _run(capsys, "predict", image, "--checkpoint", path)
    assert (
        rc == 1
        and out == ""
        and _one_line_error(err)
        == f"alexnet predict: error: --checkpoint {path}: weight classifier.6.bias holds NaN or infinite values"
    )


@pytest.mark.parametrize("field", ["optimizer", "scheduler", "rng", "totals", "rollbacks"])
def test_predict_reads_only_what_it_needs(trained, tmp_path, capsys, field):
    # the training fields are resume's: a checkpoint whose optimizer is damaged still predicts
    path = tmp_path / "ckpt.pt"
    save_checkpoint(changed(trained["mid"], _set(field, "damaged")), path)
    image = tmp_path / "image.png"
    Image.new("L", (28, 28)).save(image)
    rc, out, err = _run(capsys, "predict", image, "--checkpoint", path)
    assert rc == 0 and "%" in out, err


# --------------------------------------------------------------------------------------------
# Fuzzing the structure: checkpoints with keys deleted and values of other types


@pytest.fixture(scope="module")
def model_file(idx_folder):
    """A checkpoint of fake (zero) weights that predict and evaluate take as it is: a checkpoint
    of the IDX look-alike, whose class names are 0..9."""
    state = _checkpoint(
        _fake_weights("alexnet_tiny", num_classes=10, in_channels=1),
        model="alexnet_tiny",  # each example builds the network: the test-size one
        data=str(idx_folder.path),
        batch_size=32,
    )
    state["classes"] = [str(i) for i in range(10)]
    # only what a model file holds: the training fields are resume's, changing them here would waste examples
    return {k: state[k] for k in ("format", "model", "config", "classes", "preprocess", "epoch", "metrics")}


def _fuzzed(state: dict, data) -> dict:
    """``state`` changed by hypothesis, its format kept: a file without it is refused before any
    other field is read (test_corrupt_checkpoint_is_one_line_error), which would waste examples."""
    return {**changed(state, data.draw(changes(state, tensors=True))), "format": state["format"]}


@settings(FUZZ_CLI, max_examples=50)
@given(data=st.data(), command=st.sampled_from(["predict", "evaluate"]))
def test_fuzz_checkpoint_structure_for_predict_and_evaluate(model_file, fuzz_dir, capsys, data, command):
    path = fuzz_dir / "fuzzed.pt"
    save_checkpoint(_fuzzed(model_file, data), path)
    image = fuzz_dir / "image.png"
    Image.new("L", (28, 28), 90).save(image)
    argv = [image, "--checkpoint", path] if command == "predict" else ["--checkpoint", path, "--out", fuzz_dir / "eval"]
    rc, out, err = _run(capsys, command, *argv)
    _refused_in_one_line(rc, out, err, command, (str(path), "--data"))  # never the image


@settings(FUZZ_CLI, max_examples=30)
@given(data=st.data(), base=st.sampled_from(["last", "mid"]))
def test_fuzz_checkpoint_structure_for_resume(trained, fuzz_dir, capsys, data, base):
    folder = fuzz_dir / "run"
    rc, out, err = _resume(capsys, folder, trained, _fuzzed(trained[base], data))
    _refused_in_one_line(rc, out, err, "train", (str(folder), "--data", "--device"))
