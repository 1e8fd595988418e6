"""Profile a few calls of training: where a step's time goes, and what to do about it.

    python -m PACKAGE profile [--calls N] [--logdir DIR]

`profile()` builds the run as `train` does (the model under the run's precision, in the
strategy's scope, the `Trainer`, `project.load_datasets(config)`) and trains a throwaway model
for a few calls of `steps_per_execution` steps each, as the loop runs them, the task's callbacks
included. One warm-up call traces the step; then it times:

- the loop: `calls` calls of the real loop, reading the data as training does;
- the input alone: the same pipeline read in `calls` calls of as many batches, with no step;
- the compute alone: the step on one batch read once and repeated (`take(1).cache().repeat()`),
  in `calls` calls.

Each is the fastest call's time per step (or batch), so that other processes count least. The
time a step waits on its input is the loop's time per step minus the compute's. Then
`traced_calls` more calls run under the TensorFlow profiler, which writes a trace under
`logdir/plugins/profile/<time>/`: `tensorboard --logdir DIR` shows it in its Profile tab (the
`profile` extra installs the plugin, `xprof`). The report adds how many times each of the
engine's `tf.function`s traced (a trace after the warm-up is named, with its cause), the number
of parameters, the FLOPs of one step (counted on the step's graph), the peak memory, and a
one-line verdict (see `ProfileReport.verdict`).

Template-owned: `copier update` replaces it with the template's later versions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import resource
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from .loop import CallHooks, make_counted_loop, repeated
from .options import RunOptions
from .project import Project
from .train import Trainer, check_length, reading, start_run

# A step is input-bound when it waits on its input for at least this share of its time, and
# reading the input alone takes at least this share of a step too (so that noise in the
# timings of a fast step does not read as waiting).
INPUT_BOUND_SHARE = 0.3
WARM_UP_CALLS = 1
# Retracing is a verdict when functions traced in at least this many calls after the warm-up:
# once is what a new set of trainable variables costs (a callback that unfreezes a backbone),
# a one-off noted in the verdict; traces that come back call after call are the problem.
RETRACING_CALLS = 2
REPORT = "report.txt"  # What `python -m PACKAGE profile` writes in its directory, with the trace.


@dataclasses.dataclass
class ProfileReport:
    """What `profile` measured; `str(report)` is what `python -m PACKAGE profile` prints.

    Attributes:
        steps_per_call: Steps per timed call of the loop: `RunOptions.steps_per_execution`, or
            fewer where an epoch ends first (the input and the compute alone are timed in
            calls of as many steps, so that each call's own cost weighs the same).
        calls: Calls of the loop timed (those that traced are left out, see `traced_out`).
        traced_out: Calls of the loop left out of the timing because a function traced in them.
        retracing_calls: Calls of the loop after the warm-up in which a function traced, the
            profiled ones included.
        step_seconds: The loop's time per step, input and compute together: the fastest timed
            call's, as are the two below, so that other processes' load counts least.
        input_seconds: The time to read one batch of the pipeline alone.
        compute_seconds: The time of one step on a batch already read.
        traces: Traces of each of the engine's `tf.function`s, by name, after the loop's calls.
        warm_traces: The same after the warm-up call; any trace since is retracing.
        retrace_causes: Why each retracing function traced again, by name.
        parameters: The model's parameters (`model.count_params()`), trainable or not.
        trainable_parameters: Those the step trains now.
        flops: Floating-point operations of one training step on the first batch (forward,
            gradients and the update), as `tf.compat.v1.profiler` counts them on the step's
            graph; `None` when they could not be counted (see `flops_note`).
        flops_note: How `flops` was counted, or why it was not.
        peak_bytes: The peak memory of the run's tensors on the first GPU, or the CPU, over the
            calls after the warm-up (TensorFlow's allocator), or the process's peak resident
            memory when the device does not report it.
        memory_note: Which of the two `peak_bytes` is.
        trace_dir: The directory the profiler wrote its trace in (`*.xplane.pb`), if any.
    """

    steps_per_call: int
    calls: int
    traced_out: int
    retracing_calls: int
    step_seconds: float
    input_seconds: float
    compute_seconds: float
    traces: dict[str, int]
    warm_traces: dict[str, int]
    retrace_causes: dict[str, str]
    parameters: int
    trainable_parameters: int
    flops: int | None
    flops_note: str
    peak_bytes: int
    memory_note: str
    trace_dir: Path | None = None

    @property
    def wait_seconds(self) -> float:
        """The time per step spent waiting on the input: the loop's minus the compute's."""
        return max(0.0, self.step_seconds - self.compute_seconds)

    @property
    def retraced(self) -> dict[str, int]:
        """The functions that traced after the warm-up, with how many more times."""
        return {
            name: count - self.warm_traces.get(name, 0)
            for name, count in self.traces.items()
            if count > self.warm_traces.get(name, 0)
        }

    @property
    def input_bound(self) -> bool:
        """Whether the steps wait on their input (see `INPUT_BOUND_SHARE`)."""
        step = self.step_seconds
        return (
            step > 0
            and self.wait_seconds >= INPUT_BOUND_SHARE * step
            and self.input_seconds >= INPUT_BOUND_SHARE * step
        )

    def _named_retraces(self) -> str:
        return ", ".join(
            f"{name} traced {more} more time{'s' if more > 1 else ''} after warm-up "
            f"({self.retrace_causes.get(name, 'see the trace counts')})"
            for name, more in self.retraced.items()
        )

    @property
    def verdict(self) -> str:
        """One line: `retracing: ...` first, else `input-bound: ...`, else `compute-bound: ...`.

        Retracing when functions traced in `RETRACING_CALLS` calls or more after the warm-up;
        a trace in one call only is noted at the end of the other verdicts.
        """
        if self.retracing_calls >= RETRACING_CALLS:
            return (
                f"retracing: {self._named_retraces()}, in {self.retracing_calls} calls; each "
                "trace stops training while it runs: keep the trainable variables and the "
                "batches' dtypes the same from call to call"
            )
        if self.input_bound:
            share = self.wait_seconds / self.step_seconds
            verdict = (
                f"input-bound: steps wait on the data {100 * share:.0f} % of their time; add "
                "prefetch/cache/parallel map in data.py (.map(f, num_parallel_calls="
                "tf.data.AUTOTUNE), .cache() before random augmentation, .prefetch(tf.data."
                "AUTOTUNE) last)"
            )
        else:
            verdict = (
                "compute-bound: the step itself takes the time; a larger batch, more "
                "--steps-per-execution, --jit-compile or a mixed --precision on a GPU can speed it"
            )
        if self.retracing_calls:
            verdict += f"; one call traced again, a one-off: {self._named_retraces()}"
        return verdict

    def __str__(self) -> str:
        step, wait = self.step_seconds, self.wait_seconds
        share = 100 * wait / step if step > 0 else 0.0
        traces = ", ".join(f"{name} {count}" for name, count in self.traces.items())
        retraced = ", ".join(f"{name} +{more}" for name, more in self.retraced.items())
        timed = f"{self.calls} calls of {self.steps_per_call} steps"
        if self.traced_out:
            timed += f" ({self.traced_out} more left out: they traced)"
        flops = "not counted" if self.flops is None else f"{self.flops:,}"
        rows = [
            ("step", f"{_ms(step)} per step over {timed}"),
            ("  input wait", f"{_ms(wait)} per step ({share:.0f} %): the loop's minus compute"),
            ("  compute", f"{_ms(self.compute_seconds)} per step, on one batch already read"),
            ("input alone", f"{_ms(self.input_seconds)} per batch, reading the pipeline"),
            ("traces", f"{traces}; after warm-up: {retraced or 'none'}"),
            (
                "parameters",
                f"{self.parameters:,} ({self.trainable_parameters:,} trained by the step)",
            ),
            ("FLOPs", f"{flops} per step ({self.flops_note})"),
            ("peak memory", f"{self.peak_bytes / 2**20:.1f} MiB ({self.memory_note})"),
            ("trace", str(self.trace_dir) if self.trace_dir else "none written"),
        ]
        width = max(len(topic) for topic, _ in rows)
        lines = [f"{topic.ljust(width)}  {found}" for topic, found in rows]
        return "\n".join([*lines, f"verdict: {self.verdict}"])


def _ms(seconds: float) -> str:
    return f"{1000 * seconds:.3f} ms"


def profile(
    project: Project,
    config: Any = None,
    *,
    logdir: str | Path | None,
    options: RunOptions | None = None,
    calls: int = 5,
    traced_calls: int = 2,
    train_ds: tf.data.Dataset | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> ProfileReport:
    """Train a fresh model for a few calls, timed and profiled; return the report.

    Args:
        project: The project: its config, datasets, model and task come from it.
        config: The run's hyperparameters; `project.config()` by default.
        logdir: Where the profiler writes its trace (`logdir/plugins/profile/...`); `None`
            writes none.
        options: How the steps run, as for `train`; `project.options()` by default. Its
            `logdir` is not used: the profile writes no run (no checkpoint, no figures).
        calls: Calls of the loop to time, after one warm-up call.
        traced_calls: Calls of the loop run under the profiler after them.
        train_ds: Defaults to the training split of `project.load_datasets(config)`.
        callbacks: Keras callbacks, as for `fit`, called around each call as `fit` does;
            the task's own callbacks run too.

    Returns:
        The report.

    Raises:
        ValueError: If `calls` is under 1 or `traced_calls` under 0; or if
            `options.run_eagerly`: there is no compiled step to profile.
        contract.DatasetError: If `train_ds` does not fit the steps, as for `fit`.
        gradients.NonFiniteError: If `options.max_bad_steps` steps in a row were skipped.
    """
    if calls < 1 or traced_calls < 0:
        raise ValueError(f"profile times 1 call or more, got calls={calls}, {traced_calls=}")
    config = project.config() if config is None else config
    options = project.options() if options is None else options
    if options.run_eagerly:
        raise ValueError("profile measures the compiled steps; drop run_eagerly (--eager)")
    options = dataclasses.replace(options, logdir=None, resume=False, verbose=0)
    strategy, model = start_run(project, config, options)
    if train_ds is None:
        train_ds, _ = project.load_datasets(config)
    trainer = Trainer(project, config, model, options, strategy)
    prepared = trainer.task.prepare_dataset(train_ds, "train_ds")
    check_length(prepared, "train_ds", options.steps_per_epoch, "steps_per_epoch")
    k = options.steps_per_execution
    device = "GPU:0" if tf.config.list_logical_devices("GPU") else "CPU:0"

    loop = _LoopTimer(trainer, WARM_UP_CALLS, calls, traced_calls, device, logdir)
    callback_list = keras.callbacks.CallbackList(
        [*callbacks, *trainer.task.callbacks(chief=trainer.chief)], model=model, verbose=0
    )
    optimizer = getattr(model, "optimizer", None)
    model.optimizer = trainer.task.optimizers
    try:
        loop.run(prepared, callback_list)
    finally:
        model.optimizer = optimizer
        trainer.train_runner.close()
    peak_bytes, memory_note = _peak_memory(device)
    steps = loop.call_steps or k  # As many per call as the loop's calls ran, for the same overhead.
    with reading("train_ds"):
        input_seconds = _time_input(prepared, steps, calls)
        compute_seconds = _time_compute(trainer, prepared, steps, calls)
    flops, flops_note = _step_flops(trainer, prepared)
    trainable = sum(int(tf.size(v)) for v in model.trainable_variables)
    return ProfileReport(
        steps_per_call=steps,
        calls=len(loop.per_step),
        traced_out=loop.traced_out,
        retracing_calls=loop.retracing_calls,
        step_seconds=min(loop.per_step, default=0.0),
        input_seconds=input_seconds,
        compute_seconds=compute_seconds,
        traces=loop.final_traces,
        warm_traces=loop.warm_traces,
        retrace_causes=loop.causes,
        parameters=model.count_params(),
        trainable_parameters=trainable,
        flops=flops,
        flops_note=flops_note,
        peak_bytes=peak_bytes,
        memory_note=memory_note,
        trace_dir=loop.trace_dir,
    )


class _LoopTimer:
    """Runs the real loop for warm-up, timed and profiled calls, timing each call."""

    def __init__(
        self,
        trainer: Trainer,
        warm_up: int,
        calls: int,
        traced_calls: int,
        device: str,
        logdir: str | Path | None,
    ) -> None:
        self.trainer = trainer
        self.warm_up, self.calls, self.traced_calls = warm_up, calls, traced_calls
        self.device = device
        self.logdir = None if logdir is None else Path(logdir)
        self.done = 0  # Calls run so far.
        self.per_step: list[float] = []  # Seconds per step of each timed call.
        self.call_steps = 0  # The most steps a timed call ran.
        self.traced_out = self.retracing_calls = 0
        self.warm_traces: dict[str, int] = {}
        self.final_traces: dict[str, int] = {}
        self.causes: dict[str, str] = {}
        self.trace_dir: Path | None = None
        self._start = 0.0
        self._first_step = 0
        self._before: dict[str, int] = {}
        self._keys: list[tuple[object, ...]] = []
        self._profiling = False
        self._profile_dirs: set[Path] = set()

    def traces(self) -> dict[str, int]:
        """How many times each of the engine's training functions traced so far."""
        steps: Any = list(self.trainer.train_steps.values())  # `tf.function`s, not eager.
        return {
            "train_step": sum(int(step.experimental_get_tracing_count()) for step in steps),
            "train_loop": int(self.trainer.train_runner.tracing_count()),
        }

    def run(self, dataset: tf.data.Dataset, callbacks: keras.callbacks.CallbackList) -> None:
        """Run every call, epoch after epoch, with the callbacks around them as `fit` does."""
        total = self.warm_up + self.calls + self.traced_calls
        hooks = CallHooks(self._begin(callbacks), self._end(callbacks), lambda: self.done >= total)
        callbacks.on_train_begin()
        logs: dict[str, float] = {}
        epoch = 0
        try:
            while self.done < total:
                callbacks.on_epoch_begin(epoch)
                logs, _ = self.trainer.train_epoch(dataset, hooks)
                callbacks.on_epoch_end(epoch, logs)
                epoch += 1
        finally:
            if self._profiling:
                tf.profiler.experimental.stop()
                self._profiling = False
        self.final_traces = self.traces()
        callbacks.on_train_end(logs)

    def _begin(self, callbacks: keras.callbacks.CallbackList) -> Callable[[int], None]:
        def begin(step: int) -> None:
            callbacks.on_train_batch_begin(step)
            if self.done == self.warm_up:
                with contextlib.suppress(tf.errors.OpError, ValueError):
                    tf.config.experimental.reset_memory_stats(self.device)
            if self.done == self.warm_up + self.calls and self.logdir is not None:
                self.logdir.mkdir(parents=True, exist_ok=True)
                self._profile_dirs = set(self.logdir.glob("plugins/profile/*"))
                tf.profiler.experimental.start(str(self.logdir))
                self._profiling = True
            self._before = self.traces()
            self._first_step = step
            self._start = time.perf_counter()

        return begin

    def _end(self, callbacks: keras.callbacks.CallbackList) -> Callable[[int, Any], None]:
        def end(step: int, logs: Any) -> None:
            seconds = time.perf_counter() - self._start
            self.done += 1
            now = self.traces()
            traced = now != self._before
            if self.done > self.warm_up and traced:
                self.retracing_calls += 1
                for name, cause in self._causes(now).items():
                    self.causes.setdefault(name, cause)
            self._keys = list(self.trainer.train_steps)
            if self.done == self.warm_up:
                self.warm_traces = now
            elif self.done <= self.warm_up + self.calls:
                if traced:
                    self.traced_out += 1
                else:
                    ran = step - self._first_step + 1
                    self.per_step.append(seconds / ran)
                    self.call_steps = max(self.call_steps, ran)
            if self._profiling and self.done == self.warm_up + self.calls + self.traced_calls:
                tf.profiler.experimental.stop()
                self._profiling = False
                assert self.logdir is not None
                new = set(self.logdir.glob("plugins/profile/*")) - self._profile_dirs
                self.trace_dir = max(new, default=None)
            callbacks.on_train_batch_end(step, logs)

        return end

    def _causes(self, now: dict[str, int]) -> dict[str, str]:
        """Why each function that traced in the last call did, by name.

        The step is traced once per key of `Trainer.train_steps`: the batches' signature and
        the trainable variables' ids.
        """
        causes = {}
        new_keys = [key for key in self.trainer.train_steps if key not in self._keys]
        if now["train_step"] > self._before["train_step"]:
            causes["train_step"] = "the batches' signature changed: a new step for it"
            if new_keys and all(key[0] in {old[0] for old in self._keys} for key in new_keys):
                causes["train_step"] = "the trainable variables changed: a new step for the set"
        if now["train_loop"] > self._before["train_loop"]:
            causes["train_loop"] = (
                "a new loop for the new step"
                if "train_step" in causes
                else "the dataset's structure changed"
            )
        return causes


def _time_input(dataset: tf.data.Dataset, batches: int, calls: int) -> float:
    """Seconds to read one batch of `dataset` as the loop reads it, with no step.

    Read in `calls` calls of `batches` batches; the fastest call's time per batch.
    """
    iterator = iter(repeated(dataset))

    @tf.function(autograph=False)
    def read(count: tf.Tensor) -> tf.Tensor:
        def body(i: tf.Tensor) -> tuple[tf.Tensor]:
            batch = tf.nest.flatten(iterator.get_next())
            with tf.control_dependencies(batch):
                return (i + 1,)

        (read,) = tf.while_loop(lambda i: i < count, body, [tf.constant(0)])
        return read

    count = tf.constant(batches)
    read(tf.constant(1))  # Traces, and starts the pipeline.
    fastest = float("inf")
    for _ in range(calls):
        start = time.perf_counter()
        int(read(count))
        fastest = min(fastest, time.perf_counter() - start)
    return fastest / batches


def _time_compute(trainer: Trainer, dataset: tf.data.Dataset, steps: int, calls: int) -> float:
    """Seconds per training step on one batch read once and repeated.

    Run in `calls` calls of `steps` steps; the fastest call's time per step.
    """
    iterator = iter(dataset.take(1).cache().repeat())
    loop = make_counted_loop(trainer.train_runner.step, trainer.task.train_metrics)
    count, reset = tf.constant(steps), tf.constant(True)
    int(loop(iterator, count, reset)[0])  # Traces this loop.
    fastest = float("inf")
    for _ in range(calls):
        start = time.perf_counter()
        int(loop(iterator, count, reset)[0])
        fastest = min(fastest, time.perf_counter() - start)
    return fastest / steps


def _step_flops(trainer: Trainer, dataset: tf.data.Dataset) -> tuple[int | None, str]:
    """The FLOPs of one training step on the first batch of `dataset`, and how they were counted.

    The step is traced once more (not run) with that batch's shapes, as `tf.compat.v1.profiler`
    needs known shapes; it counts the ops it knows the cost of (matrix products,
    convolutions, element-wise arithmetic), not those inside `tf.cond` or loop branches.
    """
    how = "counted on the step's graph: forward, gradients and update"
    try:
        first = tf.nest.flatten(next(iter(dataset)))
        step: Any = trainer.train_step
        fixed = [
            tf.TensorSpec(tensor.shape, spec.dtype, name=spec.name)
            for tensor, spec in zip(first, trainer.train_signature, strict=True)
        ]
        graph = tf.function(step.python_function, input_signature=fixed).get_concrete_function()
        settings = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
        settings["output"] = "none"
        logger, level = tf.get_logger(), tf.get_logger().level
        logger.setLevel("ERROR")  # Its own deprecation warning: the v1 API is the one that counts.
        try:
            counted = tf.compat.v1.profiler.profile(
                graph=graph.graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op", options=settings
            )
        finally:
            logger.setLevel(level)
    except Exception as error:  # Any failure leaves only this estimate out.
        return None, f"could not be counted: {type(error).__name__}: {error}".splitlines()[0]
    batch = int(first[0].shape[0]) if first[0].shape.rank else 1
    return int(counted.total_float_ops), f"{how}, on a batch of {batch}"


def _peak_memory(device: str) -> tuple[int, str]:
    """The peak memory of the timed calls and what it is (see `ProfileReport.peak_bytes`)."""
    try:
        peak = int(tf.config.experimental.get_memory_info(device)["peak"])
        return peak, f"tensors on {device}, TensorFlow's allocator, after warm-up"
    except (ValueError, tf.errors.OpError):
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux.
        return kib * 1024, "the process's peak resident memory, TensorFlow included"
