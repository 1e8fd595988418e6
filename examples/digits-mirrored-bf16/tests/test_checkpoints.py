"""Checkpoints: a stopped run resumes bit for bit; bad checkpoints fail in one line."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import linear_model
from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator

from digits_mirrored_bf16 import distribution, interrupts, precision
from digits_mirrored_bf16.__main__ import main
from digits_mirrored_bf16.checkpoints import CheckpointError
from digits_mirrored_bf16.config import Config
from digits_mirrored_bf16.options import RunOptions
from digits_mirrored_bf16.train import fit

PROG = "python -m digits_mirrored_bf16"


class StopAfter(keras.callbacks.Callback):
    """Stops the run after its `calls`-th call of steps in epoch 2: as Ctrl-C, or as a crash."""

    def __init__(self, calls: int, *, crash: bool = False) -> None:
        super().__init__()
        self.calls, self.crash, self.epoch, self.seen = calls, crash, 0, 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch, self.seen = epoch, 0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.seen += 1
        if self.epoch == 1 and self.seen == self.calls:
            if self.crash:
                raise RuntimeError("the machine went away")
            interrupts.request()


def run(logdir: Path, **changes: object) -> RunOptions:
    """Quiet options of a run in `logdir`, with the project's defaults, as `finished_run`."""
    return RunOptions(verbose=0, logdir=logdir, **changes)


def figures(logdir: Path) -> list[dict[str, float]]:
    """Every epoch's line of metrics.jsonl, without the speed (which no two runs share)."""
    lines = (logdir / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    return [{k: v for k, v in row.items() if k != "steps_per_second"} for row in rows]


@pytest.fixture
def uninterrupted(finished_run: Path) -> tuple:
    """Figures and weights of a two-epoch run that nothing stopped."""
    model = keras.saving.load_model(finished_run / "model.keras")
    return figures(finished_run), model.get_weights()


@pytest.mark.parametrize(
    "stop",
    [
        "interrupt",
        # Slow, for the matrix: two more runs each. `pytest -m slow` runs them.
        pytest.param("epoch-end", marks=pytest.mark.slow),
        pytest.param("crash", marks=pytest.mark.slow),
    ],
)
def test_a_stopped_run_resumes_bit_for_bit(
    config: Config, tmp_path: Path, uninterrupted: tuple, stop: str
) -> None:
    if stop == "epoch-end":  # The first epoch's run, then the rest: the epoch's checkpoint.
        fit(dataclasses.replace(config, epochs=1), options=run(tmp_path))
    elif stop == "interrupt":  # Ctrl-C in the middle of epoch 2: a checkpoint there.
        with pytest.raises(interrupts.Interrupted) as stopped:
            fit(config, options=run(tmp_path, steps_per_execution=2), callbacks=[StopAfter(2)])
        interrupts.clear()
        assert (stopped.value.epoch, stopped.value.step) == (1, 4)
        assert stopped.value.checkpoint is not None and stopped.value.checkpoint.parent.is_dir()
    else:  # Killed in epoch 2, the last checkpoint a few steps before: data position too.
        with pytest.raises(RuntimeError, match="went away"):
            fit(
                config,
                options=run(tmp_path, steps_per_execution=3, checkpoint_every_steps=7),
                callbacks=[StopAfter(3, crash=True)],
            )
    resumed = fit(config, options=run(tmp_path, resume=True))

    expected_figures, expected_weights = uninterrupted
    # Restored under a strategy, a metric's running sum is split among the replicas, so the
    # interrupted epoch's figures may differ in their last bit; the weights may not.
    for ours, theirs in zip(figures(tmp_path), expected_figures, strict=True):
        assert ours == pytest.approx(theirs, rel=1e-6, abs=0)
    for ours, theirs in zip(resumed.model.get_weights(), expected_weights, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert (tmp_path / "model.keras").is_file()


def test_step_checkpoints_land_on_their_steps(config: Config, tmp_path: Path) -> None:
    config = dataclasses.replace(config, epochs=1)
    fit(config, options=run(tmp_path, checkpoint_every_steps=4, max_checkpoints=3))
    kept = tf.train.get_checkpoint_state(str(tmp_path / "checkpoints"))
    steps = [
        int(tf.train.load_checkpoint(path).get_tensor("global_step/.ATTRIBUTES/VARIABLE_VALUE"))
        for path in kept.all_model_checkpoint_paths
    ]
    assert len(steps) == 3 and steps == sorted(steps)
    assert all(step % 4 == 0 for step in steps[:-1]), steps  # The last is the epoch's end.


def test_a_resumed_run_repeats_no_epoch_in_its_logs(config: Config, tmp_path: Path) -> None:
    fit(config, options=run(tmp_path))
    # As if killed after epoch 2 was logged but before its checkpoint was written.
    state = tmp_path / "checkpoints" / "checkpoint"
    state.write_text('model_checkpoint_path: "ckpt-1"\nall_model_checkpoint_paths: "ckpt-1"\n')
    fit(config, options=run(tmp_path, resume=True))

    assert [line["epoch"] for line in figures(tmp_path)] == [1, 2]
    events = EventAccumulator(str(tmp_path / "train"))
    events.Reload()
    tag = events.Tags()["tensors"][0]
    assert [event.step for event in events.Tensors(tag)] == [1, 2]


def test_resuming_without_a_checkpoint_fails_in_one_line(
    config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--logdir", str(tmp_path / "none"), "--resume"]) == 2
    assert capsys.readouterr().err == (
        f"{PROG} train: error: --logdir {tmp_path / 'none'} does not exist: no run to resume\n"
    )
    defaults: dict[str, object] = {}  # A run of the default Config and RunOptions.
    (tmp_path / "run.json").write_text(json.dumps({"config": defaults, "options": defaults}))
    with pytest.raises(CheckpointError, match="holds no checkpoint: nothing to resume"):
        fit(config, options=run(tmp_path, resume=True))


def test_a_truncated_checkpoint_fails_in_one_line(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logdir = tmp_path / "run"
    shutil.copytree(finished_run, logdir)
    latest = Path(tf.train.latest_checkpoint(str(logdir / "checkpoints")))
    for data in latest.parent.glob(f"{latest.name}.data-*"):
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])

    assert main(["train", "--epochs", "3", "--quiet", "--logdir", str(logdir), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{PROG} train: error: checkpoint {latest} cannot be read")
    assert len(err.splitlines()) == 1
    assert len(figures(logdir)) == 2  # Nothing was trained or logged.


def test_a_checkpoint_of_another_model_is_refused(config: Config, finished_run: Path) -> None:
    options = run(finished_run, resume=True)
    strategy = distribution.make_strategy(options.strategy)
    scope = contextlib.nullcontext() if strategy is None else strategy.scope()
    with precision.dtype_policy(options.precision), scope:  # Built as the run's model was.
        other = linear_model(config, output_dtype="float32")
    with pytest.raises(CheckpointError, match="does not match this model and run"):
        fit(config, model=other, options=options, strategy=strategy)
    assert len(figures(finished_run)) == 2  # Nothing was trained or logged.


def test_resuming_with_another_config_is_refused(config: Config, finished_run: Path) -> None:
    other = dataclasses.replace(config, batch_size=config.batch_size + 1)
    with pytest.raises(CheckpointError, match=r"another config: batch_size=\d+ \(the run has"):
        fit(other, options=run(finished_run, resume=True))
