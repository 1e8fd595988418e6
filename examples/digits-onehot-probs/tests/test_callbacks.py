"""Stock Keras callbacks work on the loop as on `model.fit`, with every optimizer; the defaults."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
import signal
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from digits_onehot_probs import PROJECT
from digits_onehot_probs.config import Config, RunOptions
from digits_onehot_probs.data import load_datasets
from digits_onehot_probs.engine import interrupts
from digits_onehot_probs.engine.callbacks import ProgressLogger
from digits_onehot_probs.engine.train import Trainer
from digits_onehot_probs.model import build_model
from digits_onehot_probs.task import Task

# 6 batches: calls of 4 and 2 steps; one device in float32, whatever the project's defaults.
QUIET = RunOptions(verbose=0, steps_per_execution=4, strategy="none", precision="float32")
MONITOR = "val_loss"


def _data(config: Config) -> tuple[tf.data.Dataset, tf.data.Dataset | None]:
    """Six training batches, and two validation batches where the project has validation."""
    train_ds, val_ds = load_datasets(config)
    return train_ds.take(6), None if val_ds is None else val_ds.take(2)


def _fit(
    config: Config, callbacks: list[keras.callbacks.Callback], options: RunOptions = QUIET
) -> tuple[Trainer, keras.callbacks.History]:
    keras.utils.set_random_seed(config.seed)
    trainer = Trainer(PROJECT, config, build_model(config), options)
    return trainer, trainer.fit(*_data(config), callbacks=callbacks)


def _rates(history: keras.callbacks.History) -> dict[str, list[float]]:
    return {k: v for k, v in history.history.items() if k.endswith("learning_rate")}


def test_early_stopping_stops_and_restores_the_best_weights(config: Config) -> None:
    config = dataclasses.replace(config, epochs=4)
    weights: list[list[np.ndarray]] = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: weights.append(trainer.model.get_weights())
    )
    # No later epoch can beat the first by 1e9: the run stops after `patience` more epochs.
    stop = keras.callbacks.EarlyStopping(
        monitor=MONITOR, mode="min", patience=1, min_delta=1e9, restore_best_weights=True
    )
    keras.utils.set_random_seed(config.seed)
    trainer = Trainer(PROJECT, config, build_model(config), QUIET)

    history = trainer.fit(*_data(config), callbacks=[record, stop])

    assert history.epoch == [0, 1]
    assert stop.stopped_epoch == 1
    assert any(not np.array_equal(a, b) for a, b in zip(weights[0], weights[1], strict=True))
    for restored, best in zip(trainer.model.get_weights(), weights[0], strict=True):
        np.testing.assert_array_equal(restored, best)


def test_reduce_lr_on_plateau_scales_every_optimizer(config: Config) -> None:
    config = dataclasses.replace(config, epochs=3)
    reduce = keras.callbacks.ReduceLROnPlateau(
        monitor=MONITOR, mode="min", factor=0.5, patience=0, min_delta=1e9
    )
    keras.utils.set_random_seed(config.seed)
    trainer = Trainer(PROJECT, config, build_model(config), QUIET)
    optimizers = trainer.task.optimizers.by_part
    bases = {name: float(optimizer.learning_rate) for name, optimizer in optimizers.items()}

    history = trainer.fit(*_data(config), callbacks=[reduce])

    assert _rates(history)
    for key, values in _rates(history).items():
        # Each epoch logs the rate it trained with; after the first, every epoch halves it.
        assert values == pytest.approx([values[0], values[0], values[0] / 2]), key
    for name, optimizer in optimizers.items():
        assert float(optimizer.learning_rate) == pytest.approx(bases[name] / 4), name


def test_learning_rate_scheduler_sets_every_optimizer(config: Config) -> None:
    config = dataclasses.replace(config, epochs=3)
    keras.utils.set_random_seed(config.seed)
    trainer = Trainer(PROJECT, config, build_model(config), QUIET)
    first = trainer.task.optimizers.learning_rate
    bases = {name: float(o.learning_rate) for name, o in trainer.task.optimizers.by_part.items()}
    schedule = keras.callbacks.LearningRateScheduler(lambda epoch, rate: first * 0.1**epoch)

    history = trainer.fit(*_data(config), callbacks=[schedule])

    for name, base in bases.items():
        key = f"{name}_learning_rate" if len(bases) > 1 else "learning_rate"
        assert history.history[key] == pytest.approx([base, base * 0.1, base * 0.01], rel=1e-5)


def test_csv_logger_writes_the_epoch_logs(config: Config, tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    _, history = _fit(config, [keras.callbacks.CSVLogger(str(path))])

    with path.open() as stream:
        rows = list(csv.DictReader(stream))
    assert [int(row["epoch"]) for row in rows] == history.epoch
    for key, values in history.history.items():
        assert [float(row[key]) for row in rows] == pytest.approx(values), key


def test_batch_hooks_fire_once_per_call_of_k_steps(config: Config) -> None:
    calls: list[tuple[str, int]] = []
    hooks = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: calls.append(("epoch_begin", epoch)),
        on_train_batch_begin=lambda batch, logs: calls.append(("begin", batch)),
        on_train_batch_end=lambda batch, logs: calls.append(("end", batch)),
        on_epoch_end=lambda epoch, logs: calls.append(("epoch_end", epoch)),
    )
    _fit(config, [hooks])

    one_epoch = [("begin", 0), ("end", 3), ("begin", 4), ("end", 5)]
    assert calls == [
        ("epoch_begin", 0),
        *one_epoch,
        ("epoch_end", 0),
        ("epoch_begin", 1),
        *one_epoch,
        ("epoch_end", 1),
    ]


def test_stop_training_ends_the_run_after_the_current_call(config: Config) -> None:
    class StopAfterFirstCall(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            self.model.stop_training = True

    trainer, history = _fit(config, [StopAfterFirstCall()])

    assert history.epoch == [0]
    assert int(trainer.global_step) == QUIET.steps_per_execution


def test_a_subclass_sees_the_params_the_model_and_its_optimizers(config: Config) -> None:
    class Spy(keras.callbacks.Callback):
        def on_train_begin(self, logs: dict | None = None) -> None:
            self.seen = (dict(self.params), self.model, self.model.optimizer.learning_rate)

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs["spied"] = float(epoch)  # Later callbacks and History see what this adds.

    spy = Spy()
    trainer, history = _fit(config, [spy])

    params, model, rate = spy.seen
    assert params["epochs"] == config.epochs
    assert params["steps"] in (6, None)  # None where the number of batches is not known.
    assert model is trainer.model
    assert rate == pytest.approx(trainer.task.optimizers.learning_rate)
    assert history.history["spied"] == [0.0, 1.0]
    assert trainer.model.optimizer is not trainer.task.optimizers  # Only during the run.


def test_the_task_s_callbacks_run_after_yours_and_before_the_defaults(
    config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    order: list[str] = []

    class Mark(keras.callbacks.Callback):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.mark = name

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            order.append(self.mark)
            logs[self.mark] = float(epoch)  # The defaults after it see what it adds.

    task = Task
    own = task.callbacks
    monkeypatch.setattr(task, "callbacks", lambda self, chief: [*own(self, chief), Mark("task")])
    _, history = _fit(config, [Mark("yours")], dataclasses.replace(QUIET, logdir=tmp_path))

    assert order == ["yours", "task"] * config.epochs
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(row["yours"], row["task"]) for row in rows] == [(0.0, 0.0), (1.0, 1.0)]
    assert history.history["task"] == [0.0, 1.0]


def _events(directory: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar (and image, as NaN) in the event files of `directory`, by tag."""
    found: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(directory.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "images":
                    number = float("nan")
                else:
                    number = float(tf.make_ndarray(value.tensor))
                found.setdefault(value.tag, []).append((event.step, number))
    return found


def test_tensorboard_events_hold_every_epoch_figure(config: Config, tmp_path: Path) -> None:
    options = dataclasses.replace(QUIET, logdir=tmp_path)
    _, history = _fit(config, [], options)

    train = _events(tmp_path / "train")
    for key, values in history.history.items():
        if key.startswith("val_"):
            continue
        assert [step for step, _ in train[key]] == [1, 2], key
        assert [value for _, value in train[key]] == pytest.approx(values, rel=1e-6), key
    validation = _events(tmp_path / "validation")
    assert set(validation) == {key[4:] for key in history.history if key.startswith("val_")}
    for tag, values in validation.items():
        assert [v for _, v in values] == pytest.approx(history.history[f"val_{tag}"], rel=1e-6)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_and_lines_otherwise(
    config: Config, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    _fit(config, [], dataclasses.replace(QUIET, verbose=1))
    monkeypatch.undo()
    shown = re.sub(r"\x1b\[[0-9;]*m", "", terminal.getvalue())  # Without colours.
    assert "Epoch 1/2" in shown
    assert re.search(r"6/6 .*steps/s", shown), shown
    assert "epoch 1/2 |" not in shown

    _fit(config, [], dataclasses.replace(QUIET, verbose=1))  # Captured: not a terminal.
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" | ")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]


def test_the_bar_shows_running_figures_as_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    # The logs hold running results already: averaging them again would show 3.0, not 5.0.
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    logger = ProgressLogger(verbose=1)
    logger.set_params({"epochs": 1, "steps": 4, "verbose": 1})
    logger.on_epoch_begin(0)
    for batch, loss in enumerate([1.0, 3.0, 5.0]):
        time.sleep(0.06)  # The bar redraws at most every 0.05 s.
        logger.on_train_batch_end(batch, {"loss": loss})
    monkeypatch.undo()
    shown = re.findall(r"loss: (\d+\.\d+)", terminal.getvalue())
    assert shown[-1] == "5.0000", shown


def _shown(terminal: io.StringIO) -> list[str]:
    """The lines a terminal shows: each line's text after its last carriage return."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", terminal.getvalue())  # Without colours.
    return [line.split("\r")[-1] for line in text.split("\n")]


def test_the_bar_is_one_line_per_epoch_on_a_terminal() -> None:
    terminal = _Terminal()
    logger = ProgressLogger(verbose=1, stream=terminal)
    logger.set_params({"epochs": 2, "steps": 6, "verbose": 1})
    for epoch in range(2):
        logger.on_epoch_begin(epoch)
        for batch in (3, 5):  # Calls of 4 and 2 steps: the second runs the epoch's last step.
            logger.on_train_batch_end(batch, {"loss": 0.5})
        logger.on_epoch_end(epoch, {"loss": 0.5, "val_loss": 0.25, "steps_per_second": 9.0})
    *lines, rest = _shown(terminal)
    assert rest == "", "the last bar ends its line"
    assert len(lines) == 4, lines  # Per epoch: its header, then its bar.
    assert lines[0] == "Epoch 1/2" and lines[2] == "Epoch 2/2"
    for bar in lines[1], lines[3]:
        assert bar.startswith("6/6 ") and "val_loss: 0.2500" in bar, bar


def test_a_run_stopped_mid_epoch_ends_the_bar_before_its_message() -> None:
    terminal = _Terminal()
    logger = ProgressLogger(verbose=1, stream=terminal)
    logger.set_params({"epochs": 2, "steps": 6, "verbose": 1})
    with pytest.raises(interrupts.Interrupted), interrupts.catch_signals():
        logger.on_epoch_begin(0)
        logger.on_train_batch_end(3, {"loss": 0.5})
        raise interrupts.Interrupted(signal.SIGINT, 0, 4, None)
    *lines, rest = _shown(terminal)
    assert rest == "", "the message that follows must start on a line of its own"
    assert lines[-1].startswith("4/6 "), lines

    # An epoch that ended ended its bar too: no empty line after it.
    terminal = _Terminal()
    logger = ProgressLogger(verbose=1, stream=terminal)
    logger.set_params({"epochs": 2, "steps": 6, "verbose": 1})
    with pytest.raises(interrupts.Interrupted), interrupts.catch_signals():
        logger.on_epoch_begin(0)
        logger.on_train_batch_end(5, {"loss": 0.5})
        logger.on_epoch_end(0, {"loss": 0.5, "steps_per_second": 9.0})
        raise interrupts.Interrupted(signal.SIGINT, 1, 0, None)
    *lines, rest = _shown(terminal)
    assert rest == "" and lines[-1].startswith("6/6 "), lines
