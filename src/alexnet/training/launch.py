"""A torchrun launch as a run sees it: which process goes first, which run folder a restarted
group continues, and how one failed process reads to the others.

Several processes start one run: the writer (rank 0) builds the data first and makes the run
folder, and the others follow it (:func:`data_writer_first`, :func:`writer_folder`). When torchrun
restarts the group (``--max-restarts``), the new attempt finds the folder the earlier one made and
continues it (:func:`restart_folder`). A process that dies makes the others' collectives fail:
:func:`process_failed` turns that into one line. With one process each is the plain case.
"""

from __future__ import annotations

import torch

from alexnet.config import TrainConfig
from alexnet.data import Data, build_data
from alexnet.errors import RunError, first_line
from alexnet.formats import Resume
from alexnet.system.distributed import World
from alexnet.training.rundir import RunFolder


def data_writer_first(
    cfg: TrainConfig, device: torch.device, ckpt: Resume | None, world: World, stats: dict | None = None
) -> Data:
    """The data, built by the writer first: its bad-file scan fills the scan cache the other
    processes on its machine then read instead of decoding every image again, and bad data stops
    every process with rank 0's one line. ``stats``: normalization to use (the weights' own, for a
    run from another model's)."""
    # a resumed run keeps its checkpoint's normalization and JPEG decode: the inputs it was trained on
    decode = None
    if ckpt:
        stats, decode = ckpt.model.preprocess.stats, ckpt.model.preprocess.decode
    built: list[Data] = []
    world.from_writer(lambda: built.append(build_data(cfg, device, stats=stats, world=world, decode=decode)))
    return built[0] if built else build_data(cfg, device, stats=stats, world=world, decode=decode)


def writer_folder(world: World, folder: RunFolder | None, cfg: TrainConfig, argv: list[str] | None) -> RunFolder:
    """The run folder: the writer makes it (or holds the one it resumes); every process learns its
    path, and only the writer's RunFolder is ever written to."""
    made: list[RunFolder] = []

    def make() -> str:
        made.append(folder or RunFolder.create(cfg, argv))
        return str(made[0])

    path = world.from_writer(make)
    return made[0] if world.writer else RunFolder(path)


def restart_folder(world: World, cfg: TrainConfig, argv: list[str] | None, say) -> RunFolder | None:
    """torchrun restarted the group (``--max-restarts``): the run folder the earlier attempt of this
    launch made, taken by the writer, to continue from its last checkpoint; None when that attempt
    failed before making one (the run starts afresh)."""
    path = world.from_writer(lambda: RunFolder.find_launch(cfg, argv, world.run_id))
    if path is None:
        return None
    folder = RunFolder(path)
    if world.writer:
        folder.acquire()
    say(f"torchrun restarted the run (restart {world.restart}): continuing {folder} from its last checkpoint")
    return folder


def process_failed(e: RuntimeError, world: World, folder) -> BaseException:
    """A process of the group died (killed, out of memory, its machine lost) and the collectives of
    the others failed: one line for them. A single process's RuntimeError is its own."""
    if not world.distributed:
        return e
    again = f"alexnet train --resume {folder}" if folder is not None else "run the same command again"
    return RunError(
        f"a process of the run failed ({first_line(e)}); torchrun --max-restarts continues it by itself, or: {again}"
    )
