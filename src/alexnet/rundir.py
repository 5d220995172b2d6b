"""The run folder (``<out>/<name>/``): every file a training run writes, written here and only here.

=========================== =====================================================================
``config.json``             the resolved settings (the run can be repeated from it)
``command.txt``             the command line that started it
``env.json``                versions, device, precision, git commit (:func:`alexnet.runtime.environment`)
``metrics.jsonl``           one JSON line per epoch; the curves are drawn from it
``checkpoints/last.pt``     the latest checkpoint; ``best.pt`` the one of the best validation top-1
``curves.png``, ``tb/``     learning curves, TensorBoard event files
``split.json``              the hold-out split of a plain image folder
``bad_images.json``         the files ``--skip-bad-images`` left out
=========================== =====================================================================

When training runs in several processes, only the writer process holds a RunFolder.
"""

from __future__ import annotations

import json
import shlex
import sys
from datetime import datetime
from pathlib import Path

from alexnet.config import TrainConfig
from alexnet.errors import CheckpointError, ConfigError, RunError
from alexnet.formats import link_file, save_checkpoint


class RunFolder:
    """One run's folder. :meth:`create` starts a new one, :meth:`find` opens one to resume."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._tensorboard = None

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

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    # -- starting and finding runs --
    @classmethod
    def create(cls, cfg: TrainConfig, argv: list[str] | None) -> "RunFolder":
        """A new run folder under ``cfg.out`` holding the settings and the command line."""
        name = cfg.name or f"{cfg.model}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
        folder = cls(Path(cfg.out) / name)
        if folder.last.exists():
            raise ConfigError(f"{folder} already holds a run; continue it with --resume {folder} or pick another --name")
        try:
            folder.path.mkdir(parents=True, exist_ok=True)
            folder.write_config(cfg)
        except OSError as e:
            raise ConfigError(f"--out {cfg.out}: cannot write the run folder there ({e.strerror}); pick a writable --out") from None
        (folder.path / "command.txt").write_text(shlex.join(argv if argv is not None else sys.argv) + "\n")
        return folder

    @classmethod
    def find(cls, path: str | Path) -> tuple["RunFolder", str | None]:
        """The run folder ``path`` names for ``--resume``, and a note to print when it was chosen
        for the user: ``path`` may also be a folder of run folders (``--out``), whose newest run
        (by its latest file) is taken."""
        folder = cls(path)
        if folder.config_file.is_file() or folder.last.is_file():
            return folder, None
        runs = sorted((cls(p.parent) for p in Path(path).glob("*/config.json")), key=lambda f: f.last_activity())
        if not runs:
            raise CheckpointError(f"--resume {path}: no checkpoint or settings here and no run folders inside; start a new run instead")
        newest = runs[-1]
        others = ", ".join(r.path.name for r in runs[-4:-1][::-1]) + (", ..." if len(runs) > 4 else "")
        note = f"{path} holds {len(runs)} runs; resuming the newest, {newest}" + (f" (others: {others})" if others else "")
        return newest, note

    def last_activity(self) -> float:
        """When the run last wrote its checkpoint or settings (seconds since the epoch)."""
        return max(p.stat().st_mtime for p in (self.last, self.config_file) if p.exists())

    # -- settings and records --
    def write_config(self, cfg: TrainConfig) -> None:
        self.config_file.write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")

    def read_config(self) -> TrainConfig:
        try:
            values = json.loads(self.config_file.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{self.config_file}: not a readable settings file ({e})") from None
        if not isinstance(values, dict):
            raise CheckpointError(f"{self.config_file}: expected a JSON object of settings")
        return TrainConfig.from_dict(values, source=str(self.config_file))

    def write_json(self, name: str, value) -> None:
        """``env.json``, ``split.json`` or ``bad_images.json``."""
        (self.path / name).write_text(json.dumps(value, indent=2) + "\n")

    def read_bad_files(self) -> set[str]:
        """The paths ``--skip-bad-images`` left out of this run (none when it skipped none)."""
        path = self.path / "bad_images.json"
        return {b["path"] for b in json.loads(path.read_text())} if path.is_file() else set()

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

    def trim_metrics(self, epochs_done: int) -> None:
        """Keep the lines of the epochs the checkpoint has (a crash can fall between the two writes)."""
        path = self.metrics_file
        if path.is_file():
            lines = [line for line in path.read_text().splitlines() if line.strip()]
            kept = [line for line in lines if json.loads(line)["epoch"] < epochs_done]
            if len(kept) != len(lines):
                path.write_text("".join(line + "\n" for line in kept))

    def log_epoch(self, row: dict) -> None:
        """Draw ``curves.png`` from ``metrics.jsonl`` and add the epoch to TensorBoard."""
        from alexnet.plots import plot_curves

        plot_curves(self.metrics_file, self.path / "curves.png")
        writer = self._writer()
        if writer is not None:
            for key in ("train_loss", "train_acc", "val_loss", "val_top1", "val_top5", "lr", "images_per_second"):
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
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None
