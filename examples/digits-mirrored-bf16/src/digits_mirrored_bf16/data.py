"""The data: replace this module with yours.

Default: scikit-learn's handwritten digits (8x8 images), which ship inside scikit-learn, so
training works offline. Only the first `config.num_classes` digits are kept.

Contract, checked by `train.fit` before training: `load_datasets(config)` returns
`(train_ds, val_ds)`, batched `tf.data.Dataset`s of `(features, labels)` with float32 features
of shape `(batch, *config.input_shape)` and labels as `losses.label_spec(config)` declares them;
`losses.encode_labels` turns class ids into that encoding.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits

from .batches import shuffled_batches
from .config import Config
from .losses import encode_labels


def load_arrays(config: Config) -> tuple[np.ndarray, np.ndarray]:
    """All examples as float32 features of shape `(n, *config.input_shape)` and class ids `(n,)`."""
    features, class_ids = load_digits(return_X_y=True)
    keep = class_ids < config.num_classes
    features = features[keep].reshape((-1, *config.input_shape)).astype(np.float32)
    return features, class_ids[keep]


def load_datasets(config: Config) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """Split, standardize, encode and batch the data.

    The split and the shuffling follow `config.seed`. Features are standardized with the
    training split's statistics only, so nothing leaks from the validation split.
    """
    features, class_ids = load_arrays(config)
    order = np.random.default_rng(config.seed).permutation(len(features))
    num_val = max(1, round(len(features) * config.validation_fraction))
    val_index, train_index = order[:num_val], order[num_val:]
    mean = features[train_index].mean(axis=0)
    std = features[train_index].std(axis=0)
    std[std == 0] = 1.0  # Constant features (e.g. blank pixels) stay at zero.
    features = (features - mean) / std
    labels = encode_labels(class_ids, config)

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
