"""Several machines: the cluster in `TF_CONFIG`, and local workers to try one (`launch`).

`--strategy multi-worker` trains with `tf.distribute.MultiWorkerMirroredStrategy`, one
process per machine (a worker), each told the whole cluster and its own place in it by the
environment variable `TF_CONFIG`, for the first of two workers:

    {
        "cluster": {"worker": ["host0:12345", "host1:12345"]},
        "task": {"type": "worker", "index": 0}
    }

Every worker runs the same command; worker 0 is the chief, which writes the run's files.
`launch` starts N such workers on this machine, on free ports of 127.0.0.1, to try a
multi-worker run without a cluster:

    python -m <package> launch --workers N -- train ...

This module imports no TensorFlow: `launch` starts its workers at once.

Template-owned: `copier update` merges template changes into it.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO

from . import PACKAGE

TF_CONFIG = "TF_CONFIG"
# The TF_CONFIG of the first of two workers, as the README shows it.
EXAMPLE = json.dumps(
    {
        "cluster": {"worker": ["host0:12345", "host1:12345"]},
        "task": {"type": "worker", "index": 0},
    }
)
# How long `run_workers` waits for the other workers to stop once one has failed (they may
# be waiting on the failed one in a collective, which never returns), before killing them.
STOP_SECONDS = 10.0
# What `run_workers` returns when its time limit stopped the workers, as `timeout(1)` does.
EXIT_TIMEOUT = 124


class ClusterError(ValueError):
    """`TF_CONFIG` is missing or does not describe a cluster of workers and this worker."""


@dataclasses.dataclass(frozen=True)
class ClusterTask:
    """This worker's place in the cluster, from `TF_CONFIG`.

    Attributes:
        workers: Every worker's `host:port`, worker 0 (the chief) first.
        index: This worker's index in `workers`.
    """

    workers: tuple[str, ...]
    index: int

    @property
    def is_chief(self) -> bool:
        """Whether this worker is the chief, worker 0, which writes the run's files."""
        return self.index == 0


def read_tf_config(environ: Mapping[str, str] | None = None) -> ClusterTask:
    """This worker's place in the cluster, read from `TF_CONFIG` in `environ`.

    Only clusters of `worker`s are understood (worker 0 is the chief): the form that
    `launch` writes and that the README shows for real hosts.

    Raises:
        ClusterError: If `TF_CONFIG` is missing or malformed, naming the fix.
    """
    environ = os.environ if environ is None else environ
    fix = (
        f"run `python -m {PACKAGE} launch --workers N -- train ...` to try it on this "
        f"machine, or set {TF_CONFIG} on each worker, e.g. {EXAMPLE}"
    )
    text = environ.get(TF_CONFIG)
    if not text:
        raise ClusterError(f"--strategy multi-worker needs {TF_CONFIG}, which is not set; {fix}")
    try:
        config = json.loads(text)
        workers = config["cluster"]["worker"]
        task = config["task"]
        kind, index = task["type"], task["index"]
    except (ValueError, KeyError, TypeError) as error:
        raise ClusterError(
            f"{TF_CONFIG} is malformed ({type(error).__name__}: {error}); {fix}"
        ) from None
    if set(config["cluster"]) != {"worker"} or kind != "worker":
        raise ClusterError(
            f"{TF_CONFIG} may only name workers (worker 0 is the chief), "
            f"not {sorted(set(config['cluster']) | {kind})}; {fix}"
        )
    if (
        not isinstance(workers, list)
        or not workers
        or not all(isinstance(worker, str) and ":" in worker for worker in workers)
    ):
        raise ClusterError(f"{TF_CONFIG}'s cluster.worker must list host:port strings; {fix}")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(workers):
        raise ClusterError(
            f"{TF_CONFIG}'s task.index={index!r} is not a worker of its {len(workers)}; {fix}"
        )
    return ClusterTask(tuple(workers), index)


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports of 127.0.0.1 that are free now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def local_tf_configs(workers: int) -> list[str]:
    """The `TF_CONFIG` of each of `workers` workers on this machine, on free ports."""
    hosts = [f"127.0.0.1:{port}" for port in free_ports(workers)]
    tasks = [{"type": "worker", "index": index} for index in range(workers)]
    return [json.dumps({"cluster": {"worker": hosts}, "task": task}) for task in tasks]


def run_workers(
    command: Sequence[str],
    workers: int,
    *,
    output: IO[str] | None = None,
    on_start: Callable[[list[subprocess.Popen[str]]], None] | None = None,
    timeout: float | None = None,
) -> int:
    """Run `command` as `workers` local workers, each with its `TF_CONFIG`; the exit code.

    The workers run as `run_processes` runs them, their lines prefixed with `[worker i]`.

    Args:
        command: The program and its arguments, the same for every worker.
        workers: How many.
        output: Where the workers' prefixed lines go.
        on_start: Called with the workers' processes once they all started.
        timeout: If set, stop every worker after this many seconds.

    Returns:
        The first non-zero exit code of a worker, in the order they ended, or 0;
        `EXIT_TIMEOUT` when the time limit stopped them.
    """
    return run_processes(
        [command] * workers,
        "worker",
        envs=[{TF_CONFIG: tf_config} for tf_config in local_tf_configs(workers)],
        output=output,
        on_start=on_start,
        timeout=timeout,
    )


def run_processes(
    commands: Sequence[Sequence[str]],
    label: str,
    *,
    envs: Sequence[Mapping[str, str]] | None = None,
    output: IO[str] | None = None,
    on_start: Callable[[list[subprocess.Popen[str]]], None] | None = None,
    timeout: float | None = None,
    stop_with_parent: bool = False,
) -> int:
    """Run each of `commands` in a process of its own, side by side; the exit code.

    Each line process `i` prints goes to `output` (standard output by default) prefixed with
    `[<label> i]`. Ctrl-C and SIGTERM are passed on to every process once per signal
    received, so that a first one stops a run after a checkpoint and a second one at once,
    as for one process; the processes run in their own process group, so that Ctrl-C at a
    terminal reaches them only this way. When one fails, the others are stopped (SIGTERM,
    then SIGKILL after `STOP_SECONDS`): they could wait for it forever; after a signal passed
    on, they first get `STOP_SECONDS` to end on their own, with their checkpoints. So are all
    of them stopped when `timeout` seconds have passed.

    Args:
        commands: The program and its arguments of each process.
        label: What a process is, in the prefix of its lines.
        envs: Variables to add to each process's environment.
        output: Where the prefixed lines go.
        on_start: Called with the processes once they all started.
        timeout: If set, stop every process after this many seconds.
        stop_with_parent: Have the kernel send each process SIGTERM if this one dies (on
            Linux; elsewhere, nothing), so that they stop after a checkpoint too.

    Returns:
        The first non-zero exit code of a process, in the order they ended, or 0;
        `EXIT_TIMEOUT` when the time limit stopped them.
    """
    output = sys.stdout if output is None else output
    lock = threading.Lock()
    processes: list[subprocess.Popen[str]] = []
    for index, command in enumerate(commands):
        processes.append(
            subprocess.Popen(
                list(command),
                env={**os.environ, **(envs[index] if envs is not None else {})},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
                preexec_fn=_stop_with_parent if stop_with_parent else None,
            )
        )
    readers = [
        threading.Thread(
            target=_copy_lines, args=(process, f"[{label} {index}] ", output, lock), daemon=True
        )
        for index, process in enumerate(processes)
    ]
    for reader in readers:
        reader.start()

    forwarded: list[int] = []

    def forward(signum: int, frame: object) -> None:
        forwarded.append(signum)
        for process in processes:
            if process.poll() is None:
                process.send_signal(signum)

    in_main = threading.current_thread() is threading.main_thread()
    previous = {}
    if in_main:
        previous = {signum: signal.signal(signum, forward) for signum in _FORWARDED}
    try:
        if on_start is not None:
            on_start(processes)
        deadline = None if timeout is None else time.monotonic() + timeout
        code = _wait(processes, deadline, stopping=lambda: bool(forwarded))
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for reader in readers:
            reader.join()
    return code


def _stop_with_parent() -> None:
    """In a child process: get SIGTERM when the parent dies (`PR_SET_PDEATHSIG`, Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


_FORWARDED = (signal.SIGINT, signal.SIGTERM)


def _wait(
    processes: list[subprocess.Popen[str]], deadline: float | None, stopping: Callable[[], bool]
) -> int:
    """Wait for every process; stop the others when one fails; the first non-zero code.

    Once a signal was passed on (`stopping()`), the others are already stopping after a
    checkpoint: they get `STOP_SECONDS` to end on their own before they are stopped, so that
    the first to end does not cut the others' checkpoints short.
    """
    code = 0
    running = list(processes)
    while running:
        if deadline is not None and time.monotonic() > deadline:
            _stop(running)
            return EXIT_TIMEOUT
        for process in list(running):
            try:
                returncode = process.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                continue
            running.remove(process)
            if returncode != 0 and code == 0:
                code = returncode
                _stop(running, grace=STOP_SECONDS if stopping() else 0.0)
    return code


def _stop(processes: list[subprocess.Popen[str]], grace: float = 0.0) -> None:
    """SIGTERM each process still running after `grace` seconds, then SIGKILL if it lingers."""
    end = time.monotonic() + grace
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.0, end - time.monotonic()))
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()


def _copy_lines(
    process: subprocess.Popen[str], prefix: str, output: IO[str], lock: threading.Lock
) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        with lock:
            output.write(prefix + line)
            output.flush()
