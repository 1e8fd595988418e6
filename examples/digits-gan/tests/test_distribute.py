"""More devices: the same run, and the same weights, on one device and on replicas.

The CPU is split into logical devices in `conftest.py`, so `MirroredStrategy` runs here with
up to three replicas.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from digits_gan import PROJECT
from digits_gan.config import Config, RunOptions
from digits_gan.engine import precision
from digits_gan.engine.train import fit
from digits_gan.model import build_model

# One device in float32 unless a test says otherwise, whatever the project's defaults.
QUIET = RunOptions(verbose=0, steps_per_execution=4, strategy="none", precision="float32")
# 45 examples in batches of 12: the last batch of 9 splits unevenly over 2 replicas (4 and 5).
EXAMPLES, BATCH = 45, 12


def mirrored(replicas: int) -> tf.distribute.MirroredStrategy:
    """A strategy over the first `replicas` logical CPU devices."""
    devices = [f"/cpu:{index}" for index in range(replicas)]
    return tf.distribute.MirroredStrategy(
        devices, cross_device_ops=tf.distribute.ReductionToOneDevice()
    )


def small_config(config: Config) -> Config:
    """Two epochs of a few small batches."""
    return dataclasses.replace(config, epochs=2, batch_size=BATCH)


def datasets(config: Config) -> tuple[tf.data.Dataset, None]:
    """Batches of real images in [-1, 1], ending with a smaller batch; a GAN has no validation."""
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, size=(EXAMPLES, *config.image_shape)).astype(np.float32)
    return tf.data.Dataset.from_tensor_slices(images).batch(config.batch_size), None


Run = tuple[dict[str, list[float]], list[np.ndarray], list[np.ndarray]]


@pytest.fixture(scope="module")
def one_device() -> Run:
    """The float32 run on one device that the others are held to."""
    return train(small_config(Config()), None)


def train(
    config: Config,
    strategy: tf.distribute.Strategy | None,
    policy: str = "float32",
    **options: object,
) -> Run:
    """Train the project's model without dropout; its history, first and last weights."""
    keras.utils.set_random_seed(config.seed)
    scope = contextlib.nullcontext() if strategy is None else strategy.scope()
    with precision.dtype_policy(policy), scope:
        model = build_model(config)
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0  # Replicas draw other dropout masks than one device.
    before = [w.numpy() for w in model.weights]
    train_ds, val_ds = datasets(config)
    run_options = dataclasses.replace(QUIET, precision=policy, **options)
    history = fit(PROJECT, config, model, train_ds, val_ds, options=run_options, strategy=strategy)
    after = [w.numpy() for w in model.weights]
    return history.history, before, after


def test_a_gan_trains_on_two_replicas(config: Config) -> None:
    """Both networks train under `MirroredStrategy`, every figure finite.

    Each replica draws its own latent vectors, so a GAN's figures change with the number of
    replicas (as with `model.fit`); a classifier's do not.
    """
    history, before, after = train(small_config(config), mirrored(2))
    assert all(np.isfinite(values).all() for values in history.values())
    assert all(not np.array_equal(b, a) for b, a in zip(before, after, strict=True) if b.size)


def test_a_gan_resumed_on_two_replicas_repeats_the_run_bit_for_bit(
    config: Config, tmp_path: Path
) -> None:
    """The last batch splits unevenly (4 and 5 images), yet the resumed run is exact.

    A replica's noise generator advances by what it draws: every replica draws as many latent
    vectors as the whole batch holds, so their states stay equal and the checkpoint (which
    keeps one) resumes them all.
    """
    config = small_config(config)
    train_ds, _ = datasets(config)
    whole = fit(PROJECT, config, train_ds=train_ds, options=QUIET, strategy=mirrored(2))
    one_epoch = dataclasses.replace(config, epochs=1)
    first = dataclasses.replace(QUIET, logdir=tmp_path)
    fit(PROJECT, one_epoch, train_ds=train_ds, options=first, strategy=mirrored(2))
    again = dataclasses.replace(first, resume=True)
    resumed = fit(PROJECT, config, train_ds=train_ds, options=again, strategy=mirrored(2))

    for key, values in resumed.history.items():
        if key != "steps_per_second":
            assert values == whole.history[key][1:], key
    for ours, theirs in zip(resumed.model.get_weights(), whole.model.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
