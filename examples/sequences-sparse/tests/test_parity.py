"""The custom loop trains exactly like `model.fit` on the same model and batches."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import QUIET

from sequences_sparse.config import Config
from sequences_sparse.data import load_datasets
from sequences_sparse.losses import make_accuracy, make_loss
from sequences_sparse.model import build_model
from sequences_sparse.train import fit


def _frozen(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """The batches of one pass over `dataset`, replayed in the same order on every iteration."""
    batches = list(dataset)
    return tf.data.Dataset.from_generator(
        lambda: iter(batches), output_signature=dataset.element_spec
    ).apply(tf.data.experimental.assert_cardinality(len(batches)))


def test_custom_loop_matches_model_fit(config: Config) -> None:
    keras.utils.set_random_seed(config.seed)
    model = build_model(config)
    # Same initial weights; dropout layers are seeded by config.seed, so their masks match too.
    reference = build_model(config)
    reference.set_weights(model.get_weights())

    # The same batches in every epoch for both loops: `fit` creates more iterators than epochs,
    # so a dataset that reshuffles on each iteration would hand the two loops different orders.
    train_ds, val_ds = (_frozen(ds) for ds in load_datasets(config))

    history = fit(config, model=model, train_ds=train_ds, val_ds=val_ds, options=QUIET)

    reference.compile(
        optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate),
        loss=make_loss(),
        metrics=[make_accuracy("accuracy")],
        jit_compile=False,  # The custom loop runs without XLA.
    )
    expected = reference.fit(
        train_ds, validation_data=val_ds, epochs=config.epochs, shuffle=False, verbose=0
    ).history

    # The same keys as model.fit's History, and the same figures.
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert history.history[key] == pytest.approx(expected[key], rel=1e-5), key
    for ours, theirs in zip(model.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-5)
