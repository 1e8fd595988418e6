"""The GAN: the model that holds both networks, its metrics, and the two updates of its step.

The step is one discriminator update, then one generator update, on one batch. Each factory
returns a plain Python function that is `tf.function`-compatible and runs on each replica
under `tf.distribute.Strategy.run`, with that replica's share of the batch; `engine.train.Trainer`
wraps the combined step, which `task.GanTask` makes, in a `tf.function` with an input signature
so that a whole run traces it exactly once. Each update has its own tape, its own loss and its
own part of `OptimizerSet`, and touches only its own model's variables:
the discriminator's loss must not move the generator, nor the generator's the discriminator.

The step is one discriminator update per generator update (a 1:1 ratio); for more discriminator
updates per step, call `discriminator_step` several times in `make_train_step`.

Template-owned: `copier update` merges template changes into it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import keras
import tensorflow as tf

from .config import Config, RunOptions
from .engine import precision
from .engine.distribution import BatchMean, global_batch_size
from .engine.gradients import FINITE
from .engine.optimizers import OptimizerSet

StepFn = Callable[[tf.Tensor], tf.Tensor]
DiscriminatorStepFn = Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]]
GeneratorStepFn = Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]

SAMPLE_SCALE = 4  # Each pixel of a sample becomes a 4x4 block, so the grid is easy to see.


@keras.saving.register_keras_serializable(package="digits_gan")
class GAN(keras.Model):
    """A generator and a discriminator, held as one model for the loop and its callbacks.

    Calling it generates images from noise. Its weights are both networks' weights, so
    `get_weights`/`set_weights` (EarlyStopping's `restore_best_weights`) and saving cover both.

    Args:
        generator: Maps noise of shape `(batch, latent_dim)` to images.
        discriminator: Maps images to one logit each.
    """

    def __init__(
        self, generator: keras.Model, discriminator: keras.Model, **kwargs: object
    ) -> None:
        super().__init__(**kwargs)
        self.generator = generator
        self.discriminator = discriminator
        # Built networks make a built model: saving it then needs no call on data first.
        self.built = generator.built and discriminator.built

    def call(self, noise: tf.Tensor, training: bool = False) -> tf.Tensor:
        """The generator's images for `noise`."""
        return self.generator(noise, training=training)

    def get_config(self) -> dict:
        """Both networks, serialized, for `keras.saving`."""
        return {
            **super().get_config(),
            "generator": keras.saving.serialize_keras_object(self.generator),
            "discriminator": keras.saving.serialize_keras_object(self.discriminator),
        }

    @classmethod
    def from_config(cls, config: dict) -> GAN:
        """The inverse of `get_config`."""
        generator = keras.saving.deserialize_keras_object(config.pop("generator"))
        discriminator = keras.saving.deserialize_keras_object(config.pop("discriminator"))
        return cls(generator, discriminator, **config)


def make_loss() -> keras.losses.Loss:
    """Binary cross-entropy on logits, summed; both models' losses use it.

    The steps divide the sum by the examples of the whole batch, so that under
    `tf.distribute` the replicas' losses add up to the mean over the batch however it was
    split (Keras's own mean divides by the number of replicas, exact only for equal shares).
    """
    return keras.losses.BinaryCrossentropy(from_logits=True, reduction="sum")


@dataclasses.dataclass(frozen=True)
class GanMetrics:
    """Running figures of one epoch: both losses and the discriminator's accuracy.

    `d_acc_real` is the fraction of real images the discriminator calls real, `d_acc_fake` the
    fraction of generated images it calls fake (a logit below 0).
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

    def all(self) -> tuple[keras.metrics.Metric, ...]:
        """Every metric, in log order, for `loop.StepRunner` to reset every epoch and read."""
        return (self.d_loss, self.g_loss, self.d_acc_real, self.d_acc_fake)


def draw_latent(
    noise: tf.random.Generator, examples: tf.Tensor, batch_size: tf.Tensor, latent_dim: int
) -> tf.Tensor:
    """`examples` latent vectors for this replica's images, `(examples, latent_dim)`.

    Each replica draws as many vectors as the whole batch holds (`batch_size`) and keeps the
    first `examples`. A generator's state advances by what it draws, so replicas with unequal
    shares of a batch would otherwise drift apart, and a checkpoint, which keeps one replica's
    state, would not resume the others exactly. On one device nothing more is drawn.
    """
    drawn = noise.normal(tf.stack([tf.cast(batch_size, tf.int32), latent_dim]))
    return drawn[:examples]


def make_discriminator_step(
    model: GAN,
    optimizers: OptimizerSet,
    loss_fn: keras.losses.Loss,
    noise: tf.random.Generator,
    config: Config,
) -> DiscriminatorStepFn:
    """Return the discriminator update: real images should score 1, generated ones 0.

    The generated images are made outside the tape, so the discriminator's loss cannot reach
    the generator.

    Returns:
        A function of a batch of real images and the examples in the whole batch that returns
        `(status, d_loss, real_logits, fake_logits)`, where `status` is the update's
        `gradients.update_status` code.
    """

    def discriminator_step(
        real: tf.Tensor, batch_size: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        latent = draw_latent(noise, tf.shape(real)[0], batch_size, config.latent_dim)
        fake = model.generator(latent, training=True)
        with tf.GradientTape() as tape:
            real_logits = model.discriminator(real, training=True)
            fake_logits = model.discriminator(fake, training=True)
            d_loss = (
                loss_fn(tf.ones_like(real_logits), real_logits)
                + loss_fn(tf.zeros_like(fake_logits), fake_logits)
            ) / batch_size
        status = optimizers.minimize(d_loss, tape, parts=["discriminator"])
        return status, d_loss, real_logits, fake_logits

    return discriminator_step


def make_generator_step(
    model: GAN,
    optimizers: OptimizerSet,
    loss_fn: keras.losses.Loss,
    noise: tf.random.Generator,
    config: Config,
) -> GeneratorStepFn:
    """Return the generator update: its images should make the discriminator say 1 (real).

    Only the generator's variables are differentiated and updated; the discriminator is
    evaluated inside the tape but left unchanged.

    Returns:
        A function of the number of images to generate, the examples in the whole batch, and
        a boolean, whether to update at all, that returns `(status, g_loss)`.
    """

    def generator_step(
        examples: tf.Tensor, batch_size: tf.Tensor, only_if: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        latent = draw_latent(noise, examples, batch_size, config.latent_dim)
        with tf.GradientTape() as tape:
            fake_logits = model.discriminator(model.generator(latent, training=True), training=True)
            g_loss = loss_fn(tf.ones_like(fake_logits), fake_logits) / batch_size
        status = optimizers.minimize(g_loss, tape, parts=["generator"], only_if=only_if)
        return status, g_loss

    return generator_step


def make_train_step(
    discriminator_step: DiscriminatorStepFn, generator_step: GeneratorStepFn, metrics: GanMetrics
) -> StepFn:
    """Return the training step: a discriminator update, then a generator update, then metrics.

    The two updates run in this order inside one call; the generator's step sees the
    discriminator as just updated. A step is applied whole or not at all: when the
    discriminator's loss or gradients are not finite, the generator is not updated either.
    The metrics record every batch; for a skipped step, the loop's `gradients.NonFiniteGuard`
    undoes that, and only `skipped_steps` counts it.

    Returns:
        A function of a batch of real images that returns the step's `update_status` code:
        the discriminator's, or the generator's when the discriminator's was finite.
    """

    def train_step(real: tf.Tensor) -> tf.Tensor:
        batch_size = global_batch_size(real)
        d_status, d_loss, real_logits, fake_logits = discriminator_step(real, batch_size)
        g_status, g_loss = generator_step(tf.shape(real)[0], batch_size, d_status == FINITE)
        metrics.update(d_loss, g_loss, batch_size, real_logits, fake_logits)
        return tf.where(d_status != FINITE, d_status, g_status)

    return train_step


def input_signature(config: Config) -> tuple[tf.TensorSpec]:
    """The real images of one batch; the batch dimension is `None`.

    A `None` batch dimension lets the smaller last batch of an epoch reuse the same trace.
    """
    return (tf.TensorSpec(shape=(None, *config.image_shape), dtype=tf.float32, name="images"),)


def check_models(model: GAN, config: Config) -> None:
    """Fail fast when the two networks do not fit each other and the loss.

    Raises:
        ValueError: Naming the mismatch and the fix.
    """
    images = model.generator(tf.zeros((2, config.latent_dim)), training=False)
    if tuple(images.shape) != (2, *config.image_shape):
        raise ValueError(
            f"the generator makes images of shape {tuple(images.shape[1:])}, but "
            f"Config.image_shape is {config.image_shape}; make its output match"
        )
    logits = model.discriminator(images, training=False)
    precision.check_output(logits, model.discriminator)
    if tuple(logits.shape) != (2, 1):
        raise ValueError(
            f"the discriminator outputs shape {tuple(logits.shape[1:])} per image, but the loss "
            "needs one logit, (1,); give its last layer 1 unit"
        )
    activation = getattr(model.discriminator.layers[-1], "activation", None)
    if activation is not None and keras.activations.serialize(activation) == "sigmoid":
        raise ValueError(
            "the discriminator's last layer applies sigmoid, but the loss expects logits "
            "(from_logits=True); remove the activation from the last layer"
        )


def build_optimizers(model: GAN, config: Config, options: RunOptions) -> OptimizerSet:
    """The generator's and the discriminator's Adam optimizers, each on its own model."""
    generator_adam = keras.optimizers.Adam(
        learning_rate=config.generator_learning_rate, beta_1=config.beta_1, name="g_adam"
    )
    discriminator_adam = keras.optimizers.Adam(
        learning_rate=config.discriminator_learning_rate, beta_1=config.beta_1, name="d_adam"
    )
    return OptimizerSet(
        [
            ("generator", model.generator, generator_adam),
            ("discriminator", model.discriminator, discriminator_adam),
        ],
        options,
    )


def sample_grid(images: tf.Tensor) -> tf.Tensor:
    """Tile images with pixels in [-1, 1] into one square uint8 image for `tf.io.encode_png`."""
    count, height, width, channels = images.shape
    rows = math.isqrt(count)
    pixels = tf.round((tf.clip_by_value(images, -1.0, 1.0) + 1.0) * 127.5)
    pixels = tf.repeat(tf.repeat(pixels, SAMPLE_SCALE, axis=1), SAMPLE_SCALE, axis=2)
    height, width = height * SAMPLE_SCALE, width * SAMPLE_SCALE
    grid = tf.reshape(pixels, (rows, rows, height, width, channels))
    # Tiled in float32, cast last: oneDNN's uint8 transpose logs an error line on CPUs
    # without AVX-512 (TensorFlow 2.21).
    grid = tf.transpose(grid, (0, 2, 1, 3, 4))
    return tf.cast(tf.reshape(grid, (rows * height, rows * width, channels)), tf.uint8)


class SampleGrid(keras.callbacks.Callback):
    """Each epoch, the generator's images for fixed noise: a PNG grid, and a TensorBoard image.

    Writes `logdir/samples_epoch_{epoch:03d}.png` and, with `tensorboard`, an image `samples`
    in `logdir/train`. The noise is drawn once from `seed`, so the grids show the same latent
    points improving.

    Args:
        logdir: The run's directory.
        config: Gives `num_samples` (a square number), `latent_dim` and `seed`.
        tensorboard: Also write the grid as a TensorBoard image.
    """

    def __init__(self, logdir: str | Path, config: Config, *, tensorboard: bool) -> None:
        super().__init__()
        self.logdir = Path(logdir)
        self.noise = tf.random.Generator.from_seed(config.seed).normal(
            (config.num_samples, config.latent_dim)
        )
        self.tensorboard = tensorboard
        self._writer: tf.summary.SummaryWriter | None = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Write this epoch's grid."""
        grid = sample_grid(self.model.generator(self.noise, training=False))
        self.logdir.mkdir(parents=True, exist_ok=True)
        path = self.logdir / f"samples_epoch_{epoch + 1:03d}.png"
        tf.io.write_file(str(path), tf.io.encode_png(grid))
        if self.tensorboard:
            if self._writer is None:
                self._writer = tf.summary.create_file_writer(str(self.logdir / "train"))
            with self._writer.as_default():
                tf.summary.image("samples", grid[tf.newaxis], step=epoch + 1)
            self._writer.flush()

    def on_train_end(self, logs: dict | None = None) -> None:
        """Close the event file."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
