"""`checkpoints.RunCheckpoint` writing in the background: what it writes is the run at the save."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from engine.checkpoints import RunCheckpoint


class Run:
    """A small run's state: a model, its optimizer, a random generator, a data iterator."""

    def __init__(self) -> None:
        keras.utils.set_random_seed(0)
        self.model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        self.optimizer = keras.optimizers.Adam()
        self.optimizer.build(self.model.trainable_variables)
        self.step = tf.Variable(0, dtype=tf.int64)
        self.generator = tf.random.Generator.from_seed(1)
        dataset = tf.data.Dataset.range(100).shuffle(100, seed=2).batch(4)
        self.data = iter(dataset)
        next(self.data)

    def items(self) -> dict[str, object]:
        return {
            "model": self.model,
            "optimizers": self.optimizer,
            "global_step": self.step,
            "generator": self.generator,
        }

    def values(self) -> list[np.ndarray]:
        variables = [*self.model.variables, *self.optimizer.variables]
        values = [variable.value.numpy() for variable in variables]
        return [*values, self.step.numpy(), self.generator.state.numpy()]

    def move_on(self, compiled: bool = False) -> None:
        """What a run does after a save: every weight, slot and counter moves, data is read.

        `compiled`: the weights and slots move in an XLA-compiled function, as a step does
        with `jit_compile`.
        """
        variables = [
            variable.value for variable in [*self.model.variables, *self.optimizer.variables]
        ]

        def update() -> None:
            for variable in variables:
                variable.assign_add(tf.ones_like(variable))

        if compiled:
            tf.function(update, jit_compile=True)()
        else:
            update()
        self.step.assign_add(5)
        self.generator.normal([3])
        next(self.data)


def held_write(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Make every write of checkpoint files wait until the returned event is set."""
    release = threading.Event()
    write_files = RunCheckpoint._write_files

    def held(self: RunCheckpoint, path: Path, write: Callable[[Path], None]) -> None:
        assert release.wait(timeout=60)
        write_files(self, path, write)

    monkeypatch.setattr(RunCheckpoint, "_write_files", held)
    return release


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "xla"])
def test_a_background_write_holds_the_run_as_it_was_at_the_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compiled: bool
) -> None:
    run = Run()
    checkpoint = RunCheckpoint(tmp_path, run.items(), [], 3, background=True)
    checkpoint.save(1, 0, run.data)  # The first write traces it; the second runs it.
    checkpoint.wait()
    run.move_on(compiled)
    release = held_write(monkeypatch)
    saved = run.values()
    next_batch = next(iter(tf.data.Dataset.range(100).shuffle(100, seed=2).batch(4).skip(2)))
    path = checkpoint.save(4, 2, run.data)
    assert not tf.io.gfile.glob(f"{path}.*")  # Written in the background, not yet.
    run.move_on(compiled)  # The run goes on before the files are written.
    release.set()
    checkpoint.close()
    assert tf.train.latest_checkpoint(str(tmp_path)) == str(path)

    again = Run()
    restored = RunCheckpoint(tmp_path, again.items(), [], 3)
    assert restored.restore(again.data) == (4, 2)
    for ours, theirs in zip(again.values(), saved, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(next(again.data), next_batch)


def test_a_background_write_writes_what_a_write_that_waits_writes(tmp_path: Path) -> None:
    run = Run()
    paths = []
    for background in (False, True):
        checkpoint = RunCheckpoint(
            tmp_path / str(background), run.items(), [], 3, background=background
        )
        paths.append(checkpoint.save(1, 0, run.data))
        checkpoint.close()
    waited, background = (tf.train.load_checkpoint(str(path)) for path in paths)
    dtypes = waited.get_variable_to_dtype_map()
    assert background.get_variable_to_dtype_map() == dtypes
    # The iterator's position, a variant that the reader cannot give (the test above reads it).
    assert dtypes["data/.ATTRIBUTES/ITERATOR_STATE"] == tf.variant
    for name, dtype in dtypes.items():
        if dtype != tf.variant and name != "_CHECKPOINTABLE_OBJECT_GRAPH":
            np.testing.assert_array_equal(
                background.get_tensor(name), waited.get_tensor(name), name
            )


def test_a_failed_background_write_fails_at_the_wait_and_leaves_the_last_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = Run()
    checkpoint = RunCheckpoint(tmp_path, run.items(), [], 3, background=True)
    first = checkpoint.save(1, 0, run.data)
    write_files = RunCheckpoint._write_files

    def full(self: RunCheckpoint, path: Path, write: Callable[[Path], None]) -> None:
        write_files(self, path, write)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(RunCheckpoint, "_write_files", full)
    second = checkpoint.save(2, 0, run.data)  # Waits for the first.
    with pytest.raises(OSError, match="No space left"):
        checkpoint.wait()
    assert tf.train.latest_checkpoint(str(tmp_path)) == str(first)
    assert not tf.io.gfile.glob(f"{second}*")
    checkpoint.close()  # The error was raised once.


class Counter(tf.__internal__.tracking.Trackable):
    """State the snapshot cannot copy: an object that saves a tensor of its own."""

    def __init__(self) -> None:
        self.count = 0

    def _serialize_to_tensors(self) -> dict[str, tf.Tensor]:
        return {"count": tf.constant(self.count)}

    def _restore_from_tensors(self, restored_tensors: dict[str, tf.Tensor]) -> None:
        self.count = int(restored_tensors["count"])


def test_state_a_snapshot_cannot_read_is_written_before_save_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = Run()
    items = {**run.items(), "counter": Counter()}
    checkpoint = RunCheckpoint(tmp_path, items, [], 3, background=True)
    writers = []
    write_files = RunCheckpoint._write_files

    def recorded(self: RunCheckpoint, path: Path, write: Callable[[Path], None]) -> None:
        writers.append(threading.current_thread())
        write_files(self, path, write)

    monkeypatch.setattr(RunCheckpoint, "_write_files", recorded)
    path = checkpoint.save(1, 0, run.data)
    assert writers == [threading.main_thread()]
    assert tf.train.latest_checkpoint(str(tmp_path)) == str(path)
    checkpoint.close()


def test_a_data_position_whose_size_changes_is_written_at_every_save(tmp_path: Path) -> None:
    # Bucketing keeps partial buckets: the serialized position grows and shrinks as it reads.
    def buckets() -> tf.data.Dataset:
        numbers = tf.data.Dataset.range(200)
        return numbers.bucket_by_sequence_length(
            lambda n: tf.cast(n % 7, tf.int32), [3, 5], [2, 3, 4]
        )

    run = Run()
    data = iter(buckets())
    checkpoint = RunCheckpoint(tmp_path, run.items(), [], 3, background=True)
    for read in (1, 2, 3):
        for _ in range(read):
            next(data)
        checkpoint.save(read, 0, data)
    checkpoint.close()
    expected = next(data)

    again = Run()
    restored_data = iter(buckets())
    RunCheckpoint(tmp_path, again.items(), [], 3).restore(restored_data)
    np.testing.assert_array_equal(next(restored_data), expected)
