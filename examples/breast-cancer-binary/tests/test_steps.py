"""The step functions: training flags, the loss they optimize, tracing and gradients."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import QUIET, dataset, features, labels_for, linear_model, traced_once_per_phase

from breast_cancer_binary import PROJECT
from breast_cancer_binary import model as model_module
from breast_cancer_binary.__main__ import main
from breast_cancer_binary.config import Config
from breast_cancer_binary.data import load_datasets
from breast_cancer_binary.engine import precision
from breast_cancer_binary.engine.classifier import total_loss
from breast_cancer_binary.engine.gradients import NoneGradientError, NoneGradientWarning
from breast_cancer_binary.engine.train import Trainer
from breast_cancer_binary.model import build_model


class TrainingProbe(keras.layers.Layer):
    """Passes inputs through and records the `training` flag of its latest call."""

    def build(self, input_shape: tuple[int, ...]) -> None:
        self.training = self.add_weight(shape=(), initializer="zeros", trainable=False)

    def call(self, inputs: tf.Tensor, training: bool = False) -> tf.Tensor:
        self.training.assign(1.0 if training else 0.0)
        return inputs


class Orphan(keras.layers.Layer):
    """Owns a trainable variable that never reaches the output."""

    def build(self, input_shape: tuple[int, ...]) -> None:
        self.orphan = self.add_weight(name="orphan", shape=(1,), initializer="ones")

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return inputs


def test_train_step_runs_training_and_eval_step_inference(config: Config) -> None:
    probe = TrainingProbe()
    model = linear_model(config, front=probe)
    trainer = Trainer(PROJECT, config, model, QUIET)
    x = features(config, 8)
    y = labels_for(model, x, config, agree=True)

    trainer.train_step(tf.constant(x), tf.constant(y))
    assert float(probe.training) == 1.0
    trainer.eval_step(tf.constant(x), tf.constant(y))
    assert float(probe.training) == 0.0
    trainer.train_step(tf.constant(x), tf.constant(y))
    assert float(probe.training) == 1.0


def test_steps_add_regularization_losses(config: Config) -> None:
    model = linear_model(config, regularizer=keras.regularizers.L2(0.1))
    trainer = Trainer(PROJECT, config, model, QUIET)
    x = features(config, 16)
    y = labels_for(model, x, config, agree=True)

    data_loss = float(trainer.task.loss_fn(y, model(x, training=False))) / len(x)
    regularization = float(tf.add_n(model.losses))
    assert regularization > 0.01
    expected = data_loss + regularization
    train_loss = trainer.task.train_metrics.loss
    val_loss = trainer.task.val_metrics.loss
    trainer.eval_step(tf.constant(x), tf.constant(y))
    assert float(val_loss.result()) == pytest.approx(expected)
    trainer.train_step(tf.constant(x), tf.constant(y))
    assert float(train_loss.result()) == pytest.approx(expected)


def test_mixed_precision_regularization_losses_add_up_in_float32(config: Config) -> None:
    """An activity regularizer's loss is bfloat16 under mixed_bfloat16, a kernel's float32."""
    with precision.dtype_policy("mixed_bfloat16"):
        inputs = keras.Input((4,))
        l2 = keras.regularizers.L2(0.1)
        hidden = keras.layers.Dense(4, kernel_regularizer=l2, activity_regularizer=l2)(inputs)
        model = keras.Model(inputs, config.labels.output_layer()(hidden))
    y = config.labels.encode(np.arange(8) % config.labels.class_count)
    y_pred = model(tf.ones((8, 4)), training=True)
    assert {loss.dtype for loss in model.losses} == {tf.bfloat16, tf.float32}

    loss = total_loss(model, config.labels.make_loss("sum"), y, y_pred, tf.constant(8.0))

    regularization = sum(float(loss) for loss in model.losses)
    assert loss.dtype == tf.float32
    assert float(loss) == pytest.approx(
        float(config.labels.make_loss()(y, y_pred)) + regularization
    )


def test_a_whole_run_traces_each_step_once(config: Config) -> None:
    train_ds, val_ds = load_datasets(config)
    num_train = sum(int(x.shape[0]) for x, _ in train_ds)
    batch_size = 48 if num_train % 48 else 50
    assert num_train % batch_size, "the run must include a smaller last batch"
    config = dataclasses.replace(config, batch_size=batch_size, epochs=3)
    train_ds, val_ds = load_datasets(config)
    trainer = Trainer(PROJECT, config, build_model(config), QUIET)

    trainer.fit(train_ds, val_ds)

    assert traced_once_per_phase(trainer)
    assert trainer.eval_runner is not None and trainer.eval_steps


def _model_with_orphan(config: Config) -> keras.Model:
    return linear_model(config, front=Orphan())


def test_none_gradients_are_named_and_the_rest_still_trains(config: Config) -> None:
    model = _model_with_orphan(config)
    trainer = Trainer(PROJECT, config, model, QUIET)
    x = features(config, 8)
    y = labels_for(model, x, config, agree=False)
    before = [v.numpy() for v in model.trainable_variables]

    with pytest.warns(NoneGradientWarning, match=r"1 trainable variable\(s\).*orphan"):
        trainer.train_step(tf.constant(x), tf.constant(y))

    after = [v.numpy() for v in model.trainable_variables]
    changed = {
        v.path: not np.array_equal(b, a)
        for v, b, a in zip(model.trainable_variables, before, after, strict=True)
    }
    assert changed == {name: "orphan" not in name for name in changed}


def test_strict_gradients_turns_none_gradients_into_an_error(config: Config) -> None:
    options = dataclasses.replace(QUIET, strict_gradients=True)
    trainer = Trainer(PROJECT, config, _model_with_orphan(config), options)
    labels = labels_for(linear_model(config), features(config, 8), config, agree=True)
    with pytest.raises(NoneGradientError, match="orphan") as error:
        trainer.train_step(tf.constant(features(config, 8)), tf.constant(labels))
    assert "\n" not in str(error.value)  # One line, though raised inside the traced step.


def test_strict_gradients_on_the_command_line_fail_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(model_module, "build_model", _model_with_orphan)
    argv = ["train", "--quiet", "--strict-gradients", "--logdir", str(tmp_path / "run")]
    argv += ["--strategy", "none", "--precision", "float32"]  # Whatever the project's defaults.
    # Two epochs: a backbone-head project freezes its backbone, orphan included, for the first.
    assert main([*argv, "--epochs", "2", "--steps-per-epoch", "1"]) == 2
    error = capsys.readouterr().err
    prog = "python -m breast_cancer_binary"
    assert error.startswith(f"{prog} train: error: ") and "orphan" in error
    assert error.count("\n") == 1, error


def test_eager_steps_give_the_same_result(config: Config) -> None:
    x = features(config, 32)
    results = []
    for run_eagerly in (False, True):
        keras.utils.set_random_seed(config.seed)
        model = linear_model(config)
        y = labels_for(model, x, config, agree=False)
        trainer = Trainer(
            PROJECT, config, model, dataclasses.replace(QUIET, run_eagerly=run_eagerly)
        )
        history = trainer.fit(dataset(x, y, 8), dataset(x, y, 8)).history
        del history["steps_per_second"]
        results.append(history)
    graph, eager = results
    assert graph.keys() == eager.keys()
    for key, values in graph.items():
        np.testing.assert_allclose(eager[key], values, rtol=1e-5, err_msg=key)
