"""The data: replace this module with yours.

Default: scikit-learn's handwritten digits (8x8 images), which ship inside scikit-learn, so
training works offline. Only the first `config.num_classes` digits are kept.

Contract, checked by `fit` before training: `load_datasets(config)` returns
`(train_ds, val_ds)`, batched `tf.data.Dataset`s of `(features, labels)` with float32 features
of shape `(batch, *config.input_shape)` and labels as `config.labels.spec` declares them;
`config.labels.encode` turns class ids into that encoding.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits

from .config import Config
from .engine.batches import shuffled_batches


def load_arrays(config: Config) -> tuple[np.ndarray, np.ndarray]:
    """All examples as float32 features of shape `(n, *config.input_shape)` and class ids `(n,)`."""
    features, class_ids = load_digits(return_X_y=True)
    keep = class_ids < config.num_classes
    features = features[keep].reshape((-1, *config.input_shape)).astype(np.float32)
    return features, class_ids[keep]


def split(config: Config, num_examples: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training and of the validation examples, drawn from `config.seed`."""
    order = np.random.default_rng(config.seed).permutation(num_examples)
    num_val = max(1, round(num_examples * config.validation_fraction))
    return order[num_val:], order[:num_val]


def feature_statistics(config: Config) -> tuple[np.ndarray, np.ndarray]:
    """Each feature's mean and variance over the training split, for `model.py` to standardize.

    From the training split only, so nothing leaks from the validation split. A constant feature
    (e.g. a blank pixel) gets variance 1, so it is only centred (with variance 0,
    `keras.layers.Normalization` would divide it by 1e-7).
    """
    features, _ = load_arrays(config)
    train_features = features[split(config, len(features))[0]]
    variance = train_features.var(axis=0)
    variance[variance == 0] = 1.0
    return train_features.mean(axis=0), variance


def load_datasets(config: Config) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """Split, encode and batch the data; the features stay as `load_arrays` reads them.

    The split and the shuffling follow `config.seed`. The model standardizes the features itself
    (`model.py`, with `feature_statistics`), so `predict` and `export` take them as read here.
    """
    features, class_ids = load_arrays(config)
    train_index, val_index = split(config, len(features))
    labels = config.labels.encode(class_ids)

    train_ds = shuffled_batches(
        (features[train_index], labels[train_index]),
        config.batch_size,
        seed=config.seed,
    ).with_options(_in_memory_options())
    val_ds = (
        tf.data.Dataset.from_tensor_slices((features[val_index], labels[val_index]))
        .batch(config.batch_size)
        .cache()
        .prefetch(2)
        .with_options(_in_memory_options())
    )
    return train_ds, val_ds


def _in_memory_options() -> tf.data.Options:
    """Options for a pipeline that only reads memory: no parallel map for autotuning to size.

    Autotuning's bookkeeping then costs more than it saves (measured: about 10 % more training
    steps per second without it, on digits at batch 32 and 2 CPUs). Switch it back on, and use
    `prefetch(tf.data.AUTOTUNE)` and `map(..., num_parallel_calls=tf.data.AUTOTUNE)`, once the
    pipeline decodes or augments.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return options
