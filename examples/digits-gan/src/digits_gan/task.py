"""The training of digits-gan: the GAN's optimizers, loss, metrics, and the step itself.

This module is yours: `GanTask.train_step` is the custom loop's step, one discriminator update
and then one generator update, each with its own tape, loss and optimizer, and you change it
here (say, two discriminator updates per generator update). What it calls is the engine's and
stays exact on several replicas and under mixed precision: `self.optimizers.minimize` (loss
scaling, None gradients named, non-finite steps skipped, clipping) and `draw_latent`.
`copier update` three-way merges template changes into this file too, so your edits stay and
the template's arrive; where both changed the same lines, the file keeps both, marked.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping

import keras
import numpy as np
import tensorflow as tf

from .config import Config, RunOptions
from .engine import contract, precision
from .engine.distribution import BatchMean, global_batch_size
from .engine.gradients import FINITE
from .engine.optimizers import OptimizerSet
from .engine.task import Task
from .gan import GAN, SampleGrid, check_models, draw_latent, input_signature


@dataclasses.dataclass(frozen=True)
class GanMetrics:
    """Running figures of one epoch: both losses and the discriminator's accuracy.

    `d_acc_real` is the fraction of real images the discriminator calls real, `d_acc_fake` the
    fraction of generated images it calls fake (a logit below 0). Iterating gives the metrics,
    which the loop resets every epoch and logs by name.
    """

    d_loss: BatchMean
    g_loss: BatchMean
    d_acc_real: keras.metrics.BinaryAccuracy
    d_acc_fake: keras.metrics.BinaryAccuracy

    @classmethod
    def create(cls) -> GanMetrics:
        """Metrics named `d_loss`, `g_loss`, `d_acc_real` and `d_acc_fake`."""
        return cls(
            BatchMean(name="d_loss"),
            BatchMean(name="g_loss"),
            keras.metrics.BinaryAccuracy(name="d_acc_real", threshold=0.0),
            keras.metrics.BinaryAccuracy(name="d_acc_fake", threshold=0.0),
        )

    def update(
        self,
        d_loss: tf.Tensor,
        g_loss: tf.Tensor,
        batch_size: tf.Tensor,
        real_logits: tf.Tensor,
        fake_logits: tf.Tensor,
    ) -> None:
        """Record one batch (this replica's share of it). Must be `tf.function`-compatible.

        Losses are weighted by the batch size, so a smaller last batch counts for what it holds.

        Args:
            d_loss: This replica's part of the discriminator's loss.
            g_loss: This replica's part of the generator's loss.
            batch_size: The examples in the whole batch, from `global_batch_size`.
            real_logits: The discriminator's logits for this replica's real images.
            fake_logits: Its logits for as many generated images.
        """
        examples = tf.shape(real_logits)[0]
        self.d_loss.add(d_loss, batch_size, examples)
        self.g_loss.add(g_loss, batch_size, examples)
        self.d_acc_real.update_state(tf.ones_like(real_logits), real_logits)
        self.d_acc_fake.update_state(tf.zeros_like(fake_logits), fake_logits)

    def __iter__(self) -> Iterator[keras.metrics.Metric]:
        return iter((self.d_loss, self.g_loss, self.d_acc_real, self.d_acc_fake))


class GanTask(Task):
    """The GAN, its two optimizers, loss, metrics and step; `engine.train.Trainer` runs it.

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
        optimizers: The generator's and the discriminator's optimizers, from
            `build_optimizers`.
        loss_fn: Both networks' loss, from `build_loss`.
        noise: The source of every latent vector, seeded by `config.seed`; a
            `tf.random.Generator`, so no Python randomness runs inside the step.
        train_metrics: `d_loss`, `g_loss`, `d_acc_real` and `d_acc_fake`, from
            `build_metrics`, recorded by `train_step`.
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
        self.optimizers = self.build_optimizers()
        self.loss_fn = self.build_loss()
        self.noise = tf.random.Generator.from_seed(config.seed)
        self.train_metrics = self.build_metrics()
        self.val_metrics: tuple[keras.metrics.Metric, ...] = ()
        self.input_signature = input_signature(config)

    def build_optimizers(self) -> OptimizerSet:
        """The generator's and the discriminator's Adam optimizers, each on its own network."""
        generator_adam = keras.optimizers.Adam(
            learning_rate=self.config.generator_learning_rate,
            beta_1=self.config.beta_1,
            name="g_adam",
        )
        discriminator_adam = keras.optimizers.Adam(
            learning_rate=self.config.discriminator_learning_rate,
            beta_1=self.config.beta_1,
            name="d_adam",
        )
        parts = [
            ("generator", self.model.generator, generator_adam),
            ("discriminator", self.model.discriminator, discriminator_adam),
        ]
        return OptimizerSet(parts, self.options)

    def build_loss(self) -> keras.losses.Loss:
        """Binary cross-entropy on logits, summed over the examples; both networks use it.

        The step divides the sum by the examples of the whole batch, so that under
        `tf.distribute` the replicas' losses add up to the mean over the batch however it was
        split (Keras's own mean divides by the number of replicas, exact only for equal shares).
        """
        return keras.losses.BinaryCrossentropy(from_logits=True, reduction="sum")

    def build_metrics(self) -> GanMetrics:
        """`d_loss`, `g_loss`, `d_acc_real` and `d_acc_fake`; reset every epoch and logged."""
        return GanMetrics.create()

    def train_step(self, real: tf.Tensor) -> None:
        """One discriminator update, then one generator update, on this replica's real images.

        Must be `tf.function`-compatible. The generator's update sees the discriminator as
        just updated. A step is applied whole or not at all: when the discriminator's loss or
        gradients are not finite, the generator is not updated either, and the loop undoes
        the step's metrics.
        """
        batch_size = global_batch_size(real)
        examples = tf.shape(real)[0]
        latent_dim = self.config.latent_dim

        # The discriminator: real images should score 1, generated ones 0. The images are
        # generated outside the tape, so that its loss cannot reach the generator.
        latent = draw_latent(self.noise, examples, batch_size, latent_dim)
        fake = self.model.generator(latent, training=True)
        with tf.GradientTape() as tape:
            real_logits = self.model.discriminator(real, training=True)
            fake_logits = self.model.discriminator(fake, training=True)
            d_loss = (
                self.loss_fn(tf.ones_like(real_logits), real_logits)
                + self.loss_fn(tf.zeros_like(fake_logits), fake_logits)
            ) / batch_size
        status = self.optimizers.minimize(d_loss, tape, parts=["discriminator"])

        # The generator: its images should make the discriminator say 1 (real). Only the
        # generator's variables are differentiated and updated.
        latent = draw_latent(self.noise, examples, batch_size, latent_dim)
        with tf.GradientTape() as tape:
            generated = self.model.generator(latent, training=True)
            generated_logits = self.model.discriminator(generated, training=True)
            g_loss = self.loss_fn(tf.ones_like(generated_logits), generated_logits) / batch_size
        self.optimizers.minimize(g_loss, tape, parts=["generator"], only_if=status == FINITE)

        self.train_metrics.update(d_loss, g_loss, batch_size, real_logits, fake_logits)

    def checkpoint_items(self) -> dict[str, object]:
        """What a checkpoint holds beyond the model, its optimizers and the loop's state."""
        return {"noise": self.noise}

    def callbacks(self, chief: bool) -> list[keras.callbacks.Callback]:
        """`SampleGrid`, on the chief of a run with a logdir: the grids are files it writes."""
        if not chief or self.options.logdir is None:
            return []
        return [SampleGrid(self.options.logdir, self.config, tensorboard=self.options.tensorboard)]

    def serving_model(self) -> keras.Model:
        """The generator: what `predict` runs and `export` writes, latent vectors to images."""
        return self.model.generator

    def prediction_input(self, inputs: np.ndarray) -> np.ndarray:
        """`inputs`, latent vectors `(n, latent_dim)` of numbers, as float32.

        Raises:
            ValueError: One line, starting "the input ", naming what does not fit.
        """
        if inputs.ndim != 2 or inputs.shape[1] != self.config.latent_dim:
            raise ValueError(
                f"the input has shape {inputs.shape}, but the generator takes "
                f"(n, {self.config.latent_dim}) latent vectors"
            )
        if len(inputs) == 0:
            raise ValueError(f"the input has shape {inputs.shape}: no examples; give at least one")
        if inputs.dtype.kind not in "iuf":  # Signed or unsigned integers, or floats.
            raise ValueError(f"the input holds {inputs.dtype} values; give integers or floats")
        return inputs.astype(np.float32)

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
