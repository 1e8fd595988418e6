"""The one training loop: epochs, the global step, evaluation and callbacks.

`fit` is the entry point and returns a `keras.callbacks.History`, as `model.fit` does.
`Trainer` is the loop itself, the same for every kind of project: what differs (the model,
its optimizers, the steps) comes from the project's task, an `engine.task.Task`, and
everything that watches or steers a run (progress, `metrics.jsonl`, TensorBoard, what else
`callbacks.default_callbacks` gives this project, and your own callbacks) is a Keras callback
on it.

Both take the project (`project.Project`, the package's `PROJECT`), which hands over its
`Config`, `RunOptions`, datasets, model and task; the engine imports none of its modules.

Template-owned: `copier update` replaces it with the template's later versions.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from . import distribution, interrupts, precision
from .callbacks import default_callbacks
from .checkpoints import (
    CHECKPOINTS,
    RunCheckpoint,
    check_same_config,
    check_same_data,
    resume_position,
    save_model,
    write_run_file,
)
from .contract import DatasetError, read_failure
from .gradients import NonFiniteGuard
from .loop import CallHooks, EpochLogs, StepRunner
from .optimizers import ONLY_IF_DIFFERS, StepError
from .options import RunOptions
from .project import Project
from .task import StepFn, Task

BuildTask = Callable[[keras.Model, Any, Any], Task]

NOT_EXACT = (
    "note: the checkpoint holds no position in train_ds, whose iterator cannot be saved "
    "(from_generator and py_function keep their state in Python), so this resume is not bit "
    "for bit: it reads train_ds anew, skipping the {step} batches its epoch had run"
)
NO_EVALUATION = "this project's task has no evaluation step (a GAN has no validation data)"


class Trainer:
    """Runs epochs of training and evaluation, calling Keras callbacks as `model.fit` does.

    In the spirit of Orbit's `Controller`: it owns the epochs, the global step, evaluation and
    the callbacks, and knows nothing of the task beyond its steps, metrics and optimizers.

    Args:
        project: The project: its `RunOptions` and its task come from it.
        config: The run's hyperparameters, a `project.config`.
        model: The model to train, as the task takes it (its output must fit the loss).
        options: How the run executes; `project.options()` by default.
        strategy: The `tf.distribute.Strategy` to train with, in whose scope the model was
            built; `None` trains on one device. Each step's batch is then split among the
            replicas (see `engine/distribution.py`).
        task: Builds the task from the model, the config and the options;
            `project.build_task` by default.

    Attributes:
        task: The model, its optimizers, metrics and step factories (an `engine.task.Task`).
        chief: Whether this process writes the run's files: false on the workers other than
            the chief of a multi-worker run (see `distribution.is_chief`).
        global_step: Training steps taken in this run, an int64 variable that the loop
            increments in the graph (skipped steps included). It and the guard's counters
            live outside the strategy: the loop updates them between steps, once per step.
        guard: Undoes whatever a skipped step moved (see `gradients.NonFiniteGuard`), counts
            `skipped_steps`, and stops the run after `options.max_bad_steps` in a row.
        train_runner: Runs the training step over an epoch, `options.steps_per_execution`
            steps per call, keeping one iterator per dataset for the whole run.
        train_steps: The training step traced for each set of trainable variables so far,
            keyed by the batches' signature and the variables' ids (see `train_step`).
        train_signature: The training batches' input signature (see `task.signature`),
            set from the dataset at each epoch; `task.input_signature` until then.
        eval_signature: The evaluation batches' input signature, set likewise by `evaluate`.
        eval_runner: Runs the evaluation step likewise; `None` for a task without one (a GAN's).
    """

    def __init__(
        self,
        project: Project,
        config: Any,
        model: keras.Model,
        options: RunOptions | None = None,
        strategy: tf.distribute.Strategy | None = None,
        *,
        task: BuildTask | None = None,
    ) -> None:
        self.project = project
        self.config = config
        self.options = project.options() if options is None else options
        self.model = model
        self.strategy = strategy
        self.chief = distribution.is_chief(strategy)
        distribution.check_model(model, strategy)
        if strategy is not None and self.options.jit_compile:
            raise distribution.DistributionError(
                "jit_compile cannot run under a tf.distribute strategy: XLA compiles for one "
                "device, and the strategy's variables live on several; drop jit_compile"
            )
        with self.scope():
            build_task = project.build_task if task is None else task
            self.task = build_task(model, config, self.options)
        self.global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        metrics = [v for metric in self.task.train_metrics for v in metric.variables]
        self.guard = NonFiniteGuard(
            self.options.max_bad_steps,
            [v.path for v in self.task.optimizers.variables],
            model.non_trainable_variables,
            distribution.local_variables(strategy, metrics),
        )
        self.train_signature = self.eval_signature = self.task.input_signature
        self.train_steps: dict[tuple[object, ...], StepFn] = {}
        # The step comes at each epoch (`train_epoch`), for the trainable variables then.
        self.train_runner = StepRunner(
            None,
            self.options.steps_per_execution,
            (*self.task.train_metrics, self.guard.skipped),
            stop=self.guard.tripped,
            run_eagerly=self.options.run_eagerly,
            steps_per_epoch=self.options.steps_per_epoch,
            open_loop_in_python=distribution.is_multi_worker(strategy),
        )
        self.eval_steps: dict[tuple[object, ...], StepFn] = {}
        self.flush_steps: dict[tuple[int, ...], Callable[[], None]] = {}
        self.eval_runner: StepRunner | None = None
        if self.task.evaluates:
            self.eval_runner = StepRunner(
                None,
                self.options.steps_per_execution,
                self.task.val_metrics,
                run_eagerly=self.options.run_eagerly,
                steps_per_epoch=self.options.validation_steps,
                open_loop_in_python=distribution.is_multi_worker(strategy),
            )

    def scope(self) -> contextlib.AbstractContextManager[object]:
        """The strategy's scope, in which variables of the run are created; none without one."""
        return contextlib.nullcontext() if self.strategy is None else self.strategy.scope()

    @property
    def train_step(self) -> StepFn:
        """The training step for the model's trainable variables now.

        A `tf.function` traced once per set of trainable variables: a callback that freezes a
        layer (`trainable = False`) gets a step that neither differentiates nor updates it and
        runs it in inference mode, at the cost of one trace, and unfreezing reuses the first.
        Around the task's step it saves the layer state for the guard, increments
        `global_step` and records the step's status. It takes batches of `train_signature`.
        """
        signature = self.train_signature
        key = (signature, *(id(v) for v in self.model.trainable_variables))
        if key not in self.train_steps:
            step = self.task.make_train_step()
            self.train_steps[key] = self._compile(step, signature, guarded=True)
        return self.train_steps[key]

    @property
    def eval_step(self) -> StepFn:
        """The evaluation step for the model's trainable variables now.

        Traced once per set of trainable variables too, because the loss it reports adds the
        regularization losses of the trainable weights only (`model.losses`). It takes batches
        of `eval_signature`, set from the dataset by `evaluate`.
        """
        signature = self.eval_signature
        key = (signature, *(id(v) for v in self.model.trainable_variables))
        if key not in self.eval_steps:
            step = self.task.make_eval_step()
            self.eval_steps[key] = self._compile(step, signature, guarded=False)
        return self.eval_steps[key]

    def checkpoint_items(self) -> dict[str, object]:
        """The run's state for `checkpoints.RunCheckpoint`, all but the data's position."""
        metrics = (*self.task.train_metrics, self.guard.skipped)
        return {
            "model": self.model,
            # Random layers' seed states (e.g. Dropout's) are not among the model's weights.
            "model_state": list(self.model.non_trainable_variables),
            "optimizers": self.task.optimizers.checkpoint_items(),
            "global_step": self.global_step,
            "guard": self.guard.variables,
            "metrics": [variable for metric in metrics for variable in metric.variables],
            **self.task.checkpoint_items(),
        }

    def _guarded(self, step: StepFn) -> StepFn:
        guard, global_step = self.guard, self.global_step

        def guarded_step(*batch: tf.Tensor) -> None:
            saved = guard.save_state()
            status = step(*batch)
            global_step.assign_add(1)
            guard.record(status, global_step, saved)

        return guarded_step

    def _compile(
        self, step: StepFn, signature: tuple[tf.TensorSpec, ...], *, guarded: bool
    ) -> StepFn:
        """The step of one global batch, as the loop calls it: on every replica, guarded.

        One `tf.function` holds the step and the guard (compiled by XLA with `jit_compile`).
        Under a strategy, each replica runs the step on its share of the batch inside it; the
        step stays a plain function there, as `strategy.run` needs for the optimizers'
        all-reduce.
        """
        if self.strategy is not None:
            step = distribution.run_on_replicas(self.strategy, step)
        if guarded:
            step = self._guarded(step)
        if self.options.run_eagerly:
            return step
        # AutoGraph converts your step, so that a Python `if` on a tensor works there. The
        # engine's functions that a step calls are graph code marked `do_not_convert`:
        # converting them cost each new process about 1.5 s (scaffold's benchmarks/startup.py).
        # The engine's errors raised while tracing carry `ag_pass_through`, so they reach the
        # caller as they are.
        return tf.function(step, input_signature=signature, jit_compile=self.options.jit_compile)

    def train_epoch(
        self, dataset: tf.data.Dataset, hooks: CallHooks | None = None, *, first_step: int = 0
    ) -> tuple[EpochLogs, int]:
        """Train on every batch once; return this epoch's figures and its number of steps.

        Args:
            dataset: The batches.
            hooks: Called around each call of `options.steps_per_execution` steps.
            first_step: Steps of this epoch already run (when resuming from a checkpoint).

        Raises:
            gradients.NonFiniteError: If `options.max_bad_steps` steps in a row were skipped.
        """
        self.train_signature = self.task.signature(dataset.element_spec)
        self.train_runner.use_step(self.train_step)
        with reading("train_ds"):
            logs, steps = self.train_runner.run_epoch(dataset, hooks, first_step=first_step)
        if bool(self.guard.tripped()):
            raise self.guard.error(int(self.global_step.numpy()))
        if self.options.accumulation_steps > 1 and self.stop_requested() is None:
            self.flush_step()  # Interrupted, the group goes into the checkpoint instead.
        return logs, steps

    @property
    def flush_step(self) -> Callable[[], None]:
        """Applies the accumulated micro-batches of an epoch's last, smaller group.

        With `options.accumulation_steps` above 1 (see `engine/accumulation.py`); traced once per
        set of trainable variables, like the steps.
        """
        key = tuple(id(v) for v in self.model.trainable_variables)
        if key not in self.flush_steps:
            flush = self.task.optimizers.flush
            if self.strategy is not None:
                strategy = self.strategy

                def flush() -> None:
                    strategy.run(self.task.optimizers.flush)

            self.flush_steps[key] = (
                flush if self.options.run_eagerly else tf.function(flush, autograph=False)
            )
        return self.flush_steps[key]

    def evaluate(
        self, dataset: tf.data.Dataset, callbacks: keras.callbacks.CallbackList | None = None
    ) -> EpochLogs:
        """Evaluate on every batch once; figures cover this call only.

        Raises:
            ValueError: If the task has no evaluation step.
        """
        if self.eval_runner is None:
            raise ValueError(f"{NO_EVALUATION}, so evaluate has nothing to run")
        self.eval_signature = self.task.signature(dataset.element_spec)
        self.eval_runner.use_step(self.eval_step)
        if self.options.validation_steps is not None:
            self.eval_runner.close()  # As in `model.fit`: every evaluation reads the same batches.
        if callbacks is None:
            with reading("val_ds"):
                logs, _ = self.eval_runner.run_epoch(dataset)
            return logs
        callbacks.on_test_begin()
        hooks = CallHooks(
            callbacks.on_test_batch_begin, callbacks.on_test_batch_end, stop=lambda: False
        )
        with reading("val_ds"):
            logs, _ = self.eval_runner.run_epoch(dataset, hooks)
        callbacks.on_test_end(logs)
        return logs

    def fit(
        self,
        train_ds: tf.data.Dataset,
        val_ds: tf.data.Dataset | None = None,
        *,
        epochs: int | None = None,
        initial_epoch: int = 0,
        callbacks: Sequence[keras.callbacks.Callback] = (),
        class_weight: Mapping[int, float] | None = None,
    ) -> keras.callbacks.History:
        """Train from epoch `initial_epoch` to `epochs`, evaluating on `val_ds` after each.

        Callbacks are called as `model.fit` calls them, with epochs counted from 0. Batch-level
        hooks fire once per call of `options.steps_per_execution` steps, as in `model.fit`
        with `steps_per_execution`: `on_train_batch_begin` gets the index of the call's first
        step, `on_train_batch_end` that of its last step and the running figures. Setting
        `model.stop_training` ends the run after the current call. During the run,
        `model.optimizer` is the `OptimizerSet`, so that callbacks which read or set
        `model.optimizer.learning_rate` work with every optimizer.

        With `options.logdir`, the run writes `run.json`, a checkpoint at the end of every
        epoch (and every `options.checkpoint_every_steps` steps) and, when it ends,
        `model.keras`; with `options.track` too, it is tracked in MLflow (see `tracking.py`).
        With `options.resume`, it first restores the latest checkpoint and goes on from its
        epoch and step, in place of `initial_epoch`. Under several workers, the
        chief alone writes these files and prints progress (your callbacks run everywhere).

        Args:
            train_ds: Batches to train on.
            val_ds: Batches to evaluate on after each epoch; no evaluation when `None`, which
                a task without an evaluation step (a GAN's) requires.
            epochs: The epoch to stop at; `config.epochs` by default.
            initial_epoch: The epoch to start from.
            callbacks: Yours; they run before the task's (its `callbacks` method) and the
                default ones (see `callbacks.default_callbacks`), so those see what yours add
                to the logs.
            class_weight: The weight of each class id in the training loss, as for
                `model.fit` (see the task's `prepare_dataset`); `val_ds` is not weighted by it.

        Returns:
            The `History` of this call's epochs: `.history` maps each key of the epoch logs
            to its per-epoch values, `.model` is the trained model.

        Raises:
            gradients.NonFiniteError: If `options.max_bad_steps` steps in a row were skipped.
            interrupts.Interrupted: If a stop was requested (`interrupts.request`, or Ctrl-C
                within `interrupts.catch_signals`); raised after the current call of steps
                and, with a logdir, a checkpoint. Under several workers, on every worker, at
                the same step (see `distribution.ClusterStop`).
            contract.DatasetError: If `train_ds` or `val_ds` does not fit the steps, listing
                every problem; what fits after an unambiguous conversion is converted instead
                (see `contract`). Also if one is empty, or repeats forever and no
                `options.steps_per_epoch` (or `validation_steps`) ends its epochs; and during
                the run, if a batch fails a value check of the steps or the dataset's Python
                code raises (see `reading`).
            ValueError: If `class_weight` maps something other than class ids to finite
                weights >= 0, or the task takes none; or if `val_ds` is given to a task
                without an evaluation step.
            checkpoints.CheckpointError: If `options.resume` finds nothing to resume, a
                checkpoint that cannot be read or that another model wrote, or training data
                of another number of batches than the run's.
            tracking.TrackingError: If `options.track` is set and MLflow is not installed, its
                store cannot be reached, or a resumed run's MLflow run is not in it.
        """
        epochs = self.config.epochs if epochs is None else epochs
        if val_ds is not None and self.eval_runner is None:
            raise ValueError(f"val_ds is given, but {NO_EVALUATION}; drop val_ds")
        train_ds = self.task.prepare_dataset(train_ds, "train_ds", class_weight)
        check_length(train_ds, "train_ds", self.options.steps_per_epoch, "steps_per_epoch")
        if val_ds is not None:
            val_ds = self.task.prepare_dataset(val_ds, "val_ds")
            check_length(val_ds, "val_ds", self.options.validation_steps, "validation_steps")
        logdir = None if self.options.logdir is None else Path(self.options.logdir)
        if self.options.resume and logdir is not None:
            check_same_config(logdir, self.config, self.project.options)
            check_same_data(logdir, int(train_ds.cardinality()))
        num_batches = self.options.steps_per_epoch or int(train_ds.cardinality())
        history = keras.callbacks.History()
        task_callbacks = self.task.callbacks(chief=self.chief)
        # Under several workers only the chief prints progress and writes figures.
        defaults = default_callbacks(self.options, self.chief)
        tracker = self._tracker(logdir)
        callback_list = keras.callbacks.CallbackList(
            [*callbacks, *task_callbacks, *defaults, *([tracker] if tracker else []), history],
            model=self.model,
            epochs=epochs,
            steps=num_batches if num_batches >= 0 else None,
            verbose=self.options.verbose,
        )
        checkpoint = None
        if logdir is not None:
            checkpoint = RunCheckpoint(
                logdir / CHECKPOINTS,
                self.checkpoint_items(),
                callback_list.callbacks,
                self.options.max_checkpoints,
                chief=self.chief,
                # Under several workers each write takes part in the cluster's collectives.
                background=self.options.background_checkpoints
                and not distribution.is_multi_worker(self.strategy),
            )
        epoch = first_step = 0
        every = self.options.checkpoint_every_steps if checkpoint is not None else None

        cluster_stop = None
        if distribution.is_multi_worker(self.strategy):

            def save(epoch: int, step: int) -> Path | None:
                if checkpoint is None:
                    return None
                return checkpoint.save(epoch, step, self._saved_data(step))

            cluster_stop = distribution.ClusterStop(self.strategy, save, self._stopped)

        def before_call(batch: int) -> None:
            if cluster_stop is not None:
                cluster_stop.check(epoch, batch)
            callback_list.on_train_batch_begin(batch)

        def after_call(batch: int, logs: EpochLogs) -> None:
            callback_list.on_train_batch_end(batch, logs)
            if checkpoint is not None and every and int(self.global_step) % every == 0:
                checkpoint.save(epoch, batch + 1, self._saved_data(batch + 1))

        hooks = CallHooks(
            before_call,
            after_call,
            stop=lambda: bool(self.model.stop_training) or self.stop_requested() is not None,
            limit=None if not every else lambda: every - int(self.global_step) % every,
        )
        optimizer = getattr(self.model, "optimizer", None)
        self.model.optimizer = self.task.optimizers
        self.model.stop_training = False
        try:
            self.train_runner.start(train_ds)
            if checkpoint is not None and self.options.resume:
                initial_epoch, first_step = checkpoint.restore(self.train_runner.iterator)
                if not checkpoint.restored_data and self.train_runner.between_passes(first_step):
                    # Saved between two passes (see `StepRunner.between_passes`): exact.
                    self.train_runner.skip_passes(initial_epoch + (1 if first_step else 0))
                elif not checkpoint.restored_data:
                    self.train_runner.skip(first_step)
                    if self.chief:
                        print(NOT_EXACT.format(step=first_step), file=sys.stderr, flush=True)
            elif logdir is not None and self.chief:
                write_run_file(logdir, self.config, self.options, int(train_ds.cardinality()))
            callback_list.on_train_begin()
            if checkpoint is not None:
                checkpoint.restore_callbacks()  # After on_train_begin, which resets them.
            logs: EpochLogs = {}
            for epoch in range(initial_epoch, epochs):
                callback_list.on_epoch_begin(epoch)
                start = time.perf_counter()
                logs, steps = self.train_epoch(train_ds, hooks, first_step=first_step)
                seconds = time.perf_counter() - start
                if self.stop_requested() is not None and self.train_runner.ended_early:
                    raise self._interrupted(checkpoint, epoch, steps)
                if val_ds is not None:
                    logs.update(self.evaluate(val_ds, callback_list))
                logs.update(self.task.optimizers.learning_rates())
                logs["steps_per_second"] = (steps - first_step) / seconds if seconds > 0 else 0.0
                first_step = 0
                callback_list.on_epoch_end(epoch, logs)
                saved = None
                if checkpoint is not None:
                    saved = checkpoint.save(epoch + 1, 0, self._saved_data(0))
                if self.stop_requested() is not None:
                    raise self._interrupted(checkpoint, epoch + 1, 0, saved=saved)
                if self.model.stop_training:
                    break
            if checkpoint is not None:
                checkpoint.wait()  # The last checkpoint is complete before the run ends.
            callback_list.on_train_end(logs)
        except BaseException as error:
            if checkpoint is not None:
                _close_quietly(checkpoint)
            if tracker is not None:
                tracker.stopped(error, resumable=resume_position(logdir) is not None)
            raise
        finally:
            self.model.optimizer = optimizer
            # The iterators hold read-ahead batches and shuffle buffers: free them with the run.
            self.train_runner.close()
            if self.eval_runner is not None:
                self.eval_runner.close()
            if cluster_stop is not None:
                cluster_stop.close()
            if checkpoint is not None:
                checkpoint.close()
        if logdir is not None and self.chief:
            try:
                path = save_model(self.model, logdir)
            except BaseException as error:
                if tracker is not None:
                    tracker.stopped(error, resumable=True)
                raise
            if tracker is not None:
                tracker.finished(path)
        return history

    def _tracker(self, logdir: Path | None) -> keras.callbacks.Callback | None:
        """The run's `tracking.Tracker` with `options.track`, on the chief; `None` otherwise.

        Raises:
            ValueError: If `options.track` is set without `options.logdir`.
        """
        if not self.options.track:
            return None  # Nothing of MLflow is imported.
        if logdir is None:
            raise ValueError(
                "RunOptions.track=True needs the run's directory, where the MLflow run's id is "
                "kept; set RunOptions.logdir"
            )
        if not self.chief:
            return None
        from .tracking import Tracker

        return Tracker(logdir, self.config, self.options, tags=self.project.tags)

    def _saved_data(self, step: int) -> tf.data.Iterator | None:
        """The data iterator a checkpoint at `step` of an epoch holds: none between passes."""
        if self.train_runner.between_passes(step):
            return None
        return self.train_runner.iterator

    def stop_requested(self) -> int | None:
        """The signal this process was asked to stop with, or `None`, as the loop sees it.

        Under several workers, always `None`: a worker must not stop alone, so the request
        goes through `distribution.ClusterStop` instead, which stops them all at one step.
        """
        return None if distribution.is_multi_worker(self.strategy) else interrupts.requested()

    def _stopped(self, epoch: int, step: int, saved: Path | None) -> interrupts.Interrupted:
        """What every worker raises when the cluster stops at `step` of `epoch`."""
        return interrupts.Interrupted(interrupts.requested() or signal.SIGTERM, epoch, step, saved)

    def _interrupted(
        self,
        checkpoint: RunCheckpoint | None,
        epoch: int,
        step: int,
        saved: Path | None = None,
    ) -> interrupts.Interrupted:
        if checkpoint is not None and saved is None:
            saved = checkpoint.save(epoch, step, self._saved_data(step))
        if checkpoint is not None:
            checkpoint.wait()  # The checkpoint the stop names is complete.
        signum = interrupts.requested() or signal.SIGINT
        return interrupts.Interrupted(signum, epoch, step, saved)


def _close_quietly(checkpoint: RunCheckpoint) -> None:
    """Let a checkpoint's write in the background end, while another error ends the run.

    A write that failed removed its files and named no checkpoint; the error that ended the
    run is the one to report.
    """
    with contextlib.suppress(Exception):
        checkpoint.close()


def check_length(dataset: tf.data.Dataset, name: str, steps: int | None, option: str) -> None:
    """Fail before the run when `dataset` cannot make epochs.

    Args:
        dataset: The batches.
        name: The dataset's name in the message.
        steps: The steps per epoch (`RunOptions.<option>`), if set.
        option: The `RunOptions` field that sets them.

    A dataset whose length is unknown (after `filter`, say) is read up to its first batch to
    tell whether it is empty: an empty one would train nothing, or report figures of no
    example, where `model.fit` fails.

    Raises:
        contract.DatasetError: If `dataset` repeats forever and `steps` is not set, or if it
            has no batch.
    """
    cardinality = int(dataset.cardinality())
    flag = "--" + option.replace("_", "-")
    if cardinality == tf.data.INFINITE_CARDINALITY and steps is None:
        problem = (
            f"{name} repeats forever, so an epoch would never end; set RunOptions.{option} "
            f"({flag} N) to end each epoch after N batches, or remove its .repeat(): the "
            "loop repeats a dataset for you"
        )
        raise DatasetError(name, [problem])
    if cardinality == tf.data.UNKNOWN_CARDINALITY:
        with reading(name):
            cardinality = sum(1 for _ in dataset.take(1))  # Whether it has a first batch.
    if cardinality == 0:
        if steps is not None:
            problem = f"{name} is empty, so no epoch can take {steps} batches from it"
        elif name == "train_ds":
            problem = f"{name} is empty (no batch), so every epoch would train on nothing"
        else:
            problem = f"{name} is empty (no batch), so it has no figure to report"
        raise DatasetError(name, [f"{problem}; give it data"])


@contextlib.contextmanager
def reading(name: str) -> Iterator[None]:
    """Turn the failure of a step or a read on a bad batch of `name` into a `DatasetError`.

    Raises:
        contract.DatasetError: If a batch of `name` failed a value check of the steps, or the
            dataset's Python code raised (see `contract.read_failure`). Other errors pass as
            they are.
        StepError: If the step's `only_if` differed between the replicas.
    """
    try:
        yield
    except tf.errors.OpError as error:
        problem = read_failure(error)
        if problem is None:
            raise
        if problem == ONLY_IF_DIFFERS:  # The step's decision, not the data.
            raise StepError(ONLY_IF_DIFFERS) from None
        raise DatasetError(name, [problem]) from error


def fit(
    project: Project,
    config: Any,
    model: keras.Model | None = None,
    train_ds: tf.data.Dataset | None = None,
    val_ds: tf.data.Dataset | None = None,
    *,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    options: RunOptions | None = None,
    strategy: tf.distribute.Strategy | None = None,
    class_weight: Mapping[int, float] | None = None,
    task: BuildTask | None = None,
) -> keras.callbacks.History:
    """Train a model with the custom loop, as `model.fit` would.

    Seeds Keras, TensorFlow, NumPy and Python from `config.seed` first, so a run repeats;
    with `options.deterministic`, makes every op deterministic too.

    Args:
        project: The project: its datasets, model, task and `RunOptions` come from it.
        config: The run's hyperparameters, a `project.config`.
        model: Defaults to `project.build_model(config)`, built under the dtype policy
            `options.precision` in the strategy's scope. A model of yours must have been
            built likewise.
        train_ds: Defaults to the training split of `project.load_datasets(config)`.
        val_ds: When `train_ds` is defaulted too, defaults to the validation split of
            `project.load_datasets(config)` (`None` where it has none, as a GAN's); otherwise `None`
            means no evaluation.
        callbacks: Keras callbacks, as for `model.fit`.
        options: How the run executes; `project.options()` by default.
        strategy: Any `tf.distribute.Strategy`; by default the one `options.strategy` names
            (see `distribution.make_strategy`).
        class_weight: The weight of each class id, as for `model.fit`: each training
            example's loss counts times its label's weight (1.0 for a class the mapping
            omits). Not with a `train_ds` of `(features, labels, sample_weights)`, nor for a
            task without classes (a GAN's).
        task: Builds the task from the model, the config and the options;
            `project.build_task` by default.

    Returns:
        The `History`: `.history[key]` holds one value per epoch, `.model` the trained model.

    Raises:
        gradients.NonFiniteError: If `options.max_bad_steps` steps in a row were skipped.
        distribution.DistributionError: If the strategy cannot be built, or `model` was
            built outside its scope.
        precision.PrecisionError: If `model` was built under another dtype policy, or does
            not output float32.
    """
    options = project.options() if options is None else options
    strategy, model = start_run(project, config, options, strategy, model)
    if train_ds is None:
        train_ds, default_val = project.load_datasets(config)
        val_ds = default_val if val_ds is None else val_ds
    trainer = Trainer(project, config, model, options, strategy, task=task)
    return trainer.fit(train_ds, val_ds, callbacks=callbacks, class_weight=class_weight)


def start_run(
    project: Project,
    config: Any,
    options: RunOptions,
    strategy: tf.distribute.Strategy | None = None,
    model: keras.Model | None = None,
) -> tuple[tf.distribute.Strategy | None, keras.Model]:
    """What every run does first: seeds, determinism, its strategy and its model.

    Seeds Keras, TensorFlow, NumPy and Python from `config.seed`; with `options.deterministic`,
    makes every op deterministic. Returns `strategy`, or the one `options.strategy` names, and
    `model`, or `project.build_model(config)` built under the dtype policy `options.precision`
    in the strategy's scope.
    """
    keras.utils.set_random_seed(config.seed)
    if options.deterministic:
        tf.config.experimental.enable_op_determinism()
    if strategy is None:
        strategy = distribution.make_strategy(options.strategy, options.cpu_devices)
    if model is None:
        scope = contextlib.nullcontext() if strategy is None else strategy.scope()
        with precision.dtype_policy(options.precision), scope:
            model = project.build_model(config)
    return strategy, model
