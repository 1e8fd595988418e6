"""Your step as the guide writes it: plain TensorFlow in it, and what it calls stays exact.

The steps here are `task.Task`'s with one change each, as you would make it in `task.py`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import QUIET, dataset, features, labels_for, linear_model

from digits_backbone_head import PROJECT
from digits_backbone_head.config import Config
from digits_backbone_head.engine import precision
from digits_backbone_head.engine.optimizers import ONLY_IF_DIFFERS, SCALE_LOSS_FIRST, StepError
from digits_backbone_head.engine.train import Trainer
from digits_backbone_head.task import Task


class SkipAllZeroBatches(Task):
    """The guide's step with a conditional update: none for a batch whose labels are all 0.

    On one device, where this replica's share of the batch is the whole batch.
    """

    def train_step(
        self, x: tf.Tensor, y: tf.Tensor, sample_weight: tf.Tensor | None = None
    ) -> None:
        with tf.GradientTape() as tape:
            y_pred = self.model(x, training=True)
            loss = self.compute_loss(y, y_pred, sample_weight)
            scaled = self.optimizers.scale_loss(loss)
        gradients = tape.gradient(scaled, self.model.trainable_variables)
        if tf.reduce_any(self.labels.label_class_ids(y) != 0):  # A Python `if` on a tensor.
            self.optimizers.apply(gradients, self.model.trainable_variables)
        self.train_metrics.update(loss, y, y_pred)


class SkipAllZeroBatchesOnEveryReplica(Task):
    """The same decision, on the whole batch, which holds on several replicas too."""

    def train_step(
        self, x: tf.Tensor, y: tf.Tensor, sample_weight: tf.Tensor | None = None
    ) -> None:
        with tf.GradientTape() as tape:
            y_pred = self.model(x, training=True)
            loss = self.compute_loss(y, y_pred, sample_weight)
            scaled = self.optimizers.scale_loss(loss)
        gradients = tape.gradient(scaled, self.model.trainable_variables)
        nonzero = tf.cast(tf.reduce_any(self.labels.label_class_ids(y) != 0), tf.int32)
        on_any_replica = tf.distribute.get_replica_context().all_reduce("sum", nonzero) > 0
        self.optimizers.apply(gradients, self.model.trainable_variables, only_if=on_any_replica)
        self.train_metrics.update(loss, y, y_pred)


class SkipAllZeroSharesOnThisReplica(Task):
    """The natural wrong version: the decision on this replica's share of the batch only."""

    def train_step(
        self, x: tf.Tensor, y: tf.Tensor, sample_weight: tf.Tensor | None = None
    ) -> None:
        with tf.GradientTape() as tape:
            y_pred = self.model(x, training=True)
            loss = self.compute_loss(y, y_pred, sample_weight)
            scaled = self.optimizers.scale_loss(loss)
        gradients = tape.gradient(scaled, self.model.trainable_variables)
        nonzero = tf.reduce_any(self.labels.label_class_ids(y) != 0)
        self.optimizers.apply(gradients, self.model.trainable_variables, only_if=nonzero)
        self.train_metrics.update(loss, y, y_pred)


class Unscaled(Task):
    """The guide's step without `scale_loss`: wrong under `mixed_float16`."""

    def train_step(
        self, x: tf.Tensor, y: tf.Tensor, sample_weight: tf.Tensor | None = None
    ) -> None:
        with tf.GradientTape() as tape:
            loss = self.compute_loss(y, self.model(x, training=True), sample_weight)
        gradients = tape.gradient(loss, self.model.trainable_variables)
        self.optimizers.apply(gradients, self.model.trainable_variables)


class ReturnsGradientNorm(Task):
    """The guide's step, returning the global norm of the gradient as a figure to log."""

    figures = ("grad_norm",)

    def train_step(
        self, x: tf.Tensor, y: tf.Tensor, sample_weight: tf.Tensor | None = None
    ) -> dict[str, tf.Tensor]:
        with tf.GradientTape() as tape:
            y_pred = self.model(x, training=True)
            loss = self.compute_loss(y, y_pred, sample_weight)
            scaled = self.optimizers.scale_loss(loss)
        gradients = tape.gradient(scaled, self.model.trainable_variables)
        self.optimizers.apply(gradients, self.model.trainable_variables)
        self.train_metrics.update(loss, y, y_pred)
        return {"grad_norm": tf.linalg.global_norm(gradients)}


class ReturnsAnUndeclaredFigure(ReturnsGradientNorm):
    """The same step, without naming its figure in `figures`."""

    figures = ()


class NamesAFigureAsAMetric(ReturnsGradientNorm):
    """A figure named as a metric is: the logs would hold one of the two."""

    figures = ("loss",)


def _iterations(trainer: Trainer) -> int:
    return max(int(o.iterations.numpy()) for o in trainer.task.optimizers.by_part.values())


def _labels(class_ids: np.ndarray, config: Config) -> np.ndarray:
    return config.labels.encode(class_ids % config.labels.class_count)


def test_a_conditional_update_skips_exactly_the_batches_it_should(config: Config) -> None:
    """Batches 1 and 3 (all labels 0) update nothing: as a run on batches 0 and 2 alone."""
    x = features(config, 64)
    ids = np.arange(64) % config.labels.class_count
    ids[16:32] = ids[48:64] = 0
    kept = np.r_[0:16, 32:48]
    runs = []
    for task, rows in ((SkipAllZeroBatches, np.arange(64)), (Task, kept)):
        keras.utils.set_random_seed(config.seed)
        trainer = Trainer(PROJECT, config, linear_model(config), QUIET, task=task)
        history = trainer.fit(dataset(x[rows], _labels(ids[rows], config), 16), epochs=1)
        runs.append((trainer, history.history))
    (skipping, history), (clean, _) = runs

    assert _iterations(skipping) == _iterations(clean) == 2
    assert history["skipped_steps"] == [0.0]  # Not a bad step: the step chose to skip.
    for ours, expected in zip(skipping.model.weights, clean.model.weights, strict=True):
        np.testing.assert_allclose(ours.numpy(), expected.numpy(), rtol=1e-6, err_msg=ours.path)


def test_the_step_returns_nothing_and_trains(config: Config) -> None:
    model = linear_model(config)
    trainer = Trainer(PROJECT, config, model, QUIET)
    x = features(config, 16)
    y = labels_for(model, x, config, agree=False)
    before = [v.numpy() for v in model.trainable_variables]

    trainer.task.optimizers.begin_step(tf.constant(16.0))
    assert trainer.task.train_step(tf.constant(x), tf.constant(y)) is None
    trainer.task.optimizers.end_step()
    trainer.fit(dataset(x, y, 8), epochs=1)

    assert _iterations(trainer) == 3
    after = [v.numpy() for v in model.trainable_variables]
    assert all(not np.array_equal(b, a) for b, a in zip(before, after, strict=True))


def test_a_figure_the_step_returns_is_logged_as_its_epoch_mean(
    config: Config, tmp_path: Path
) -> None:
    """One batch per epoch: each epoch's `grad_norm` is the norm of that epoch's gradient."""
    config = dataclasses.replace(config, freeze_backbone_epochs=0)  # Every variable trains.
    x = features(config, 16)
    y = _labels(np.arange(16), config)
    keras.utils.set_random_seed(config.seed)
    model = linear_model(config)
    reference = linear_model(config)
    reference.set_weights(model.get_weights())
    options = dataclasses.replace(QUIET, logdir=tmp_path)
    trainer = Trainer(PROJECT, config, model, options, task=ReturnsGradientNorm)

    history = trainer.fit(dataset(x, y, 16), epochs=1)

    task = Task(reference, config, QUIET)
    with tf.GradientTape() as tape:
        loss = task.compute_loss(tf.constant(y), reference(x, training=True))
    norm = float(tf.linalg.global_norm(tape.gradient(loss, reference.trainable_variables)))
    assert history.history["grad_norm"] == [pytest.approx(norm, rel=1e-5)]
    (line,) = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert json.loads(line)["grad_norm"] == history.history["grad_norm"][0]

    undeclared = Trainer(
        PROJECT, config, linear_model(config), QUIET, task=ReturnsAnUndeclaredFigure
    )
    with pytest.raises(ValueError, match=r"name each figure the step returns in Task\.figures"):
        undeclared.fit(dataset(x, y, 16), epochs=1)
    with pytest.raises(ValueError, match=r"Task\.figures \['loss'\] repeat a name"):
        Trainer(PROJECT, config, linear_model(config), QUIET, task=NamesAFigureAsAMetric)


def _mirrored(replicas: int) -> tf.distribute.MirroredStrategy:
    devices = [f"/cpu:{index}" for index in range(replicas)]
    return tf.distribute.MirroredStrategy(
        devices, cross_device_ops=tf.distribute.ReductionToOneDevice()
    )


def test_apply_on_two_replicas_equals_one_device(config: Config) -> None:
    """One clipped step on 9 examples, split 4 and 5: the same weights as on one device.

    The clipping norm is the whole batch's gradient's, all-reduced in `apply`, not a share's.
    """
    x = features(config, 9)
    y = _labels(np.arange(9), config)
    options = dataclasses.replace(QUIET, clip_global_norm=1e-3)
    runs = []
    for strategy in (None, _mirrored(2)):
        keras.utils.set_random_seed(config.seed)
        with contextlib.nullcontext() if strategy is None else strategy.scope():
            model = linear_model(config)
        before = [w.numpy() for w in model.trainable_weights]
        trainer = Trainer(PROJECT, config, model, options, strategy)
        trainer.train_step(tf.constant(x), tf.constant(y))
        after = [w.numpy() for w in model.trainable_weights]
        runs.append(np.concatenate([(a - b).ravel() for a, b in zip(after, before, strict=True)]))
    one_device, replicas = runs

    assert np.linalg.norm(one_device) > 0
    # The weights' float32 rounding (their steps are differences of two weights) is the atol;
    # clipping each share by its own norm moves the weights by ~1e-4 more.
    np.testing.assert_allclose(replicas, one_device, rtol=1e-4, atol=1e-6)


def test_a_conditional_update_on_the_whole_batch_is_exact_on_two_replicas(
    config: Config,
) -> None:
    """Batch 1 is all 0s; batch 3 only in its first half, one replica's share: it trains."""
    x = features(config, 64)
    ids = np.arange(64) % config.labels.class_count
    ids[16:32] = ids[48:56] = 0
    y = _labels(ids, config)
    runs = []
    for strategy in (None, _mirrored(2)):
        keras.utils.set_random_seed(config.seed)
        with contextlib.nullcontext() if strategy is None else strategy.scope():
            model = linear_model(config)
        trainer = Trainer(
            PROJECT, config, model, QUIET, strategy, task=SkipAllZeroBatchesOnEveryReplica
        )
        trainer.fit(dataset(x, y, 16), epochs=1)
        runs.append((_iterations(trainer), [w.numpy() for w in model.trainable_weights]))
    (one_iterations, one_device), (iterations, replicas) = runs

    assert one_iterations == iterations == 3
    for ours, expected in zip(replicas, one_device, strict=True):
        np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-7)


def test_a_decision_on_one_replica_s_share_fails_naming_the_fix(config: Config) -> None:
    """Batch 3's shares disagree (one all 0s): the replicas would update different weights."""
    x = features(config, 64)
    ids = np.arange(64) % config.labels.class_count
    ids[16:32] = ids[48:56] = 0
    strategy = _mirrored(2)
    with strategy.scope():
        model = linear_model(config)
    trainer = Trainer(PROJECT, config, model, QUIET, strategy, task=SkipAllZeroSharesOnThisReplica)

    with pytest.raises(StepError) as error:
        trainer.fit(dataset(x, _labels(ids, config), 16), epochs=1)

    assert str(error.value) == ONLY_IF_DIFFERS


def test_keras_clipping_on_two_replicas_is_refused_naming_the_engine_s(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keras's `global_clipnorm` clips each replica's share: the sum's norm can pass the limit."""
    adam = keras.optimizers.Adam
    monkeypatch.setattr(keras.optimizers, "Adam", functools.partial(adam, global_clipnorm=1.0))
    strategy = _mirrored(2)
    with strategy.scope():
        model = linear_model(config)

    with pytest.raises(ValueError, match="clips each replica's share") as error:
        Trainer(PROJECT, config, model, QUIET, strategy)

    assert "--clip-global-norm" in str(error.value)
    Trainer(PROJECT, config, linear_model(config), QUIET)  # On one device it clips the whole batch.


def test_mixed_float16_without_scale_loss_fails_while_tracing(config: Config) -> None:
    """Else the loss scale would be divided out of unscaled gradients: silently too small."""
    options = dataclasses.replace(QUIET, precision="mixed_float16")
    x = features(config, 8)
    y = _labels(np.arange(8), config)
    with precision.dtype_policy("mixed_float16"):
        model = linear_model(config, output_dtype="float32")
    trainer = Trainer(PROJECT, config, model, options, task=Unscaled)

    with pytest.raises(precision.PrecisionError) as error:
        trainer.train_step(tf.constant(x), tf.constant(y))

    assert str(error.value) == SCALE_LOSS_FIRST  # One line, as the command line prints it.
    assert _iterations(trainer) == 0
    with precision.dtype_policy("mixed_float16"):
        model = linear_model(config, output_dtype="float32")
    as_rendered = Trainer(PROJECT, config, model, options)
    as_rendered.train_step(tf.constant(x), tf.constant(y))
    assert _iterations(as_rendered) == 1
