"""The model. This module is yours: change the architecture freely.

Contract, checked by `fit` before training: `build_model(config)` takes float32 batches of
shape `(batch, *config.input_shape)` and returns `(batch, config.labels.output_units)`
probabilities: end it with `config.labels.output_layer()`, which applies
`config.labels.output_activation`.
It takes the features as `data.py` reads them and standardizes them first (`standardize`), so
what is trained is what `predict` and `export` serve. Give random layers such as `Dropout` a
`seed=config.seed`, so runs repeat exactly.
"""

from __future__ import annotations

import keras

from .config import Config
from .data import feature_statistics


def build_model(config: Config) -> keras.Model:
    """A small convolutional network for `(height, width, channels)` inputs."""
    regularizer = keras.regularizers.L2(1e-4)
    inputs = keras.Input(shape=config.input_shape, name="features")
    x = standardize(config)(inputs)
    for filters in (32, 64):
        x = keras.layers.Conv2D(
            filters, 3, padding="same", activation="relu", kernel_regularizer=regularizer
        )(x)
        x = keras.layers.MaxPooling2D(padding="same")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(128, activation="relu", kernel_regularizer=regularizer)(x)
    x = keras.layers.Dropout(0.1, seed=config.seed)(x)
    outputs = config.labels.output_layer()(x)
    return keras.Model(inputs, outputs, name="digits_onehot_probs")


def standardize(config: Config) -> keras.layers.Normalization:
    """A layer that standardizes each feature with the training split's `feature_statistics`.

    The statistics are part of the model (saved in `model.keras` and in exports). The layer
    computes in float32 under any dtype policy, as standardizing in NumPy would.
    """
    mean, variance = feature_statistics(config)
    axis = tuple(range(1, 1 + len(config.input_shape)))  # One mean and variance per feature.
    return keras.layers.Normalization(
        axis=axis, mean=mean, variance=variance, dtype="float32", name="standardize"
    )
