"""Checkpoints: a run stopped mid-epoch, at an epoch's end or by a crash resumes bit for bit."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import keras
import numpy as np
import pytest

from digits_sparse import PROJECT
from digits_sparse.config import Config, RunOptions
from digits_sparse.engine import interrupts
from digits_sparse.engine.train import fit


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
        fit(PROJECT, dataclasses.replace(config, epochs=1), options=run(tmp_path))
    elif stop == "interrupt":  # Ctrl-C in the middle of epoch 2: a checkpoint there.
        with pytest.raises(interrupts.Interrupted) as stopped:
            fit(
                PROJECT,
                config,
                options=run(tmp_path, steps_per_execution=2),
                callbacks=[StopAfter(2)],
            )
        interrupts.clear()
        assert (stopped.value.epoch, stopped.value.step) == (1, 4)
        assert stopped.value.checkpoint is not None and stopped.value.checkpoint.parent.is_dir()
    else:  # Killed in epoch 2, the last checkpoint a few steps before: data position too.
        with pytest.raises(RuntimeError, match="went away"):
            fit(
                PROJECT,
                config,
                options=run(tmp_path, steps_per_execution=3, checkpoint_every_steps=7),
                callbacks=[StopAfter(3, crash=True)],
            )
    resumed = fit(PROJECT, config, options=run(tmp_path, resume=True))

    expected_figures, expected_weights = uninterrupted
    assert figures(tmp_path) == expected_figures
    for ours, theirs in zip(resumed.model.get_weights(), expected_weights, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert (tmp_path / "model.keras").is_file()
