"""Ctrl-C and SIGTERM as requests to stop: the run ends after its current call of steps.

`train.Trainer` asks `requested()` after every call of `steps_per_execution` steps; once a
signal came, it writes a checkpoint and raises `Interrupted`, which says where the run stopped.
`catch_signals()` turns the signals into such requests for the duration of a run; a second
signal ends the process at once, even in the middle of a long call. Either way, what is printed
next starts on a line of its own, not at the end of a progress bar (`line_open`).

Template-owned: `copier update` merges template changes into it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_requested: int | None = None
_open_line: TextIO | None = None


def request(signum: int = signal.SIGINT) -> None:
    """Ask the running loop to stop after its current call, as a signal `signum` would."""
    global _requested
    if _requested is None:
        _requested = signum


def requested() -> int | None:
    """The signal number a stop was requested with, or `None`."""
    return _requested


def clear() -> None:
    """Forget a request, so that the next run starts."""
    global _requested
    _requested = None


def line_open(stream: TextIO | None) -> None:
    """Say that `stream` holds a line still being drawn (a progress bar); `None`: it ended.

    `end_line` ends such a line, so that a message printed next starts on a line of its own.
    """
    global _open_line
    _open_line = stream


def end_line() -> None:
    """End the line that `line_open` said is still being drawn, if there is one."""
    global _open_line
    stream, _open_line = _open_line, None
    if stream is not None:
        stream.write("\n")
        stream.flush()


def describe(signum: int) -> str:
    """`'Ctrl-C (SIGINT)'` or `'SIGTERM'`: how a person knows the signal."""
    name = signal.Signals(signum).name
    return f"Ctrl-C ({name})" if signum == signal.SIGINT else name


class Interrupted(Exception):
    """A run stopped on a request (a signal), after writing a checkpoint when it had a logdir.

    Attributes:
        signum: The signal, e.g. `signal.SIGINT`.
        epoch: The epoch it stopped in, counted from 0.
        step: Steps of that epoch it had run.
        checkpoint: The checkpoint written, or `None` without a logdir.
        exit_code: `128 + signum`, as a shell reports a process ended by that signal.
    """

    def __init__(self, signum: int, epoch: int, step: int, checkpoint: Path | None) -> None:
        self.signum, self.epoch, self.step, self.checkpoint = signum, epoch, step, checkpoint
        self.exit_code = 128 + signum
        where = f"stopped by {describe(signum)} in epoch {epoch + 1} after {step} steps"
        saved = f"; checkpoint: {checkpoint}" if checkpoint is not None else "; no checkpoint"
        super().__init__(where + saved)


@contextlib.contextmanager
def catch_signals(before_exit: Callable[[], None] | None = None) -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM request a stop; a second one exits at once.

    Before that exit, `before_exit()`, if given, runs on a thread of its own while the main
    thread is still in its call (to remove what a run that cannot be resumed wrote, say).

    However the block ends, a line still being drawn (`line_open`) is ended first, so that the
    message saying why the run stopped starts on a line of its own.

    Python runs signal handlers only between calls into TensorFlow, so the first signal is
    noticed when the current call of steps returns. The second must not wait for that: a
    thread watches the signal wake-up descriptor, which the C-level handler writes at once,
    and ends the process with `128 + signum` (without a checkpoint) when a second one comes.
    Outside the main thread (where handlers cannot be set) the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    clear()
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    watcher = threading.Thread(
        target=_exit_on_second_signal, args=(read_fd, before_exit), daemon=True
    )
    previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    previous = {signum: signal.signal(signum, _on_signal) for signum in SIGNALS}
    watcher.start()
    try:
        yield
    finally:
        end_line()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(previous_fd)
        os.close(write_fd)  # The watcher reads end-of-file and returns.
        watcher.join()
        os.close(read_fd)
        clear()


def reclaim_signals() -> None:
    """Within `catch_signals`, make its handlers get the signals again.

    TensorFlow's multi-worker runtime installs a SIGTERM handler of its own, in C, when the
    strategy starts: Python still lists the handler of `catch_signals`, which then never
    runs. Outside `catch_signals`, or outside the main thread, this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in SIGNALS:
        if signal.getsignal(signum) is _on_signal:
            signal.signal(signum, _on_signal)


def _on_signal(signum: int, frame: object) -> None:
    request(signum)


def _exit_on_second_signal(read_fd: int, before_exit: Callable[[], None] | None) -> None:
    seen = 0
    while chunk := os.read(read_fd, 64):
        for signum in chunk:
            if signum not in SIGNALS:
                continue
            seen += 1
            if seen >= 2:
                message = f"interrupted again by {describe(signum)}: exiting at once\n"
                if _open_line is not None:
                    message = "\n" + message
                os.write(2, message.encode())
                if before_exit is not None:
                    with contextlib.suppress(Exception):
                        before_exit()
                os._exit(128 + signum)
