"""Batching of variable-length sequences: padding, bucketing and the shapes XLA compiles for.

Sequences are padded with 0, which the model masks, so padding changes neither the loss nor the
metrics. Examples of similar length are batched together (`bucket_by_sequence_length`), so
little compute goes to padding.

Template-owned: `copier update` merges template changes into it.
"""

from __future__ import annotations

import math
from typing import Protocol

import tensorflow as tf

PAD_ID = 0


class SequenceConfig(Protocol):
    """What batching reads from the project's `Config`."""

    batch_size: int
    max_length: int
    num_buckets: int


def bucket_lengths(config: SequenceConfig) -> tuple[int, ...]:
    """The longest sequence of each bucket, shortest first: `max_length / 2**k`.

    With `Config(max_length=128, num_buckets=4)` that is `(16, 32, 64, 128)`.
    """
    return tuple(sorted({math.ceil(config.max_length / 2**k) for k in range(config.num_buckets)}))


def batch_sequences(dataset: tf.data.Dataset, config: SequenceConfig) -> tf.data.Dataset:
    """Batch unbatched `(token_ids, label)` pairs into padded `(batch, length)` batches.

    `(token_ids, label, sample_weight)` triples are batched alike, one weight per sequence.

    Sequences longer than `config.max_length` are cut. Each bucket batches the sequences no
    longer than its length and pads them to that length: the longest of a full batch is close
    to it anyway, and batches then come in a few shapes only, so that with
    `RunOptions.jit_compile` XLA compiles each step at most twice per bucket (full and last
    batch), whatever the lengths in the data.

    Args:
        dataset: Unbatched pairs of int32 token ids of shape `(length,)` and one label, or
            triples with one sample weight too.
        config: The run's configuration.

    Returns:
        Batches of int32 `(batch, length)` token ids, padded with `PAD_ID` (0), and labels
        (and sample weights).
    """
    lengths = bucket_lengths(config)
    max_length = config.max_length
    return dataset.map(lambda x, *rest: (x[:max_length], *rest)).bucket_by_sequence_length(
        element_length_func=lambda x, *rest: tf.shape(x)[0],
        # A sequence of length n goes to the first bucket whose boundary exceeds n; the last,
        # unbounded bucket stays empty because sequences are cut to max_length.
        bucket_boundaries=[length + 1 for length in lengths],
        bucket_batch_sizes=[config.batch_size] * (len(lengths) + 1),
        pad_to_bucket_boundary=True,
    )
