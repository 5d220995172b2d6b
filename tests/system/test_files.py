"""formats/files.py: untrusted PyTorch files are read without running code from them - a checkpoint
crafted to run code when unpickled is refused in one line, by ``load_checkpoint`` and by every
command that reads a model file, and runs nothing."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest
import torch
from PIL import Image

from alexnet.formats import FORMAT, CheckpointError, load_checkpoint

from helpers import _one_line_error, _run


class _Touch:
    """Unpickles as ``pathlib.Path.touch(marker)``: the harmless stand-in for any code at all."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def _evil(path: pathlib.Path, marker: pathlib.Path) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": FORMAT, "model": {"features.0.weight": torch.zeros(1)}, "config": _Touch(marker)}, path)
    return path


def test_the_crafted_file_really_runs_code_when_loaded_unsafely(tmp_path):
    """Proves the payload is live, so the refusals below mean something."""
    marker = tmp_path / "ran"
    torch.load(_evil(tmp_path / "evil.pt", marker), weights_only=False)
    assert marker.exists()


def test_load_checkpoint_refuses_code_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    with pytest.raises(CheckpointError, match="refused") as e:
        load_checkpoint(_evil(tmp_path / "evil.pt", marker))
    assert "\n" not in str(e.value) and "weights_only=False" not in str(e.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    "how", ["predict --checkpoint", "evaluate --checkpoint", "predict --weights", "train --resume"]
)
def test_cli_refuses_code_and_runs_nothing(how, tmp_path, capsys):
    marker = tmp_path / "ran"
    image = tmp_path / "image.png"
    Image.new("L", (28, 28)).save(image)
    argv = {
        "predict --checkpoint": ["predict", image, "--checkpoint", _evil(tmp_path / "evil.pt", marker)],
        "evaluate --checkpoint": ["evaluate", "--checkpoint", _evil(tmp_path / "evil.pt", marker)],
        "predict --weights": ["predict", image, "--weights", _evil(tmp_path / "evil.pth", marker)],
        "train --resume": ["train", "--resume", _evil(tmp_path / "run/checkpoints/last.pt", marker).parent.parent],
    }[how]
    rc, _, err = _run(capsys, *argv)
    assert rc == 1
    assert "refused" in _one_line_error(err)
    assert not marker.exists()


# --------------------------------------------------------------------------------------------
# Small files made by others: one reader (a regular file inside its folder, at most N bytes) and
# one JSON reader (every decode failure, RecursionError included, one line naming the file)


def test_the_reader_takes_only_a_regular_file_inside_its_folder_of_at_most_n_bytes(tmp_path):
    from alexnet.errors import DataError
    from alexnet.system.files import read_bytes

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "ok.json").write_text("{}")
    (tmp_path / "secret.txt").write_text("the host's own file")
    (folder / "out.json").symlink_to(tmp_path / "secret.txt")
    (folder / "zero.json").symlink_to("/dev/zero")
    (folder / "loop.json").symlink_to(folder / "loop.json")
    os.mkfifo(folder / "pipe.json")
    (folder / "big.json").write_bytes(b" " * 101)
    assert read_bytes(folder / "ok.json", limit=100, inside=folder) == b"{}"
    for name, words in [
        ("out.json", "outside"),
        ("zero.json", "outside"),
        ("loop.json", "loop"),
        ("pipe.json", "not a regular file but a named pipe"),
        ("big.json", "101 bytes, more than the 100"),
        ("missing.json", "no such file"),
    ]:
        with pytest.raises(DataError, match=words) as e:
            read_bytes(folder / name, limit=100, inside=folder)
        assert str(e.value).startswith(str(folder / name)) and "\n" not in str(e.value)
    with pytest.raises(DataError, match="not a regular file but a character device"):
        read_bytes("/dev/zero", limit=100)


@pytest.mark.parametrize(
    "text, words",
    [
        ("[" * 100_000 + "]" * 100_000, "nested more than"),
        ('{"a": ' * 101 + "1" + "}" * 101, "nested more than"),
        (b"\xff\xfe{}", "not readable JSON"),
        ("{'a': 1}", "not readable JSON"),
        ("", "not readable JSON"),
    ],
    ids=["deep-list", "deep-object", "not-utf8", "python-not-json", "empty"],
)
def test_the_json_reader_maps_every_decode_failure_to_one_line_naming_the_file(tmp_path, text, words):
    from alexnet.errors import DataError
    from alexnet.system.files import read_json

    path = tmp_path / "x.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(DataError, match=words) as e:
        read_json(path)
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)


def test_the_printed_message_escapes_what_a_terminal_acts_on(tmp_path, capsys):
    """A file name with an escape sequence or a newline reaches the terminal as text, on one line."""
    name = tmp_path / "bad\x1b[2J\nname.pt"
    name.write_bytes(b"not a checkpoint")
    rc, _, err = _run(capsys, "predict", tmp_path / "x.png", "--checkpoint", name)
    assert rc == 1
    line = _one_line_error(err)
    assert "\x1b" not in line and "bad\\x1b[2J\\nname.pt" in line


FULL_DISK = "a real full file system: a small tmpfs mounted as root"


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 2 MB tmpfs (``mount -t tmpfs``), so a write fails as a full disk really fails."""
    folder = tmp_path / "small"
    folder.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip(f"needs {FULL_DISK}")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"needs {FULL_DISK} ({done.stderr.decode().strip()})")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_disk_while_saving_keeps_the_previous_checkpoint_in_one_line(small_tmpfs):
    """torch's zip writer reports a full disk as RuntimeError("unexpected pos"); the promise is a
    RunError of one line naming the folder, the previous checkpoint intact, no temporary file."""
    from alexnet.errors import RunError
    from alexnet.training.rundir import RunFolder

    run = RunFolder(small_tmpfs / "run")
    before = {"model": torch.arange(1000.0)}
    run.save(before)
    with pytest.raises(RunError) as e:
        run.save({"model": torch.ones(1_000_000)})  # 4 MB into 2 MB
    message = str(e.value)
    assert "\n" not in message and str(run.last.parent) in message and "No space left" in message
    assert torch.equal(torch.load(run.last, weights_only=True)["model"], before["model"])
    assert sorted(p.name for p in run.last.parent.iterdir()) == ["last.pt"]


def test_a_full_disk_when_a_run_starts_names_the_folder_and_leaves_nothing(small_tmpfs):
    from alexnet.config import TrainConfig
    from alexnet.errors import RunError
    from alexnet.training.rundir import RunFolder

    (small_tmpfs / "filler").write_bytes(b"\0" * ((2 << 20) - 512))  # leaves less than a page
    with pytest.raises(RunError, match=r"cannot write the run folder .*run") as e:
        RunFolder.create(TrainConfig(out=str(small_tmpfs), name="run"), ["alexnet", "train", "--name", "run"])
    assert "\n" not in str(e.value)
    assert sorted(p.name for p in small_tmpfs.iterdir()) == ["filler"]


def test_torchs_own_warnings_about_a_strangers_file_stay_out_of_the_one_line(tmp_path):
    """Before: a checkpoint holding a quantized tensor printed torch's deprecation warnings (four
    lines) before the one-line refusal. In a fresh process: pytest would catch the warnings itself."""
    import sys

    from helpers import _checkpoint, _fake_weights

    weights = _fake_weights("alexnet", num_classes=10, in_channels=1)
    weights["features.0.bias"] = torch.quantize_per_tensor(torch.zeros(96), 0.1, 0, torch.qint8)
    torch.save(_checkpoint(weights), tmp_path / "q.pt")
    Image.new("L", (28, 28)).save(tmp_path / "image.png")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "alexnet",
            "predict",
            str(tmp_path / "image.png"),
            "--checkpoint",
            str(tmp_path / "q.pt"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "quantized" in _one_line_error(done.stderr)
