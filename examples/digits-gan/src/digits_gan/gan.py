"""The GAN's model and what its task uses: both networks in one model, checks, samples.

`GAN` holds the generator and the discriminator as one Keras model for the loop, its
checkpoints and callbacks; `check_models` fails fast on networks that do not fit each other;
`draw_latent` draws a replica's latent vectors so that replicas stay exact; `SampleGrid`
writes each epoch's samples. The step itself, its losses, metrics and optimizers are the
task's, in `task.py`.

Template-owned: `copier update` merges template changes into it.
"""

from __future__ import annotations

import math
from pathlib import Path

import keras
import tensorflow as tf

from .config import Config
from .engine import precision

SAMPLE_SCALE = 4  # Each pixel of a sample becomes a 4x4 block, so the grid is easy to see.


@keras.saving.register_keras_serializable(package=__package__)
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
