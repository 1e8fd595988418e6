"""The training of digits-gan: the GAN's optimizers, metrics and step, as one task.

This module is yours: `GanTask` is what `engine.train.Trainer` runs, an `engine.task.Task` like a
classifier's. Its step is the two updates of `gan.py`, one tape each; change the step there,
and what the task holds (optimizers, metrics, the datasets it takes) here.
`copier update` three-way merges template changes into this file too, so your edits stay and
the template's arrive; where both changed the same lines, the file keeps both, marked.
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import tensorflow as tf

from .config import Config, RunOptions
from .engine import contract, precision
from .engine.task import Task
from .gan import (
    GAN,
    GanMetrics,
    SampleGrid,
    StepFn,
    build_optimizers,
    check_models,
    input_signature,
    make_discriminator_step,
    make_generator_step,
    make_loss,
    make_train_step,
)


class GanTask(Task):
    """What `engine.train.Trainer` trains: the GAN, its two optimizers, metrics and step.

    A GAN has no validation split: `evaluates` is false and `val_metrics` is empty, so the loop
    refuses a `val_ds`. Nor does it accumulate gradients.

    Args:
        model: The generator and the discriminator, see `model.build_model`.
        config: The run's hyperparameters.
        options: How the run executes.

    Attributes:
        model: The GAN.
        config: The run's hyperparameters.
        options: How the run executes.
        optimizers: The generator's and the discriminator's optimizers.
        noise: The source of every latent vector, seeded by `config.seed`; a
            `tf.random.Generator`, so no Python randomness runs inside the step.
        train_metrics: `d_loss`, `g_loss`, `d_acc_real` and `d_acc_fake`.
        val_metrics: None, as there is no validation.
        input_signature: The real images of one batch.

    Raises:
        TypeError: If `model` is not a `GAN`.
        ValueError: If the networks do not fit each other and the loss, or `options` asks for
            gradient accumulation or validation steps.
    """

    evaluates = False

    def __init__(self, model: GAN, config: Config, options: RunOptions) -> None:
        for name, value in (
            ("accumulation_steps", options.accumulation_steps != 1),
            ("validation_steps", options.validation_steps is not None),
        ):
            if value:
                raise ValueError(
                    f"RunOptions.{name} does not apply to a GAN, which accumulates no gradients "
                    f"and has no validation data; drop {name}"
                )
        if not isinstance(model, GAN):
            raise TypeError(
                f"the model is a {type(model).__name__}, but this project trains a GAN: "
                "pass model.build_model(config), or GAN(generator, discriminator)"
            )
        check_models(model, config)
        precision.check_model(model, options.precision)
        self.model = model
        self.config = config
        self.options = options
        self.optimizers = build_optimizers(model, config, options)
        self.noise = tf.random.Generator.from_seed(config.seed)
        self._metrics = GanMetrics.create()
        self.train_metrics = self._metrics.all()
        self.val_metrics: tuple[keras.metrics.Metric, ...] = ()
        self.input_signature = input_signature(config)
        self._loss_fn = make_loss()

    def checkpoint_items(self) -> dict[str, object]:
        """What a checkpoint holds beyond the model, its optimizers and the loop's state."""
        return {"noise": self.noise}

    def callbacks(self, chief: bool) -> list[keras.callbacks.Callback]:
        """`SampleGrid`, on the chief of a run with a logdir: the grids are files it writes."""
        if not chief or self.options.logdir is None:
            return []
        return [SampleGrid(self.options.logdir, self.config, tensorboard=self.options.tensorboard)]

    def make_train_step(self) -> StepFn:
        """The training step."""
        args = (self.model, self.optimizers, self._loss_fn, self.noise, self.config)
        return make_train_step(
            make_discriminator_step(*args), make_generator_step(*args), self._metrics
        )

    def prepare_dataset(
        self,
        dataset: tf.data.Dataset,
        name: str,
        class_weight: Mapping[int, float] | None = None,
    ) -> tf.data.Dataset:
        """`dataset` as the step takes it: checked, and converted where that is unambiguous.

        Images of another float dtype (float64 is numpy's default) are cast to float32, once,
        in the pipeline; the result has the same cardinality and order.

        Raises:
            contract.DatasetError: If the elements are not image batches of
                `Config.image_shape`, with the fix.
            ValueError: If `class_weight` is given: a GAN's images have no classes.
        """
        if class_weight is not None:
            raise ValueError(
                "class_weight does not apply to a GAN, whose images have no classes; "
                "drop class_weight"
            )
        spec = dataset.element_spec
        (expected,) = self.input_signature
        if contract.fits(spec, expected):
            return dataset
        if (
            isinstance(spec, tf.TensorSpec)
            and spec.dtype.is_floating
            and expected.shape.is_compatible_with(spec.shape)
        ):
            convert = contract.cast_to(expected.dtype)
            return contract.conform(dataset, name, [contract.SpecCheck(convert)])
        raise contract.DatasetError(
            name,
            [
                f"{name} yields {contract.describe(spec)}, but the GAN trains on float32 images "
                f"of shape (batch, {', '.join(map(str, self.config.image_shape))}) and no "
                "labels; map it to images only in data.py, or change Config.image_shape"
            ],
        )


def build_task(model: GAN, config: Config, options: RunOptions) -> GanTask:
    """The task `engine.train.Trainer` runs for this project."""
    return GanTask(model, config, options)
