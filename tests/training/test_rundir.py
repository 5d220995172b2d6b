"""rundir.py: what a run folder holds, how --resume finds one, and the metrics file's repair."""

from __future__ import annotations

import json
import os
import time

import pytest

from alexnet.config import TrainConfig
from alexnet.errors import CheckpointError, ConfigError, RunError
from alexnet.training.rundir import RunFolder


def test_create_writes_settings_and_command(tmp_path):
    cfg = TrainConfig(out=str(tmp_path), name="r", epochs=3)
    folder = RunFolder.create(cfg, ["alexnet", "train", "--epochs", "3"])
    assert folder.path == tmp_path / "r"
    assert TrainConfig.from_dict(json.loads(folder.config_file.read_text())) == cfg == folder.read_config()
    assert (folder.path / "command.txt").read_text() == "alexnet train --epochs 3\n"


def test_create_refuses_a_folder_that_holds_a_run(tmp_path):
    cfg = TrainConfig(out=str(tmp_path), name="r")
    folder = RunFolder.create(cfg, [])
    folder.last.parent.mkdir()
    folder.last.write_bytes(b"a checkpoint")
    folder.close()  # the first run ended
    with pytest.raises(ConfigError, match=f"{folder.path} already holds a run; continue it with --resume"):
        RunFolder.create(cfg, [])


def test_find_takes_a_run_folder_as_it_is(tmp_path):
    folder = RunFolder.create(TrainConfig(out=str(tmp_path), name="r"), [])
    assert RunFolder.find(folder.path)[0].path == folder.path and RunFolder.find(folder.path)[1] is None


def test_find_in_a_folder_of_runs_takes_the_newest_and_says_so(tmp_path):
    for name in ["old", "newest", "middle"]:
        folder = RunFolder.create(TrainConfig(out=str(tmp_path), name=name), [])
        stamp = time.time() - 100 + {"old": 0, "middle": 10, "newest": 20}[name]
        os.utime(folder.config_file, (stamp, stamp))
    found, note = RunFolder.find(tmp_path)
    assert found.path == tmp_path / "newest"
    assert note == f"{tmp_path} holds 3 runs; resuming the newest, {tmp_path / 'newest'} (others: middle, old)"


def test_find_refuses_a_folder_without_runs(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint or settings here and no run folders inside"):
        RunFolder.find(tmp_path)


def _epochs(folder: RunFolder) -> list[int]:
    return [json.loads(line)["epoch"] for line in folder.metrics_file.read_text().splitlines()]


def test_repair_keeps_the_epochs_the_checkpoint_has(tmp_path):
    folder = RunFolder(tmp_path)
    for epoch in range(3):
        folder.append_metrics({"epoch": epoch})
    assert folder.repair_metrics(2, {"epoch": 1}) is None  # nothing damaged: nothing to say
    assert _epochs(folder) == [0, 1]


@pytest.mark.parametrize(
    "damage",
    [b'{"epoch": 2, "val_to', b"\x00\x00\x00\x00", b"\xff\xfe garbage\n", b"[1, 2]\n", b'{"epoch": "2"}\n'],
    ids=["torn-line", "zeros", "not-utf8", "not-an-object", "epoch-not-a-number"],
)
def test_repair_drops_damaged_lines_and_restores_the_last_from_the_checkpoint(tmp_path, damage):
    folder = RunFolder(tmp_path)
    folder.append_metrics({"epoch": 0, "val_top1": 0.5})
    with folder.metrics_file.open("ab") as f:  # epoch 1's line torn by a crash, then garbage
        f.write(b'{"epoch": 1, "val_top1": 0.')
        f.write(b"\n" + damage)
    note = folder.repair_metrics(2, {"epoch": 1, "val_top1": 0.75})
    assert note is not None and str(folder.metrics_file) in note and "damaged line" in note and "\n" not in note
    rows = [json.loads(line) for line in folder.metrics_file.read_text().splitlines()]
    assert rows == [{"epoch": 0, "val_top1": 0.5}, {"epoch": 1, "val_top1": 0.75}]


@pytest.mark.parametrize("record", ["metrics.jsonl", "steps.jsonl"])
def test_repair_refuses_a_record_that_is_not_a_regular_file(tmp_path, record):
    """Before: a steps.jsonl linked to /dev/zero was skipped, and every later line went nowhere."""
    folder = RunFolder(tmp_path)
    (tmp_path / record).symlink_to("/dev/zero")
    with pytest.raises(RunError, match=f"{record}: not a regular file but a character device"):
        folder.repair_metrics(1, None) if record == "metrics.jsonl" else folder.repair_steps(1)


def test_repair_says_which_epochs_it_could_not_restore(tmp_path):
    folder = RunFolder(tmp_path)
    folder.metrics_file.write_bytes(b"\x89PNG not a metrics file at all")
    note = folder.repair_metrics(3, {"epoch": 2})
    assert "dropped 1 damaged line(s); epoch(s) 1, 2 have no line now" in note
    assert _epochs(folder) == [2]


def test_a_second_writer_is_refused_while_the_first_holds_the_folder(tmp_path):
    first = RunFolder.create(TrainConfig(out=str(tmp_path), name="r"), [])
    with pytest.raises(
        RunError, match=rf"{tmp_path / 'r'} is in use by alexnet process {os.getpid()} on .*pick another --name"
    ):
        RunFolder.create(TrainConfig(out=str(tmp_path), name="r"), [])
    with pytest.raises(RunError, match="is in use by"):
        RunFolder(tmp_path / "r").acquire()
    first.close()
    RunFolder(tmp_path / "r").acquire()  # free once the first lets go


def test_bad_files_are_read_back(tmp_path):
    folder = RunFolder(tmp_path)
    assert folder.read_bad_files() == set()
    folder.write_json("bad_images.json", [{"path": "a.jpg", "reason": "truncated"}])
    assert folder.read_bad_files() == {"a.jpg"}
