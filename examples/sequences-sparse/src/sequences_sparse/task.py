"""The training of sequences-sparse: optimizers, loss, metrics, and the step itself.

This module is yours: `train_step` is the custom loop's step, written in the four parts of the
guide (forward pass, loss, gradients, apply), and you change it here. What it calls is the
engine's and stays exact on several replicas, under gradient accumulation and mixed
precision: `compute_loss` (the mean over the whole batch, plus regularization losses),
`self.optimizers.scale_loss` and `self.optimizers.apply` (None gradients named, non-finite
steps skipped, global-norm clipping, loss scaling, accumulation). A decision on a batch (say,
skip the update) must be on the whole batch, not on one replica's share of it.
`copier update` three-way merges template changes into this file too, so your edits stay and
the template's arrive; where both changed the same lines, the file keeps both, marked.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from .config import Config, RunOptions
from .engine.classifier import ClassifierTask, StepMetrics
from .engine.optimizers import OptimizerSet


class Task(ClassifierTask):
    """The model, its optimizers, loss, metrics and steps; the loop runs the steps.

    `self.model`, `self.config`, `self.options`, `self.labels` (`config.labels`, the labels'
    encoding), `self.optimizers`, `self.loss_fn`, `self.train_metrics` and `self.val_metrics`
    are set up by `ClassifierTask`, from the `build_*` methods below.
    """

    def build_optimizers(self) -> OptimizerSet:
        """One Adam optimizer for every trainable variable of the model."""
        adam = keras.optimizers.Adam(learning_rate=self.config.learning_rate)
        return OptimizerSet([("model", self.model, adam)], self.options)

    def build_loss(self) -> keras.losses.Loss:
        """The data loss for the labels' encoding, summed over the examples.

        `compute_loss` divides the sum by the examples of the whole batch, which keeps the
        mean exact however the batch is split among replicas.
        """
        return self.labels.make_loss("sum")

    def build_metrics(self, prefix: str) -> StepMetrics:
        """`{prefix}loss` and `{prefix}accuracy`; the loop resets them every epoch and logs them."""
        return StepMetrics.create(self.labels, prefix)

    def train_step(
        self, x: tf.Tensor, y: tf.Tensor, sample_weight: tf.Tensor | None = None
    ) -> None:
        """Train on one batch: this replica's share of it. Must be `tf.function`-compatible.

        AutoGraph converts it, so a Python `if` on a tensor works. A step whose loss or
        gradients are not finite is undone by the loop, metrics included.
        """
        with tf.GradientTape() as tape:
            y_pred = self.model(x, training=True)
            loss = self.compute_loss(y, y_pred, sample_weight)
            scaled = self.optimizers.scale_loss(loss)
        gradients = tape.gradient(scaled, self.model.trainable_variables)
        self.optimizers.apply(gradients, self.model.trainable_variables)
        self.train_metrics.update(loss, y, y_pred)

    def test_step(self, x: tf.Tensor, y: tf.Tensor, sample_weight: tf.Tensor | None = None) -> None:
        """Evaluate one batch: this replica's share of it. Must be `tf.function`-compatible."""
        y_pred = self.model(x, training=False)
        loss = self.compute_loss(y, y_pred, sample_weight)
        self.val_metrics.update(loss, y, y_pred)


def build_task(model: keras.Model, config: Config, options: RunOptions) -> Task:
    """The task `engine.train.Trainer` runs for this project."""
    return Task(model, config, options)
