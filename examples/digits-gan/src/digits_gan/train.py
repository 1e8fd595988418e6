"""The training loop: epochs, metric resets, logging and sample images.

`fit` is the entry point; `Trainer` holds what one run builds exactly once (optimizers, loss,
metrics, the noise generator, traced step functions) so that tests and later extensions can
reach them.

Template-owned: `copier update` replaces this file.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import keras
import tensorflow as tf

from .config import Config
from .data import load_dataset
from .gan import (
    GanMetrics,
    StepFn,
    make_discriminator_step,
    make_generator_step,
    make_loss,
    make_train_step,
)
from .loop import EpochLogs, StepRunner, append_logs, format_logs
from .model import build_discriminator, build_generator

SAMPLE_SCALE = 4  # Each pixel of a sample becomes a 4x4 block, so the grid is easy to see.


def input_signature(config: Config) -> tuple[tf.TensorSpec]:
    """The real images of one batch; the batch dimension is `None`.

    A `None` batch dimension lets the smaller last batch of an epoch reuse the same trace.
    """
    return (tf.TensorSpec(shape=(None, *config.image_shape), dtype=tf.float32, name="images"),)


def check_dataset(dataset: tf.data.Dataset, config: Config) -> None:
    """Fail fast, before tracing, when a dataset does not yield what the step declares.

    Raises:
        ValueError: If the elements are not float32 image batches of `Config.image_shape`.
    """
    spec = dataset.element_spec
    (expected,) = input_signature(config)
    if not (
        isinstance(spec, tf.TensorSpec)
        and spec.dtype == expected.dtype
        and expected.shape.is_compatible_with(spec.shape)
    ):
        raise ValueError(
            f"the dataset yields {spec}, but the GAN trains on batches of float32 images of "
            f"shape {tuple(expected.shape)} and no labels; map it to images only in data.py, "
            "or change Config.image_shape"
        )


def check_models(generator: keras.Model, discriminator: keras.Model, config: Config) -> None:
    """Fail fast when the two models do not fit each other and the loss.

    Raises:
        ValueError: Naming the mismatch and the fix.
    """
    images = generator(tf.zeros((2, config.latent_dim)), training=False)
    if tuple(images.shape) != (2, *config.image_shape):
        raise ValueError(
            f"the generator makes images of shape {tuple(images.shape[1:])}, but "
            f"Config.image_shape is {config.image_shape}; make its output match"
        )
    logits = discriminator(images, training=False)
    if tuple(logits.shape) != (2, 1):
        raise ValueError(
            f"the discriminator outputs shape {tuple(logits.shape[1:])} per image, but the loss "
            "needs one logit, (1,); give its last layer 1 unit"
        )
    activation = getattr(discriminator.layers[-1], "activation", None)
    if activation is not None and keras.activations.serialize(activation) == "sigmoid":
        raise ValueError(
            "the discriminator's last layer applies sigmoid, but the loss expects logits "
            "(from_logits=True); remove the activation from the last layer"
        )


def sample_grid(images: tf.Tensor) -> tf.Tensor:
    """Tile images with pixels in [-1, 1] into one square uint8 image for `tf.io.encode_png`."""
    count, height, width, channels = images.shape
    rows = math.isqrt(count)
    pixels = tf.cast(tf.round((tf.clip_by_value(images, -1.0, 1.0) + 1.0) * 127.5), tf.uint8)
    pixels = tf.repeat(tf.repeat(pixels, SAMPLE_SCALE, axis=1), SAMPLE_SCALE, axis=2)
    height, width = height * SAMPLE_SCALE, width * SAMPLE_SCALE
    grid = tf.reshape(pixels, (rows, rows, height, width, channels))
    grid = tf.transpose(grid, (0, 2, 1, 3, 4))
    return tf.reshape(grid, (rows * height, rows * width, channels))


class Trainer:
    """Runs epochs of alternating GAN updates with the step traced once per run.

    Args:
        config: The run's hyperparameters.
        generator: Maps noise to images, see `model.build_generator`.
        discriminator: Maps images to one logit each, see `model.build_discriminator`.
        run_eagerly: Run the steps as plain Python for readable stack traces.

    Attributes:
        generator_optimizer: Updates the generator's trainable variables only.
        discriminator_optimizer: Updates the discriminator's trainable variables only.
        noise: The source of every latent vector, seeded by `config.seed`; a
            `tf.random.Generator`, so no Python randomness runs inside the step.
        sample_noise: The fixed latent vectors of each epoch's sample grid.
        discriminator_step: One discriminator update (a plain function).
        generator_step: One generator update (a plain function).
        train_step: Both updates for one batch, a `tf.function` unless `run_eagerly`.
        train_runner: Runs `train_step` over an epoch, `config.steps_per_execution` steps
            per call, keeping one iterator per dataset for the whole run.
    """

    def __init__(
        self,
        config: Config,
        generator: keras.Model,
        discriminator: keras.Model,
        *,
        run_eagerly: bool = False,
    ) -> None:
        check_models(generator, discriminator, config)
        self.config = config
        self.generator = generator
        self.discriminator = discriminator
        self.generator_optimizer = keras.optimizers.Adam(
            learning_rate=config.generator_learning_rate, beta_1=config.beta_1, name="g_adam"
        )
        self.discriminator_optimizer = keras.optimizers.Adam(
            learning_rate=config.discriminator_learning_rate, beta_1=config.beta_1, name="d_adam"
        )
        # Built up front, each on its own model's variables: a Keras 3 optimizer updates only
        # the variables it was built with, and one built while tracing traces the step twice.
        self.generator_optimizer.build(generator.trainable_variables)
        self.discriminator_optimizer.build(discriminator.trainable_variables)
        self.noise = tf.random.Generator.from_seed(config.seed)
        self.sample_noise = self.noise.normal((config.num_samples, config.latent_dim))
        self.metrics = GanMetrics.create()
        loss_fn = make_loss()
        self.discriminator_step = make_discriminator_step(
            generator, discriminator, self.discriminator_optimizer, loss_fn, self.noise, config
        )
        self.generator_step = make_generator_step(
            generator, discriminator, self.generator_optimizer, loss_fn, self.noise, config
        )
        train_step = make_train_step(self.discriminator_step, self.generator_step, self.metrics)
        self.run_eagerly = run_eagerly
        self.train_step: StepFn = (
            train_step
            if run_eagerly
            else tf.function(
                train_step,
                input_signature=input_signature(config),
                # The step branches on Python values only; without AutoGraph, errors raised
                # while tracing (such as NoneGradientError) reach the caller as is.
                autograph=False,
                jit_compile=config.jit_compile,
            )
        )
        self.train_runner = StepRunner(
            self.train_step, config.steps_per_execution, self.metrics.all(), run_eagerly=run_eagerly
        )

    def train_epoch(self, dataset: tf.data.Dataset) -> tuple[EpochLogs, int]:
        """Train on every batch once; return this epoch's figures and its number of steps."""
        return self.train_runner.run_epoch(dataset)

    def samples(self) -> tf.Tensor:
        """The generator's images for `sample_noise`, tiled into one uint8 grid."""
        return sample_grid(self.generator(self.sample_noise, training=False))

    def fit(
        self,
        dataset: tf.data.Dataset,
        *,
        logdir: str | Path | None = None,
        verbose: bool = True,
    ) -> list[EpochLogs]:
        """Train for `config.epochs` epochs.

        Args:
            dataset: Batches of real images.
            logdir: If given, each epoch's figures are appended to `logdir/metrics.jsonl` and
                its samples written to `logdir/samples_epoch_{epoch:03d}.png`.
            verbose: Print one line per epoch.

        Returns:
            One dict per epoch with `epoch`, `d_loss`, `g_loss`, `d_acc_real`, `d_acc_fake`.
        """
        check_dataset(dataset, self.config)
        if logdir is not None:
            Path(logdir).mkdir(parents=True, exist_ok=True)
        history: list[EpochLogs] = []
        try:
            for epoch in range(1, self.config.epochs + 1):
                start = time.perf_counter()
                train_logs, steps = self.train_epoch(dataset)
                steps_per_second = steps / (time.perf_counter() - start)
                logs: EpochLogs = {"epoch": epoch, **train_logs}
                history.append(logs)
                if verbose:
                    print(format_logs(logs, self.config.epochs, steps_per_second), flush=True)
                if logdir is not None:
                    append_logs(logdir, logs)
                    png = tf.io.encode_png(self.samples())
                    tf.io.write_file(str(Path(logdir) / f"samples_epoch_{epoch:03d}.png"), png)
        finally:
            # The iterator holds read-ahead batches and a shuffle buffer: free it with the run.
            self.train_runner.close()
        return history


def fit(
    config: Config,
    generator: keras.Model | None = None,
    discriminator: keras.Model | None = None,
    dataset: tf.data.Dataset | None = None,
    *,
    logdir: str | Path | None = None,
    run_eagerly: bool = False,
    verbose: bool = True,
) -> list[EpochLogs]:
    """Train a GAN with the custom loop.

    Seeds Keras, TensorFlow, NumPy and Python from `config.seed` first, so a run repeats.

    Args:
        config: The run's hyperparameters.
        generator: Defaults to `build_generator(config)`.
        discriminator: Defaults to `build_discriminator(config)`.
        dataset: Defaults to `load_dataset(config)`.
        logdir: If given, figures go to `logdir/metrics.jsonl` and samples to
            `logdir/samples_epoch_{epoch:03d}.png`.
        run_eagerly: Run the steps as plain Python for readable stack traces.
        verbose: Print one line per epoch.

    Returns:
        One dict per epoch with `epoch`, `d_loss`, `g_loss`, `d_acc_real`, `d_acc_fake`.
    """
    keras.utils.set_random_seed(config.seed)
    generator = build_generator(config) if generator is None else generator
    discriminator = build_discriminator(config) if discriminator is None else discriminator
    dataset = load_dataset(config) if dataset is None else dataset
    trainer = Trainer(config, generator, discriminator, run_eagerly=run_eagerly)
    return trainer.fit(dataset, logdir=logdir, verbose=verbose)
