"""cli/: the ``alexnet`` command - its settings (defaults < --config file < flags), its sub-commands,
and what it does with bad input, in this process and as ``python -m alexnet``.

The error tests hold the CLI to its promise (cli/__init__.py's docstring): one line on stderr naming what was
wrong, no traceback, exit code 2 for usage errors (argparse, and settings rejected by
:class:`TrainConfig`) and 1 for the rest (missing data, checkpoints and images). Nothing here
trains: the cases that reach ``train()`` fail before the first step, and the tests that need a
successful ``train`` sub-command replace ``alexnet.training.loop.train`` with a recorder.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
import torch

from alexnet.cli import build_parser
from alexnet.cli.training import settings_from_flags, train_settings
from alexnet.config import DEFAULTS, ConfigError, TrainConfig

from conftest import write_idx_set
from helpers import VARIANTS, _image_bytes, _main, make_folder

# --------------------------------------------------------------------------------------------
# Precedence: defaults < --config file < flags


def _settings(*argv: str) -> TrainConfig:
    return train_settings(build_parser().parse_args(["train", *argv]))


def test_no_file_and_no_flags_give_the_defaults():
    assert _settings() == DEFAULTS


def test_file_overrides_defaults_and_flags_override_the_file(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(
        json.dumps({"epochs": 5, "lr": 0.1, "batch_size": 64, "channels_last": True, "model": "alexnet2012"})
    )
    from_file = _settings("--config", str(path))
    assert (from_file.epochs, from_file.lr, from_file.batch_size, from_file.model) == (5, 0.1, 64, "alexnet2012")
    assert from_file.momentum == DEFAULTS.momentum  # not in the file: the default

    both = _settings("--config", str(path), "--epochs", "7", "--no-channels-last", "--momentum", "0.5")
    assert (both.epochs, both.channels_last, both.momentum) == (7, False, 0.5)  # the flags
    assert (both.lr, both.batch_size, both.model) == (0.1, 64, "alexnet2012")  # the file
    assert both.weight_decay == DEFAULTS.weight_decay  # the default


def test_file_errors_name_the_file_and_key(tmp_path):
    path = tmp_path / "typo.json"
    path.write_text(json.dumps({"epoch": 5}))
    with pytest.raises(ConfigError, match="typo.json.*epoch"):
        _settings("--config", str(path))
    path.write_text(json.dumps({"lr": "0.1"}))
    with pytest.raises(ConfigError, match="typo.json.*lr"):
        _settings("--config", str(path))


# A value different from the default for every field: each must have a flag that reaches TrainConfig.
FLAG_VALUES = {
    "model": ("alexnet_owt", "alexnet_owt"),
    "activation": ("tanh", "tanh"),
    "lrn": (None, True),
    "lrn_k": ("1", 1.0),
    "pooling": ("plain", "plain"),
    "dropout": ("0.25", 0.25),
    "init": ("paper", "paper"),
    "data": ("/some/where", "/some/where"),
    "image_size": ("131", 131),
    "val_fraction": ("0.2", 0.2),
    "workers": ("0", 0),
    "epochs": ("9", 9),
    "time_budget": ("15m", "15m"),
    "batch_size": ("32", 32),
    "lr": ("0.5", 0.5),
    "momentum": ("0.8", 0.8),
    "weight_decay": ("0.001", 0.001),
    "schedule": ("cosine", "cosine"),
    "warmup": ("0.3", 0.3),
    "label_smoothing": ("0.2", 0.2),
    "seed": ("42", 42),
    "device": ("cpu", "cpu"),
    "precision": ("fp32", "fp32"),
    "channels_last": (None, False),
    "out": ("elsewhere", "elsewhere"),
    "name": ("r1", "r1"),
    "checkpoint_every": ("10m", "10m"),
    "on_nan": ("rollback", "rollback"),
    "skip_bad_images": (None, True),
    "model_parallel": ("cpu,cpu", "cpu,cpu"),
    "decode": ("cpu", "cpu"),
    "recipe": ("paper", "paper"),
    "optimizer": ("paper", "paper"),
    "lighting": (None, True),
    "augment": (None, True),
    "nesterov": (None, False),
    "eval_every": ("3", 3),
    "save_every": ("2", 2),
    "subset": ("500", 500),
    "subset_per_class": ("10", 10),
    "classes": ("5,Bag", "5,Bag"),
    "step_log": ("5", 5),
    "init_from": ("/some/model.pt", "/some/model.pt"),
    "init_sha256": ("ab" * 32, "ab" * 32),
    "copy_up_to": ("conv3", "conv3"),
    "freeze": ("conv2", "conv2"),
    "freeze_epochs": ("2", 2),
    "transfer_lr_mult": ("0.1", 0.1),
}
# Flags a setting only takes together with another (TrainConfig refuses it alone).
FROM = ["--init-from", "/some/model.pt"]  # not there: the run, not the settings, reads the file
FLAG_NEEDS = {
    "model_parallel": ["--model", "alexnet2012"],
    **{k: FROM for k in ("init_sha256", "copy_up_to", "freeze", "freeze_epochs", "transfer_lr_mult")},
}


def test_every_setting_has_a_flag():
    assert set(FLAG_VALUES) == {f.name for f in dataclasses.fields(TrainConfig)}
    for key, (text, value) in FLAG_VALUES.items():
        flag = "--" + key.replace("_", "-")
        if text is None:  # booleans: --flag / --no-flag
            flag = flag if value else "--no-" + key.replace("_", "-")
            cfg = _settings(flag)
        else:
            cfg = _settings(flag, text, *FLAG_NEEDS.get(key, []))
        assert getattr(cfg, key) == value != getattr(DEFAULTS, key), key


def test_skip_bad_images_flag_comes_from_the_config_field():
    parser = build_parser()
    assert parser.parse_args(["train", "--skip-bad-images"]).skip_bad_images is True
    assert not hasattr(parser.parse_args(["train"]), "skip_bad_images")  # absent: the file or default decides
    assert TrainConfig().skip_bad_images is False


@pytest.mark.parametrize(
    "flags",
    [[], ["--recipe", "paper", "--lr", "0.05"], ["--no-augment", "--batch-size", "7"], ["--batch-size", "x"], ["--x"]],
)
def test_bench_reads_train_flags_as_alexnet_train_does(capsys, flags):
    """bench --only accuracy's --train parses with its own parser: the same settings, the same refusals."""

    def outcome(read):
        try:
            return read(), capsys.readouterr()
        except SystemExit as e:
            return e.code, capsys.readouterr()

    assert outcome(lambda: settings_from_flags(flags)) == outcome(lambda: _settings(*flags))


# --------------------------------------------------------------------------------------------
# The command line: successful commands


def test_models_lists_the_three_variants(capsys):
    code, out, err = _main(capsys, "models")
    assert code == 0 and err == ""
    assert sorted(line.split()[0] for line in out.splitlines()) == sorted(VARIANTS)


def test_summary_json_has_totals(capsys):
    code, out, err = _main(capsys, "summary", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["model"] == "alexnet" and "rows" in result
    assert {"params", "macs"} <= set(result["totals"])
    assert result["totals"]["params"] == 62_378_344  # the source document's count at 3 x 227 x 227


def test_train_gets_the_resolved_settings_and_its_command_line(capsys, monkeypatch, tmp_path):
    import alexnet.training.loop

    seen = {}

    def fake_train(cfg, *, argv=None, resume=None, quiet=False):
        seen.update(cfg=cfg, argv=argv, resume=resume)
        return {"val_top1": 0.5, "val_top5": 0.75, "run_dir": str(tmp_path / "r")}

    monkeypatch.setattr(alexnet.training.loop, "train", fake_train)
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"epochs": 5, "lr": 0.1}))
    code, out, err = _main(capsys, "train", "--config", str(config), "--epochs", "2", "--out", str(tmp_path))
    assert code == 0 and err == ""
    assert "50.00%" in out and "75.00%" in out and str(tmp_path / "r") in out
    assert seen["cfg"] == TrainConfig(epochs=2, lr=0.1, out=str(tmp_path)) and seen["resume"] is None


def test_train_records_the_command_line_it_was_given(capsys, monkeypatch, tmp_path):
    import alexnet.training.loop

    seen = {}
    monkeypatch.setattr(
        alexnet.training.loop,
        "train",
        lambda cfg, **kw: seen.update(kw) or {"val_top1": 0, "val_top5": 0, "run_dir": ""},
    )
    monkeypatch.setattr(sys, "argv", ["python", "-m", "pytest", "-q"])
    argv = ["train", "--epochs", "2", "--out", str(tmp_path)]
    assert _main(capsys, *argv)[0] == 0
    assert seen["argv"] == ["alexnet", *argv]


# --------------------------------------------------------------------------------------------
# The command line: bad input


ARGPARSE_ERRORS = [
    [],
    ["nope"],
    ["train", "--nope"],
    ["train", "--epochs", "three"],
    ["summary", "--model", "nope"],
    ["summary", "--image-size", "0"],
    ["predict"],
    ["evaluate"],
    ["bench", "--warmup", "-5"],  # before: accepted
    ["bench", "--only", "step", "--quick", "--batch-size", str(10**17)],  # before: "Storage size ... overflowed"
    ["visualize", "predictions", "--checkpoint", "x.pt", "--seed", str(2**70)],  # before: "Overflow when unpacking"
]


@pytest.mark.parametrize("argv", ARGPARSE_ERRORS, ids=lambda a: " ".join(a) or "nothing")
def test_usage_errors_from_argparse_exit_2(capsys, argv):
    code, out, err = _main(capsys, *argv)
    assert code == 2 and out == ""
    assert "error:" in err.splitlines()[-1] and "Traceback" not in err


# (id, argv with {tmp} and {idx} to fill in, exit code, what stderr must name)
BAD_INPUT = [
    ("epochs-0", ["train", "--epochs", "0", "--out", "{tmp}/runs"], 2, "--epochs"),
    ("lr-negative", ["train", "--lr", "-1", "--out", "{tmp}/runs"], 2, "--lr"),
    ("batch-size-0", ["train", "--batch-size", "0", "--out", "{tmp}/runs"], 2, "--batch-size"),
    ("model-nope", ["train", "--model", "nope", "--out", "{tmp}/runs"], 2, "nope"),
    ("image-size-50", ["train", "--image-size", "50", "--data", "{idx}", "--out", "{tmp}/runs"], 2, "67"),
    ("config-missing", ["train", "--config", "{tmp}/missing.json", "--out", "{tmp}/runs"], 2, "missing.json"),
    ("config-not-json", ["train", "--config", "{tmp}/bad.json", "--out", "{tmp}/runs"], 2, "bad.json"),
    ("config-unknown-key", ["train", "--config", "{tmp}/typo.json", "--out", "{tmp}/runs"], 2, "epoch"),
    ("resume-with-flags", ["train", "--resume", "{tmp}/empty", "--lr", "0.1"], 2, "--lr"),
    ("data-missing", ["train", "--data", "/does/not/exist", "--out", "{tmp}/runs"], 1, "/does/not/exist"),
    ("data-no-images", ["train", "--data", "{tmp}/empty", "--out", "{tmp}/runs"], 1, "{tmp}/empty"),
    ("resume-empty", ["train", "--resume", "{tmp}/empty"], 1, "{tmp}/empty"),
    ("predict-no-model", ["predict", "{tmp}/img.png"], 2, "--checkpoint"),
    (
        "predict-two-models",
        ["predict", "{tmp}/img.png", "--checkpoint", "a.pt", "--weights", "b.pth"],
        2,
        "--checkpoint",
    ),
    ("predict-missing-checkpoint", ["predict", "{tmp}/missing.png", "--checkpoint", "{tmp}/x.pt"], 1, "x.pt"),
    ("predict-corrupt-checkpoint", ["predict", "{tmp}/img.png", "--checkpoint", "{tmp}/junk.pt"], 1, "junk.pt"),
    ("predict-corrupt-weights", ["predict", "{tmp}/img.png", "--weights", "{tmp}/junk.pt"], 1, "junk.pt"),
    ("evaluate-missing-checkpoint", ["evaluate", "--checkpoint", "{tmp}/x.pt"], 1, "x.pt"),
    ("summary-too-small", ["summary", "--image-size", "50"], 2, "67"),
    ("lr-nan", ["train", "--lr", "nan", "--out", "{tmp}/runs"], 2, "--lr"),
    ("dropout-1", ["train", "--dropout", "1", "--out", "{tmp}/runs"], 2, "--dropout"),
    ("checkpoint-every-bad", ["train", "--checkpoint-every", "soon", "--out", "{tmp}/runs"], 2, "--checkpoint-every"),
    ("on-nan-bad", ["train", "--on-nan", "ignore", "--out", "{tmp}/runs"], 2, "--on-nan"),
    ("existing-run", ["train", "--data", "{idx}", "--out", "{tmp}/runs", "--name", "done"], 2, "--resume"),
    ("out-unwritable", ["train", "--data", "{idx}", "--out", "{tmp}/img.png/runs"], 2, "--out"),
    # the ends of the settings' ranges
    ("image-size-5000", ["train", "--image-size", "5000", "--out", "{tmp}/runs"], 2, "maximum 4096"),
    (
        "batch-size-huge",
        ["train", "--batch-size", "100000", "--out", "{tmp}/runs"],
        2,
        "--batch-size 100000 is above the maximum 65536",
    ),
    ("workers-1000", ["train", "--workers", "1000", "--out", "{tmp}/runs"], 2, "--workers"),
    ("seed-negative", ["train", "--seed", "-1", "--out", "{tmp}/runs"], 2, "--seed"),
    ("seed-2**64", ["train", "--seed", str(2**64), "--out", "{tmp}/runs"], 2, "--seed"),
    ("warmup-1", ["train", "--warmup", "1", "--out", "{tmp}/runs"], 2, "--warmup"),
    ("label-smoothing-1", ["train", "--label-smoothing", "1", "--out", "{tmp}/runs"], 2, "--label-smoothing"),
    # data that lies (tests/data/test_idx.py and test_data_build.py have every case)
    ("data-half-split", ["train", "--data", "{tmp}/half", "--out", "{tmp}/runs"], 1, "has train/ but no val/"),
    ("data-label-gap", ["train", "--data", "{tmp}/lies", "--out", "{tmp}/runs"], 1, "train-labels-idx1-ubyte"),
    (
        "val-fraction-all",
        ["train", "--data", "{tmp}/few", "--val-fraction", "0.9", "--out", "{tmp}/runs"],
        1,
        "--val-fraction 0.9 of 4 images",
    ),
    # issue 22: every --device through one parser, refused before anything runs or is written
    ("device-meta", ["train", "--device", "meta", "--out", "{tmp}/runs"], 2, "--device 'meta'"),
    ("device-xpu", ["evaluate", "--checkpoint", "{tmp}/x.pt", "--device", "xpu"], 2, "--device 'xpu'"),
    ("device-cpu:1", ["report", "{tmp}/empty", "--device", "cpu:1"], 2, "--device 'cpu:1'"),
    ("serve-device-meta", ["serve", "--checkpoint", "{tmp}/x.pt", "--device", "meta", "--port", "0"], 2, "meta"),
    # issue 22: lines that misled
    ("name-newline", ["train", "--name", "a\nb", "--out", "{tmp}/runs"], 2, "control characters"),
    ("name-too-long", ["train", "--name", "n" * 300, "--out", "{tmp}/runs"], 2, "--name is 300 bytes"),
    ("config-nested", ["train", "--config", "{tmp}/deep.json", "--out", "{tmp}/runs"], 2, "deep.json: JSON nested"),
    ("config-dev-zero", ["train", "--config", "/dev/zero", "--out", "{tmp}/runs"], 2, "a character device"),
    ("checkpoint-folder", ["predict", "{tmp}/img.png", "--checkpoint", "{tmp}/empty"], 1, "but a folder"),
    ("checkpoint-dev-zero", ["evaluate", "--checkpoint", "/dev/zero"], 1, "/dev/zero: not a regular file"),
    ("checkpoint-every-0.0m", ["train", "--checkpoint-every", "0.0m", "--out", "{tmp}/runs"], 2, "above 0"),
    ("time-budget-huge", ["train", "--time-budget", "1" * 400 + "s", "--out", "{tmp}/runs"], 2, "--time-budget"),
    ("shard-size-huge", ["prepare", "{tmp}/few", "{tmp}/shards", "--shard-size", "9" * 400 + "GB"], 2, "--shard-size"),
    ("bench-json-nowhere", ["bench", "--quick", "--json", "{tmp}/img.png/bench.json"], 2, "--json"),
    (
        "name-not-a-run",
        ["train", "--data", "{idx}", "--out", "{tmp}", "--name", "few", "--epochs", "1", "--subset", "32"],
        2,
        "not a run folder",
    ),
    ("name-of-a-dead-run", ["train", "--data", "{idx}", "--out", "{tmp}/runs", "--name", "dead"], 2, "--resume"),
]


@pytest.fixture
def bad_input_files(tmp_path, idx_folder):
    """The files the BAD_INPUT cases point at; missing.json, x.pt and missing.png stay missing."""
    make_folder(tmp_path / "half" / "train", bad=False)  # and no val/
    write_idx_set(
        tmp_path / "lies",
        idx_folder,
        train_labels=torch.where(idx_folder.train_labels == 9, 200, idx_folder.train_labels),
    )
    for name in ("few/a/0.png", "few/a/1.png", "few/b/0.png", "few/b/1.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(_image_bytes("PNG"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.json").write_text("{")
    (tmp_path / "typo.json").write_text(json.dumps({"epoch": 3}))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "img.png").write_bytes(b"not really a png")
    (tmp_path / "runs" / "done" / "checkpoints").mkdir(parents=True)
    (tmp_path / "runs" / "done" / "checkpoints" / "last.pt").write_bytes(b"a run that finished")
    (tmp_path / "runs" / "dead").mkdir()  # killed before its first checkpoint: settings and a step line
    (tmp_path / "runs" / "dead" / "config.json").write_text(json.dumps(TrainConfig().to_dict()))
    (tmp_path / "runs" / "dead" / "steps.jsonl").write_text('{"step": 20, "epoch": 0, "train_loss": 2.3}\n')
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    return tmp_path


def _fill(argv, tmp, idx):
    return [a.format(tmp=tmp, idx=idx) for a in argv]


@pytest.mark.parametrize("argv, code, names", [c[1:] for c in BAD_INPUT], ids=[c[0] for c in BAD_INPUT])
def test_bad_input_gives_one_line_and_the_right_exit_code(capsys, bad_input_files, idx_folder, argv, code, names):
    argv = _fill(argv, bad_input_files, idx_folder.path)
    got, out, err = _main(capsys, *argv)
    assert (got, len(err.splitlines())) == (code, 1), err
    assert err.startswith(f"alexnet {argv[0]}: error: ") and "Traceback" not in err
    assert names.format(tmp=bad_input_files) in err


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["train", "--epochs", "0"], id="epochs-0"),
        pytest.param(["train", "--image-size", "50", "--data", "{idx}"], id="image-size-50"),
        pytest.param(["train", "--data", "/does/not/exist"], id="data-missing"),
        pytest.param(["train", "--image-size", "5000", "--data", "{idx}"], id="image-size-5000"),
        pytest.param(["train", "--batch-size", "100000", "--data", "{idx}"], id="batch-size-huge"),
        pytest.param(["train", "--seed", str(2**64), "--data", "{idx}"], id="seed-2**64"),
        pytest.param(["train", "--warmup", "1", "--data", "{idx}"], id="warmup-1"),
        pytest.param(["train", "--label-smoothing", "1.5", "--data", "{idx}"], id="label-smoothing-1.5"),
        pytest.param(["train", "--data", "{tmp}/half"], id="data-half-split"),
        pytest.param(["train", "--device", "meta", "--data", "{idx}"], id="device-meta"),
        pytest.param(["train", "--device", "xpu", "--data", "{idx}"], id="device-xpu"),
        pytest.param(["train", "--data", "{tmp}/lies"], id="data-label-gap"),
        pytest.param(
            ["train", "--data", "{tmp}/few", "--val-fraction", "0.9", "--workers", "0"], id="val-fraction-all"
        ),
    ],
)
def test_rejected_runs_leave_no_run_folder(capsys, bad_input_files, idx_folder, argv):
    runs = bad_input_files / "new-runs"
    code, _, err = _main(capsys, *_fill(argv, bad_input_files, idx_folder.path), "--out", str(runs), "--name", "r")
    assert code != 0 and "Traceback" not in err
    assert not (runs / "r").exists()


# --------------------------------------------------------------------------------------------
# python -m alexnet, in a fresh interpreter (about 2 s each: torch's import)


def _run_module(*argv: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "alexnet", *argv], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def test_python_m_alexnet_models(tmp_path):
    p = _run_module("models", cwd=tmp_path)
    assert p.returncode == 0 and p.stderr == ""
    assert [line.split()[0] for line in p.stdout.splitlines()] == list(VARIANTS)


@pytest.mark.parametrize(
    "argv, code, names",
    [
        (["nope"], 2, "nope"),
        (["train", "--data", "/does/not/exist", "--out", "{tmp}"], 1, "/does/not/exist"),
        (["predict", "img.png"], 2, "--checkpoint"),
    ],
    ids=["unknown-command", "data-missing", "predict-no-model"],
)
def test_python_m_alexnet_errors(tmp_path, argv, code, names):
    p = _run_module(*[a.format(tmp=tmp_path) for a in argv], cwd=tmp_path)
    assert p.returncode == code and "Traceback" not in p.stderr
    assert names in p.stderr.splitlines()[-1]
    if code == 1 or argv[0] == "predict":  # our own errors (argparse prints its usage line first)
        assert len(p.stderr.splitlines()) == 1, p.stderr
