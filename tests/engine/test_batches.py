"""Shuffled in-memory batches: each example once per epoch, a new order every epoch."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from engine.batches import shuffled_batches

NUM_EXAMPLES = 100
BATCH_SIZE = 16  # 7 batches, the last of 4.


def arrays() -> tuple[np.ndarray, np.ndarray]:
    """Features whose every entry is the example's id, and the ids as labels."""
    ids = np.arange(NUM_EXAMPLES, dtype=np.int32)
    return np.repeat(ids[:, None], 3, axis=1).astype(np.float32), ids


def epoch_order(batches: list[tuple[tf.Tensor, tf.Tensor]]) -> list[int]:
    """The ids of one epoch in the order they came; checks features and labels stayed paired."""
    for features, labels in batches:
        np.testing.assert_array_equal(features.numpy(), np.repeat(labels.numpy()[:, None], 3, 1))
    return np.concatenate([labels.numpy() for _, labels in batches]).tolist()


def test_each_epoch_has_every_example_once_in_a_new_order() -> None:
    dataset = shuffled_batches(arrays(), BATCH_SIZE, seed=7)
    assert int(dataset.cardinality()) == 7

    orders = [epoch_order(list(dataset)) for _ in range(3)]

    assert all(sorted(order) == list(range(NUM_EXAMPLES)) for order in orders)
    assert len({tuple(order) for order in orders}) == 3
    assert [int(x.shape[0]) for x, _ in dataset] == [16] * 6 + [4]


def test_repeating_also_draws_a_new_order_every_epoch() -> None:
    iterator = iter(shuffled_batches(arrays(), BATCH_SIZE, seed=7).repeat())
    orders = [epoch_order([next(iterator) for _ in range(7)]) for _ in range(3)]

    assert all(sorted(order) == list(range(NUM_EXAMPLES)) for order in orders)
    assert len({tuple(order) for order in orders}) == 3


@pytest.mark.parametrize(("seed", "same"), [(7, True), (8, False)])
def test_the_orders_follow_the_seed(seed: int, same: bool) -> None:
    runs = []
    for run_seed in (7, seed):
        dataset = shuffled_batches(arrays(), BATCH_SIZE, seed=run_seed)
        runs.append([epoch_order(list(dataset)) for _ in range(2)])

    assert (runs[0] == runs[1]) == same


def test_drop_remainder_gives_one_static_batch_shape() -> None:
    dataset = shuffled_batches(arrays(), BATCH_SIZE, seed=7, drop_remainder=True)

    assert dataset.element_spec[0].shape.as_list() == [BATCH_SIZE, 3]
    assert int(dataset.cardinality()) == NUM_EXAMPLES // BATCH_SIZE
    assert len(set(epoch_order(list(dataset)))) == NUM_EXAMPLES // BATCH_SIZE * BATCH_SIZE


def test_a_single_array_gives_batches_of_that_array() -> None:
    images, _ = arrays()
    dataset = shuffled_batches(images, BATCH_SIZE, seed=7)

    assert isinstance(dataset.element_spec, tf.TensorSpec)
    ids = np.concatenate([batch.numpy()[:, 0] for batch in dataset])
    assert sorted(ids.astype(int).tolist()) == list(range(NUM_EXAMPLES))
