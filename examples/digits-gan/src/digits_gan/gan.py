"""The GAN step: one discriminator update, then one generator update, on one batch.

Each factory returns a plain Python function that is `tf.function`-compatible and can run
under `tf.distribute.Strategy.run`; `train.py` wraps the combined step in a `tf.function` with
an input signature so that a whole run traces it exactly once. Each update has its own tape,
its own loss and its own optimizer, and touches only its own model's variables: the
discriminator's loss must not move the generator, nor the generator's the discriminator.

The step is one discriminator update per generator update (a 1:1 ratio); for more discriminator
updates per step, call `discriminator_step` several times in `make_train_step`.

Template-owned: `copier update` replaces this file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras
import tensorflow as tf

from .config import Config
from .gradients import apply_gradients

StepFn = Callable[[tf.Tensor], None]
DiscriminatorStepFn = Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor, tf.Tensor]]
GeneratorStepFn = Callable[[tf.Tensor], tf.Tensor]


def make_loss() -> keras.losses.Loss:
    """Binary cross-entropy on logits, averaged over the batch; both models' losses use it."""
    return keras.losses.BinaryCrossentropy(from_logits=True, reduction="sum_over_batch_size")


@dataclasses.dataclass(frozen=True)
class GanMetrics:
    """Running figures of one epoch: both losses and the discriminator's accuracy.

    `d_acc_real` is the fraction of real images the discriminator calls real, `d_acc_fake` the
    fraction of generated images it calls fake (a logit below 0).
    """

    d_loss: keras.metrics.Mean
    g_loss: keras.metrics.Mean
    d_acc_real: keras.metrics.BinaryAccuracy
    d_acc_fake: keras.metrics.BinaryAccuracy

    @classmethod
    def create(cls) -> GanMetrics:
        """Metrics named `d_loss`, `g_loss`, `d_acc_real` and `d_acc_fake`."""
        return cls(
            keras.metrics.Mean(name="d_loss"),
            keras.metrics.Mean(name="g_loss"),
            keras.metrics.BinaryAccuracy(name="d_acc_real", threshold=0.0),
            keras.metrics.BinaryAccuracy(name="d_acc_fake", threshold=0.0),
        )

    def update(
        self,
        d_loss: tf.Tensor,
        g_loss: tf.Tensor,
        real_logits: tf.Tensor,
        fake_logits: tf.Tensor,
    ) -> None:
        """Record one batch. Must be `tf.function`-compatible.

        Losses are weighted by the batch size, so a smaller last batch counts for what it holds.
        """
        batch_size = tf.cast(tf.shape(real_logits)[0], d_loss.dtype)
        self.d_loss.update_state(d_loss, sample_weight=batch_size)
        self.g_loss.update_state(g_loss, sample_weight=batch_size)
        self.d_acc_real.update_state(tf.ones_like(real_logits), real_logits)
        self.d_acc_fake.update_state(tf.zeros_like(fake_logits), fake_logits)

    def all(self) -> tuple[keras.metrics.Metric, ...]:
        """Every metric, in log order, for `loop.StepRunner` to reset every epoch and read."""
        return (self.d_loss, self.g_loss, self.d_acc_real, self.d_acc_fake)


def make_discriminator_step(
    generator: keras.Model,
    discriminator: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    loss_fn: keras.losses.Loss,
    noise: tf.random.Generator,
    config: Config,
) -> DiscriminatorStepFn:
    """Return the discriminator update: real images should score 1, generated ones 0.

    The generated images are made outside the tape, so the discriminator's loss cannot reach
    the generator. `optimizer` must already be built on `discriminator.trainable_variables`.

    Returns:
        A function of a batch of real images that returns `(d_loss, real_logits, fake_logits)`.
    """

    def discriminator_step(real: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        latent = noise.normal(tf.stack([tf.shape(real)[0], config.latent_dim]))
        fake = generator(latent, training=True)
        with tf.GradientTape() as tape:
            real_logits = discriminator(real, training=True)
            fake_logits = discriminator(fake, training=True)
            d_loss = loss_fn(tf.ones_like(real_logits), real_logits) + loss_fn(
                tf.zeros_like(fake_logits), fake_logits
            )
        variables = discriminator.trainable_variables
        gradients = tape.gradient(d_loss, variables)
        apply_gradients(
            optimizer,
            gradients,
            variables,
            owner="discriminator",
            strict=config.strict_gradients,
        )
        return d_loss, real_logits, fake_logits

    return discriminator_step


def make_generator_step(
    generator: keras.Model,
    discriminator: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    loss_fn: keras.losses.Loss,
    noise: tf.random.Generator,
    config: Config,
) -> GeneratorStepFn:
    """Return the generator update: its images should make the discriminator say 1 (real).

    Only the generator's variables are differentiated and updated; the discriminator is
    evaluated inside the tape but left unchanged. `optimizer` must already be built on
    `generator.trainable_variables`.

    Returns:
        A function of the batch size that returns `g_loss`.
    """

    def generator_step(batch_size: tf.Tensor) -> tf.Tensor:
        latent = noise.normal(tf.stack([batch_size, config.latent_dim]))
        with tf.GradientTape() as tape:
            fake_logits = discriminator(generator(latent, training=True), training=True)
            g_loss = loss_fn(tf.ones_like(fake_logits), fake_logits)
        variables = generator.trainable_variables
        gradients = tape.gradient(g_loss, variables)
        apply_gradients(
            optimizer, gradients, variables, owner="generator", strict=config.strict_gradients
        )
        return g_loss

    return generator_step


def make_train_step(
    discriminator_step: DiscriminatorStepFn, generator_step: GeneratorStepFn, metrics: GanMetrics
) -> StepFn:
    """Return the training step: a discriminator update, then a generator update, then metrics.

    The two updates run in this order inside one call; the generator's step sees the
    discriminator as just updated.
    """

    def train_step(real: tf.Tensor) -> None:
        d_loss, real_logits, fake_logits = discriminator_step(real)
        g_loss = generator_step(tf.shape(real)[0])
        metrics.update(d_loss, g_loss, real_logits, fake_logits)

    return train_step
