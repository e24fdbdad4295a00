"""Graceful stop on Ctrl-C / SIGTERM: finish the current step, save, exit non-zero."""
from __future__ import annotations

import signal
import threading

from ..errors import BinarynetError


class TrainingInterrupted(BinarynetError):
    """Training stopped on a signal after saving a checkpoint; ``exit_code`` is 128 + signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


class StopRequest:
    """Context manager that turns SIGINT/SIGTERM into a flag checked between training steps.

    A second signal while the first is pending restores the default behaviour (so a user can
    force-quit by pressing Ctrl-C twice). Outside the main thread nothing is installed.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum = 0
        self._previous = {}

    @property
    def requested(self) -> bool:
        """True once a stop signal arrived."""
        return self.signum != 0

    def _handle(self, signum, frame):
        if self.signum:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        return False
