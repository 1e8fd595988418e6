"""Ctrl-C, SIGTERM and SIGKILL on a real training process: it resumes as if never stopped.

Slow (each test starts processes): `pytest -m slow` runs them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PROG = "python -m digits_gan"
pytestmark = pytest.mark.slow


def start(logdir: Path, *argv: str) -> subprocess.Popen[str]:
    """`train` in a process of its own, for three epochs, one step per call."""
    # Without TF_CPP_MIN_LOG_LEVEL, the command silences TensorFlow's start-up messages.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(SRC)
    command = [sys.executable, "-m", "digits_gan", "train", "--epochs", "3"]
    command += ["--logdir", str(logdir), "--steps-per-execution", "1", *argv]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=300)
    return process.returncode, out, err


def stop_in_epoch_two(process: subprocess.Popen[str], signum: int, delay: float = 0.0) -> None:
    """Send `signum` `delay` seconds after the first epoch's line: early in the second."""
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("epoch 1/3"):
            break
    time.sleep(delay)
    process.send_signal(signum)


def figures(logdir: Path) -> list[dict[str, float]]:
    lines = (logdir / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    return [{k: v for k, v in row.items() if k != "steps_per_second"} for row in rows]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    logdir = tmp_path_factory.mktemp("uninterrupted") / "run"
    code, _, err = finish(start(logdir))
    assert code == 0, err
    return logdir


def assert_same_run(logdir: Path, expected: Path) -> None:
    # As the commands load it: the package's own model classes registered with Keras.
    from digits_gan import PROJECT
    from digits_gan.engine.trained import load_run

    assert figures(logdir) == figures(expected)
    ours = load_run(PROJECT, logdir)[1].get_weights()
    theirs = load_run(PROJECT, expected)[1].get_weights()
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("signum", "name"), [(signal.SIGINT, "Ctrl-C (SIGINT)"), (signal.SIGTERM, "SIGTERM")]
)
def test_a_signal_stops_the_run_with_a_checkpoint_and_the_command_to_resume(
    tmp_path: Path, uninterrupted: Path, signum: int, name: str
) -> None:
    logdir = tmp_path / "run"
    process = start(logdir)
    stop_in_epoch_two(process, signum)
    code, _, err = finish(process)

    assert code == 128 + signum, err
    (line,) = err.splitlines()
    assert line.startswith(f"{PROG} train: stopped by {name} in epoch 2 after ")
    assert line.endswith(f"; resume with: {PROG} train --logdir {logdir} --resume")
    assert not (logdir / "model.keras").exists()

    code, _, err = finish(start(logdir, "--resume"))
    assert code == 0, err
    assert_same_run(logdir, uninterrupted)


def test_a_killed_run_loses_only_what_came_after_its_last_checkpoint(
    tmp_path: Path, uninterrupted: Path
) -> None:
    logdir = tmp_path / "run"
    process = start(logdir, "--checkpoint-every-steps", "5")
    stop_in_epoch_two(process, signal.SIGKILL, delay=0.1)
    code, _, _ = finish(process)
    assert code == -signal.SIGKILL

    code, _, err = finish(start(logdir, "--resume"))
    assert code == 0, err
    assert_same_run(logdir, uninterrupted)


def test_a_run_is_its_directory_s_one_writer_until_it_dies(tmp_path: Path) -> None:
    logdir = tmp_path / "run"
    process = start(logdir, "--epochs", "1000")  # It runs until it is killed.
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("epoch 1/"):
            break
    code, _, err = finish(start(logdir, "--resume"))
    assert (code, err) == (
        2,
        f"{PROG} train: error: --logdir {logdir} is in use by another train command; wait for "
        "it to end, or choose another directory\n",
    )

    process.kill()  # SIGKILL: the lock goes with the process.
    assert finish(process)[0] == -signal.SIGKILL
    epochs = len(figures(logdir)) + 1
    code, _, err = finish(start(logdir, "--resume", "--epochs", str(epochs)))
    assert code == 0, err
    assert [line["epoch"] for line in figures(logdir)] == list(range(1, epochs + 1))


def test_a_second_signal_exits_at_once_even_inside_a_long_call(tmp_path: Path) -> None:
    # The main thread blocks in a call that a signal does not end (a read that is retried),
    # as it would in a long call of steps.
    code = (
        "import os\n"
        "from digits_gan.engine import interrupts\n"
        "read_end, _ = os.pipe()\n"
        "with interrupts.catch_signals():\n"
        "    print('ready', flush=True)\n"
        "    os.read(read_end, 1)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None and process.stdout.readline() == "ready\n"
    process.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert process.poll() is None, "the first Ctrl-C only asks the run to stop"
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=10)
    assert process.returncode == 130
    assert err == "interrupted again by Ctrl-C (SIGINT): exiting at once\n"


def test_a_second_signal_before_the_first_checkpoint_leaves_nothing(tmp_path: Path) -> None:
    logdir = tmp_path / "run"
    # Epoch 1 waits for a batch that never comes, as a slow read would, in a new run.
    code = (
        "import os, sys\n"
        "import tensorflow as tf\n"
        "from digits_gan import data\n"
        "from digits_gan.__main__ import main\n"
        "load, calls = data.load_datasets, [0]\n"
        "def generated(config):\n"
        "    train_ds, val_ds = load(config)\n"
        "    def batches():\n"
        "        calls[0] += 1\n"
        "        if calls[0] == 2:\n"
        "            print('ready', flush=True)\n"
        "            os.read(os.pipe()[0], 1)\n"
        "        yield from train_ds\n"
        "    spec = train_ds.element_spec\n"
        "    return tf.data.Dataset.from_generator(batches, output_signature=spec), val_ds\n"
        "data.load_datasets = generated\n"
        f"sys.exit(main(['train', '--quiet', '--logdir', {str(logdir)!r}]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC), "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None and process.stdout.readline() == "ready\n"
    assert (logdir / "run.json").exists()
    while process.poll() is None:  # Two signals sent at once may arrive as one.
        process.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=0.2)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert err.endswith("interrupted again by Ctrl-C (SIGINT): exiting at once\n")
    assert not logdir.exists()
