"""The training of digits-backbone-head: optimizers, loss, metrics, and the step itself.

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
        """The head's and the backbone's Adam optimizers, each on its own part's variables.

        Raises:
            ValueError: If a part is missing, or a trainable variable belongs to neither part
                or to both.
        """
        backbone = model_part(self.model, "backbone")
        head = model_part(self.model, "head")
        check_partition(self.model, backbone, head)
        head_adam = keras.optimizers.Adam(learning_rate=self.config.learning_rate, name="head_adam")
        backbone_adam = keras.optimizers.Adam(
            learning_rate=self.config.backbone_learning_rate, name="backbone_adam"
        )
        parts = [("head", head, head_adam), ("backbone", backbone, backbone_adam)]
        return OptimizerSet(parts, self.options)

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

    def callbacks(self, chief: bool) -> list[keras.callbacks.Callback]:
        """`FreezeBackbone`, on every worker: each must update the same variables.

        On the chief alone, the workers would train different variables, and each would wait
        for the others' all-reduces forever.
        """
        del chief
        return [FreezeBackbone(self.config.freeze_backbone_epochs)]


def model_part(model: keras.Model, name: str) -> keras.Layer:
    """The layer of `model` named `name`, with a fix in the error when there is none.

    Raises:
        ValueError: If `model` has no such layer.
    """
    try:
        return model.get_layer(name)
    except ValueError:
        raise ValueError(
            f"the model has no layer named '{name}', but this project trains a backbone and a "
            f"head with an optimizer each; build the {name} as keras.Model(..., name='{name}') "
            "and compose the two parts, as model.build_model does"
        ) from None


def check_partition(model: keras.Model, backbone: keras.Layer, head: keras.Layer) -> None:
    """Fail unless every trainable variable of `model` is in exactly one of the parts.

    Raises:
        ValueError: Naming the variables in both parts, or in neither.
    """
    backbone_ids = {id(v) for v in backbone.trainable_variables}
    head_ids = {id(v) for v in head.trainable_variables}
    both = [v.path for v in model.trainable_variables if id(v) in backbone_ids & head_ids]
    neither = [v.path for v in model.trainable_variables if id(v) not in backbone_ids | head_ids]
    if both:
        raise ValueError(
            f"trainable variable(s) {', '.join(both)} belong to both the backbone and the head; "
            "each variable must have exactly one optimizer, so share no layer between the parts"
        )
    if neither:
        raise ValueError(
            f"trainable variable(s) {', '.join(neither)} belong to neither the backbone nor the "
            "head, so no optimizer would update them; move their layers into one of the parts"
        )


class FreezeBackbone(keras.callbacks.Callback):
    """Freezes the model's `backbone` for the first `epochs` epochs, then trains it.

    Frozen means `trainable = False`, as in Keras: no backbone weight moves, and its
    BatchNormalization layers run in inference mode, so their moving statistics do not move
    either (what fine-tuning a pretrained backbone needs). The loop traces the training step
    once for each set of trainable variables, so this costs one more trace, not one per epoch.
    At the end of the run the backbone is as trainable as it was at the start.
    """

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs
        self._was_trainable = True

    def on_train_begin(self, logs: dict | None = None) -> None:
        """Remember whether the backbone was trainable."""
        self._was_trainable = self.model.get_layer("backbone").trainable

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        """Freeze the backbone during the first `epochs` epochs (counted from 0)."""
        self.model.get_layer("backbone").trainable = epoch >= self.epochs and self._was_trainable

    def on_train_end(self, logs: dict | None = None) -> None:
        """Leave the backbone as it was."""
        self.model.get_layer("backbone").trainable = self._was_trainable


def build_task(model: keras.Model, config: Config, options: RunOptions) -> Task:
    """The task `engine.train.Trainer` runs for this project."""
    return Task(model, config, options)
