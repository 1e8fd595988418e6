"""A preflight check, in seconds, of a classifier's data and model before a long run.

    python -m PACKAGE check [--batches N]

It reads a few batches of the project's `load_datasets(config)` and trains a fresh
`build_model(config)` for a few steps, then prints what a person checks first: the datasets
against the steps' contract (and the conversions that will apply), the labels' range and
balance, the features' values, the sample weights' range where the data has them, the loss at
initialisation against its expected value, one training step and one call of several steps with
their trace counts, variables without gradients, and one step against `model.train_on_batch`.
`check()` returns the report; the command exits with 0 when it lists no problem, 1 otherwise.
What it reads of the model's outputs is the task's primary output (`task.Task.primary_output`).

Template-owned: `copier update` replaces it with the template's later versions.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from .classifier import ClassifierTask, KerasReference
from .contract import DatasetError, check_sample_weights
from .features import TokenSequences
from .gradients import NoneGradientError, NoneGradientWarning
from .options import RunOptions
from .project import Project
from .train import Trainer

# How far the loss at initialisation may be from log(number of classes), as a factor.
LOSS_FACTOR = 2.0


@dataclasses.dataclass
class CheckReport:
    """What `check` found: one line per finding, and the problems, each with its fix.

    Attributes:
        findings: `(topic, what was found)` pairs, in the order checked.
        problems: One line each: the problem, then its fix.
    """

    findings: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether no problem was found."""
        return not self.problems

    def add(self, topic: str, finding: str) -> None:
        """Record a finding under `topic`, e.g. `labels`."""
        self.findings.append((topic, finding))

    def __str__(self) -> str:
        width = max((len(topic) for topic, _ in self.findings), default=0)
        lines = [f"{topic.ljust(width)}  {finding}" for topic, finding in self.findings]
        if self.ok:
            lines.append("ok: no problems found")
        else:
            count = "1 problem" if len(self.problems) == 1 else f"{len(self.problems)} problems"
            lines.append(f"{count}:")
            lines += [f"  - {problem}" for problem in self.problems]
        return "\n".join(lines)


def check(
    project: Project,
    config: Any = None,
    model: keras.Model | None = None,
    train_ds: tf.data.Dataset | None = None,
    val_ds: tf.data.Dataset | None = None,
    *,
    options: RunOptions | None = None,
    batches: int = 4,
) -> CheckReport:
    """Check the data and the model on a few batches; train `model` for `batches + 1` steps.

    Args:
        project: The project: its config, datasets, model and task come from it.
        config: The run's hyperparameters; `project.config()` by default.
        model: Defaults to `project.build_model(config)`. It is trained by the steps run
            here: pass a fresh one.
        train_ds: Defaults to the training split of `project.load_datasets(config)`.
        val_ds: When `train_ds` is defaulted too, defaults to the validation split.
        options: How the steps run; by default quietly, on one device in float32 (the
            parity check compares with `model.fit` in float32), whatever the project's
            defaults.
        batches: How many batches of `train_ds` to read.

    Returns:
        The report; `str(report)` is what `python -m PACKAGE check` prints.

    Raises:
        TypeError: If the project's task is not a classifier's (`ClassifierTask`).
    """
    config = project.config() if config is None else config
    if options is None:
        options = project.options(verbose=0, strategy="none", precision="float32")
    keras.utils.set_random_seed(config.seed)
    model = project.build_model(config) if model is None else model
    if train_ds is None:
        train_ds, default_val = project.load_datasets(config)
        val_ds = default_val if val_ds is None else val_ds
    report = CheckReport()
    try:
        trainer = Trainer(project, config, model, options)
    except ValueError as error:  # The model's output does not fit the loss, or its parts.
        report.add("model", "does not fit this project")
        report.problems.append(str(error))
        return report
    if not isinstance(trainer.task, ClassifierTask):
        raise TypeError(
            f"check runs a classifier's task, but {project.package}'s task is a "
            f"{type(trainer.task).__name__}; train it for an epoch instead"
        )
    prepared = _check_datasets(trainer, {"train_ds": train_ds, "val_ds": val_ds}, report)
    if prepared is None:
        return report
    few = prepared.take(batches)
    trainer.train_signature = trainer.task.signature(prepared.element_spec)
    first = next(iter(few), None)
    if first is None:
        report.problems.append("train_ds yields no batch; check load_datasets in data.py")
        return report
    if not _check_values(few, config, report):
        report.add("steps", "not run: the model would train on bad values")
        return report
    _check_initial_loss(trainer.task, few, report)
    reference = _reference(model, trainer)
    weights_before = [w.numpy() for w in model.weights]
    _check_one_step(trainer, first, options, report)
    _check_parity(reference, model, weights_before, first, report)
    _check_one_call(trainer, few, options, report)
    return report


def _check_datasets(
    trainer: Trainer, datasets: dict[str, tf.data.Dataset | None], report: CheckReport
) -> tf.data.Dataset | None:
    """The training batches as the steps take them, or `None` after recording each problem."""
    prepared = None
    for name, dataset in datasets.items():
        if dataset is None:
            continue
        try:
            converted = trainer.task.prepare_dataset(dataset, name)
        except DatasetError as error:
            report.add("data", f"{name}: does not fit")
            report.problems += error.problems
            continue
        x_spec, y_spec, *weights_spec = dataset.element_spec
        checks = [
            trainer.task.inputs.check(x_spec, f"{name} features", trainer.task.features),
            trainer.task.labels.check(y_spec, f"{name} labels"),
        ]
        checks += [check_sample_weights(spec, f"{name} sample weights") for spec in weights_spec]
        notes = [check.note for check in checks if check.note]
        report.add("data", f"{name}: " + ("; ".join(notes) if notes else "fits as it is"))
        if name == "train_ds":
            prepared = converted
    return None if report.problems else prepared


def _check_values(few: tf.data.Dataset, config: Any, report: CheckReport) -> bool:
    """The labels' range and balance, and the features' values, on the batches read.

    Returns:
        Whether every label and feature value can go through the model.
    """
    labels = config.labels
    tokens = config.features if isinstance(config.features, TokenSequences) else None
    counts = np.zeros(labels.class_count, dtype=np.int64)
    bad_features = 0
    weights = []
    for x, y, *weight in few:
        weights += [w.numpy() for w in weight]
        try:
            labels.checked_values(y)
        except tf.errors.InvalidArgumentError as error:
            report.problems.append(f"{error.message.splitlines()[0]}; fix them in data.py")
            return False
        counts += np.bincount(labels.label_class_ids(y).numpy(), minlength=len(counts))
        if tokens is not None:
            bad_features += int(np.count_nonzero((x < 0) | (x >= tokens.vocab_size)))
            continue
        for part in tf.nest.flatten(x):  # One tensor, or a dict of them.
            if part.dtype.is_floating:
                bad_features += int(np.size(part) - np.count_nonzero(np.isfinite(part)))
    total = int(counts.sum())
    seen = int(np.count_nonzero(counts))
    share = counts / max(total, 1)
    report.add(
        "labels",
        f"{seen} of {len(counts)} classes in {total} examples; most frequent class "
        f"{int(share.argmax())} ({100 * share.max():.0f} %), least {int(share.argmin())} "
        f"({100 * share.min():.0f} %)",
    )
    if seen < 2:
        report.problems.append(
            f"the first {total} training examples are all of class {int(share.argmax())}: "
            "shuffle the examples before batching them in data.py"
        )
    if tokens is None:
        report.add("features", f"{bad_features} non-finite values")
        if bad_features:
            report.problems.append(
                f"{bad_features} feature values are NaN or infinite: replace or drop them in "
                "data.py"
            )
    else:
        report.add("token ids", f"{bad_features} outside [0, config.vocab_size)")
        if bad_features:
            report.problems.append(
                f"{bad_features} token ids are outside [0, config.vocab_size) = "
                f"[0, {tokens.vocab_size}): raise Config.vocab_size, or map the ids into that "
                "range in data.py"
            )
    if weights:
        _report_weights(np.concatenate(weights), report)
    return not bad_features


def _report_weights(weights: np.ndarray, report: CheckReport) -> None:
    """The sample weights' range; a weight that is not finite makes its step's loss NaN."""
    finite = weights[np.isfinite(weights)]
    found = (
        f"{np.count_nonzero(weights == 0)} of {weights.size} are 0, "
        f"{np.count_nonzero(finite < 0)} negative"
    )
    if finite.size:
        found = f"from {finite.min():.4g} to {finite.max():.4g}, mean {finite.mean():.4g}; " + found
    report.add("sample weights", found)
    if finite.size < weights.size:
        report.problems.append(
            f"{weights.size - finite.size} sample weights are NaN or infinite, which makes "
            "their steps' loss NaN and skips them: replace or drop them in data.py"
        )


def _check_initial_loss(task: ClassifierTask, few: tf.data.Dataset, report: CheckReport) -> None:
    """The labels' cross-entropy on the primary output before any training, against log(classes).

    The cross-entropy, not the task's loss (which your step may change): the question is whether
    the model starts near chance, whatever it is then trained on.
    """
    loss_fn = task.labels.make_loss()
    classes = task.labels.class_count
    values = [
        float(loss_fn(y, task.primary_output(task.model(x, training=False)))) for x, y, *_ in few
    ]
    loss = float(np.mean(values))
    expected = math.log(classes)
    report.add(
        "initial loss",
        f"{loss:.4f}; a model that knows nothing scores about {expected:.4f} (log {classes})",
    )
    if not math.isfinite(loss):
        report.problems.append(
            "the loss at initialisation is not finite: check the features and the model"
        )
    elif loss > LOSS_FACTOR * expected:
        report.problems.append(
            f"the loss at initialisation, {loss:.3f}, is over {LOSS_FACTOR:g} x log "
            f"{classes}: the model starts confidently wrong; standardize the "
            "features (a keras.layers.Normalization first in model.py), or give the last layer "
            "smaller initial weights"
        )
    elif loss < expected / LOSS_FACTOR:
        report.problems.append(
            f"the loss at initialisation, {loss:.3f}, is under log {classes} / "
            f"{LOSS_FACTOR:g}: the labels are predicted before any training; check that "
            "the features do not contain the labels"
        )


def _check_one_step(
    trainer: Trainer, batch: tuple[tf.Tensor, ...], options: RunOptions, report: CheckReport
) -> None:
    """One training step: its time, its traces, and variables without gradients."""
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NoneGradientWarning)
        try:
            trainer.train_step(*tf.nest.flatten(batch))
        except NoneGradientError as error:
            report.problems.append(str(error))
            return
    seconds = time.perf_counter() - start
    traces = "run eagerly" if options.run_eagerly else _traces(_step_traces(trainer))
    report.add("one step", f"{seconds:.2f} s with its trace; {traces}")
    missing = [str(w.message) for w in caught if issubclass(w.category, NoneGradientWarning)]
    report.add("gradients", "; ".join(missing) or "every trainable variable gets one")
    report.problems += missing


def _check_one_call(
    trainer: Trainer, few: tf.data.Dataset, options: RunOptions, report: CheckReport
) -> None:
    """The batches read, run as training runs them: `steps_per_execution` steps per call."""
    start = time.perf_counter()
    _, steps = trainer.train_epoch(few)
    seconds = time.perf_counter() - start
    calls = math.ceil(steps / options.steps_per_execution)
    found = f"{steps} steps in {calls} call(s) of up to {options.steps_per_execution}: "
    found += f"{seconds:.2f} s with its trace"
    if not options.run_eagerly:
        loop, step = trainer.train_runner.tracing_count(), _step_traces(trainer)
        found += f"; the loop {_traces(loop)}, the step {_traces(step)}"
        if (loop, step) != (1, 1):
            report.problems.append(
                "the training step traced more than once: keep the trainable variables the "
                "same between steps, and give every batch the dtypes of the input signature"
            )
    report.add("one call", found)


def _step_traces(trainer: Trainer) -> int:
    """How many times the training step for the trainable variables now was traced."""
    step: Any = trainer.train_step  # A `tf.function`, since the options do not run eagerly.
    return int(step.experimental_get_tracing_count())


def _traces(count: int) -> str:
    return "traced once" if count == 1 else f"traced {count} times"


def _reference(model: keras.Model, trainer: Trainer) -> keras.Model | str:
    """A copy of `model` compiled as `model.fit` would train it, or why there is none.

    `model.fit` takes one optimizer, so a task with several (a backbone's and a head's) has
    none. Keras's own step trains the copy on the task's loss (`KerasReference`), the
    primary output of a model with several included.
    """
    task = trainer.task
    assert isinstance(task, ClassifierTask)
    count = len(task.optimizers.by_part)
    if count != 1:
        return f"model.fit takes one optimizer, this project has {count}"
    try:
        reference = keras.models.clone_model(model)
    except (TypeError, ValueError, NotImplementedError):
        # A subclassed model without get_config cannot be cloned.
        return "the model cannot be cloned (keras.models.clone_model)"
    reference.set_weights(model.get_weights())
    # Random layers' seed states are not among the weights: copy them, so dropout masks match.
    for copy, variable in zip(
        reference.non_trainable_variables, model.non_trainable_variables, strict=False
    ):
        if copy.shape == variable.shape and copy.dtype == variable.dtype:
            copy.assign(variable)
    trained = KerasReference(trainer.project.build_task(reference, trainer.config, trainer.options))
    (optimizer,) = task.optimizers.by_part.values()
    settings = optimizer.get_config()
    if trainer.options.clip_global_norm is not None:
        settings["global_clipnorm"] = trainer.options.clip_global_norm
    trained.compile(optimizer=type(optimizer).from_config(settings), jit_compile=False)
    return trained


def _check_parity(
    reference: keras.Model | str,
    model: keras.Model,
    weights_before: list[np.ndarray],
    batch: tuple[tf.Tensor, ...],
    report: CheckReport,
) -> None:
    """The first step's weights against `model.train_on_batch` of the same batch."""
    if isinstance(reference, str):
        report.add("model.fit", f"skipped: {reference}")
        return
    reference.train_on_batch(*batch)
    moved = [
        float(np.max(np.abs(ours.numpy() - before), initial=0))
        for ours, before in zip(model.weights, weights_before, strict=True)
    ]
    diffs = [
        float(np.max(np.abs(ours.numpy() - theirs.numpy()), initial=0))
        for ours, theirs in zip(model.weights, reference.weights, strict=True)
    ]
    report.add(
        "model.fit",
        f"one step moves the weights by up to {max(moved, default=0):.2g}; "
        f"model.train_on_batch's weights differ from them by up to {max(diffs, default=0):.2g}",
    )
    if max(diffs, default=0) > 1e-5:
        report.problems.append(
            "one step of the custom loop differs from model.train_on_batch on the same batch "
            f"by up to {max(diffs):.2g}: compare the loss and the optimizer settings"
        )
