"""More devices: the same run, and the same weights, on one device and on replicas.

The CPU is split into logical devices in `conftest.py`, so `MirroredStrategy` runs here with
up to three replicas.
"""

from __future__ import annotations

import contextlib
import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import raw_features

from digits_mirrored_bf16 import PROJECT
from digits_mirrored_bf16.config import Config, RunOptions
from digits_mirrored_bf16.engine import precision
from digits_mirrored_bf16.engine.train import fit
from digits_mirrored_bf16.model import build_model

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


def datasets(config: Config, weighted: bool = False) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """Training and validation batches, in order, each ending with a smaller batch.

    With `weighted`, `(features, labels, sample_weights)` batches, some weights 0.
    """
    rng = np.random.default_rng(0)
    x = raw_features(config, 2 * EXAMPLES)
    labels = config.labels.encode(rng.integers(0, config.labels.class_count, 2 * EXAMPLES))
    weights = rng.uniform(0.0, 3.0, 2 * EXAMPLES).astype(np.float32)
    weights[rng.random(2 * EXAMPLES) < 0.2] = 0.0

    def batches(rows: slice) -> tf.data.Dataset:
        parts = (x[rows], labels[rows], weights[rows]) if weighted else (x[rows], labels[rows])
        return tf.data.Dataset.from_tensor_slices(parts).batch(config.batch_size)

    return batches(slice(0, EXAMPLES)), batches(slice(EXAMPLES, None))


Run = tuple[dict[str, list[float]], list[np.ndarray], list[np.ndarray]]


@pytest.fixture(scope="module")
def one_device() -> Run:
    """The float32 run on one device that the others are held to."""
    return train(small_config(Config()), None)


def train(
    config: Config,
    strategy: tf.distribute.Strategy | None,
    policy: str = "float32",
    *,
    weighted: bool = False,
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
    train_ds, val_ds = datasets(config, weighted)
    run_options = dataclasses.replace(QUIET, precision=policy, **options)
    history = fit(PROJECT, config, model, train_ds, val_ds, options=run_options, strategy=strategy)
    after = [w.numpy() for w in model.weights]
    return history.history, before, after


@pytest.mark.parametrize("replicas", [2, 3])
def test_replicas_train_exactly_as_one_device(one_device: Run, replicas: int) -> None:
    """The same global batches give the same weights and figures on 1, 2 or 3 replicas.

    The loss is scaled exactly once (the replicas' parts add up to the batch's mean, even
    for the last, uneven batch), and the reported figures are reduced across replicas. The
    model's dropout is off (see `train`): each replica draws its own masks, so with dropout
    the runs would differ.
    """
    one_history, _, one_device_weights = one_device
    history, _, weights = train(small_config(Config()), mirrored(replicas))
    for ours, theirs in zip(weights, one_device_weights, strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert history.keys() == one_history.keys()
    for key, values in one_history.items():
        if key != "steps_per_second":
            np.testing.assert_allclose(history[key], values, rtol=1e-5, atol=1e-6, err_msg=key)
