"""The step runner: every batch exactly once per epoch, whatever the dataset and the K."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from engine.loop import StepRunner

NUM_EXAMPLES = 100
BATCH_SIZE = 16  # 7 batches, the last of 4.
IDS = tf.TensorSpec((None,), tf.int64)


class Tally:
    """A step that counts how often it has seen each example id, and a metric of examples."""

    def __init__(self) -> None:
        self.counts = tf.Variable(tf.zeros(NUM_EXAMPLES, dtype=tf.int32))
        self.seen = keras.metrics.Sum(name="seen")
        self.fail_on = tf.Variable(-1)  # An example id that makes the step fail, or -1.
        self.step = tf.function(self.count, input_signature=[IDS], autograph=False)

    def count(self, ids: tf.Tensor) -> None:
        """Count each id of one batch; fail if it holds `fail_on`."""
        tf.debugging.assert_none_equal(ids, tf.cast(self.fail_on, tf.int64), message="fail")
        self.counts.scatter_nd_add(ids[:, None], tf.ones_like(ids, dtype=tf.int32))
        self.seen.update_state(tf.cast(tf.size(ids), tf.float32))

    def take(self) -> np.ndarray:
        """The counts since the last call."""
        counts = self.counts.numpy()
        self.counts.assign(tf.zeros_like(self.counts))
        return counts


def shuffled_ids(length: str) -> tf.data.Dataset:
    """Example ids in batches, reshuffled every epoch, of known or unknown length."""
    dataset = (
        tf.data.Dataset.range(NUM_EXAMPLES)
        .shuffle(NUM_EXAMPLES, seed=1, reshuffle_each_iteration=True)
        .batch(BATCH_SIZE)
    )
    assert int(dataset.cardinality()) == 7
    if length == "unknown":
        dataset = dataset.filter(lambda ids: True)
        assert int(dataset.cardinality()) == tf.data.UNKNOWN_CARDINALITY
    return dataset


@pytest.mark.parametrize("length", ["known", "unknown"])
@pytest.mark.parametrize("steps_per_execution", [1, 3, 7, 64])
def test_each_epoch_sees_every_example_exactly_once(length: str, steps_per_execution: int) -> None:
    tally = Tally()
    runner = StepRunner(tally.step, steps_per_execution, [tally.seen])
    dataset = shuffled_ids(length)

    for _ in range(3):
        # The metric is reset at the start of every epoch and read at its end.
        assert runner.run_epoch(dataset) == ({"seen": NUM_EXAMPLES}, 7)
        np.testing.assert_array_equal(tally.take(), np.ones(NUM_EXAMPLES))

    assert runner.tracing_count() == 1


def test_known_length_takes_the_counted_path_and_still_reshuffles() -> None:
    orders = []

    @tf.function(input_signature=[IDS], autograph=False)
    def record(ids: tf.Tensor) -> None:
        tf.numpy_function(lambda batch: orders[-1].extend(batch.tolist()), [ids], [])

    runner = StepRunner(record, 64)
    dataset = shuffled_ids("known")
    for _ in range(3):
        orders.append([])
        runner.run_epoch(dataset)

    assert all(sorted(order) == list(range(NUM_EXAMPLES)) for order in orders)
    assert len({tuple(order) for order in orders}) == 3, "every epoch must draw a new order"
    assert runner.open_loop.experimental_get_tracing_count() == 0


def test_an_epoch_cut_short_by_an_error_does_not_shift_the_next() -> None:
    tally = Tally()
    runner = StepRunner(tally.step, 3)
    dataset = shuffled_ids("known")
    tally.fail_on.assign(50)

    with pytest.raises(tf.errors.InvalidArgumentError, match="fail"):
        runner.run_epoch(dataset)

    tally.fail_on.assign(-1)
    tally.take()
    assert runner.run_epoch(dataset)[1] == 7
    np.testing.assert_array_equal(tally.take(), np.ones(NUM_EXAMPLES))


def test_eager_runs_give_the_same_counts() -> None:
    tally = Tally()
    runner = StepRunner(tally.count, 3, [tally.seen], run_eagerly=True)

    for _ in range(2):
        assert runner.run_epoch(shuffled_ids("known")) == ({"seen": NUM_EXAMPLES}, 7)
        np.testing.assert_array_equal(tally.take(), np.ones(NUM_EXAMPLES))
    assert runner.tracing_count() == 0


@pytest.mark.parametrize("length", ["known", "unknown"])
def test_an_empty_epoch_still_resets_the_metrics(length: str) -> None:
    tally = Tally()
    runner = StepRunner(tally.step, 3, [tally.seen])
    runner.run_epoch(shuffled_ids(length))
    if length == "known":
        empty = shuffled_ids(length).take(0)
    else:
        empty = shuffled_ids(length).filter(lambda ids: False)
    assert int(empty.cardinality()) == (0 if length == "known" else tf.data.UNKNOWN_CARDINALITY)

    assert runner.run_epoch(empty) == ({"seen": 0.0}, 0)


def test_a_dataset_that_repeats_forever_is_refused() -> None:
    runner = StepRunner(Tally().step, 3)
    with pytest.raises(ValueError, match=r"repeats forever.*steps_per_epoch.*\.repeat\(\)"):
        runner.run_epoch(shuffled_ids("known").repeat())


@pytest.mark.parametrize("length", ["known", "unknown", "infinite"])
def test_steps_per_epoch_reads_on_across_passes_over_the_data(length: str) -> None:
    tally = Tally()
    # 5 steps per epoch over 7 batches a pass: epochs straddle passes, as with fit.
    runner = StepRunner(tally.step, 3, [tally.seen], steps_per_epoch=5)
    dataset = shuffled_ids("unknown" if length == "unknown" else "known")
    if length == "infinite":
        dataset = dataset.repeat()

    epochs = [runner.run_epoch(dataset) for _ in range(7)]

    # 35 batches: exactly 5 passes over the 100 examples, each pass reshuffled.
    assert [steps for _, steps in epochs] == [5] * 7
    assert sum(logs["seen"] for logs, _ in epochs) == 5 * NUM_EXAMPLES
    np.testing.assert_array_equal(tally.take(), np.full(NUM_EXAMPLES, 5))


@pytest.mark.parametrize("length", ["known", "unknown"])
def test_steps_per_epoch_refuses_an_empty_dataset_instead_of_waiting(length: str) -> None:
    runner = StepRunner(Tally().step, 3, steps_per_epoch=5)
    empty = shuffled_ids(length).filter(lambda ids: False)
    if length == "known":
        empty = shuffled_ids(length).take(0)
    with pytest.raises(ValueError, match=r"the dataset is empty, so 5 steps per epoch would wait"):
        runner.run_epoch(empty)
