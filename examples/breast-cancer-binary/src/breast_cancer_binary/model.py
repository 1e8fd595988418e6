"""The model. This module is yours: change the architecture freely.

Contract, checked by `train.fit` before training: `build_model(config)` takes float32 batches of
shape `(batch, *config.input_shape)` and returns `(batch, losses.output_units(config))`
logits: end it with `losses.output_layer(config)`, which has no activation (the loss applies
it, numerically safely).
Give random layers such as `Dropout` a `seed=config.seed`, so runs repeat exactly.
"""

from __future__ import annotations

import keras

from .config import Config
from .losses import output_layer


def build_model(config: Config) -> keras.Model:
    """A multilayer perceptron with one hidden layer."""
    inputs = keras.Input(shape=config.input_shape, name="features")
    x = keras.layers.Dense(128, activation="relu", kernel_regularizer=keras.regularizers.L2(1e-4))(
        inputs
    )
    x = keras.layers.Dropout(0.1, seed=config.seed)(x)
    outputs = output_layer(config)(x)
    return keras.Model(inputs, outputs, name="breast_cancer_binary")
