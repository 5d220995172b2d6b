"""What a training run holds (:class:`Run`), what changes as it goes on and is saved in every
checkpoint (:class:`RunState`), and how a run is built, fresh or from a checkpoint (:func:`start`).
The loop over epochs that drives it is loop.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from alexnet.config import TrainConfig
from alexnet.data import Data
from alexnet.errors import CheckpointError, ConfigError, DataError, brief, first_line
from alexnet.formats import FORMAT, Resume, Totals, check_weights
from alexnet.formats.network import state_dict_mismatch
from alexnet.models import AlexNet, build_model
from alexnet.system import distributed, runtime
from alexnet.system.distributed import World
from alexnet.training import launch, towers, transfer
from alexnet.training.budget import Fit, fit_epochs
from alexnet.training.optim import STATE_BUFFERS, Schedule, make_optimizer, make_schedule
from alexnet.training.rundir import RunFolder


@dataclass
class RunState:
    """What changes as a run goes on."""

    epoch: int = 0  # the epoch in progress, or the next one
    totals: Totals = field(default_factory=Totals)  # the running sums the epoch in progress continues from
    best: float = 0.0  # best validation top-1 so far
    rollbacks: int = 0  # NaN rollbacks so far
    metrics: dict = field(default_factory=dict)  # the last finished epoch's line of metrics.jsonl


@dataclass
class Run:
    """Everything a run holds between steps: built fresh, or restored from a checkpoint.

    With several processes every process holds a Run; only the writer's folder is written to.
    ``model`` is the network itself (what checkpoints hold), ``net`` what trains: the same
    network, wrapped in DDP when there are several processes.
    """

    cfg: TrainConfig
    folder: RunFolder
    device: torch.device
    precision: str
    data: Data
    model: AlexNet | towers.TwoTowers
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    state: RunState
    world: World = distributed.SINGLE
    channels_last: bool = False  # runtime.fast_path's choice for the device (cfg.channels_last asks for it)
    net: torch.nn.Module | None = None
    fit: Fit | None = None  # --time-budget's measurement, on a fresh run with a budget
    transfer: dict | None = None  # what a fresh run took from --init-from (transfer.json)

    def __post_init__(self):
        self.net = self.net or self.model

    def checkpoint(self, epoch: int, totals: Totals | None) -> dict:
        """The checkpoint (formats/checkpoint.py): ``totals`` (summed over the processes) part-way
        through the epoch, None after the whole of it."""
        s = self.state
        return {
            "format": FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "epoch": epoch,
            "totals": None if totals is None else totals.to_dict(),
            "best_top1": s.best,
            "rollbacks": s.rollbacks,
            "metrics": s.metrics,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            },
            "preprocess": self.data.preprocess.to_dict(),
            "classes": self.data.classes,
            "config": self.cfg.to_dict(),
        }

    def restore(self, ckpt: Resume) -> None:
        """Continue from ``ckpt``, whose fields are checked against this run before any is loaded."""
        ckpt.check_fits(
            optimizer=self.optimizer.state_dict(),
            scheduler=self.schedule.state_dict(),
            params=[p.shape for group in self.optimizer.param_groups for p in group["params"]],  # its numbering
            steps_per_epoch=len(self.data.train),
            num_train=self.data.num_train,
            buffer=STATE_BUFFERS[self.cfg.optimizer],
        )
        check_weights(
            ckpt.model.weights, self.cfg.model, len(self.data.classes), self.data.preprocess.channels, str(ckpt.path)
        )
        problem = state_dict_mismatch(ckpt.model.weights, self.model.state_dict())
        if problem:
            raise CheckpointError(f"{ckpt.path}: weights do not fit its own settings: {problem}")
        try:
            self.model.load_state_dict(ckpt.model.weights)
            self.optimizer.load_state_dict(ckpt.optimizer)
            self.schedule.load_state_dict(ckpt.scheduler)
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{ckpt.path} does not fit its own settings ({first_line(e)})") from None
        # a whole epoch done: continue with the next; stopped part-way: continue that epoch
        totals = Totals() if ckpt.totals is None else ckpt.totals
        self.state = RunState(ckpt.epochs_done, totals, ckpt.best_top1, ckpt.rollbacks, dict(ckpt.metrics))
        torch.set_rng_state(ckpt.rng["torch"])
        if self.device.type == "cuda" and ckpt.rng["cuda"] is not None:
            torch.cuda.set_rng_state(ckpt.rng["cuda"], self.device)
        self._own_dropout_stream()

    def _own_dropout_stream(self) -> None:
        """Every process but the writer draws its dropout masks from a stream of its own (as
        nanoGPT's seed offset does); the writer keeps the one a single process has, so a world of
        one is exactly a plain run. Seeded from (seed, rank, epoch, step): a restart redraws it."""
        if self.world.writer:
            return
        s = self.state
        seed = self.cfg.seed * 1_000_003 + self.world.rank * 7_919 + s.epoch * 104_729 + s.totals.steps
        torch.manual_seed(seed % 2**64)

    def save(self, epoch: int, totals: Totals | None, best: bool = False) -> None:
        """The writer saves the checkpoint (:meth:`checkpoint`) to the run folder."""
        if self.world.writer:
            self.folder.save(self.checkpoint(epoch, totals), best=best)


def _network(cfg: TrainConfig, data: Data, source: transfer.Source | None = None) -> tuple[AlexNet, dict | None]:
    """The run's network on the CPU, seeded by the caller; from ``source``'s weights when given,
    with the record of what was copied (transfer.initialise)."""
    model = build_model(
        cfg.model,
        num_classes=len(data.classes),
        in_channels=data.preprocess.channels,
        activation=cfg.activation,
        lrn=cfg.lrn,
        lrn_k=cfg.lrn_k,
        pooling=cfg.pooling,
        dropout=cfg.dropout,
        init=cfg.init,
    )
    record = transfer.initialise(model, source, cfg, data.classes) if source is not None else None
    return model, record


def _place(model: AlexNet, device: torch.device, fast, tower_devices=None) -> AlexNet | towers.TwoTowers:
    """The network on its device, or split over the two towers' devices."""
    if tower_devices:  # the same seeded weights, split over the two devices
        return towers.TwoTowers(model, tower_devices, channels_last=fast.channels_last)
    return model.to(device, memory_format=torch.channels_last if fast.channels_last else torch.preserve_format)


def start(
    cfg: TrainConfig,
    ckpt: Resume | None,
    folder: RunFolder | None,
    argv: list[str] | None,
    world: World = distributed.SINGLE,
    device: torch.device | None = None,
) -> Run:
    """Build a run: the data first (bad data stops it before any file is written), then the run
    folder (the writer's; the others learn where it is), the seeded model, the optimizer and the
    schedule; restored from ``ckpt`` if given, and wrapped in DDP when there are several processes."""
    # --model-parallel: the towers' devices; batches, loss and logits live on the first
    tower_devices = runtime.resolve_devices(cfg.model_parallel) if cfg.model_parallel else None
    if tower_devices and world.distributed:
        raise ConfigError(
            "--model-parallel splits the network inside one process; under torchrun train data-parallel (drop "
            "--model-parallel)"
        )
    device = tower_devices[0] if tower_devices else device or runtime.resolve_device(cfg.device)
    fast = runtime.fast_path(device, cfg.precision, cfg.channels_last)  # what torch supports on this device
    precision = fast.precision
    if cfg.batch_size < world.size:
        raise ConfigError(
            f"--batch-size {cfg.batch_size} is the global batch and must be at least the {world.size} processes "
            "(one image each per step)"
        )
    # a fresh run from another model's weights reads them once (a resumed one has them in its checkpoint)
    source = transfer.read_source(cfg.init_from, cfg.init_sha256) if cfg.init_from and ckpt is None else None
    if source is not None:
        cfg = replace(cfg, init_sha256=source.sha256)  # recorded in config.json: the run is reproducible from it
    stats = transfer.source_stats(source, transfer.data_channels(cfg)) if source is not None else None
    data = launch.data_writer_first(cfg, device, ckpt, world, stats=stats)
    if ckpt is not None:
        _check_same_data(ckpt, data)
    fit = None
    if cfg.time_budget and folder is None:  # a fresh run: a resumed one keeps the epochs chosen then
        fit, cfg = _fit_budget(cfg, data, device, fast, world)
    folder = launch.writer_folder(world, folder, cfg, argv)
    torch.manual_seed(cfg.seed)  # the same initial weights in every process
    runtime.prepare(device)
    network, record = _network(cfg, data, source)
    model = _place(network, device, fast, tower_devices)
    optimizer = make_optimizer(model, cfg, fused=fast.fused_sgd)
    schedule = make_schedule(optimizer, cfg, len(data.train))
    run = Run(
        cfg,
        folder,
        device,
        precision,
        data,
        model,
        optimizer,
        schedule,
        RunState(),
        world,
        channels_last=fast.channels_last,
        fit=fit,
        transfer=record,
    )
    if ckpt is not None:
        run.restore(ckpt)
    else:
        run._own_dropout_stream()
        if world.writer:
            folder.write_json(
                "env.json", {**runtime.environment(device, precision), **world.record(), "decode": data.decode_on}
            )
            if data.split is not None:
                folder.write_json("split.json", data.split)
            if data.preprocess.eigval:
                folder.write_json("lighting.json", data.preprocess.lighting_record())
            if data.bad_files:
                folder.write_json("bad_images.json", data.bad_files)
            if fit is not None:
                folder.write_json("budget.json", fit.to_dict())
            if record is not None:
                folder.write_json("transfer.json", record)
    transfer.set_trainable(model, cfg, run.state.epoch)  # before DDP, which reduces what requires a gradient
    run.net = distributed.wrap(model, world, device)
    return run


def _fit_budget(cfg: TrainConfig, data: Data, device: torch.device, fast, world: World) -> tuple[Fit, TrainConfig]:
    """--time-budget: time a throwaway copy of the run's network on its data, set the epochs."""
    if world.distributed:
        raise ConfigError("--time-budget sizes a run on one machine's speed; under torchrun give --epochs")
    model = _place(_network(cfg, data)[0], device, fast)
    transfer.set_trainable(model, cfg, 0)  # frozen layers skip their backward pass: part of the time
    fit = fit_epochs(
        cfg,
        data,
        model,
        make_optimizer(model, cfg, fused=fast.fused_sgd),
        device=device,
        precision=fast.precision,
        channels_last=fast.channels_last,
    )
    return fit, replace(cfg, epochs=fit.epochs)


def _check_same_data(ckpt: Resume, data: Data) -> None:
    """The data a run resumes on gives the classes and preprocessing its checkpoint was trained
    with (a folder renamed, a class added or images of another size since would not)."""
    if data.classes != ckpt.model.classes:
        raise DataError(
            f"--data {data.source}: its classes {brief(data.classes)} differ from those {ckpt.path} "
            "was trained on, "
            f"{brief(ckpt.model.classes)}"
        )
    ours, theirs = data.preprocess.to_dict(), ckpt.model.preprocess.to_dict()
    for key in sorted(set(ours) | set(theirs)):
        if ours.get(key) != theirs.get(key):
            raise DataError(
                f"--data {data.source}: its images give preprocess {key} {ours.get(key)!r}, but {ckpt.path} was "
                f"trained with {theirs.get(key)!r}"
            )
