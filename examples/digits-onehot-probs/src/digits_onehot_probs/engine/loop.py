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
OpenLoopFn = Callable[
    [tf.data.Iterator, tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor, dict[str, tf.Tensor]]
]
StopFn = Callable[[], tf.Tensor]


@dataclasses.dataclass(frozen=True)
class CallHooks:
    """What `StepRunner.run_epoch` calls around each call of K steps (each batch, eagerly).

    Attributes:
        begin: Takes the index in the epoch (from 0) of the call's first step, before it runs.
        end: Takes the index of the call's last step and the metrics so far, after it ran.
        stop: Asked after each call; true ends the epoch there.
        limit: Asked before each call: the most steps it may run, so that a call ends where
            the caller wants to act between steps (e.g. write a checkpoint every N steps).
    """

    begin: Callable[[int], None]
    end: Callable[[int, EpochLogs], None]
    stop: Callable[[], bool]
    limit: Callable[[], int] | None = None


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
) -> OpenLoopFn:
    """Return a `tf.function` that runs up to `num_steps` steps of `step` in one call.

    For datasets whose length is not known in advance. The iterator runs over
    `with_end_markers(dataset)`: an epoch ends at the empty batch that follows its last one,
    so no batch is dropped or repeated, and one iterator serves the whole run.

    Args:
        step: Takes the elements of one batch as positional arguments.
        metrics: As for `make_counted_loop`.
        stop: As for `make_counted_loop`.

    Returns:
        A function of `(iterator, num_steps, reset)` that returns the number of steps it ran,
        whether it reached the end of the epoch, and the metrics' results.
    """

    def loop(
        iterator: tf.data.Iterator, num_steps: tf.Tensor, reset: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, dict[str, tf.Tensor]]:
        _reset_if(reset, metrics)
        steps = tf.constant(0, dtype=tf.int32)
        ended = tf.constant(False)
        for _ in tf.range(num_steps):
            if stop():
                break
            batch = tf.nest.flatten(iterator.get_next())
            if is_end_marker(batch):
                ended = tf.constant(True)
                break
            step(*batch)
            steps += 1
        return steps, ended, _results(metrics)

    return tf.function(loop)


def repeated(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """`dataset` over and over, one pass after the other, for one iterator per run.

    The same batches as `dataset.repeat()`, but each pass is a new iteration of `dataset`
    inside `flat_map`, and that restores exactly from a checkpoint: with `repeat()`, a
    restored iterator draws other seeds for later passes of `Dataset.random(...,
    rerandomize_each_iteration=True)`, so the epochs after a resume get another order
    (measured here, TensorFlow 2.21).

    It carries `dataset.options()` (the options of a dataset inside `flat_map` are not used),
    and no injected prefetch (see `without_read_ahead`).
    """
    passes = tf.autograph.experimental.do_not_convert(lambda _: dataset)
    return without_read_ahead(tf.data.Dataset.counter().flat_map(passes), dataset.options())


def without_read_ahead(dataset: tf.data.Dataset, options: tf.data.Options) -> tf.data.Dataset:
    """`dataset` with `options`, but without the prefetch tf.data would inject at its end.

    The iterator a checkpoint saves must not read ahead on its own thread: one that has read
    into the next pass of `repeated(...)` when it is saved restores with another order for
    the passes after it. Prefetches in your own pipeline stay, inside each pass.
    """
    no_injected_prefetch = tf.data.Options()
    no_injected_prefetch.experimental_optimization.inject_prefetch = False
    return dataset.with_options(options).with_options(no_injected_prefetch)


def with_end_markers(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """`repeated(dataset)`, each pass followed by an empty batch that marks its end.

    The marker has the dataset's structure with a batch dimension of 0, which a batched
    dataset never yields. It lets one iterator cover every epoch of a dataset whose length is
    unknown, so its position (and its shuffle order) can go into a checkpoint.
    """

    def empty(spec: tf.TensorSpec) -> tf.Tensor:
        return tf.zeros([0, *(size or 0 for size in spec.shape[1:])], spec.dtype)

    marker = tf.nest.map_structure(empty, dataset.element_spec)
    return repeated(dataset.concatenate(tf.data.Dataset.from_tensors(marker)))


def is_end_marker(batch: Sequence[tf.Tensor]) -> tf.Tensor:
    """Whether a batch (flattened) is the marker of `with_end_markers`."""
    return tf.equal(tf.shape(batch[0])[0], 0)


def _reset_if(reset: tf.Tensor, metrics: Sequence[keras.metrics.Metric]) -> None:
    def reset_all() -> None:
        for metric in metrics:
            metric.reset_state()

    tf.cond(reset, reset_all, lambda: None)


def _results(metrics: Sequence[keras.metrics.Metric]) -> dict[str, tf.Tensor]:
    return {metric.name: metric.result() for metric in metrics}


class StepRunner:
    """Runs a step on every batch of a dataset once per epoch, many steps per call.

    One iterator serves the whole run, so that its position can be checkpointed and resumed
    exactly (see `iterator`). When a dataset's length is known (`dataset.cardinality()`, as
    for `from_tensor_slices`, `shuffle`, `batch`, `map` and `cache`), it runs over
    `repeated(dataset)` and each epoch takes exactly its number of batches from it. When the
    length is unknown (after `filter` or `bucket_by_sequence_length`), it runs over
    `with_end_markers(dataset)` and each epoch ends at its marker; if you know the number of
    batches, `dataset.apply(tf.data.experimental.assert_cardinality(n))` selects the faster
    counted path. With `steps_per_epoch`, every epoch runs that many steps, from the dataset
    itself when it repeats forever and from `repeated(dataset)` otherwise, so that epochs need
    not match passes over the data (as `model.fit(steps_per_epoch=...)`, except that `fit`
    stops the run when a finite dataset runs out, and this repeats it).

    Creating an iterator costs about 0.4 ms for an in-memory pipeline and 4 to 8 ms once the
    pipeline has a `map` (measured here): with a few dozen steps per epoch, that is a large
    share of an epoch. The iterator reads ahead only as your pipeline's own `prefetch` does,
    within a pass (see `without_read_ahead`). Shuffling is unchanged:
    `shuffle(..., reshuffle_each_iteration=True)` draws a new order for every repetition, as
    it does for every new iterator.

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
        steps_per_epoch: If set, the steps of every epoch, whatever the dataset's length;
            needed for a dataset that repeats forever.
        open_loop_in_python: For datasets of unknown length, call `step` (still a
            `tf.function`) batch by batch from Python instead of `open_loop`: under
            `MultiWorkerMirroredStrategy`, a step inside the `tf.cond` that skips the end
            marker fails ("You must feed a value for placeholder tensor", TensorFlow 2.21).

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
        steps_per_epoch: int | None = None,
        open_loop_in_python: bool = False,
    ) -> None:
        self.steps_per_execution = steps_per_execution
        self.steps_per_epoch = steps_per_epoch
        self.metrics = tuple(metrics)
        self.run_eagerly = run_eagerly
        self.open_loop_in_python = open_loop_in_python
        self._stop = stop
        self._loops: dict[int, tuple[Callable[..., object], LoopFn, OpenLoopFn]] = {}
        if step is not None:
            self.use_step(step)
        self._dataset: tf.data.Dataset | None = None
        self._num_batches: int | None = None
        self._iterator: tf.data.Iterator | None = None
        self._stale = False

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

    @property
    def iterator(self) -> tf.data.Iterator | None:
        """The run's iterator over `dataset` (see `start`), for `tf.train.Checkpoint`.

        A plain `tf.data` iterator saves its position, read-ahead and shuffle buffers
        included, and restores it exactly. Pipelines with state outside the iterator cannot:
        `py_function` and `from_generator` (Python state; their iterator cannot be saved at
        all, see `skip`), and anything reading files that change between runs.
        """
        return self._iterator

    @property
    def ended_early(self) -> bool:
        """Whether the last epoch stopped before the end of its data (see `run_epoch`)."""
        return self._stale

    def start(self, dataset: tf.data.Dataset) -> None:
        """Create the run's iterator over `dataset`, unless it runs over it already.

        `run_epoch` starts it when needed; start it yourself to restore its position from a
        checkpoint before the first epoch.

        Raises:
            ValueError: If `dataset` repeats forever and no `steps_per_epoch` ends its epochs,
                or if it is empty and `steps_per_epoch` would wait forever for a batch.
        """
        if dataset is self._dataset and not self._stale:
            return
        self.close()
        num_batches = int(dataset.cardinality())
        if self.steps_per_epoch is not None:
            infinite = num_batches == tf.data.INFINITE_CARDINALITY
            if num_batches == 0 or (
                num_batches == tf.data.UNKNOWN_CARDINALITY
                and not any(True for _ in dataset.take(1))
            ):
                raise ValueError(
                    f"the dataset is empty, so {self.steps_per_epoch} steps per epoch would "
                    "wait forever for a batch; give it data"
                )
            self._dataset = dataset
            self._num_batches = self.steps_per_epoch
            if infinite:
                self._iterator = iter(without_read_ahead(dataset, dataset.options()))
            else:
                self._iterator = iter(repeated(dataset))  # Without read-ahead already.
            return
        if num_batches == tf.data.INFINITE_CARDINALITY:
            raise ValueError(
                "the dataset repeats forever, so an epoch would never end: set "
                "steps_per_epoch, or remove its .repeat() (the loop repeats it for you)"
            )
        self._dataset = dataset
        if num_batches == tf.data.UNKNOWN_CARDINALITY:
            self._num_batches = None
            self._iterator = iter(with_end_markers(dataset))
        else:
            self._num_batches = num_batches
            self._iterator = iter(repeated(dataset))

    def between_passes(self, step: int) -> bool:
        """Whether position `step` of an epoch leaves the iterator between two passes.

        True at an epoch's start and, when the number of batches is known, at its end; never
        with `steps_per_epoch`, whose epochs need not match passes. An iterator saved there,
        after the first pass, restores with another order for the passes after it (TensorFlow
        2.21, measured here: over `flat_map`, `interleave` and `repeat` alike, with
        `Dataset.random` or `shuffle` drawing each pass's order), so a checkpoint there holds
        no iterator and a resume reads the passes before it anew (`skip_passes`).
        """
        if self.steps_per_epoch is not None:
            return False
        return step == 0 or (self._num_batches is not None and step >= self._num_batches)

    def skip_passes(self, passes: int) -> None:
        """Read `passes` whole passes over the data without running the step on them.

        A new iterator draws the same orders as the run's did, pass after pass, so an epoch
        resumed after them reads exactly the batches it would have.
        """
        if self._num_batches is not None:
            self.skip(passes * self._num_batches)
            return
        while passes:
            if bool(is_end_marker(tf.nest.flatten(next(self._iterator)))):
                passes -= 1

    def skip(self, steps: int) -> None:
        """Read `steps` batches from the iterator without running the step on them.

        For a resume whose checkpoint could not hold the iterator (see
        `checkpoints.RunCheckpoint.saves_data`): its epoch then goes on at the right step,
        on the batches that follow the first `steps` of a new pass over the data.
        """
        for _ in range(steps):
            next(self._iterator)

    def run_epoch(
        self, dataset: tf.data.Dataset, hooks: CallHooks | None = None, *, first_step: int = 0
    ) -> tuple[EpochLogs, int]:
        """Run the step on every batch of `dataset` once, resetting the metrics first.

        Args:
            dataset: The batches.
            hooks: Called around each call (each batch when `run_eagerly`); without them the
                metrics are read once, at the end of the epoch.
            first_step: Steps of this epoch already run, for an epoch resumed from a
                checkpoint: the metrics are not reset, and the epoch runs its remaining steps.

        Returns:
            The metrics' results over this epoch, keyed by name, and the number of steps.
            An epoch ended early by `hooks.stop` or by `stop` counts only the steps it ran;
            the next epoch then starts at the beginning of the data.

        Raises:
            ValueError: If `dataset` repeats forever, so that an epoch would never end.
        """
        self.start(dataset)
        steps = first_step
        try:
            # An empty epoch still makes one call, which resets the metrics.
            while True:
                num_steps = self.steps_per_execution
                if self._num_batches is not None:
                    num_steps = min(num_steps, self._num_batches - steps)
                if hooks is not None and hooks.limit is not None:
                    num_steps = max(1, min(num_steps, hooks.limit())) if num_steps else 0
                if hooks is not None and num_steps:
                    hooks.begin(steps)
                ran, ended, results = self._call(num_steps, reset=steps == 0)
                steps += ran
                if self._num_batches is not None:
                    ended = steps >= self._num_batches
                asked_to_stop = _ended_by(hooks, steps, ran, results)
                if ended:
                    return _floats(results), steps
                if asked_to_stop or ran < num_steps:
                    self._stale = True  # Ended early: the next epoch starts afresh.
                    return _floats(results), steps
        except BaseException:
            self._stale = True  # Stopped mid-epoch: the next epoch starts afresh.
            raise

    def _call(self, num_steps: int, *, reset: bool) -> tuple[int, bool, dict[str, tf.Tensor]]:
        """Run up to `num_steps` steps; the steps run, whether the epoch's data ended."""
        if self.run_eagerly or (self._num_batches is None and self.open_loop_in_python):
            return self._call_eagerly(num_steps, reset=reset)
        count = tf.constant(num_steps, dtype=tf.int32)
        if self._num_batches is not None:
            ran, results = self.counted_loop(self._iterator, count, tf.constant(reset))
            return int(ran), False, results
        ran, ended, results = self.open_loop(self._iterator, count, tf.constant(reset))
        return int(ran), bool(ended), results

    def _call_eagerly(
        self, num_steps: int, *, reset: bool
    ) -> tuple[int, bool, dict[str, tf.Tensor]]:
        if reset:
            for metric in self.metrics:
                metric.reset_state()
        ran = 0
        while ran < num_steps and not bool(self._stop()):
            batch = tf.nest.flatten(next(self._iterator))
            if self._num_batches is None and bool(is_end_marker(batch)):
                return ran, True, _results(self.metrics)
            self.step(*batch)
            ran += 1
        return ran, False, _results(self.metrics)

    def close(self) -> None:
        """Let go of the dataset and its iterator, with the batches it has read ahead."""
        self._dataset = self._iterator = None
        self._num_batches = None
        self._stale = False

    def tracing_count(self) -> int:
        """How many times the loops have been traced, all steps together."""
        return sum(
            loop.experimental_get_tracing_count()
            for _, counted, opened in self._loops.values()
            for loop in (counted, opened)
        )


def _ended_by(hooks: CallHooks | None, steps: int, ran: int, results: dict[str, tf.Tensor]) -> bool:
    """Call `hooks.end` after a call that ran `ran` steps; whether the epoch ends here."""
    if hooks is None or not ran:
        return False
    hooks.end(steps - 1, _floats(results))
    return hooks.stop()


def _floats(results: dict[str, tf.Tensor]) -> EpochLogs:
    return {name: float(value) for name, value in results.items()}
