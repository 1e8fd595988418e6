"""The custom loop trains exactly like `model.fit` on the same model and batches."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import QUIET, features, figure_names, linear_model

from sequences_sparse import PROJECT
from sequences_sparse.config import Config
from sequences_sparse.data import load_datasets
from sequences_sparse.engine.classifier import KerasReference
from sequences_sparse.engine.train import fit
from sequences_sparse.model import build_model


def _frozen(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """The batches of one pass over `dataset`, replayed in the same order on every iteration."""
    batches = list(dataset)
    return tf.data.Dataset.from_generator(
        lambda: iter(batches), output_signature=dataset.element_spec
    ).apply(tf.data.experimental.assert_cardinality(len(batches)))


def _model_fit(config: Config, reference: keras.Model) -> keras.Model:
    """`reference` as `model.fit` trains it on the task of `task.py`: its loss, its metrics.

    Keras's own steps with the task's `compute_loss` (`KerasReference`), and fresh copies of
    the task's training metrics but the loss and the figures, so that a loss or a metric of
    your own is the reference's too (a metric needs `get_config`, as Keras's own have). One
    Adam at the config's learning rate, without XLA, as the custom loop runs.
    """
    task = PROJECT.build_task(reference, config, QUIET)
    own = {id(task.train_metrics.loss), *map(id, task.train_metrics.figures)}
    metrics = [m for m in task.train_metrics if id(m) not in own]
    copies = [type(metric).from_config(metric.get_config()) for metric in metrics]
    model_fit = KerasReference(task)
    model_fit.compile(
        optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate),
        metrics=copies,
        jit_compile=False,
    )
    return model_fit


def test_custom_loop_matches_model_fit(config: Config) -> None:
    keras.utils.set_random_seed(config.seed)
    model = build_model(config)
    # Same initial weights; dropout layers are seeded by config.seed, so their masks match too.
    reference = build_model(config)
    reference.set_weights(model.get_weights())

    # The same batches in every epoch for both loops: `fit` creates more iterators than epochs,
    # so a dataset that reshuffles on each iteration would hand the two loops different orders.
    train_ds, val_ds = (_frozen(ds) for ds in load_datasets(config))

    history = fit(PROJECT, config, model=model, train_ds=train_ds, val_ds=val_ds, options=QUIET)

    model_fit = _model_fit(config, reference)
    expected = model_fit.fit(
        train_ds, validation_data=val_ds, epochs=config.epochs, shuffle=False, verbose=0
    ).history

    # The same keys as model.fit's History, and the same figures.
    for key in figure_names(config).metrics:
        assert history.history[key] == pytest.approx(expected[key], rel=1e-5), key
    for ours, theirs in zip(model.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-5)


@pytest.mark.parametrize("weighting", ["sample weights", "class_weight"])
def test_weighted_training_matches_model_fit(config: Config, weighting: str) -> None:
    # 40 examples in batches of 16: the last batch is smaller, and counts for what it holds.
    config = dataclasses.replace(
        config,
        batch_size=16,
    )
    rng = np.random.default_rng(1)
    x = features(config, 40)
    y = config.labels.encode(rng.permutation(np.arange(40) % config.labels.class_count))
    weights = rng.uniform(0.0, 3.0, size=40).astype(np.float32)
    weights[::5] = 0.0  # Examples that count for nothing, in the loss and its gradient.
    class_weight = None
    if weighting == "sample weights":
        train_ds = tf.data.Dataset.from_tensor_slices((x, y, weights)).batch(16)
        val_ds = tf.data.Dataset.from_tensor_slices((x[:24], y[:24], weights[:24])).batch(16)
    else:
        # Classes in between weigh 1.0 (model.fit fails on a class above its largest key).
        class_weight = {0: 3.0, config.labels.class_count - 1: 0.25}
        train_ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
        val_ds = tf.data.Dataset.from_tensor_slices((x[:24], y[:24])).batch(16)
    keras.utils.set_random_seed(config.seed)
    model = linear_model(config)
    reference = linear_model(config)
    reference.set_weights(model.get_weights())

    history = fit(
        PROJECT,
        config,
        model=model,
        train_ds=train_ds,
        val_ds=val_ds,
        options=QUIET,
        class_weight=class_weight,
    )

    model_fit = _model_fit(config, reference)
    expected = model_fit.fit(
        train_ds,
        validation_data=val_ds,
        epochs=config.epochs,
        class_weight=class_weight,
        shuffle=False,
        verbose=0,
    ).history
    for key in figure_names(config).metrics:
        assert history.history[key] == pytest.approx(expected[key], rel=1e-5), key
    for ours, theirs in zip(model.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-5)
