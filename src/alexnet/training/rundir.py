"""The run folder (``<out>/<name>/``): every file a training run writes, written here and only here.

=========================== =====================================================================
``config.json``             the resolved settings (the run can be repeated from it)
``command.txt``             the command line that started it
``env.json``                versions, device, precision, git commit (:func:`alexnet.system.runtime.environment`)
``metrics.jsonl``           one JSON line per epoch; the curves are drawn from it
``steps.jsonl``             every ``--step-log`` steps: the training loss and error of those steps
``checkpoints/last.pt``     the latest checkpoint; ``best.pt`` the one of the best validation top-1
``curves.png``, ``tb/``     learning curves, TensorBoard event files
``split.json``              the hold-out split of a plain image folder
``bad_images.json``         the files ``--skip-bad-images`` left out
=========================== =====================================================================

``.lock`` holds the one-writer lock: while a process trains in the folder, a second one (a new run
with the same ``--name``, or a ``--resume`` of a running run) is refused in one line. The kernel
drops the lock of a process that dies, so a killed run never blocks its own resume. When training
runs in several processes, only the writer process holds a RunFolder.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import shutil
import socket
import sys
from datetime import datetime
from pathlib import Path

from alexnet.config import MAX_CONFIG_BYTES, TrainConfig
from alexnet.errors import CheckpointError, ConfigError, DataError, RunError
from alexnet.formats import atomic_write, link_file, save_checkpoint
from alexnet.formats.checkpoint import METRICS
from alexnet.ranges import is_number
from alexnet.system.files import parse_json, read_bytes, read_json

# metrics.jsonl and steps.jsonl grow by a line per epoch and per --step-log steps: a few MB in the
# longest runs; a file beyond this is not one a run wrote.
MAX_RECORD_BYTES = 256 << 20


class RunFolder:
    """One run's folder. :meth:`create` starts a new one, :meth:`find` opens one to resume."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._tensorboard = None
        self._lock: int | None = None  # the open .lock file while this process holds it

    def __str__(self) -> str:
        return str(self.path)

    # -- where things are --
    @property
    def config_file(self) -> Path:
        return self.path / "config.json"

    @property
    def last(self) -> Path:
        return self.path / "checkpoints" / "last.pt"

    @property
    def best(self) -> Path:
        return self.path / "checkpoints" / "best.pt"

    def delete_checkpoints(self) -> None:
        """Remove last.pt and best.pt (a measured experiment run's: its record is metrics.jsonl)."""
        for path in (self.last, self.best):
            path.unlink(missing_ok=True)

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    @classmethod
    def of_checkpoint(cls, checkpoint: str | Path) -> RunFolder:
        """The run folder a model file belongs to: ``RUN/checkpoints/x.pt`` -> ``RUN``; any other
        file -> its own folder (an export kept beside its run's files)."""
        checkpoint = Path(checkpoint)
        return cls(checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent)

    @property
    def steps_file(self) -> Path:
        return self.path / "steps.jsonl"

    # -- starting and finding runs --
    @classmethod
    def create(cls, cfg: TrainConfig, argv: list[str] | None) -> RunFolder:
        """A new run folder under ``cfg.out`` holding the settings and the command line. An existing
        folder is taken only when it is empty: one that holds a run is for ``--resume``, and any other
        is not ours to write into. A refusal or a failed write leaves the disk as it was."""
        name = cfg.name or f"{cfg.model}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
        folder = cls(Path(cfg.out) / name)
        made = not os.path.lexists(folder.path)
        try:
            folder.path.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise ConfigError(f"--name {name}: {folder} exists and is not a folder; pick another --name") from None
        except OSError as e:
            raise ConfigError(
                f"--out {cfg.out}: cannot make the run folder {name} there ({e.strerror or e}); pick a writable --out"
            ) from None
        lock_existed = (folder.path / ".lock").exists()
        try:
            folder.acquire()
            folder._check_unused(name)
            folder.write_config(cfg)
            folder._write_text("command.txt", shlex.join(argv if argv is not None else sys.argv) + "\n")
        except BaseException as e:
            held = isinstance(e, RunError) and folder._lock is None  # another process's folder: not ours to tidy
            folder.close()
            if made and not held:
                shutil.rmtree(folder.path, ignore_errors=True)
            elif not held and not lock_existed:
                (folder.path / ".lock").unlink(missing_ok=True)
            if isinstance(e, OSError):
                raise RunError(
                    f"cannot write the run folder {folder} ({e.strerror or e}); nothing was left there - free space "
                    "or pick another --out"
                ) from None
            raise
        return folder

    def _check_unused(self, name: str) -> None:
        """Refuse a folder that already holds a run (for ``--resume``) or files of something else."""
        if self.last.exists() or self.best.exists():
            raise ConfigError(f"{self} already holds a run; continue it with --resume {self} or pick another --name")
        if self.config_file.exists():
            raise ConfigError(
                f"{self} holds a run that stopped before its first checkpoint; continue it with --resume {self} "
                "(it starts again from step 0) or pick another --name"
            )
        others = sorted(p.name for p in self.path.iterdir() if p.name != ".lock")
        if others:
            shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
            raise ConfigError(
                f"--name {name}: {self} exists and is not a run folder (it holds {shown}); pick another --name or "
                "an empty folder"
            )

    @classmethod
    def find(cls, path: str | Path) -> tuple[RunFolder, str | None]:
        """The run folder ``path`` names for ``--resume``, and a note to print when it was chosen
        for the user: ``path`` may also be a folder of run folders (``--out``), whose newest run
        (by its latest file) is taken."""
        folder = cls(path)
        if folder.config_file.is_file() or folder.last.is_file():
            return folder, None
        runs = sorted((cls(p.parent) for p in Path(path).glob("*/config.json")), key=lambda f: f.last_activity())
        if not runs:
            raise CheckpointError(
                f"--resume {path}: no checkpoint or settings here and no run folders inside; start a new run instead"
            )
        newest = runs[-1]
        others = ", ".join(r.path.name for r in runs[-4:-1][::-1]) + (", ..." if len(runs) > 4 else "")
        note = f"{path} holds {len(runs)} runs; resuming the newest, {newest}" + (
            f" (others: {others})" if others else ""
        )
        return newest, note

    @classmethod
    def find_launch(cls, cfg: TrainConfig, argv: list[str] | None, run_id: str | None) -> str | None:
        """The run folder an earlier attempt of this torchrun launch made, for a restarted group
        (``torchrun --max-restarts``): the newest folder under ``--out`` (``--name``'s, when given)
        whose ``env.json`` has this launch's rendezvous id and whose command is this one. None when
        the attempt failed before making one, or when the id does not tell launches apart
        (torchrun's default ``none``): then the restart starts a new run."""
        if run_id in (None, "", "none"):
            return None
        out = Path(cfg.out)
        command = shlex.join(argv if argv is not None else sys.argv) + "\n"
        found = []
        for env in out.glob(f"{cfg.name or '*'}/env.json"):
            folder = cls(env.parent)
            try:
                record = read_json(env, error=DataError)
                if (
                    isinstance(record, dict)
                    and record.get("torchrun_id") == run_id
                    and read_bytes(folder.path / "command.txt", limit=MAX_RECORD_BYTES) == command.encode()
                ):
                    found.append(folder)
            except DataError:
                continue
        return str(max(found, key=lambda f: f.last_activity())) if found else None

    def acquire(self) -> None:
        """Take the folder's one-writer lock, or refuse in one line naming the process that has it."""
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunError(
                f"{self} is in use by {holder}; wait for that run to end (or stop it), or pick another --name"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(
            fd,
            (
                f"alexnet process {os.getpid()} on {socket.gethostname()} since {datetime.now():%Y-%m-%d %H:%M:%S}\n"
            ).encode(),
            0,
        )
        self._lock = fd

    def last_activity(self) -> float:
        """When the run last wrote its checkpoint or settings (seconds since the epoch)."""
        return max(p.stat().st_mtime for p in (self.last, self.config_file) if p.exists())

    # -- settings and records --
    def _write_text(self, name: str, text: str) -> None:
        atomic_write(self.path / name, lambda tmp: tmp.write_text(text))

    def write_config(self, cfg: TrainConfig) -> None:
        self._write_text("config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")

    def read_config(self) -> TrainConfig:
        values = read_json(self.config_file, limit=MAX_CONFIG_BYTES, error=CheckpointError)
        if not isinstance(values, dict):
            raise CheckpointError(f"{self.config_file}: expected a JSON object of settings")
        return TrainConfig.from_dict(values, source=str(self.config_file))

    def check_never_checkpointed(self) -> None:
        """Refuse to start this run again from step 0 unless it never wrote a checkpoint: a
        ``best.pt``, a ``last.pt`` that is not a file (a dangling link, a folder) or two epochs in
        ``metrics.jsonl`` (a line is written just before its epoch's checkpoint, so one alone may be
        a run killed in between) say it got further, and starting again would overwrite that work."""
        signs = []
        if os.path.lexists(self.last):
            signs.append(
                f"{self.last.name} is {'a link to a missing file' if self.last.is_symlink() else 'not a file'}"
            )
        if os.path.lexists(self.best):
            signs.append(f"{self.best.name} is there")
        if os.path.lexists(self.metrics_file) and self.metrics_file.is_file():
            lines = sum(
                1 for line in read_bytes(self.metrics_file, limit=MAX_RECORD_BYTES).splitlines() if line.strip()
            )
            if lines > 1:
                signs.append(f"{self.metrics_file.name} records {lines} epochs")
        if signs:
            way = (
                f"continue from best.pt with: cp {self.best} {self.last}" if self.best.is_file() else "start a new run"
            )
            raise CheckpointError(
                f"--resume {self}: checkpoints/last.pt is missing, but {', '.join(signs)}: the run got past its first "
                f"checkpoint and would be trained again from step 0 over that work; put last.pt back, or {way}"
            )

    def edited_epochs(self, cfg: TrainConfig) -> int | None:
        """The epochs ``config.json`` asks for when they differ from ``cfg`` (the checkpoint's
        settings): a length changed by hand, or by an ``--epochs N`` stopped before it saved. Any
        other setting changed there is refused: a resumed run keeps its checkpoint's settings."""
        if not os.path.lexists(self.config_file):
            return None  # written again from the checkpoint
        there, ours = self.read_config().to_dict(), cfg.to_dict()
        changed = [k for k in ours if k != "epochs" and there[k] != ours[k]]
        if changed:
            k = changed[0]
            raise ConfigError(
                f"{self.config_file}: {k} is {there[k]!r} there but {ours[k]!r} in {self.last}, whose settings a "
                f"resumed run keeps; undo the edit (or remove config.json, which is written again from the "
                f"checkpoint), or start a new run with --config {self.config_file}"
            )
        return there["epochs"] if there["epochs"] != ours["epochs"] else None

    def write_json(self, name: str, value) -> None:
        """``env.json``, ``split.json`` or ``bad_images.json``."""
        self._write_text(name, json.dumps(value, indent=2) + "\n")

    def read_bad_files(self) -> set[str]:
        """The paths ``--skip-bad-images`` left out of this run (none when it skipped none)."""
        path = self.path / "bad_images.json"
        if not os.path.lexists(path):
            return set()
        listed = read_json(path, error=CheckpointError)
        if not isinstance(listed, list) or not all(
            isinstance(b, dict) and isinstance(b.get("path"), str) for b in listed
        ):
            raise CheckpointError(f'{path}: expected a list of {{"path": ..., "reason": ...}} records')
        return {b["path"] for b in listed}

    # -- checkpoints --
    def save(self, state: dict, *, best: bool = False) -> None:
        """Write ``last.pt`` atomically; with ``best`` make ``best.pt`` the same file. A failed write
        keeps the previous checkpoint and says how to continue."""
        try:
            save_checkpoint(state, self.last)
            if best:  # last.pt is replaced by a new file next time; best.pt keeps this one
                link_file(self.last, self.best)
        except OSError as e:
            raise RunError(
                f"cannot write a checkpoint to {self.last.parent} ({e.strerror or e}); the previous checkpoint is "
                f"kept - free space or fix the folder, then: alexnet train --resume {self}"
            ) from None

    # -- metrics, curves, TensorBoard --
    def append_metrics(self, row: dict) -> None:
        """One epoch's line; written before that epoch's checkpoint (see :meth:`trim_metrics`)."""
        with self.metrics_file.open("a") as f:
            f.write(json.dumps(row) + "\n")

    def append_steps(self, row: dict) -> None:
        """One line of ``steps.jsonl``: ``step`` (counted from the run's start), ``epoch``, and the
        mean ``train_loss`` and ``train_error`` of the steps since the line before (training mode:
        augmented images, dropout on - what the paper's figure 1 plots)."""
        with self.steps_file.open("a") as f:
            f.write(json.dumps(row) + "\n")

    def repair_steps(self, steps_done: int) -> None:
        """Drop the ``steps.jsonl`` lines past the checkpoint a run resumes from (and torn ones):
        those steps are trained again and logged again."""
        path = self.steps_file
        if not os.path.lexists(path):  # a link to a device or a FIFO is refused by the reader, not skipped
            return
        kept = []
        for line in read_bytes(path, limit=MAX_RECORD_BYTES, error=RunError).decode(errors="replace").splitlines():
            try:
                row = parse_json(line, str(path), RunError)
            except RunError:
                continue
            if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= steps_done:
                kept.append(line + "\n")
        self._write_text("steps.jsonl", "".join(kept))

    def repair_metrics(self, epochs_done: int, last: dict | None) -> str | None:
        """Make ``metrics.jsonl`` hold one line for each of the ``epochs_done`` epochs the checkpoint
        has, and nothing after them: a crash can fall between the line and the checkpoint, or tear
        the line itself. Damaged lines are dropped; the last finished epoch's line is restored
        from the checkpoint's own copy (``last``). Returns a note to print when lines were damaged."""
        path = self.metrics_file
        raw = read_bytes(path, limit=MAX_RECORD_BYTES, error=RunError) if os.path.lexists(path) else b""
        by_epoch, damaged = {}, 0
        for line in raw.splitlines():
            try:
                row = parse_json(line, str(path), RunError) if line.strip() else None
            except RunError:  # torn, garbled, or nested beyond any record of ours
                row = None
                damaged += 1
            if row is None:
                continue
            if not isinstance(row, dict) or not isinstance(row.get("epoch"), int) or isinstance(row["epoch"], bool):
                damaged += 1
            elif row["epoch"] < epochs_done:
                by_epoch[row["epoch"]] = row
        if isinstance(last, dict) and last.get("epoch") == epochs_done - 1:
            by_epoch.setdefault(epochs_done - 1, last)
        text = "".join(json.dumps(by_epoch[e]) + "\n" for e in sorted(by_epoch))
        if text.encode() != raw:
            self._write_text("metrics.jsonl", text)
        if not damaged:
            return None
        missing = [e + 1 for e in range(epochs_done) if e not in by_epoch]
        lost = f"; epoch(s) {', '.join(map(str, missing))} have no line now" if missing else ""
        return f"{path}: dropped {damaged} damaged line(s){lost}"

    def log_epoch(self, row: dict) -> None:
        """Draw ``curves.png`` from ``metrics.jsonl`` and add the epoch to TensorBoard."""
        from alexnet.plots import plot_curves

        plot_curves(read_metrics(self.metrics_file), self.path / "curves.png")
        writer = self._writer()
        if writer is not None:
            for key in ("train_loss", "train_acc", "val_loss", "val_top1", "val_top5", "lr", "images_per_second"):
                if key in row:  # an epoch --eval-every did not evaluate has no val_*
                    writer.add_scalar(key, row[key], row["epoch"] + 1)
            writer.flush()

    def _writer(self):
        if self._tensorboard is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is a dependency; stay usable if someone removed it
                return None
            self._tensorboard = SummaryWriter(log_dir=str(self.path / "tb"))
        return self._tensorboard

    def close(self) -> None:
        """Flush TensorBoard and let go of the lock."""
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


# What the curves (plots.plot_curves) and the report's table read from every line; the validation
# fields are checked where a line has them (--eval-every leaves epochs without).
PLOTTED = ("train_loss", "train_acc")


def read_metrics(path: str | Path, required: tuple[str, ...] = PLOTTED) -> list[dict]:
    """The epoch records of a run's ``metrics.jsonl``: each line an object with a whole ``epoch``,
    a number for each of ``required`` (what the caller reads) and for each other field of a line
    (``formats.checkpoint.METRICS``) it holds; anything else is one :class:`DataError` naming the
    file and the line."""
    rows = []
    for i, line in enumerate(read_bytes(path, limit=MAX_RECORD_BYTES).splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path} line {i}"
        row = parse_json(line, where)
        if (
            not isinstance(row, dict)
            or not isinstance(row.get("epoch"), int)
            or isinstance(row["epoch"], bool)
            or row["epoch"] < 0
            or not all(is_number(row.get(k)) for k in required)
            or not all(is_number(row[k]) for k in METRICS if k in row and k != "epoch")
        ):
            raise DataError(f"{where}: not an epoch record (an object of epoch and {', '.join(required or METRICS)})")
        rows.append(row)
    return rows
