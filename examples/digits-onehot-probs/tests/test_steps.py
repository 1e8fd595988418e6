"""The step functions: training flags, the loss they optimize, and one trace per run."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import QUIET, dataset, features, labels_for, linear_model, traced_once_per_phase

from digits_onehot_probs import PROJECT
from digits_onehot_probs.config import Config
from digits_onehot_probs.data import load_datasets
from digits_onehot_probs.engine import precision
from digits_onehot_probs.engine.classifier import total_loss
from digits_onehot_probs.engine.train import Trainer
from digits_onehot_probs.model import build_model


class TrainingProbe(keras.layers.Layer):
    """Passes inputs through and records the `training` flag of its latest call."""

    def build(self, input_shape: tuple[int, ...]) -> None:
        self.training = self.add_weight(shape=(), initializer="zeros", trainable=False)

    def call(self, inputs: tf.Tensor, training: bool = False) -> tf.Tensor:
        self.training.assign(1.0 if training else 0.0)
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
