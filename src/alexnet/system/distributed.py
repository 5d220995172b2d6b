"""Training in several processes with PyTorch's own engine: torchrun, DistributedDataParallel.

This module is the one place that knows the world: which process this is (``RANK``), how many
there are (``WORLD_SIZE``), which device is its own (``LOCAL_RANK``), which attempt of the group
this is when torchrun restarts it (counted when the processes join, :func:`start`), and how
numbers and decisions cross processes. The rest
of the package asks a :class:`World` and reads the same with one process or many: a plain
``alexnet train`` is a world of one, whose collectives do nothing.

As nanoGPT and torchvision's references do it: one device per process, gloo on the CPU and NCCL on
GPUs, rank 0 the only writer (:attr:`World.writer`), metrics all-reduced, the model wrapped in DDP
(whose gradients are averaged over the processes: see :func:`alexnet.training.engine.train_step` for how
the loss is scaled so the average is exactly the one-process batch's).
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from alexnet.errors import ConfigError, RunError

T = TypeVar("T")

# How long a collective waits for the other processes before it fails (torch's default is 30
# minutes for gloo, 10 for NCCL): the bad-file scan of a large folder runs before the first one.
TIMEOUT = datetime.timedelta(minutes=30)


@dataclass(frozen=True)
class World:
    """This process's place among the processes of one training run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    restart: int = 0  # which attempt of the group this is (torchrun --max-restarts), agreed at start()
    run_id: str | None = None  # torchrun's rendezvous id: the same across its restarts

    @property
    def writer(self) -> bool:
        """The one process that writes the run folder, prints and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` summed over all processes (in place, also returned)."""
        if self.distributed:
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def any(self, flag: bool, device: torch.device) -> bool:
        """Whether any process says True: the processes decide together (to stop, to save)."""
        return self.any_of([flag], device)[0]

    def any_of(self, flags: list[bool], device: torch.device) -> list[bool]:
        """For each flag, whether any process says True: several decisions in one collective."""
        if not self.distributed:
            return list(flags)
        return [bool(v) for v in self.sum(torch.tensor([int(f) for f in flags], device=device)).tolist()]

    def record(self) -> dict:
        """What ``env.json`` records of the launch; torchrun's id finds the run again on a restart."""
        return {"processes": self.size, "torchrun_id": self.run_id}

    def from_writer(self, make: Callable[[], T]) -> T:
        """``make()`` run by the writer alone and its result handed to every process. An error the
        writer meets is raised on every process (as a RunError with its message), so no process
        waits for a result that never comes."""
        if not self.distributed:
            return make()
        box: list[Any] = [None]
        error = None
        if self.writer:
            try:
                box[0] = ("ok", make())
            except Exception as e:  # handed over, then raised here as it was
                error, box[0] = e, ("error", str(e))
        dist.broadcast_object_list(box, src=0)
        if error is not None:
            raise error
        kind, value = box[0]
        if kind == "error":
            raise Forwarded(f"rank 0 stopped: {value}")
        return value

    def part(self, n: int) -> slice:
        """This process's part of a global batch of ``n`` items: the rank-th of ``size`` contiguous
        chunks whose sizes differ by at most one (as ``torch.tensor_split`` cuts). A part is empty
        when the batch holds fewer items than there are processes; that process still takes the
        step, so every process takes the same number of steps and no image is dropped or repeated."""
        q, r = divmod(n, self.size)
        start = self.rank * q + min(self.rank, r)
        return slice(start, start + q + (self.rank < r))


class Forwarded(RunError):
    """Rank 0's error, raised on the other processes too: rank 0 alone says it."""


SINGLE = World()


def from_environment() -> World:
    """The world torchrun (or any launcher that sets its variables) describes; a world of one when
    the process was started plainly."""
    env = os.environ
    if "WORLD_SIZE" not in env and "RANK" not in env:
        return SINGLE
    try:
        world = World(
            rank=int(env.get("RANK", "0")),
            size=int(env.get("WORLD_SIZE", "1")),
            local_rank=int(env.get("LOCAL_RANK", "0")),
            run_id=env.get("TORCHELASTIC_RUN_ID"),
        )
    except ValueError:
        raise ConfigError(
            f"RANK={env.get('RANK')!r}, WORLD_SIZE={env.get('WORLD_SIZE')!r}, LOCAL_RANK={env.get('LOCAL_RANK')!r}: "
            "not whole numbers; start several processes with torchrun"
        ) from None
    if not 0 <= world.rank < world.size:
        raise ConfigError(
            f"RANK={world.rank} is outside WORLD_SIZE={world.size}; start several processes with torchrun"
        )
    return world


def device_for(name: str, world: World) -> str:
    """The device of this process: with several processes each takes its own GPU (``cuda:LOCAL_RANK``);
    ``--device`` may name the kind (``auto``, ``cuda``, ``cpu``) but not one index for all."""
    if not world.distributed:
        return name
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return f"cuda:{world.local_rank}"
    if name == "cpu":
        return name
    raise ConfigError(
        f"--device {name}: with {world.size} processes each takes its own device; use --device auto, cuda or cpu"
    )


def start(world: World, device: torch.device) -> World:
    """Join the process group: NCCL between GPUs, gloo between CPU processes. torchrun has set
    MASTER_ADDR/MASTER_PORT (its rendezvous); nothing to do for a world of one. Returns the world
    with ``restart`` the attempt this is, as every process of it agrees (0: the first)."""
    global _joined
    if not world.distributed or dist.is_initialized():
        return world
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    store, _, _ = next(dist.rendezvous("env://", world.rank, world.size, timeout=TIMEOUT))
    # torchrun's store outlives a restart of the group (--max-restarts) and keeps the addresses the
    # dead attempt's processes published: each attempt joins under keys of its own, or a restarted
    # process connects to a dead one's port. The attempt is counted in the store itself (every
    # process of an attempt arrives once), not read from TORCHELASTIC_RESTART_COUNT, which each
    # machine's agent counts on its own (it does not count a restart another machine caused).
    attempt = (store.add("alexnet/arrivals", 1) - 1) // world.size
    store = dist.PrefixStore(f"alexnet/attempt_{attempt}", store)
    dist.init_process_group(
        backend,
        store=store,
        rank=world.rank,
        world_size=world.size,
        timeout=TIMEOUT,
        **({"device_id": device} if device.type == "cuda" else {}),
    )
    _joined = True
    return dataclasses.replace(world, restart=attempt)


_joined = False  # whether this module joined the process group (a caller's own group is left alone)


def finish(world: World) -> None:
    """The end of a run that went well: wait until every process is there (rank 0 may still be
    writing its last checkpoint), so none tears its connections down under another's feet (gloo
    aborted a process that left early: "terminate called without an active exception")."""
    if world.distributed and dist.is_initialized():
        dist.barrier()


def stop() -> None:
    """Leave the process group this module joined (at the end of a run, or when it fails)."""
    global _joined
    if _joined and dist.is_initialized():
        dist.destroy_process_group()
    _joined = False


def wrap(model: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    """The model as DistributedDataParallel: rank 0's weights are broadcast to all, gradients are
    averaged in buckets while the backward pass runs. A world of one gets the model itself."""
    if not world.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
