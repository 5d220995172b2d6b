"""SIGINT and SIGTERM as terminals and clusters send them: to the main process or to the whole
process group (Ctrl-C, Slurm, Kubernetes, ``kill -- -PGID``), loader workers included.

The main process alone decides. Loader workers ignore both signals (:func:`ignore_in_worker`), so
a signal to the group does not kill them mid-batch and their deaths are never reported as a
crash. While a run is being prepared (data listed, images scanned) a signal stops it at once
(:class:`Stop` is raised from the handler); once it trains, the signal is only noted and the loop
saves a checkpoint at the next step or batch and stops cleanly.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import signal
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stop(Exception):
    """Raised by the handler while the run is being prepared: nothing to save yet."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """While active, SIGINT and SIGTERM raise :class:`Stop` until :meth:`defer` is called, and
    after it only set ``received``. A second SIGINT interrupts at once."""

    def __init__(self):
        self.received: int | None = None
        self.deferred = False
        self._old = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def defer(self) -> None:
        """From now on a signal is only noted: the loop saves and stops at its next step."""
        self.deferred = True

    def _handle(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum
        if not self.deferred:
            raise Stop(signum)

    @property
    def stopping(self) -> bool:
        return self.received is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else ""

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def ignore_in_worker(worker_id: int = 0) -> None:
    """``worker_init_fn`` of every DataLoader: a loader worker leaves SIGINT and SIGTERM to the
    main process, which stops the workers itself (:func:`_end_workers`). A worker forked inside
    :func:`held` starts with both blocked, so none can kill it before this runs."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


@contextlib.contextmanager
def held():
    """Block SIGINT and SIGTERM in this thread while loader workers are forked (``iter(loader)``):
    a child inherits the mask, so a signal to the process group at that instant waits in the new
    worker until :func:`ignore_in_worker` has set it to be ignored. The main process gets its own
    copy of the signal as soon as the block ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


@atexit.register  # runs before multiprocessing's own exit handler (atexit is last-in, first-out)
def _end_workers() -> None:
    """At exit, end the loader workers still alive. A loader that was never shut down (kept alive
    by a traceback, say) leaves them waiting for work; multiprocessing would then send them SIGTERM,
    which they ignore, and wait for them forever. DataLoader workers are daemonic children."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # PyTorch's handler would report these deaths as failures
    for child in multiprocessing.active_children():
        if child.daemon:
            child.kill()
            child.join(timeout=5)
