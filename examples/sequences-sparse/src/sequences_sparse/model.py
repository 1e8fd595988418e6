"""The model. This module is yours: change the architecture freely.

Contract, checked by `fit` before training: `build_model(config)` takes int32 token ids
of shape `(batch, length)`, padded with 0, and returns `(batch, config.labels.output_units)`
logits: end it with `config.labels.output_layer()`, which has no activation (the loss applies
it, numerically safely).
Padding must not change the output: keep `mask_zero=True` (or a `Masking` layer) and layers
that honour the mask. Give random layers such as `Dropout` a `seed=config.seed`.
"""

from __future__ import annotations

import keras

from .config import Config


def build_model(config: Config) -> keras.Model:
    """Token embeddings averaged over the real tokens (padding masked), then an MLP."""
    regularizer = keras.regularizers.L2(1e-4)
    inputs = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    x = keras.layers.Embedding(config.vocab_size, 64, mask_zero=True)(inputs)
    x = keras.layers.GlobalAveragePooling1D()(x)  # A mean over the unmasked tokens only.
    x = keras.layers.Dense(128, activation="relu", kernel_regularizer=regularizer)(x)
    x = keras.layers.Dropout(0.1, seed=config.seed)(x)
    outputs = config.labels.output_layer()(x)
    return keras.Model(inputs, outputs, name="sequences_sparse")
