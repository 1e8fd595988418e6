"""The loop: metric resets, history, logs and the command line."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import dataset, features, labels_for, linear_model

from digits_backbone_head.__main__ import main
from digits_backbone_head.config import Config
from digits_backbone_head.data import load_datasets
from digits_backbone_head.model import build_model
from digits_backbone_head.train import Trainer, fit

LINE = re.compile(
    r"epoch (\d+)/(\d+) \| train_loss \d+\.\d{4} \| train_acc \d\.\d{4} "
    r"\| val_loss \d+\.\d{4} \| val_acc \d\.\d{4} \| \d+ steps/s"
)
KEYS = {"epoch", "train_loss", "train_acc", "val_loss", "val_acc"}


def test_metrics_are_reset_every_epoch_and_every_evaluation(config: Config) -> None:
    # With a vanishing learning rate the predictions stay put: epoch 1 sees only wrong labels
    # (accuracy 0), epoch 2 only right ones (accuracy 1). Without a reset epoch 2 would read 0.5.
    config = dataclasses.replace(config, learning_rate=1e-12, backbone_learning_rate=1e-12)
    model = linear_model(config)
    x = features(config, 64)
    wrong = dataset(x, labels_for(model, x, config, agree=False), 16)
    right = dataset(x, labels_for(model, x, config, agree=True), 16)
    trainer = Trainer(config, model)

    assert trainer.train_epoch(wrong)[0]["train_acc"] == 0.0
    assert trainer.train_epoch(right)[0]["train_acc"] == 1.0
    assert trainer.evaluate(wrong)["val_acc"] == 0.0
    assert trainer.evaluate(right)["val_acc"] == 1.0
    assert trainer.evaluate(right)["val_loss"] == pytest.approx(
        Trainer(config, model).evaluate(right)["val_loss"]
    )


@pytest.mark.parametrize("steps_per_execution", [1, 3, 64])
def test_every_batch_runs_exactly_once_per_epoch(config: Config, steps_per_execution: int) -> None:
    config = dataclasses.replace(config, steps_per_execution=steps_per_execution)
    model = linear_model(config)
    x = features(config, 100)
    data = dataset(x, labels_for(model, x, config, agree=True), 16)  # 7 batches, the last of 4
    trainer = Trainer(config, model)

    for _ in range(2):
        _, steps = trainer.train_epoch(data)
        assert steps == 7
        # The loss metric is weighted by batch size, so its count is the examples it saw.
        assert float(trainer.train_metrics.loss.count) == 100.0
    trainer.evaluate(data)
    assert float(trainer.val_metrics.loss.count) == 100.0


def test_steps_per_execution_changes_no_figure(config: Config) -> None:
    runs = []
    for steps_per_execution in (1, 5, config.steps_per_execution):
        keras.utils.set_random_seed(config.seed)
        model = build_model(config)
        run_config = dataclasses.replace(config, steps_per_execution=steps_per_execution)
        history = fit(run_config, model=model, verbose=False)
        runs.append(([list(logs.values()) for logs in history], model.get_weights()))
    (history, weights), *others = runs
    for other_history, other_weights in others:
        np.testing.assert_allclose(other_history, history, rtol=1e-6)
        for ours, theirs in zip(other_weights, weights, strict=True):
            np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_xla_keeps_batch_shapes_and_so_compiles_bounded(config: Config) -> None:
    config = dataclasses.replace(config, jit_compile=True, epochs=1)
    train_ds, val_ds = load_datasets(config)
    # One static training batch shape: XLA compiles the train step once.
    assert train_ds.element_spec[0].shape[0] == config.batch_size
    assert {int(x.shape[0]) for x, _ in train_ds} == {config.batch_size}
    # Evaluation keeps every example: a full and a last batch, so at most two compiles.
    assert len({int(x.shape[0]) for x, _ in val_ds}) <= 2
    trainer = Trainer(config, build_model(config))

    (logs,) = trainer.fit(train_ds, val_ds, verbose=False)

    assert trainer.train_step.experimental_get_tracing_count() == 1
    assert np.isfinite(list(logs.values())).all()


def test_fit_returns_logs_and_writes_them(
    config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    history = fit(config, logdir=tmp_path)

    assert [logs["epoch"] for logs in history] == [1, 2]
    assert all(set(logs) == KEYS for logs in history)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == history
    printed = capsys.readouterr().out.splitlines()
    assert [LINE.fullmatch(line).groups() for line in printed] == [("1", "2"), ("2", "2")]


def test_fit_repeats_exactly_with_the_same_seed(config: Config) -> None:
    config = dataclasses.replace(config, epochs=1)
    assert fit(config, verbose=False) == fit(config, verbose=False)


@pytest.mark.parametrize("eager", [False, True])
def test_command_line_trains_and_appends_metrics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], eager: bool
) -> None:
    argv = ["train", "--epochs", "1", "--batch-size", "64", "--logdir", str(tmp_path)]
    assert main([*argv, "--eager"] if eager else argv) == 0
    assert main(argv) == 0
    assert LINE.fullmatch(capsys.readouterr().out.splitlines()[0])
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2
    assert set(json.loads(lines[0])) == KEYS


def test_command_line_rejects_bad_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--epochs", "0"])
    assert exit_info.value.code == 2
    assert "expected a positive integer, got '0'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("field", "value"), [("epochs", 0), ("batch_size", -1), ("learning_rate", 0.0)]
)
def test_config_names_the_bad_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"Config.{field}={value} is invalid"):
        Config(**{field: value})


def test_keras_is_version_3() -> None:
    assert keras.__version__.startswith("3.")
