"""rundir.py: what a run folder holds, how --resume finds one, and the metrics file's repair."""

from __future__ import annotations

import json
import os
import time

import pytest

from alexnet.config import TrainConfig
from alexnet.errors import CheckpointError, ConfigError
from alexnet.rundir import RunFolder


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
    for i, name in enumerate(["old", "newest", "middle"]):
        folder = RunFolder.create(TrainConfig(out=str(tmp_path), name=name), [])
        stamp = time.time() - 100 + {"old": 0, "middle": 10, "newest": 20}[name]
        os.utime(folder.config_file, (stamp, stamp))
    found, note = RunFolder.find(tmp_path)
    assert found.path == tmp_path / "newest"
    assert note == f"{tmp_path} holds 3 runs; resuming the newest, {tmp_path / 'newest'} (others: middle, old)"


def test_find_refuses_a_folder_without_runs(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint or settings here and no run folders inside"):
        RunFolder.find(tmp_path)


def test_trim_metrics_keeps_the_epochs_the_checkpoint_has(tmp_path):
    folder = RunFolder(tmp_path)
    for epoch in range(3):
        folder.append_metrics({"epoch": epoch})
    folder.trim_metrics(2)
    assert [json.loads(line)["epoch"] for line in folder.metrics_file.read_text().splitlines()] == [0, 1]


def test_bad_files_are_read_back(tmp_path):
    folder = RunFolder(tmp_path)
    assert folder.read_bad_files() == set()
    folder.write_json("bad_images.json", [{"path": "a.jpg", "reason": "truncated"}])
    assert folder.read_bad_files() == {"a.jpg"}
