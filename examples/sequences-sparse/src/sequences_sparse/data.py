"""The data: replace this module with yours.

Default: a learnable synthetic sequence task. Each class has its own few keyword tokens; a
sequence is noise tokens from the whole vocabulary with its class's keywords mixed in, and its
length varies from `max_length // 16` to `max_length`. Generated from the seed, so it works
offline and repeats exactly.

Contract, checked by `fit` before training: `load_datasets(config)` returns
`(train_ds, val_ds)`, batched `tf.data.Dataset`s of `(token_ids, labels)` with int32 token ids
of shape `(batch, length)`, padded with 0 (`config.features.spec`), and labels as
`config.labels.spec` declares them; `config.labels.encode` turns class ids into that
encoding. Batch unbatched sequences with `sequences.batch_sequences`, which pads and buckets them.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from .config import Config
from .engine.sequences import PAD_ID, batch_sequences

NUM_EXAMPLES = 2000
KEYWORDS_PER_CLASS = 4
KEYWORD_RATE = 0.15  # The share of a sequence's tokens that are its class's keywords.


def load_sequences(config: Config) -> tuple[list[np.ndarray], np.ndarray]:
    """All examples as int32 token-id sequences of varying length (no padding), and class ids."""
    rng = np.random.default_rng(config.seed)
    num_classes = config.labels.class_count
    keywords = rng.integers(1, config.vocab_size, size=(num_classes, KEYWORDS_PER_CLASS))
    class_ids = rng.integers(0, num_classes, size=NUM_EXAMPLES)
    lengths = rng.integers(max(1, config.max_length // 16), config.max_length + 1, NUM_EXAMPLES)
    sequences = []
    for class_id, length in zip(class_ids, lengths, strict=True):
        tokens = rng.integers(1, config.vocab_size, size=length)
        is_keyword = rng.random(length) < KEYWORD_RATE
        tokens[is_keyword] = rng.choice(keywords[class_id], size=int(is_keyword.sum()))
        sequences.append(tokens.astype(np.int32))
    return sequences, class_ids


def unbatched(sequences: list[np.ndarray], labels: np.ndarray) -> tf.data.Dataset:
    """One `(token_ids, label)` pair per example, the token ids at their own length."""
    lengths = np.array([len(s) for s in sequences], dtype=np.int32)
    padded = np.full((len(sequences), max(lengths, default=0)), PAD_ID, dtype=np.int32)
    for row, sequence in zip(padded, sequences, strict=True):
        row[: len(sequence)] = sequence
    return tf.data.Dataset.from_tensor_slices((padded, lengths, labels)).map(
        lambda x, length, y: (x[:length], y)
    )


def load_datasets(config: Config) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """Split, encode, pad and batch the data.

    The split and the shuffling follow `config.seed`.
    """
    sequences, class_ids = load_sequences(config)
    order = np.random.default_rng(config.seed).permutation(len(sequences))
    num_val = max(1, round(len(sequences) * config.validation_fraction))
    val_index, train_index = order[:num_val], order[num_val:]
    labels = config.labels.encode(class_ids)

    train_ds = (
        unbatched([sequences[i] for i in train_index], labels[train_index])
        .cache()
        .shuffle(len(train_index), seed=config.seed, reshuffle_each_iteration=True)
    )
    train_ds = batch_sequences(train_ds, config).prefetch(tf.data.AUTOTUNE)
    val_ds = unbatched([sequences[i] for i in val_index], labels[val_index])
    val_ds = batch_sequences(val_ds, config).cache().prefetch(tf.data.AUTOTUNE)
    return train_ds, val_ds
