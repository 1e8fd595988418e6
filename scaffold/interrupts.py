"""Ctrl-C that is never lost: seen where Python would swallow it, held back where cleanup must
finish.

Python raises KeyboardInterrupt wherever the main thread is when SIGINT arrives. Raised inside a
finalizer (a `__del__`, a weakref callback) it is printed and ignored, so a command could end
with exit code 0 after a Ctrl-C; raised inside cleanup (removing a temporary directory), it
leaves the rest of the directory behind.

Both context managers do nothing outside the main thread, or where SIGINT is not Python's to
handle (ignored, as in a background job, or left to the operating system).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any


def _python_handler() -> Callable[[int, FrameType | None], Any] | None:
    """SIGINT's Python-level handler, when this thread may replace it; else None."""
    if threading.current_thread() is not threading.main_thread():
        return None
    handler = signal.getsignal(signal.SIGINT)
    return handler if callable(handler) else None


@contextmanager
def watched() -> Iterator[Callable[[], bool]]:
    """Within the block, Ctrl-C raises KeyboardInterrupt as before and is also recorded.

    Yields:
        A function that says whether Ctrl-C was pressed since the block began, even if the
        KeyboardInterrupt was swallowed where it was raised.
    """
    previous = _python_handler()
    pressed: list[int] = []
    if previous is None:
        yield lambda: False
        return

    def record(signum: int, frame: FrameType | None) -> None:
        pressed.append(signum)
        previous(signum, frame)

    signal.signal(signal.SIGINT, record)
    try:
        yield lambda: bool(pressed)
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def held() -> Iterator[None]:
    """Hold Ctrl-C back while the block runs; raise it (KeyboardInterrupt) when the block ends.

    For cleanup that must not stop halfway and for a step and the record of it (a directory
    made and its name kept), which must not be parted.
    """
    previous = _python_handler()
    if previous is None:
        yield
        return
    pressed: list[tuple[int, FrameType | None]] = []
    signal.signal(signal.SIGINT, lambda signum, frame: pressed.append((signum, frame)))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if pressed:
            previous(*pressed[0])
