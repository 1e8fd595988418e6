"""Shuffled batches of arrays held in memory, for the training split of `data.py`.

Template-owned: `copier update` merges template changes into it.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

Arrays = np.ndarray | tuple[np.ndarray, ...]
Tensors = tf.Tensor | tuple[tf.Tensor, ...]


def shuffled_batches(
    arrays: Arrays, batch_size: int, *, seed: int, drop_remainder: bool = False
) -> tf.data.Dataset:
    """Batches of `arrays`, cut along their first axis, in a new random order every epoch.

    The same as `from_tensor_slices(arrays).shuffle(n, seed).batch(batch_size)`, without its
    per-example work: each epoch draws one permutation from its own seed, gathers the whole
    split in that order and cuts it into batches with `rebatch`. Each epoch holds one permuted
    copy of the arrays, so use it for small splits, which fit in memory twice; for large ones,
    `from_tensor_slices` with a bounded `shuffle` buffer, or files, are the tools (scaffold's
    benchmarks/large_data.md compares them).

    Args:
        arrays: One array, or a tuple of arrays with the same first dimension, e.g.
            `(features, labels)`; batches have the same structure.
        batch_size: Examples per batch; the last batch of an epoch holds the remainder.
        seed: The orders of all epochs follow from it, so a run repeats exactly.
        drop_remainder: Drop the incomplete last batch, so that every batch has the static
            shape `(batch_size, ...)` (XLA compiles once per shape).

    Returns:
        A dataset whose number of batches is known (`cardinality()`), so that
        `loop.StepRunner` keeps one iterator over it for the whole run.
    """
    num_examples = int(tf.nest.flatten(arrays)[0].shape[0])
    if drop_remainder:
        num_batches = num_examples // batch_size
    else:
        num_batches = math.ceil(num_examples / batch_size)

    @tf.autograph.experimental.do_not_convert
    def permute(whole: Tensors, epoch_seed: tf.Tensor) -> Tensors:
        noise = tf.random.stateless_uniform([num_examples], seed=tf.stack([epoch_seed, 0]))
        order = tf.argsort(noise)
        return tf.nest.map_structure(lambda array: tf.gather(array, order), whole)

    # A new seed on every pass, repeated or re-iterated, and the same sequence for a seed.
    epoch_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    return (
        tf.data.Dataset.zip(tf.data.Dataset.from_tensors(arrays), epoch_seeds)
        .map(permute)
        .rebatch(batch_size, drop_remainder=drop_remainder)
        .apply(tf.data.experimental.assert_cardinality(num_batches))
    )
