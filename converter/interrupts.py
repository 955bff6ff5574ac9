"""SIGTERM handled like Ctrl-C, so that a terminated run removes its temporaries and leaves targets as they were.

``kill PID``, a CI job's timeout and ``docker stop`` send SIGTERM, whose default action ends the process on
the spot; raising ``Terminated`` (a ``KeyboardInterrupt``) instead unwinds every ``with`` block, exactly as
Ctrl-C does. What SIGKILL leaves behind is swept by the next run (``converter.scratch``).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM (handled like Ctrl-C: exit code 130, nothing written)."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the cleanup short
    raise Terminated


def install() -> None:
    """Handle SIGTERM like SIGINT, and ignore SIGXFSZ so a file-size limit fails a write with EFBIG
    instead of killing the process (CPython does that too; an embedding program may not)."""
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread
    signal.signal(signal.SIGTERM, _on_sigterm)
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
