"""The loop: metric resets, steps per call, History, run directories and the command line."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import (
    QUIET,
    dataset,
    features,
    figure_names,
    labels_for,
    linear_model,
    traced_once_per_phase,
)

from digits_sparse import PROJECT, data
from digits_sparse.__main__ import main
from digits_sparse.config import Config, RunOptions
from digits_sparse.data import load_datasets
from digits_sparse.engine.train import Trainer, fit
from digits_sparse.model import build_model

SRC = Path(__file__).resolve().parents[1] / "src"


def _figures(history: keras.callbacks.History) -> dict[str, list[float]]:
    """The history without its timings, which differ from run to run."""
    return {k: v for k, v in history.history.items() if k != "steps_per_second"}


def test_metrics_are_reset_every_epoch_and_every_evaluation(config: Config) -> None:
    # With a vanishing learning rate the predictions stay put: epoch 1 sees only wrong labels
    # (accuracy 0), epoch 2 only right ones (accuracy 1). Without a reset epoch 2 would read 0.5.
    config = dataclasses.replace(config, learning_rate=1e-12)
    model = linear_model(config)
    x = features(config, 64)
    wrong = dataset(x, labels_for(model, x, config, agree=False), 16)
    right = dataset(x, labels_for(model, x, config, agree=True), 16)
    trainer = Trainer(PROJECT, config, model, QUIET)

    assert trainer.train_epoch(wrong)[0]["accuracy"] == 0.0
    assert trainer.train_epoch(right)[0]["accuracy"] == 1.0
    assert trainer.evaluate(wrong)["val_accuracy"] == 0.0
    assert trainer.evaluate(right)["val_accuracy"] == 1.0
    assert trainer.evaluate(right)["val_loss"] == pytest.approx(
        Trainer(PROJECT, config, model, QUIET).evaluate(right)["val_loss"]
    )


@pytest.mark.parametrize("steps_per_execution", [1, 3, 64])
def test_every_batch_runs_exactly_once_per_epoch(config: Config, steps_per_execution: int) -> None:
    model = linear_model(config)
    x = features(config, 100)
    data = dataset(x, labels_for(model, x, config, agree=True), 16)  # 7 batches, the last of 4
    options = dataclasses.replace(QUIET, steps_per_execution=steps_per_execution)
    trainer = Trainer(PROJECT, config, model, options)
    loss = trainer.task.train_metrics.loss
    val_loss = trainer.task.val_metrics.loss

    for epoch in range(2):
        _, steps = trainer.train_epoch(data)
        assert steps == 7
        # The loss metric is weighted by batch size, so its count is the examples it saw.
        assert float(loss.count) == 100.0
        assert int(trainer.global_step) == 7 * (epoch + 1)
    trainer.evaluate(data)
    assert float(val_loss.count) == 100.0
    assert traced_once_per_phase(trainer)  # The number of steps per call is a tensor.


def test_steps_per_execution_changes_no_figure(config: Config) -> None:
    runs = []
    for steps_per_execution in (1, 5, QUIET.steps_per_execution):
        keras.utils.set_random_seed(config.seed)
        model = build_model(config)
        options = dataclasses.replace(QUIET, steps_per_execution=steps_per_execution)
        history = fit(PROJECT, config, model=model, options=options)
        runs.append((_figures(history), model.get_weights()))
    (history, weights), *others = runs
    for other_history, other_weights in others:
        assert other_history.keys() == history.keys()
        for key, values in history.items():
            np.testing.assert_allclose(other_history[key], values, rtol=1e-6, err_msg=key)
        for ours, theirs in zip(other_weights, weights, strict=True):
            np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_xla_traces_each_step_once_and_trains(config: Config) -> None:
    config = dataclasses.replace(config, epochs=1)
    train_ds, val_ds = load_datasets(config)
    trainer = Trainer(
        PROJECT, config, build_model(config), dataclasses.replace(QUIET, jit_compile=True)
    )

    history = trainer.fit(train_ds, val_ds)

    assert traced_once_per_phase(trainer)
    assert np.isfinite([values[-1] for values in history.history.values()]).all()


def test_fit_returns_a_history_like_model_fit_and_writes_the_run(
    config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = build_model(config)
    history = fit(
        PROJECT, config, model, options=dataclasses.replace(QUIET, logdir=tmp_path, verbose=2)
    )

    assert isinstance(history, keras.callbacks.History)
    assert history.model is model
    assert history.epoch == [0, 1]
    figures = figure_names(config)
    assert set(history.history) == figures.keys
    assert all(len(values) == 2 for values in history.history.values())
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line.pop("epoch") for line in lines] == [1, 2]
    assert {k: [line[k] for line in lines] for k in figures.keys} == history.history
    printed = capsys.readouterr().out.splitlines()
    matches = [figures.progress_line().fullmatch(line) for line in printed]
    assert all(matches), printed
    assert [match.groups() for match in matches] == [("1", "2"), ("2", "2")]


def test_fit_repeats_exactly_with_the_same_seed(config: Config) -> None:
    config = dataclasses.replace(config, epochs=1)
    assert _figures(fit(PROJECT, config, options=QUIET)) == _figures(
        fit(PROJECT, config, options=QUIET)
    )


def test_deterministic_runs_give_identical_figures_and_weights(config: Config) -> None:
    config = dataclasses.replace(config, epochs=1)
    options = dataclasses.replace(QUIET, deterministic=True)
    first, second = fit(PROJECT, config, options=options), fit(PROJECT, config, options=options)

    assert _figures(first) == _figures(second)
    for ours, theirs in zip(first.model.get_weights(), second.model.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_command_line_trains_into_a_new_run_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--epochs", "1", "--batch-size", "64", "--steps-per-execution", "8"]
    assert main(argv) == 0
    assert main([*argv, "--eager", "--no-tensorboard"]) == 0

    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2
    assert {p.name for p in runs[0].iterdir()} == {
        "run.json",
        "metrics.jsonl",
        "train",
        "validation",
        "checkpoints",
        "model.keras",
    }
    assert "train" not in {p.name for p in runs[1].iterdir()}
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"run directory: {Path('runs') / runs[0].name}")
    figures = figure_names(Config())
    assert figures.progress_line().fullmatch(out[1]), out[1]
    for run in runs:
        (line,) = (run / "metrics.jsonl").read_text().splitlines()
        assert set(json.loads(line)) == figures.keys | {"epoch"}


def test_command_line_refuses_a_directory_that_holds_a_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    assert main(["train", "--epochs", "1", "--logdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(
        f"error: --logdir {tmp_path} already holds a run; choose a new "
        "directory, or leave out --logdir for a new one under runs/"
    )
    assert len(err.splitlines()) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]
    assert (tmp_path / "metrics.jsonl").read_text() == "{}\n"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["train_ds", "val_ds"])
def test_an_empty_dataset_fails_in_one_line_and_writes_nothing(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    load_datasets = data.load_datasets

    def emptied(config: Config) -> tuple[tf.data.Dataset, tf.data.Dataset]:
        train_ds, val_ds = load_datasets(config)
        if name == "train_ds":
            return train_ds.take(0), val_ds  # No batch, and tf.data knows it.
        return train_ds, val_ds.filter(lambda *_: False)  # No batch, of unknown length.

    monkeypatch.setattr(data, "load_datasets", emptied)
    logdir = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--quiet", "--logdir", str(logdir)]) == 2
    why = {"train_ds": "every epoch would train on nothing", "val_ds": "it has no figure to report"}
    prog = "python -m digits_sparse"
    assert capsys.readouterr().err == (
        f"{prog} train: error: {name} does not fit this project: "
        f"{name} is empty (no batch), so {why[name]}; give it data\n"
    )
    assert not logdir.exists()


@pytest.mark.slow
def test_a_generator_that_raises_fails_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    load_datasets = data.load_datasets

    def generated(config: Config) -> tuple[tf.data.Dataset, tf.data.Dataset]:
        train_ds, val_ds = load_datasets(config)
        calls = [0]  # The first reads one batch, to tell whether the dataset is empty.

        def batches() -> Iterator[object]:
            calls[0] += 1
            for number, batch in enumerate(train_ds):
                if calls[0] == 2 and number == 2:
                    raise OSError("the disk went away")
                yield batch

        spec = train_ds.element_spec
        return tf.data.Dataset.from_generator(batches, output_signature=spec), val_ds

    monkeypatch.setattr(data, "load_datasets", generated)
    logdir = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--quiet", "--logdir", str(logdir)]) == 2
    prog = "python -m digits_sparse"
    assert capsys.readouterr().err == (
        f"{prog} train: error: train_ds does not fit this project: its "
        "Python code raised OSError: the disk went away\n"
    )
    assert not (logdir / "checkpoints").exists() and not (logdir / "model.keras").exists()


def test_command_line_rejects_bad_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--epochs", "0"])
    assert exit_info.value.code == 2
    assert "--epochs 0 is invalid; use 1 or more" in capsys.readouterr().err


def test_help_is_quick_and_shows_the_defaults() -> None:
    code = (
        "import sys\n"
        "from digits_sparse.__main__ import main\n"
        "try:\n"
        "    main(['train', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert result.stdout.splitlines()[-1] == "[]", "--help imported TensorFlow"
    help_text = " ".join(result.stdout.split())
    assert f"(default: {Config().epochs})" in help_text
    assert f"(default: {RunOptions().steps_per_execution})" in help_text


@pytest.mark.slow
def test_command_line_prints_no_tensorflow_noise(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(SRC)
    argv = ["train", "--epochs", "1", "--logdir", str(tmp_path / "run"), "--no-tensorboard"]
    result = subprocess.run(
        [sys.executable, "-m", "digits_sparse", *argv],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    line = result.stdout.splitlines()[1]
    assert figure_names(Config()).progress_line().fullmatch(line), line


@pytest.mark.parametrize(
    ("field", "value"), [("epochs", 0), ("batch_size", -1), ("learning_rate", 0.0)]
)
def test_config_names_the_bad_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"Config.{field}={value} is invalid"):
        Config(**{field: value})


@pytest.mark.parametrize(
    ("field", "value"),
    [("steps_per_execution", 0), ("max_bad_steps", 0), ("clip_global_norm", -1.0), ("verbose", 3)],
)
def test_run_options_name_the_bad_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=rf"RunOptions.{field}={value} is invalid"):
        RunOptions(**{field: value})


def test_keras_is_version_3() -> None:
    assert keras.__version__.startswith("3.")
