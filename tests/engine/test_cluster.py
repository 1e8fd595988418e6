"""`cluster.run_processes`, the runner of `launch`'s workers and `sweep --jobs`: signals."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from engine.cluster import run_processes

# Stops on SIGINT as a run does: after `delay` seconds (a checkpoint being written) it writes
# the file `done` and exits with 130.
STOPPING = """
import signal, sys, time
delay, done = float(sys.argv[1]), sys.argv[2]
def stop(signum, frame):
    time.sleep(delay)
    open(done, "w").close()
    sys.exit(130)
signal.signal(signal.SIGINT, stop)
print("ready", flush=True)
time.sleep(60)
"""


def test_after_a_signal_the_first_to_stop_leaves_the_others_time_to_finish(
    tmp_path: Path,
) -> None:
    done = [tmp_path / "fast", tmp_path / "slow"]
    commands = [
        [sys.executable, "-c", STOPPING, delay, str(path)]
        for delay, path in zip(("0", "1.5"), done, strict=True)
    ]
    output = io.StringIO()

    def interrupt_when_ready(processes: list[subprocess.Popen[str]]) -> None:
        def send() -> None:
            deadline = time.monotonic() + 60
            while output.getvalue().count("ready") < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            signal.raise_signal(signal.SIGINT)  # As Ctrl-C reaches the parent.

        threading.Thread(target=send, daemon=True).start()

    code = run_processes(commands, "job", output=output, on_start=interrupt_when_ready)
    assert code == 130
    assert output.getvalue() == "[job 0] ready\n[job 1] ready\n" or output.getvalue() == (
        "[job 1] ready\n[job 0] ready\n"
    )
    # The first ended at once; the second, still in its checkpoint, was not cut short.
    assert [path.exists() for path in done] == [True, True]
