"""Many steps per `tf.function` call, over epochs of a dataset: `StepRunner`.

Template-owned: `copier update` merges template changes into it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import keras
import tensorflow as tf

EpochLogs = dict[str, float]
LoopFn = Callable[[tf.data.Iterator, tf.Tensor, tf.Tensor], tuple[tf.Tensor, dict[str, tf.Tensor]]]
StopFn = Callable[[], tf.Tensor]


@dataclasses.dataclass(frozen=True)
class CallHooks:
    """What `StepRunner.run_epoch` calls around each call of K steps (each batch, eagerly).

    Attributes:
        begin: Takes the index in the epoch (from 0) of the call's first step, before it runs.
        end: Takes the index of the call's last step and the metrics so far, after it ran.
        stop: Asked after each call; true ends the epoch there.
    """

    begin: Callable[[int], None]
    end: Callable[[int, EpochLogs], None]
    stop: Callable[[], bool]


def _never() -> tf.Tensor:
    return tf.constant(False)


def make_counted_loop(
    step: Callable[..., object],
    metrics: Sequence[keras.metrics.Metric] = (),
    stop: StopFn = _never,
) -> LoopFn:
    """Return a `tf.function` that runs exactly `num_steps` steps of `step` in one call.

    One Python-to-TensorFlow dispatch then covers many steps, which is where small models spend
    their time. The step count is a tensor, so changing it does not retrace. The caller knows
    how many batches are left: the loop reads them with a plain `get_next`, which costs less
    per step than testing an optional.

    Args:
        step: Takes the elements of one batch as positional arguments.
        metrics: The metrics `step` updates: reset at the start of a call when `reset` is true,
            and read at its end, so an epoch costs no calls beyond its steps.
        stop: Checked before every step, in the graph: when it returns true, the call ends
            early (e.g. `gradients.NonFiniteGuard.tripped`).

    Returns:
        A function of `(iterator, num_steps, reset)` that returns the number of steps it ran
        and the metrics' results, keyed by name.
    """

    def loop(
        iterator: tf.data.Iterator, num_steps: tf.Tensor, reset: tf.Tensor
    ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        _reset_if(reset, metrics)

        def body(steps: tf.Tensor) -> tuple[tf.Tensor]:
            step(*tf.nest.flatten(iterator.get_next()))
            return (steps + 1,)

        (steps,) = tf.while_loop(
            lambda steps: (steps < num_steps) & tf.logical_not(stop()), body, [tf.constant(0)]
        )
        return steps, _results(metrics)

    return tf.function(loop, autograph=False)


def make_open_loop(
    step: Callable[..., object],
    metrics: Sequence[keras.metrics.Metric] = (),
    stop: StopFn = _never,
) -> LoopFn:
    """Return a `tf.function` that runs up to `num_steps` steps of `step` in one call.

    For datasets whose length is not known in advance. The end of the data is found with
    `get_next_as_optional`, so no batch is dropped or repeated.

    Args:
        step: Takes the elements of one batch as positional arguments.
        metrics: As for `make_counted_loop`.
        stop: As for `make_counted_loop`.

    Returns:
        A function of `(iterator, num_steps, reset)` that returns the number of steps it ran
        (fewer than `num_steps` only when the iterator is exhausted or `stop` returned true)
        and the metrics' results.
    """

    def loop(
        iterator: tf.data.Iterator, num_steps: tf.Tensor, reset: tf.Tensor
    ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        _reset_if(reset, metrics)
        steps = tf.constant(0, dtype=tf.int32)
        for _ in tf.range(num_steps):
            if stop():
                break
            batch = iterator.get_next_as_optional()
            if not batch.has_value():
                break
            step(*tf.nest.flatten(batch.get_value()))
            steps += 1
        return steps, _results(metrics)

    return tf.function(loop)


def _reset_if(reset: tf.Tensor, metrics: Sequence[keras.metrics.Metric]) -> None:
    def reset_all() -> None:
        for metric in metrics:
            metric.reset_state()

    tf.cond(reset, reset_all, lambda: None)


def _results(metrics: Sequence[keras.metrics.Metric]) -> dict[str, tf.Tensor]:
    return {metric.name: metric.result() for metric in metrics}


class StepRunner:
    """Runs a step on every batch of a dataset once per epoch, many steps per call.

    When a dataset's length is known (`dataset.cardinality()`, as for `from_tensor_slices`,
    `shuffle`, `batch`, `map` and `cache`), one iterator over `dataset.repeat()` serves the
    whole run and each epoch takes exactly its number of batches from it. Creating an iterator
    costs about 0.4 ms for an in-memory pipeline and 4 to 8 ms once the pipeline has a `map`
    (measured here): with a few dozen steps per epoch, that is a large share of an epoch. One
    iterator also lets `prefetch` fill the next epoch's first batches while this one ends.
    Shuffling is unchanged: `shuffle(..., reshuffle_each_iteration=True)` draws a new order
    for every repetition, as it does for every new iterator.

    When the length is unknown (after `filter` or `bucket_by_sequence_length`), each epoch
    gets a new iterator and runs until it is exhausted. If you know the number of batches,
    `dataset.apply(tf.data.experimental.assert_cardinality(n))` selects the faster path.

    The metrics are reset and read inside the same calls as the steps: with one call per
    epoch, the epoch then costs one dispatch (reading and resetting them from Python took
    about 1 ms per epoch, measured here).

    Args:
        step: Takes the elements of one batch as positional arguments: a `tf.function`, or
            plain Python when `run_eagerly`; `None` to give it later with `use_step`.
        steps_per_execution: Steps per `tf.function` call.
        metrics: The metrics `step` updates, reset at the start of every epoch.
        stop: Checked before every step; when true, the epoch ends there.
        run_eagerly: Call `step` batch by batch from Python, for readable stack traces.

    Attributes:
        counted_loop: `make_counted_loop(step, metrics, stop)`, for datasets of known length.
        open_loop: `make_open_loop(step, metrics, stop)`, for datasets of unknown length.
    """

    def __init__(
        self,
        step: Callable[..., object] | None,
        steps_per_execution: int,
        metrics: Sequence[keras.metrics.Metric] = (),
        *,
        stop: StopFn = _never,
        run_eagerly: bool = False,
    ) -> None:
        self.steps_per_execution = steps_per_execution
        self.metrics = tuple(metrics)
        self.run_eagerly = run_eagerly
        self._stop = stop
        self._loops: dict[int, tuple[Callable[..., object], LoopFn, LoopFn]] = {}
        if step is not None:
            self.use_step(step)
        self._dataset: tf.data.Dataset | None = None
        self._num_batches = 0
        self._iterator: tf.data.Iterator | None = None

    def use_step(self, step: Callable[..., object]) -> None:
        """Run `step` from now on, keeping the iterator; the loops of each step are kept too.

        For a step traced anew because the set of trainable variables changed: switching
        back to an earlier step reuses its traces.
        """
        if id(step) not in self._loops:
            self._loops[id(step)] = (
                step,
                make_counted_loop(step, self.metrics, self._stop),
                make_open_loop(step, self.metrics, self._stop),
            )
        self.step, self.counted_loop, self.open_loop = self._loops[id(step)]

    def run_epoch(
        self, dataset: tf.data.Dataset, hooks: CallHooks | None = None
    ) -> tuple[EpochLogs, int]:
        """Reset the metrics and run the step on every batch of `dataset` once.

        Args:
            dataset: The batches.
            hooks: Called around each call (each batch when `run_eagerly`); without them the
                metrics are read once, at the end of the epoch.

        Returns:
            The metrics' results over this epoch, keyed by name, and the number of steps.
            An epoch ended early by `hooks.stop` or by `stop` counts only the steps it ran.

        Raises:
            ValueError: If `dataset` repeats forever, so that an epoch would never end.
        """
        if dataset is not self._dataset:
            self._start(dataset)
        if self.run_eagerly:
            return self._run_eagerly(dataset, hooks)
        if self._iterator is None:
            return self._run_open(dataset, hooks)
        steps = 0
        try:
            # An empty epoch still makes one call, which resets the metrics.
            while True:
                num_steps = min(self.steps_per_execution, self._num_batches - steps)
                if hooks is not None and num_steps:
                    hooks.begin(steps)
                ran, results = self.counted_loop(
                    self._iterator, tf.constant(num_steps, dtype=tf.int32), tf.constant(steps == 0)
                )
                ran = int(ran)
                steps += ran
                ended = ran < num_steps or _ended_by(hooks, steps, ran, results)
                if ended and steps < self._num_batches:
                    self.close()  # The epoch ended early: the next one starts afresh.
                if ended or steps >= self._num_batches:
                    return _floats(results), steps
        except BaseException:
            self.close()  # The iterator stopped mid-epoch: the next epoch starts afresh.
            raise

    def close(self) -> None:
        """Let go of the dataset and its iterator, with the batches it has read ahead."""
        self._dataset = self._iterator = None
        self._num_batches = 0

    def tracing_count(self) -> int:
        """How many times the loops have been traced, all steps together."""
        return sum(
            loop.experimental_get_tracing_count()
            for _, counted, opened in self._loops.values()
            for loop in (counted, opened)
        )

    def _start(self, dataset: tf.data.Dataset) -> None:
        self.close()
        num_batches = int(dataset.cardinality())
        if num_batches == tf.data.INFINITE_CARDINALITY:
            raise ValueError(
                "the dataset repeats forever, so an epoch would never end: remove its "
                ".repeat() (the loop repeats it for you), or end it with .take(num_batches)"
            )
        self._dataset = dataset
        if num_batches != tf.data.UNKNOWN_CARDINALITY and not self.run_eagerly:
            self._num_batches = num_batches
            self._iterator = iter(dataset.repeat())

    def _run_open(self, dataset: tf.data.Dataset, hooks: CallHooks | None) -> tuple[EpochLogs, int]:
        iterator = iter(dataset)
        num_steps = tf.constant(self.steps_per_execution, dtype=tf.int32)
        steps = 0
        while True:
            if hooks is not None:
                hooks.begin(steps)
            ran, results = self.open_loop(iterator, num_steps, tf.constant(steps == 0))
            ran = int(ran)
            steps += ran
            stopped = _ended_by(hooks, steps, ran, results)
            if stopped or ran < self.steps_per_execution:
                return _floats(results), steps

    def _run_eagerly(
        self, dataset: tf.data.Dataset, hooks: CallHooks | None
    ) -> tuple[EpochLogs, int]:
        for metric in self.metrics:
            metric.reset_state()
        steps = 0
        for batch in dataset:
            if bool(self._stop()):
                break
            if hooks is not None:
                hooks.begin(steps)
            self.step(*tf.nest.flatten(batch))
            steps += 1
            if _ended_by(hooks, steps, 1, _results(self.metrics)):
                break
        return _floats(_results(self.metrics)), steps


def _ended_by(hooks: CallHooks | None, steps: int, ran: int, results: dict[str, tf.Tensor]) -> bool:
    """Call `hooks.end` after a call that ran `ran` steps; whether the epoch ends here."""
    if hooks is None or not ran:
        return False
    hooks.end(steps - 1, _floats(results))
    return hooks.stop()


def _floats(results: dict[str, tf.Tensor]) -> EpochLogs:
    return {name: float(value) for name, value in results.items()}
