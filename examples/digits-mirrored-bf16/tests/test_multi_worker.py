"""Several workers: `TF_CONFIG`, `launch`, and multi-worker runs of local processes.

The runs are slow (each starts two TensorFlow processes): `pytest -m slow` runs them.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from digits_mirrored_bf16.__main__ import main
from digits_mirrored_bf16.config import RunOptions
from digits_mirrored_bf16.engine.cluster import (
    EXIT_TIMEOUT,
    ClusterError,
    local_tf_configs,
    read_tf_config,
    run_workers,
)


def test_each_worker_reads_its_place_in_the_cluster() -> None:
    """`launch`'s TF_CONFIGs name the same workers on distinct ports; worker 0 is the chief."""
    tasks = [read_tf_config({"TF_CONFIG": text}) for text in local_tf_configs(3)]
    assert [task.index for task in tasks] == [0, 1, 2]
    assert [task.is_chief for task in tasks] == [True, False, False]
    assert len({task.workers for task in tasks}) == 1
    assert len(set(tasks[0].workers)) == 3


ONE_WORKER = {"worker": ["a:1"]}
WORKER_0, WORKER_1 = ({"type": "worker", "index": index} for index in (0, 1))


@pytest.mark.parametrize(
    ("tf_config", "problem"),
    [
        (None, "which is not set"),
        ("{not json", "malformed"),
        (json.dumps({"cluster": ONE_WORKER}), "malformed"),
        (json.dumps({"cluster": ONE_WORKER, "task": WORKER_1}), "index=1"),
        (json.dumps({"cluster": {"worker": ["a"]}, "task": WORKER_0}), "host:port"),
        (
            json.dumps(
                {
                    "cluster": {"chief": ["a:1"], "worker": ["b:1"]},
                    "task": {"type": "chief", "index": 0},
                }
            ),
            "only name workers",
        ),
    ],
)
def test_a_bad_tf_config_is_one_error_naming_the_fix(tf_config: str | None, problem: str) -> None:
    environ = {} if tf_config is None else {"TF_CONFIG": tf_config}
    with pytest.raises(ClusterError, match=problem) as error:
        read_tf_config(environ)
    assert "launch --workers N" in str(error.value)
    assert "\n" not in str(error.value)


def test_multi_worker_without_tf_config_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TF_CONFIG", raising=False)
    logdir = tmp_path / "run"
    assert main(["train", "--strategy", "multi-worker", "--logdir", str(logdir)]) == 2
    out, err = capsys.readouterr()
    assert "TF_CONFIG" in err and "launch" in err and err.count("\n") == 1
    assert out == ""  # Refused before TensorFlow starts, and before the run's first line.
    assert not logdir.exists()


def test_cpu_devices_are_refused_with_multi_worker() -> None:
    with pytest.raises(ValueError, match="drop cpu_devices"):
        RunOptions(strategy="multi-worker", cpu_devices=2)


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["--", "evaluate", "runs/x"], "give the train command"),
        ([], "give the train command"),
        (["--", "train", "--strategy", "mirrored"], "not mirrored"),
        (["--", "train", "--strategy=none"], "not none"),
        (["--", "train", "--cpu-devices", "2"], "--cpu-devices cannot run"),
    ],
)
def test_launch_refuses_what_it_cannot_run(
    argv: list[str], problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["launch", "--workers", "2", *argv]) == 2
    err = capsys.readouterr().err
    assert problem in err and err.count("\n") == 1


@pytest.mark.parametrize("workers", ["0", "two"])
def test_launch_needs_a_positive_number_of_workers(
    workers: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["launch", "--workers", workers, "--", "train"])
    assert exit_info.value.code == 2
    assert "expected a positive integer" in capsys.readouterr().err


def test_a_failing_worker_stops_the_others_and_sets_the_exit_code() -> None:
    """Worker 1 fails at once; worker 0, which would wait a minute, is stopped."""
    program = (
        "import json, os, sys, time\n"
        "index = json.loads(os.environ['TF_CONFIG'])['task']['index']\n"
        "print('started', flush=True)\n"
        "sys.exit(3) if index == 1 else time.sleep(60)\n"
    )
    output = io.StringIO()
    start = time.monotonic()
    assert run_workers([sys.executable, "-c", program], 2, output=output) == 3
    assert time.monotonic() - start < 30
    assert sorted(output.getvalue().splitlines()) == ["[worker 0] started", "[worker 1] started"]


def test_workers_past_the_time_limit_are_stopped() -> None:
    program = "import time; time.sleep(60)"
    start = time.monotonic()
    assert run_workers([sys.executable, "-c", program], 2, timeout=1) == EXIT_TIMEOUT
    assert time.monotonic() - start < 30


TESTS = Path(__file__).resolve().parent
# Seconds a multi-worker run of these tests may take before its workers are stopped: a
# collective that never completes would otherwise hang the suite.
LIMIT = 240
SRC = TESTS.parent / "src"
# A worker of `test_two_workers_train_exactly_as_one_process`: the model and batches of
# `test_distribute.py`, trained under MultiWorkerMirroredStrategy; its weights go to a file.
WORKER = """
import sys

import numpy as np
import tensorflow as tf
from test_distribute import small_config, train

from digits_mirrored_bf16.config import Config

strategy = tf.distribute.MultiWorkerMirroredStrategy()
_, _, weights = train(small_config(Config()), strategy)
np.savez(f"{sys.argv[1]}/worker{strategy.cluster_resolver.task_id}.npz", *weights)
"""


@pytest.mark.slow
def test_two_workers_train_exactly_as_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two local workers end with the same weights, equal to one process's on one device.

    The same global batches, from the same initial weights: each worker reads every batch
    and its replica takes its rows.
    """
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    monkeypatch.setenv("PYTHONPATH", f"{SRC}:{TESTS}")
    output = io.StringIO()
    command = [sys.executable, str(script), str(tmp_path)]
    code = run_workers(command, 2, output=output, timeout=LIMIT)
    assert code == 0, output.getvalue()
    first, second = (np.load(tmp_path / f"worker{index}.npz") for index in (0, 1))
    for name in first.files:
        np.testing.assert_array_equal(first[name], second[name])
    from test_distribute import small_config, train

    from digits_mirrored_bf16.config import Config

    _, _, one_process = train(small_config(Config()), None)
    for name, weights in zip(first.files, one_process, strict=True):
        np.testing.assert_allclose(first[name], weights, atol=1e-5)


@pytest.mark.slow
def test_a_preempted_multi_worker_run_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM to one worker: every worker saves one checkpoint and stops; a restart resumes.

    Worker 1 gets the signal after the first epoch; the cluster stops in epoch 2 or 3 with
    exit code 143, and `--resume` finishes the run, every epoch's line written once, by
    the chief only.
    """
    monkeypatch.setenv("PYTHONPATH", str(SRC))
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    logdir = tmp_path / "run"
    epochs = 6
    command = [sys.executable, "-m", "digits_mirrored_bf16", "train"]
    command += ["--strategy", "multi-worker", "--epochs", str(epochs), "--logdir", str(logdir)]
    command += ["--steps-per-execution", "1"]
    metrics = logdir / "metrics.jsonl"

    def preempt_worker_1(processes: list[subprocess.Popen[str]]) -> None:
        def wait_and_signal() -> None:
            while not metrics.exists() or not metrics.read_text().strip():
                if any(process.poll() is not None for process in processes):
                    return
                time.sleep(0.05)
            processes[1].send_signal(signal.SIGTERM)

        threading.Thread(target=wait_and_signal, daemon=True).start()

    output = io.StringIO()
    code = run_workers(command, 2, output=output, on_start=preempt_worker_1, timeout=LIMIT)
    assert code == 128 + signal.SIGTERM, output.getvalue()
    stopped = output.getvalue()
    assert stopped.count("stopped by SIGTERM in epoch") == 2, stopped
    assert "launch --workers 2 -- train --logdir" in stopped  # How to resume.
    assert 1 <= len(metrics.read_text().splitlines()) < epochs
    assert not (logdir / "model.keras").exists()

    output = io.StringIO()
    code = run_workers([*command, "--resume"], 2, output=output, timeout=LIMIT)
    assert code == 0, output.getvalue()
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [row["epoch"] for row in rows] == list(range(1, epochs + 1))
    assert (logdir / "model.keras").exists()
    assert "[worker 1] epoch" not in output.getvalue()
