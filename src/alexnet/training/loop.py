"""A training run: build the data and the model, loop over epochs, save into the run folder.

The loop is :func:`train`; one epoch is :func:`_one_epoch`: its training pass (:func:`_train_epoch`,
the step loop and what the run decides between steps), its evaluation, and its records. The step
and the evaluation themselves live in engine.py; what a run holds, and how it is built, in run.py.
Files are written by :class:`~alexnet.training.rundir.RunFolder` alone.
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import replace
from pathlib import Path

from alexnet.config import TrainConfig
from alexnet.errors import Interrupted, RunError
from alexnet.formats import Resume, Totals, read_resume
from alexnet.system import distributed, runtime
from alexnet.system.distributed import World
from alexnet.system.signals import Stop, StopSignals
from alexnet.training import engine, launch, progress, transfer
from alexnet.training.optim import STATE_BUFFERS, check_extension, halve_lr, start_buffers
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
        run, resumed, restarted = _prepare(cfg, resume, epochs, argv, world, say)
        signals.defer()  # from here on a signal ends the run at the next step or batch, saved
        try:
            progress.announce(run, restarted=restarted, say=say)
            if resumed and world.writer:  # the folder's records catch up with its checkpoint
                run.folder.write_config(run.cfg)
                repaired = run.folder.repair_metrics(run.state.epoch, run.state.metrics)
                run.folder.repair_steps(run.state.epoch * len(run.data.train) + run.state.totals.steps)
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


def _prepare(cfg: TrainConfig, resume, epochs: int | None, argv, world: World, say) -> tuple[Run, bool, bool]:
    """The run ``train`` continues or starts; whether it is resumed (asked, or after a torchrun
    restart), and whether it was stopped before its first checkpoint (so starts again from step
    0). Should preparing fail, the run folder found so far is closed and the process group left;
    a signal becomes an Interrupted that says how to continue."""
    folder, ckpt = None, None  # the run folder, once known
    try:
        if resume is not None:
            folder, note = RunFolder.find(resume)
            if world.writer:
                folder.acquire()  # one writer per run folder
            if note:
                say(note)
            cfg, ckpt = _resumed_settings(folder, epochs)
        device = runtime.resolve_device(distributed.device_for(cfg.device, world))
        joined = distributed.start(world, device)
        if resume is not None and joined.from_writer(lambda: str(folder)) != str(folder):
            raise RunError(f"--resume {resume}: the processes found different runs in it; name the run folder itself")
        if resume is None and joined.restart:  # continue the folder the earlier attempt made; none: start afresh
            folder = launch.restart_folder(joined, cfg, argv, say)
            if folder is not None:
                cfg, ckpt = _resumed_settings(folder, None)
            resume = folder
        run = start(cfg, ckpt, folder, argv, joined, device)
    except BaseException as e:
        if folder is not None:
            folder.close()
        distributed.stop()
        if isinstance(e, Stop):
            again = f"continue with: alexnet train --resume {folder}" if folder else "run the same command again"
            raise Interrupted(
                f"{e}: stopped while preparing the run, before any training step; {again}", e.signum
            ) from None
        if isinstance(e, RuntimeError):
            raise launch.process_failed(e, world, folder) from None
        raise
    return run, resume is not None, resume is not None and ckpt is None


def _resumed_settings(folder: RunFolder, epochs: int | None) -> tuple[TrainConfig, Resume | None]:
    """The settings and checkpoint a resumed run continues with (no checkpoint: from step 0, when
    the run never wrote one); ``config.json`` may ask for more epochs, nothing else."""
    if folder.last.is_file():
        ckpt = read_resume(folder.last)
        cfg, asked = ckpt.config, folder.edited_epochs(ckpt.config)
        epochs = epochs if epochs is not None else asked
    else:
        folder.check_never_checkpointed()
        ckpt, cfg = None, folder.read_config()
    if epochs is not None:
        check_extension(cfg, epochs, folder)
        cfg = replace(cfg, epochs=epochs)
    return cfg, ckpt


def _one_epoch(run: Run, signals: StopSignals, say, quiet: bool) -> None:
    """Train an epoch (or the rest of one stopped part-way), evaluate it, and record it: its line
    of metrics.jsonl, its checkpoint, its printed line. A signal saves and stops the run."""
    cfg, epoch, world = run.cfg, run.state.epoch, run.world
    if transfer.set_trainable(run.model, cfg, epoch):  # --freeze-epochs: the copied layers train from here
        run.net = distributed.wrap(run.model, world, run.device)
        say(f"epoch {epoch + 1}: the copied layers train from here on (--freeze-epochs {cfg.freeze_epochs})")
    if cfg.freeze_epochs and epoch >= cfg.freeze_epochs:  # also after a resume at the epoch they start
        start_buffers(run.optimizer, STATE_BUFFERS[cfg.optimizer])
    tr = _train_epoch(run, signals, quiet)
    if tr.stopped:
        raise _interrupted(run, signals, f"saved a checkpoint at epoch {epoch + 1}, step {tr.steps}")
    # --eval-every: the test images are seen every N epochs and after the last, never more often
    evaluated = (epoch + 1) % run.cfg.eval_every == 0 or epoch + 1 == run.cfg.epochs
    ev = (
        engine.evaluate(
            run.model,
            run.data.val,
            len(run.data.classes),
            device=run.device,
            precision=run.precision,
            channels_last=run.channels_last,
            should_stop=lambda: world.any(signals.stopping, run.device),
            world=world,
        )
        if evaluated
        else None
    )
    if ev is not None and ev["stopped"]:  # the epoch's training is saved whole; its evaluation runs again on resume
        run.save(epoch, tr.totals)
        raise _interrupted(
            run, signals, f"saved a checkpoint after epoch {epoch + 1}'s training, before its evaluation"
        )
    _record_epoch(run, tr, ev, say)


def _train_epoch(run: Run, signals: StopSignals, quiet: bool) -> engine.EpochResult:
    """One pass over the training batches, or the rest of an epoch stopped part-way. After every
    step the run decides, every process at the same step: a steps.jsonl line every --step-log
    steps, the progress bar, a checkpoint every --checkpoint-every steps or minutes, and at a
    SIGINT/SIGTERM a checkpoint and the end of the pass (``stopped``)."""
    cfg, world, device, epoch, carried = run.cfg, run.world, run.device, run.state.epoch, run.state.totals
    run.data.train.set_epoch(epoch, start=carried.steps)
    bar = progress.bar(epoch, cfg.epochs, run.data.num_train, carried.seen, quiet or not world.writer)
    saves = _Saves(run, signals)
    run.net.train()
    start = time.perf_counter()
    # the sums carried over from before a stop are over every process: rank 0 carries them on
    totals = (carried if world.writer else Totals(steps=carried.steps)).on(device)
    logged = carried  # the sums at the last steps.jsonl line
    stopped = False
    for x, y in run.data.train:
        x, y = engine.to_device(device, x, y, run.channels_last)
        step = engine.train_step(
            run.net,
            x,
            y,
            run.optimizer,
            device=device,
            precision=run.precision,
            label_smoothing=cfg.label_smoothing,
            scheduler=run.schedule.per_step,
            world=world,
        )
        totals += step.totals
        engine.check_loss(totals, step, device, world)
        if cfg.step_log and totals.steps % cfg.step_log == 0:  # summed: a collective, at the same step in all
            logged = _log_steps(run, logged, totals.summed(world))
        if bar is not None:
            bar.update(_batch_images(run, totals.steps) if world.distributed else step.images, step)
        stop, save = saves.due(totals.steps)
        if save:
            _save_mid_epoch(run, totals.summed(world))
            saves.saved()
        # alone, a signal that came during the save stops here too (the checkpoint is this step's);
        # several processes stop where they voted to
        stopped = stop if world.distributed else signals.received is not None
        if stopped:
            break
    result = engine.EpochResult.of(totals.summed(world), carried, max(0.0, time.perf_counter() - start), stopped)
    if bar is not None:
        bar.close()
    return result


class _Saves:
    """When the step loop saves a checkpoint, and whether it stops: every --checkpoint-every steps
    or minutes, and at a SIGINT/SIGTERM. Several processes must save and stop at the same step, so
    they decide together: every step on the CPU, every AGREE_EVERY steps on a GPU (the vote waits
    for the device), rank 0's clock deciding the timed saves."""

    def __init__(self, run: Run, signals: StopSignals):
        self.every_steps, self.every_seconds = run.cfg.checkpoint_interval()
        self.agree_every = 1 if run.device.type == "cpu" else AGREE_EVERY
        self.world, self.device, self.signals = run.world, run.device, signals
        self.last = time.monotonic()

    def due(self, step: int) -> tuple[bool, bool]:
        """(stop, save) after ``step`` of the epoch: a stop is saved first."""
        by_steps = bool(self.every_steps) and step % self.every_steps == 0
        by_time = bool(self.every_seconds) and time.monotonic() - self.last >= self.every_seconds
        stop = self.signals.received is not None
        if self.world.distributed:
            if step % self.agree_every:
                return False, by_steps
            stop, by_time = self.world.any_of([stop, by_time and self.world.writer], self.device)
        return stop, stop or by_steps or by_time

    def saved(self) -> None:
        self.last = time.monotonic()


def _batch_images(run: Run, step: int) -> int:
    """The images of the global batch of ``step`` (a process trains only its part of it)."""
    return min(run.cfg.batch_size, run.data.num_train - (step - 1) * run.cfg.batch_size)


def _log_steps(run: Run, before: Totals, now: Totals) -> Totals:
    """Append the steps since ``before`` to ``steps.jsonl`` (both the epoch's running sums, over
    every process); returns ``now``."""
    seen = now.seen - before.seen
    if run.world.writer and seen > 0:
        run.folder.append_steps(
            {
                "step": run.state.epoch * len(run.data.train) + now.steps,
                "epoch": run.state.epoch,
                "train_loss": (now.loss_sum - before.loss_sum) / seen,
                "train_error": 1 - (now.correct - before.correct) / seen,
            }
        )
    return now


def _save_mid_epoch(run: Run, totals: Totals) -> None:
    """A checkpoint part-way through the epoch, with its running sums (over every process)."""
    if not math.isfinite(totals.loss_sum):  # never save weights a NaN has reached (a GPU checks every 50 steps)
        raise FloatingPointError(f"the training loss became {totals.loss_sum} by step {totals.steps} of the epoch")
    run.save(run.state.epoch, totals)


def _interrupted(run: Run, signals: StopSignals, saved: str) -> Interrupted:
    """The end of a run a signal stopped (to this process or another), with what was saved."""
    return Interrupted(
        f"{signals.name or 'a signal to another process'}: {saved}; continue with: alexnet train --resume {run.folder}",
        signals.received or signal.SIGTERM,
    )


def _record_epoch(run: Run, tr: engine.EpochResult, ev: dict | None, say) -> None:
    """A finished epoch: the schedule's step, its line of metrics.jsonl, its checkpoint (best.pt
    too when its top-1 is the best yet), TensorBoard and its printed line; then the next epoch."""
    s, epoch = run.state, run.state.epoch
    lr = run.optimizer.param_groups[0]["lr"]
    is_best = ev is not None and (  # a best.pt from the first evaluated epoch, even at 0%
        ev["top1"] > s.best or (run.world.writer and not run.folder.best.exists())
    )
    if ev is not None:
        run.schedule.after_epoch(ev["top1"])
        s.best = max(s.best, ev["top1"])
    validation = {"val_loss": ev["loss"], "val_top1": ev["top1"], "val_top5": ev["top5"]} if ev is not None else {}
    s.metrics = {
        "epoch": epoch,
        "train_loss": tr.loss,
        "train_acc": tr.acc,
        **validation,
        "lr": lr,
        "train_seconds": tr.seconds,
        "val_seconds": ev["seconds"] if ev is not None else 0.0,
        "images_per_second": tr.images_now / tr.seconds if tr.seconds > 0 else 0.0,
    }
    if run.world.writer:
        run.folder.append_metrics(s.metrics)  # before the checkpoint: a resume trims lines it did not keep
    if (epoch + 1) % run.cfg.save_every == 0 or epoch + 1 == run.cfg.epochs or is_best:  # --save-every
        run.save(epoch, None, best=is_best)
    s.epoch, s.totals = epoch + 1, Totals()
    if run.world.writer:
        run.folder.log_epoch(s.metrics)
    say(progress.epoch_line(epoch, run.cfg.epochs, tr, ev, s.metrics["images_per_second"]))


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
