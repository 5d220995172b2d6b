"""A training run: build the data and the model, loop over epochs, save into the run folder.

The loop is :func:`train`; one epoch is :func:`_one_epoch` (the step and the evaluation themselves
live in engine.py). What a run holds, and how it is built, is run.py. Files are written by
:class:`~alexnet.training.rundir.RunFolder` alone.
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import replace
from pathlib import Path

from alexnet.config import TrainConfig
from alexnet.errors import Interrupted, RunError
from alexnet.formats import Resume, read_resume
from alexnet.system import distributed, runtime
from alexnet.system.distributed import World
from alexnet.system.signals import Stop, StopSignals
from alexnet.training import engine, launch, progress
from alexnet.training.optim import check_extension, halve_lr
from alexnet.training.run import Run, start
from alexnet.training.rundir import RunFolder

MAX_ROLLBACKS = 3
AGREE_EVERY = 20  # steps between the processes' joint stop/save decisions on a GPU


def train(
    cfg: TrainConfig,
    *,
    argv: list[str] | None = None,
    resume: str | Path | None = None,
    epochs: int | None = None,
    quiet: bool = False,
) -> dict:
    """Run training; returns the last epoch's metrics and the run folder.

    With ``resume`` (a run folder, or a folder of them: the newest is taken) the run continues
    from its last checkpoint with its own settings, or starts again from step 0 with them when it
    stopped before its first checkpoint; ``epochs`` then makes it longer where its schedule allows.

    Started by torchrun (``WORLD_SIZE`` > 1), every process runs this: rank 0 writes and prints,
    ``cfg.batch_size`` is the global batch, and when torchrun restarts the group
    (``--max-restarts``) the run continues from its last checkpoint by itself.
    """
    world = distributed.from_environment()
    say = progress.printer(quiet or not world.writer)
    with StopSignals() as signals:  # while preparing, SIGINT/SIGTERM stop at once: nothing to save yet
        box: list = [None]  # the run folder, once known
        try:
            run, resumed, restarted = _prepare(cfg, resume, epochs, argv, world, say, box)
        except BaseException as e:
            if box[0] is not None:
                box[0].close()
            distributed.stop()
            if isinstance(e, Stop):
                again = f"continue with: alexnet train --resume {box[0]}" if box[0] else "run the same command again"
                raise Interrupted(
                    f"{e}: stopped while preparing the run, before any training step; {again}", e.signum
                ) from None
            if isinstance(e, RuntimeError):
                raise launch.process_failed(e, world, box[0]) from None
            raise
        signals.defer()  # from here on a signal ends the run at the next step or batch, saved
        try:
            progress.announce(run, restarted=restarted, say=say)
            if resumed and world.writer:  # the folder's records catch up with its checkpoint
                run.folder.write_config(run.cfg)
                repaired = run.folder.repair_metrics(run.state.epoch, run.state.metrics)
                run.folder.repair_steps(
                    run.state.epoch * len(run.data.train) + (run.state.totals["steps"] if run.state.totals else 0)
                )
                if repaired:
                    say(repaired)
            while run.state.epoch < run.cfg.epochs:
                try:
                    _one_epoch(run, signals, say, quiet)
                except FloatingPointError as e:
                    _after_nan(run, e, say)
            distributed.finish(world)  # every process leaves together, after rank 0's last write
        except RuntimeError as e:
            raise launch.process_failed(e, world, run.folder) from None
        finally:
            run.folder.close()
            run.net = run.model  # DDP's reducer goes before the process group it uses
            distributed.stop()
    return {**run.state.metrics, "run_dir": str(run.folder), "best_top1": run.state.best}


def _prepare(
    cfg: TrainConfig, resume, epochs: int | None, argv, world: World, say, box: list
) -> tuple[Run, bool, bool]:
    """The run ``train`` continues or starts; whether it is resumed (asked, or after a torchrun
    restart), and whether it was stopped before its first checkpoint (so starts again from step
    0). ``box[0]`` holds its folder as soon as it is known."""
    ckpt = None
    if resume is not None:
        folder, note = RunFolder.find(resume)
        if world.writer:
            folder.acquire()  # one writer per run folder
        box[0] = folder
        if note:
            say(note)
        cfg, ckpt = _resumed_settings(folder, epochs)
    device = runtime.resolve_device(distributed.device_for(cfg.device, world))
    world = distributed.start(world, device)
    if resume is not None and world.from_writer(lambda: str(box[0])) != str(box[0]):
        raise RunError(f"--resume {resume}: the processes found different runs in it; name the run folder itself")
    if resume is None and world.restart:  # continue the folder the earlier attempt made; none: start afresh
        box[0] = launch.restart_folder(world, cfg, argv, say)
        if box[0] is not None:
            cfg, ckpt = _resumed_settings(box[0], None)
        resume = box[0]
    run = start(cfg, ckpt, box[0], argv, world, device)
    box[0] = run.folder
    return run, resume is not None, resume is not None and ckpt is None


def _resumed_settings(folder: RunFolder, epochs: int | None) -> tuple[TrainConfig, Resume | None]:
    """The settings and checkpoint a resumed run continues with (no checkpoint: from step 0)."""
    ckpt = read_resume(folder.last) if folder.last.is_file() else None
    cfg = ckpt.config if ckpt else folder.read_config()
    if epochs is not None:
        check_extension(cfg, epochs, folder)
        cfg = replace(cfg, epochs=epochs)
    return cfg, ckpt


def _one_epoch(run: Run, signals: StopSignals, say, quiet: bool) -> None:
    cfg, s, epoch, world = run.cfg, run.state, run.state.epoch, run.world
    run.data.train.set_epoch(epoch, start=s.totals["steps"] if s.totals else 0)
    bar = progress.bar(
        epoch, cfg.epochs, run.data.num_train, s.totals["seen"] if s.totals else 0, quiet or not world.writer
    )
    every_steps, every_seconds = cfg.checkpoint_interval()
    # several processes stop and save at the same step: they decide together, every step on the
    # CPU, every AGREE_EVERY steps on a GPU (the decision waits for the device)
    agree_every = 1 if run.device.type == "cpu" else AGREE_EVERY
    last_save = time.monotonic()
    window = (
        dict(s.totals) if s.totals else {"loss_sum": 0.0, "correct": 0, "seen": 0, "steps": 0}
    )  # sums at the last steps.jsonl line

    def on_step(info: dict) -> bool:
        nonlocal last_save, window
        if (
            cfg.step_log and info["step"] % cfg.step_log == 0
        ):  # every process at the same step: totals() may be a collective
            window = _log_steps(run, epoch, window, info["totals"]())
        if bar is not None:  # the images of the global batch: this process has only its part
            bar.update(
                min(cfg.batch_size, run.data.num_train - (info["step"] - 1) * cfg.batch_size)
                if world.distributed
                else info["images"],
                info,
            )
        by_steps = bool(every_steps) and info["step"] % every_steps == 0
        by_time = bool(every_seconds) and time.monotonic() - last_save >= every_seconds
        stop = signals.received is not None
        if world.distributed:
            stop, by_time = (
                world.any_of([stop, by_time and world.writer], run.device)
                if info["step"] % agree_every == 0
                else (False, False)
            )
        if stop or by_steps or by_time:
            totals = info["totals"]()  # summed over the processes
            if not math.isfinite(
                totals["loss_sum"]
            ):  # never save weights a NaN has reached (a GPU checks every 50 steps)
                raise FloatingPointError(
                    f"the training loss became {totals['loss_sum']} by step {info['step']} of the epoch"
                )
            run.save(epoch, totals)
            last_save = time.monotonic()
        # alone, a signal that came during the save stops here too (the checkpoint is this step's);
        # several processes stop where they voted to
        return stop if world.distributed else signals.received is not None

    tr = engine.train_one_epoch(
        run.net,
        run.data.train,
        run.optimizer,
        device=run.device,
        precision=run.precision,
        step_scheduler=run.schedule.per_step,
        label_smoothing=cfg.label_smoothing,
        channels_last=run.channels_last,
        on_step=on_step,
        totals=s.totals,
        world=world,
    )
    if bar is not None:
        bar.close()
    if tr["stopped"]:
        raise Interrupted(
            f"{signals.name or 'a signal to another process'}: saved a "
            "checkpoint at epoch "
            f"{epoch + 1}, step {tr['steps']}; "
            f"continue with: alexnet train --resume {run.folder}",
            signals.received or signal.SIGTERM,
        )
    ev = engine.evaluate(
        run.model,
        run.data.val,
        len(run.data.classes),
        device=run.device,
        precision=run.precision,
        channels_last=run.channels_last,
        should_stop=lambda: world.any(signals.stopping, run.device),
        world=world,
    )
    if ev["stopped"]:  # the epoch's training is saved whole; its evaluation runs again on resume
        run.save(epoch, tr["totals"])
        raise Interrupted(
            f"{signals.name or 'a signal to another process'}: saved a checkpoint after epoch {epoch + 1}'s "
            "training, before its evaluation; "
            f"continue with: alexnet train --resume {run.folder}",
            signals.received or signal.SIGTERM,
        )
    lr = run.optimizer.param_groups[0]["lr"]
    run.schedule.after_epoch(ev["top1"])
    is_best = ev["top1"] > s.best
    s.best = max(s.best, ev["top1"])
    s.metrics = {
        "epoch": epoch,
        "train_loss": tr["loss"],
        "train_acc": tr["acc"],
        "val_loss": ev["loss"],
        "val_top1": ev["top1"],
        "val_top5": ev["top5"],
        "lr": lr,
        "train_seconds": tr["seconds"],
        "val_seconds": ev["seconds"],
        "images_per_second": tr["images_now"] / tr["seconds"],
    }
    if world.writer:
        run.folder.append_metrics(s.metrics)  # before the checkpoint: a resume trims lines it did not keep
    run.save(epoch, None, best=is_best)
    s.epoch, s.totals = epoch + 1, None
    if world.writer:
        run.folder.log_epoch(s.metrics)
    say(progress.epoch_line(epoch, cfg.epochs, tr, ev, s.metrics["images_per_second"]))


def _log_steps(run: Run, epoch: int, before: dict, now: dict) -> dict:
    """Append the steps since ``before`` (running sums of the epoch) to ``steps.jsonl``; returns ``now``."""
    seen = now["seen"] - before["seen"]
    if run.world.writer and seen > 0:
        run.folder.append_steps(
            {
                "step": epoch * len(run.data.train) + now["steps"],
                "epoch": epoch,
                "train_loss": (now["loss_sum"] - before["loss_sum"]) / seen,
                "train_error": 1 - (now["correct"] - before["correct"]) / seen,
            }
        )
    return now


def _after_nan(run: Run, error: FloatingPointError, say) -> None:
    """``--on-nan stop``: stop, keeping the last good checkpoint. ``rollback``: reload it and halve
    the learning rate, at most MAX_ROLLBACKS times."""
    last = run.folder.last
    kept = f"the last good checkpoint {last} is kept" if last.is_file() else "no checkpoint had been written yet"
    done = run.state.rollbacks
    if run.cfg.on_nan != "rollback" or not last.is_file() or done >= MAX_ROLLBACKS:
        tried = f" after {done} rollback(s)" if done else ""
        raise RunError(f"{error}{tried}; {kept}; lower --lr or use --on-nan rollback") from None
    run.restore(read_resume(last))  # its learning rate already holds its own halvings
    for _ in range(done + 1 - run.state.rollbacks):
        halve_lr(run.optimizer, run.schedule)
    run.state.rollbacks = done + 1
    say(f"{error}: rolled back to {last} and halved the learning rate (rollback {run.state.rollbacks}/{MAX_ROLLBACKS})")
