"""Checkpoints of a whole run, for an exact resume; the run's config; the trained model.

A checkpoint holds everything the next step depends on: the model's weights and random
state, every optimizer, the global step, the epoch and the step in it, the training data's
position (the iterator of `loop.StepRunner`), the running metrics of the epoch, the
non-finite guard's counters, and the state of callbacks that have one. Resumed from it, a
run goes on as if it had never stopped: the same batches in the same order, the same
weights and figures, bit for bit.

Layout of a run directory (`RunOptions.logdir`):

    run.json          the project that wrote the run, and the config `--resume` trains with
    metrics.jsonl     one line per epoch
    train/, validation/   TensorBoard events
    checkpoints/      ckpt-N.index, ckpt-N.data-*, and `checkpoint`, which names the latest
    model.keras       the trained model, once the run has ended
    mlflow.json       the MLflow run's id and store, when tracked (see `tracking.py`)

Template-owned: `copier update` merges template changes into it.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import dataclasses
import functools
import io
import json
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.checkpoint import saveable_compat

from . import PACKAGE
from .options import RunOptions, from_json

Config = TypeVar("Config")
Options = TypeVar("Options", bound=RunOptions)

RUN_FILE = "run.json"
MODEL_FILE = "model.keras"
CHECKPOINTS = "checkpoints"

# What each stock Keras callback keeps between epochs. Your own callbacks join in by
# defining `get_state() -> dict` and `set_state(state: dict)` (values: JSON, or NumPy arrays).
CALLBACK_STATE = {
    "EarlyStopping": ("wait", "stopped_epoch", "best", "best_epoch", "best_weights"),
    "ReduceLROnPlateau": ("wait", "cooldown_counter", "best"),
    "ModelCheckpoint": ("best",),
}


class CheckpointError(Exception):
    """A run cannot be resumed: no checkpoint, an unreadable one, or one of another model."""


def write_run_file(
    logdir: str | Path, config: Any, options: RunOptions, train_batches: int | None = None
) -> None:
    """Write `logdir/run.json`: this project's name, the config and the options to resume.

    `config` is the project's `Config`, a dataclass. `train_batches`, the training dataset's
    number of batches (its `cardinality()`), lets `check_same_data` refuse to resume on data of
    another size.
    """
    path = Path(logdir) / RUN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    run_options = dataclasses.asdict(options)
    for name in ("logdir", "resume"):  # Where and how this run started, not how it trains.
        del run_options[name]
    run = {
        "project": PACKAGE,
        "config": dataclasses.asdict(config),
        "options": run_options,
        "train_batches": train_batches,
    }
    path.write_text(json.dumps(run, indent=2) + "\n")


def read_run(
    logdir: str | Path, config_type: type[Config], options_type: type[Options]
) -> tuple[Config, Options]:
    """The config and the options of the run in `logdir`, from its `run.json`.

    `config_type` and `options_type` are the project's `Config` and `RunOptions` dataclasses.

    Raises:
        CheckpointError: If `logdir` holds no run, a run of another project (`run.json`
            names the package that wrote it; one without the name is taken for this
            project's), or its `run.json` does not fit `Config` and `RunOptions`.
    """
    path = Path(logdir) / RUN_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist: {logdir} holds no run to resume")
    try:
        run = json.loads(path.read_text())
        project = run.get("project", PACKAGE)
        if project != PACKAGE:
            raise CheckpointError(
                f"{logdir} holds a run of the project {project}, not of {PACKAGE}; "
                f"use it with python -m {project}"
            )
        config = config_type(**from_json(config_type, run["config"]))
        return config, options_type(**from_json(options_type, run["options"]))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(
            f"{path} does not fit this project's Config and RunOptions: {error}"
        ) from None


def check_same_config(logdir: str | Path, config: Any, options_type: type[RunOptions]) -> None:
    """Refuse to resume a run with another config: only `epochs` may change.

    Raises:
        CheckpointError: Naming each field that differs.
    """
    saved, _ = read_run(logdir, type(config), options_type)
    changed = [
        f"{name}={getattr(config, name)!r} (the run has {getattr(saved, name)!r})"
        for name in (field.name for field in dataclasses.fields(config))
        if name != "epochs" and getattr(config, name) != getattr(saved, name)
    ]
    if changed:
        raise CheckpointError(
            f"cannot resume {logdir} with another config: {', '.join(changed)}; "
            f"use the config of {Path(logdir) / RUN_FILE}"
        )


def check_same_data(logdir: str | Path, train_batches: int) -> None:
    """Refuse to resume a run on training data of another number of batches.

    The checkpoint's data position is one in the run's data: restored into data of another
    size, it would train on a mix of both. Sizes that are not known (a dataset whose
    `cardinality()` is unknown, a run.json that does not record it) are not compared.

    Raises:
        CheckpointError: Naming both numbers of batches.
    """
    path = Path(logdir) / RUN_FILE
    saved = json.loads(path.read_text()).get("train_batches")
    if not isinstance(saved, int) or saved < 0 or train_batches < 0 or saved == train_batches:
        return
    raise CheckpointError(
        f"cannot resume {logdir}: its training data had {saved} batches per pass, and now has "
        f"{train_batches}; resume with the data the run started with (data.py), or start a "
        "new run in another directory"
    )


def resume_position(logdir: str | Path) -> tuple[int, int] | None:
    """The epoch and step a resumed run goes on at, from the latest checkpoint in `logdir`.

    `None` if there is none, or it cannot be read (`RunCheckpoint.restore` says why).
    """
    path = tf.train.latest_checkpoint(str(Path(logdir) / CHECKPOINTS))
    if path is None:
        return None
    try:
        epoch, step = tf.train.load_variable(path, "position/.ATTRIBUTES/VARIABLE_VALUE")
    except (tf.errors.OpError, ValueError):
        return None
    return int(epoch), int(step)


def save_model(model: keras.Model, logdir: str | Path) -> Path:
    """Save `model` as `logdir/model.keras`, for `keras.saving.load_model`.

    Loading it needs the model's custom classes registered, as importing their module does
    (`trained.load_run` does it).

    Written to a temporary file renamed when complete, so a kill or a full disk never
    leaves a truncated `model.keras`.
    """
    path = Path(logdir) / MODEL_FILE
    partial = path.with_name(f"{path.stem}.partial{path.suffix}")
    try:
        model.save(partial)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(path)
    return path


class CallbackState:
    """The state of the run's callbacks, as JSON, for a checkpoint's string variable.

    Covers the stock callbacks of `CALLBACK_STATE` and any callback with `get_state` and
    `set_state`. Callbacks are matched by position and class, so resume with the same ones.
    """

    def __init__(self, callbacks: Sequence[keras.callbacks.Callback]) -> None:
        self.callbacks = list(callbacks)

    def _keyed(self) -> dict[str, keras.callbacks.Callback]:
        return {f"{i}:{type(c).__name__}": c for i, c in enumerate(self.callbacks)}

    def serialize(self) -> str:
        """The callbacks' state as a JSON string."""
        states = {}
        for key, callback in self._keyed().items():
            state = _get_state(callback)
            if state:
                states[key] = {name: _encode(value) for name, value in state.items()}
        return json.dumps(states)

    def apply(self, string: bytes | str) -> None:
        """Give each callback its state from `serialize`'s string."""
        keyed = self._keyed()
        for key, state in json.loads(string or "{}").items():
            if key in keyed:
                _set_state(keyed[key], {name: _decode(value) for name, value in state.items()})


def _get_state(callback: keras.callbacks.Callback) -> dict[str, Any]:
    if hasattr(callback, "get_state"):
        return dict(callback.get_state())
    names = CALLBACK_STATE.get(type(callback).__name__, ())
    return {name: getattr(callback, name) for name in names if hasattr(callback, name)}


def _set_state(callback: keras.callbacks.Callback, state: dict[str, Any]) -> None:
    if hasattr(callback, "set_state"):
        callback.set_state(state)
        return
    for name, value in state.items():
        setattr(callback, name, value)


def _encode(value: Any) -> Any:
    if isinstance(value, np.ndarray | np.generic):
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(value), allow_pickle=False)
        return {"ndarray": base64.b64encode(buffer.getvalue()).decode("ascii")}
    if isinstance(value, list | tuple):
        return [_encode(item) for item in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"ndarray"}:
        array = np.load(io.BytesIO(base64.b64decode(value["ndarray"])), allow_pickle=False)
        return array if array.shape else array[()]
    if isinstance(value, list):
        return [_decode(item) for item in value]
    return value


class RunCheckpoint:
    """Writes and restores checkpoints of a run: `tf.train.Checkpoint` files, numbered.

    The files and the `checkpoint` state file are those of `tf.train.CheckpointManager`
    (`tf.train.latest_checkpoint` finds the latest). A write goes to temporary files renamed
    when complete, and the state file is updated after it, so a process killed while writing
    leaves the previous checkpoint as the latest. Each write runs as one `tf.function`, traced
    at the first write: walking the Keras objects eagerly at every write costs more than
    writing.

    With `background`, `save` reads the run's state (every saved variable, and the data
    iterator's position) and returns while a thread writes what it read: the run goes on at
    once, and the files hold the run as it was at the save, bit for bit those a write that
    waits would make. A variable the run updates while its write is pending takes twice its
    memory until the write ends. `wait` returns once the write is complete, and raises its
    error; `save`, `restore` and `close` wait first, so one write runs at a time. Without
    `background`, or when the run holds state other than variables and `tf.data` iterators
    that saves something of its own, `save` writes before it returns.

    Under `MultiWorkerMirroredStrategy` every worker writes each checkpoint, as TensorFlow
    requires, but only the chief's go to `directory`: the others write theirs to a temporary
    directory deleted at once. Every worker restores from `directory`, which all of them must
    see (a shared filesystem, or the same machine, as with `launch`).

    Args:
        directory: Where the checkpoints go, e.g. `logdir/checkpoints`.
        items: The run's state: trackable objects (models, optimizers, variables,
            `tf.random.Generator`s) by name.
        callbacks: The run's callbacks; their state goes into every checkpoint.
        max_to_keep: How many of the latest checkpoints to keep.
        chief: Whether this process writes to `directory`; a worker other than the chief of
            a multi-worker run writes elsewhere, and deletes what it wrote.
        background: Write on a thread, from a snapshot (see above); a chief only.

    Attributes:
        position: An int64 variable `[epoch, step]`: the epoch to run next (from 0) and the
            steps of it already run.
        saves_data: Whether the checkpoints hold the data iterator; false from the first
            write that could not save it (an iterator over `from_generator` or
            `py_function`, whose state lives in Python), which then holds everything else.
        restored_data: Whether `restore` restored the data iterator's position.
    """

    def __init__(
        self,
        directory: str | Path,
        items: Mapping[str, Any],
        callbacks: Sequence[keras.callbacks.Callback],
        max_to_keep: int,
        *,
        chief: bool = True,
        background: bool = False,
    ) -> None:
        self.directory = Path(directory)
        self.max_to_keep = max_to_keep
        self.chief = chief
        self.position = tf.Variable([0, 0], dtype=tf.int64, trainable=False, name="position")
        self.callback_state = CallbackState(callbacks)
        self.callbacks = tf.Variable("", dtype=tf.string, trainable=False, name="callbacks")
        self.checkpoint = tf.train.Checkpoint(
            position=self.position, callbacks=self.callbacks, **items
        )
        self._writes: dict[int | None, tuple[tf.data.Iterator | None, Any]] = {}
        self._kept: list[str] | None = None  # The checkpoints kept, as `paths()` gives them.
        self._restored = ""
        self.saves_data = True
        self.restored_data = True
        self._snapshot: _Snapshot | None = None
        self._thread: concurrent.futures.ThreadPoolExecutor | None = None
        if background and chief:
            self._thread = concurrent.futures.ThreadPoolExecutor(1, "checkpoint")
        self._pending: concurrent.futures.Future[None] | None = None

    def paths(self) -> list[str]:
        """The checkpoints kept, oldest first."""
        state = tf.train.get_checkpoint_state(str(self.directory))
        return list(state.all_model_checkpoint_paths) if state is not None else []

    def save(self, epoch: int, step: int, data: tf.data.Iterator | None) -> Path:
        """Write a checkpoint: the run goes on at `step` of `epoch`, reading from `data`.

        In the background, the checkpoint is complete once `wait` returns (see the class).
        """
        self.wait()
        if self._kept is None:
            self._kept = self.paths()
        number = 1 + max((int(path.rsplit("-", 1)[1]) for path in self._kept), default=0)
        path = self.directory / f"ckpt-{number}"
        state = (
            tf.constant([epoch, step], dtype=tf.int64),
            tf.constant(self.callback_state.serialize()),
        )
        if not self.chief:
            scratch = Path(tempfile.mkdtemp(prefix="checkpoint-"))
            try:
                self._write_files(scratch / path.name, self._writer(data, state))
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            self._kept = [*self._kept, str(path)][-self.max_to_keep :]
            return path
        self.directory.mkdir(parents=True, exist_ok=True)
        write = self._writer(data, state)
        if self._thread is None:
            self._commit(path, write)
            return path
        self._pending = self._thread.submit(self._commit, path, write)
        return path

    def wait(self) -> None:
        """Return once the checkpoint being written in the background is complete.

        Raises:
            Whatever its write raised (a full disk, say), after removing its files.
        """
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """Wait for the write in the background (see `wait`), and end its thread."""
        try:
            self.wait()
        finally:
            if self._thread is not None:
                self._thread.shutdown()
                self._thread = None

    def _commit(self, path: Path, write: Callable[[Path], None]) -> None:
        """Write the checkpoint's files, then name it the latest and drop the oldest."""
        assert self._kept is not None
        try:
            self._write_files(path, write)
        except BaseException:  # A full disk, or Ctrl-C: no half-written files are left.
            _remove_partial(path)
            raise
        kept = [*self._kept, str(path)]
        # The state file of `tf.train.CheckpointManager`, names relative to the directory,
        # replaced whole so that a kill leaves the old one or the new one.
        names = [Path(old).name for old in kept[-self.max_to_keep :]]
        text = f'model_checkpoint_path: "{path.name}"\n' + "".join(
            f'all_model_checkpoint_paths: "{name}"\n' for name in names
        )
        partial = self.directory / "checkpoint.partial"
        partial.write_text(text)
        partial.replace(self.directory / "checkpoint")
        for old in kept[: -self.max_to_keep]:
            for file in self.directory.glob(f"{Path(old).name}.*"):
                file.unlink(missing_ok=True)
        self._kept = kept[-self.max_to_keep :]

    def _write_files(self, path: Path, write: Callable[[Path], None]) -> None:
        """Write the files of the checkpoint `path` (on the thread, in the background)."""
        write(path)

    def _writer(
        self, data: tf.data.Iterator | None, state: tuple[tf.Tensor, tf.Tensor]
    ) -> Callable[[Path], None]:
        """What writes this checkpoint: from a snapshot taken now, or from the run itself."""
        if self._thread is not None and self._snapshot is None:
            self._snapshot = _Snapshot.of(self.checkpoint)
            if self._snapshot is None:  # State that cannot be copied: write as the run goes.
                self._thread.shutdown()
                self._thread = None
        if self._snapshot is None:
            return functools.partial(self._write_with_data, data, state=state)
        if data is not None and self.saves_data:
            try:
                return self._snapshot.take(self.checkpoint, data, state)
            except (tf.errors.FailedPreconditionError, tf.errors.UnimplementedError):
                self.saves_data = False  # See `_write_with_data`.
        return self._snapshot.take(self.checkpoint, None, state)

    def _write_with_data(
        self, data: tf.data.Iterator | None, path: Path, state: tuple[tf.Tensor, tf.Tensor]
    ) -> None:
        """Write with the iterator `data`, or without it if it cannot be saved (`saves_data`).

        An iterator over `from_generator` or `py_function` cannot be saved: its position
        lives in Python. The checkpoint then holds everything else, and `restore` says so.
        """
        if data is not None and self.saves_data:
            try:
                self._write_quietly(data, path, state)
                return
            except (tf.errors.FailedPreconditionError, tf.errors.UnimplementedError):
                _remove_partial(path)
                self.saves_data = False
        self._write_quietly(None, path, state)

    def _write_quietly(
        self, data: tf.data.Iterator | None, path: Path, state: tuple[tf.Tensor, tf.Tensor]
    ) -> None:
        with _quiet_data_options():
            self._write(data)(tf.constant(str(path)), *state)

    def _write(self, data: tf.data.Iterator | None) -> Any:
        """The traced write, with this data iterator or with none; each traced once.

        It sets `position` and the callbacks' state, then writes, in one call. A run between
        two passes writes without the iterator (see `loop.StepRunner.between_passes`).
        """
        key = None if data is None else id(data)
        if key not in self._writes or self._writes[key][0] is not data:
            self.checkpoint.data = data if data is not None else tf.Module()
            checkpoint, position, callbacks = self.checkpoint, self.position, self.callbacks

            def write(prefix: tf.Tensor, at: tf.Tensor, callback_state: tf.Tensor) -> None:
                position.assign(at)
                callbacks.assign(callback_state)
                checkpoint.write(prefix)

            self._writes[key] = (data, tf.function(write, autograph=False))
        return self._writes[key][1]

    def restore(self, data: tf.data.Iterator | None) -> tuple[int, int]:
        """Restore the latest checkpoint; return the epoch and step the run goes on at.

        Every object must match the checkpoint and every saved value must find its object
        (`assert_consumed`), so a changed model fails here instead of training half-restored.
        The callbacks get their state from `restore_callbacks`. A checkpoint written without
        the data iterator (see `saves_data`) leaves `data` where it is, and `restored_data`
        false.

        Raises:
            CheckpointError: If there is no checkpoint, it cannot be read, or it was written
                by a different model, optimizer or pipeline.
        """
        self.wait()
        path = tf.train.latest_checkpoint(str(self.directory))
        if path is None:
            raise CheckpointError(
                f"{self.directory} holds no checkpoint: the run stopped before its first "
                "one, so there is nothing to resume; start a new run without --resume, into "
                "another --logdir"
            )
        try:
            saved = {name.split("/", 1)[0] for name, _ in tf.train.list_variables(path)}
            self.restored_data = data is not None and "data" in saved
            self.checkpoint.data = data if self.restored_data else tf.Module()
            self._writes = {}
            self._kept = None
            self.checkpoint.read(path).assert_consumed()
        except (tf.errors.OpError, IndexError, OSError) as error:  # IndexError: truncated.
            raise CheckpointError(
                f"checkpoint {path} cannot be read, it may be truncated: {_first_line(error)}"
            ) from None
        except (AssertionError, ValueError) as error:
            raise CheckpointError(
                f"checkpoint {path} does not match this model and run: {_first_line(error)}; "
                "resume with the model.py and data.py the run started with, or start a new run"
            ) from None
        self._restored = self.callbacks.numpy().decode()
        epoch, step = (int(value) for value in self.position.numpy())
        return epoch, step

    def restore_callbacks(self) -> None:
        """Give the callbacks their restored state; call it after their `on_train_begin`."""
        if self._restored:
            self.callback_state.apply(self._restored)


class _Snapshot:
    """The run's state as of a save, read in one go, for a thread to write.

    Each saved variable is read (a TensorFlow read is a snapshot: a later update copies the
    buffer first if the read still holds it, so memory doubles only for the variables that
    change while a write is pending), and a data iterator's position is serialized.
    `tf.train.Checkpoint` then writes stand-ins holding those tensors in place of the
    originals, under the originals' keys (its saver's object map: the hook of TensorFlow's own
    asynchronous checkpoints, whose copying fails on Keras 3 variables in TF 2.21), so the
    files are those a write of the run at the save would have made, and `restore` reads them
    alike. The write is traced on the thread that writes, once per data iterator; the reads
    run eagerly, so the run waits for no trace.
    """

    def __init__(self, variables: list[tf.Variable], stand_ins: _ByIdentity) -> None:
        self.variables = variables
        self._stand_ins = stand_ins
        # By data iterator (`id`, or `None`): the iterator and its traced write.
        self._writes: dict[int | None, tuple[tf.data.Iterator | None, Any]] = {}

    @classmethod
    def of(cls, checkpoint: tf.train.Checkpoint) -> _Snapshot | None:
        """A snapshot of every variable `checkpoint` saves; `None` if some state is not one.

        A `tf.data` iterator is left to `take`. Keras variables are read through the
        TensorFlow variable each wraps.
        """
        variables: list[tf.Variable] = []
        stand_ins = _ByIdentity()
        for item in tf.train.TrackableView(checkpoint).descendants():
            if isinstance(item, tf.data.Iterator):
                continue
            variable = item.value if isinstance(item, keras.Variable) else item
            if not isinstance(variable, tf.Variable):
                if _saves_state(item):
                    return None
                continue
            stand_in = stand_ins.get(variable)
            if stand_in is None:
                stand_in = _Saved("VARIABLE_VALUE")
                stand_ins.add(variable, stand_in)
                variables.append(variable)
            stand_ins.add(item, stand_in)
        return cls(variables, stand_ins)

    def take(
        self,
        checkpoint: tf.train.Checkpoint,
        data: tf.data.Iterator | None,
        state: tuple[tf.Tensor, tf.Tensor],
    ) -> Callable[[Path], None]:
        """Read the run's state now; return what writes it to a path, on one thread.

        `state` is the checkpoint's `position` and `callbacks` values, set first.
        """
        checkpoint.position.assign(state[0])
        checkpoint.callbacks.assign(state[1])
        values = [variable.read_value() for variable in self.variables]
        data_state = tf.constant(0.0) if data is None else data._serialize_to_tensors()["_STATE"]
        key = None if data is None else id(data)

        def write(path: Path) -> None:
            traced = self._writes.get(key)
            if traced is None or traced[0] is not data:
                traced = (data, self._traced_write(checkpoint, data, values, data_state))
                self._writes[key] = traced
            traced[1](tf.constant(str(path)), values, data_state)

        return write

    def _traced_write(
        self,
        checkpoint: tf.train.Checkpoint,
        data: tf.data.Iterator | None,
        values: list[tf.Tensor],
        data_state: tf.Tensor,
    ) -> Any:
        """The traced write of `(prefix, values, data_state)`: the stand-ins hold its inputs."""
        stand_ins = self._stand_ins
        data_stand_in = _Saved("_STATE")
        if data is not None:
            # The iterator's keys carry its legacy name (`ITERATOR_STATE`): so do the stand-in's.
            legacy_name = saveable_compat.get_saveable_name(data)
            if legacy_name:
                saveable_compat.legacy_saveable_name(legacy_name)(data_stand_in)
            stand_ins = stand_ins.with_item(data, data_stand_in)
        variables, held = self.variables, self._stand_ins

        def write(prefix: tf.Tensor, values: list[tf.Tensor], state: tf.Tensor) -> None:
            for variable, value in zip(variables, values, strict=True):
                held.get(variable).value = value
            data_stand_in.value = state
            checkpoint.write(prefix)

        checkpoint.data = data if data is not None else tf.Module()
        saver = checkpoint._saver  # Its object map is the saver's hook for copies.
        saver._object_map = stand_ins
        try:
            specs = [tf.TensorSpec.from_tensor(value) for value in values]
            # A serialized iterator is a vector whose length changes with its state.
            state_spec = tf.TensorSpec(None, data_state.dtype)
            return tf.function(write, autograph=False).get_concrete_function(
                tf.TensorSpec([], tf.string), specs, state_spec
            )
        finally:
            saver._object_map = None


class _Saved(tf.__internal__.tracking.Trackable):
    """Stands in for a variable or a data iterator in a snapshot's write: the value it saves."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.value: tf.Tensor | None = None

    def _serialize_to_tensors(self) -> dict[str, tf.Tensor]:
        return {self.key: self.value}


class _ByIdentity:
    """A mapping from objects to their copies by identity (variables compare by value)."""

    def __init__(self, pairs: Iterable[tuple[object, object]] = ()) -> None:
        self._items: dict[int, tuple[object, object]] = {}
        for original, copy in pairs:
            self.add(original, copy)

    def add(self, original: object, copy: object) -> None:
        self._items[id(original)] = (original, copy)

    def get(self, original: object, default: Any = None) -> Any:
        hit = self._items.get(id(original))
        return default if hit is None else hit[1]

    def with_item(self, original: object, copy: object) -> _ByIdentity:
        mapping = _ByIdentity()
        mapping._items = {**self._items, id(original): (original, copy)}
        return mapping


def _saves_state(item: object) -> bool:
    """Whether a trackable that is no variable writes something of its own to a checkpoint."""
    base = tf.__internal__.tracking.Trackable
    return any(
        "_serialize_to_tensors" in vars(cls) or "_gather_saveables_for_checkpoint" in vars(cls)
        for cls in type(item).__mro__
        if cls is not base and cls is not object
    )


@contextlib.contextmanager
def _quiet_data_options() -> Iterator[None]:
    """Silence tf.data's warning when an iterator's save is traced.

    Tracing it reads the dataset's options in graph mode, which are not used there.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="To make it possible to preserve tf.data")
        yield


def _remove_partial(path: Path) -> None:
    """Remove the files of a checkpoint write to `path` that did not complete."""
    for partial in tf.io.gfile.glob(f"{path}[._]*"):
        if tf.io.gfile.isdir(partial):
            tf.io.gfile.rmtree(partial)
        else:
            tf.io.gfile.remove(partial)


def _first_line(error: BaseException) -> str:
    text = str(error.message if isinstance(error, tf.errors.OpError) else error)
    return " ".join(text.split())[:300]
