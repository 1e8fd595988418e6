"""Step functions: what happens to one batch.

Each factory returns a plain Python function of one batch `(x, y)`. It is
`tf.function`-compatible and can run under `tf.distribute.Strategy.run`; `train.py` wraps it in a
`tf.function` with an input signature so that a whole run traces it exactly once.

Template-owned: `copier update` replaces this file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras
import tensorflow as tf

from . import losses
from .config import Config
from .gradients import apply_gradients

StepFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


@dataclasses.dataclass(frozen=True)
class StepMetrics:
    """The running loss and accuracy of one phase, e.g. training or validation."""

    loss: keras.metrics.Mean
    accuracy: keras.metrics.Metric

    @classmethod
    def create(cls, prefix: str) -> StepMetrics:
        """Metrics named `{prefix}_loss` and `{prefix}_acc`."""
        return cls(keras.metrics.Mean(name=f"{prefix}_loss"), losses.make_accuracy(f"{prefix}_acc"))

    def update(self, loss: tf.Tensor, y: tf.Tensor, y_pred: tf.Tensor) -> None:
        """Record one batch. Must be `tf.function`-compatible.

        The loss is weighted by the batch size, as `model.fit` does, so a smaller last batch
        counts for what it holds.
        """
        batch_size = tf.cast(tf.shape(y)[0], loss.dtype)
        self.loss.update_state(loss, sample_weight=batch_size)
        self.accuracy.update_state(y, y_pred)

    def all(self) -> tuple[keras.metrics.Metric, ...]:
        """The metrics, for `loop.StepRunner` to reset every epoch and read."""
        return (self.loss, self.accuracy)


def total_loss(
    model: keras.Model, loss_fn: keras.losses.Loss, y: tf.Tensor, y_pred: tf.Tensor
) -> tf.Tensor:
    """The data loss plus the model's regularization losses, as `model.fit` optimizes it.

    The reduction is the loss object's: the mean over the batch. Regularization losses are
    scaled with `tf.nn.scale_regularization_loss`, which divides by the number of replicas
    under `tf.distribute` and by 1 otherwise.
    """
    loss = loss_fn(y, y_pred)
    if model.losses:
        loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
    return loss


def make_train_step(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    loss_fn: keras.losses.Loss,
    metrics: StepMetrics,
    config: Config,
) -> StepFn:
    """Return the training step: forward pass, loss, gradients, update, metrics.

    The optimizer must already be built on `model.trainable_variables`.
    """

    def train_step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        losses.assert_label_values(y, config)
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            loss = total_loss(model, loss_fn, y, y_pred)
        variables = model.trainable_variables
        gradients = tape.gradient(loss, variables)
        apply_gradients(optimizer, gradients, variables, strict=config.strict_gradients)
        metrics.update(loss, y, y_pred)
        return loss

    return train_step


def make_eval_step(
    model: keras.Model, loss_fn: keras.losses.Loss, metrics: StepMetrics, config: Config
) -> StepFn:
    """Return the evaluation step: forward pass with `training=False`, loss, metrics."""

    def eval_step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        losses.assert_label_values(y, config)
        y_pred = model(x, training=False)
        loss = total_loss(model, loss_fn, y, y_pred)
        metrics.update(loss, y, y_pred)
        return loss

    return eval_step
