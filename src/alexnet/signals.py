"""SIGINT and SIGTERM during training: noted, so the loop saves a checkpoint and stops cleanly at the
next step instead of dying mid-write."""

from __future__ import annotations

import signal
import threading


class StopSignals:
    """While active, SIGINT and SIGTERM only set ``received``: the loop saves and stops cleanly.
    A second SIGINT interrupts at once."""

    def __init__(self):
        self.received: int | None = None
        self._old = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else ""

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
