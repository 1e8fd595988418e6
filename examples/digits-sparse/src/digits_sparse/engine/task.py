"""What the loop needs from a task: the one interface every kind of project's task offers.

`train.Trainer` knows a task by this class alone: the model, its optimizers, the metrics of
each phase, the steps it traces, their input signature, and the datasets checked and converted
for them; and what the model's outputs are for: which one the loss and the metrics read
(`primary_output`), and what `trained.predict` and `trained.export` serve (`prediction_input`,
`serving_model`, `prediction`). A classifier's task (`classifier.ClassifierTask`) and a GAN's
(`task.GanTask`) both subclass it; so can a task of yours.

Template-owned: `copier update` replaces it with the template's later versions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Protocol

import keras
import numpy as np
import tensorflow as tf

from .distribution import global_batch_size

StepFn = Callable[..., tf.Tensor | None]

RETURNED = (
    "train_step returned {what}, which the loop would drop: the figures it logs are the task's "
    "metrics, reset every epoch; return nothing, and record the figure in a metric, e.g. a "
    "keras.metrics.Mean(name=...) from build_metrics that the step updates"
)


def check_step_result(result: object) -> None:
    """Fail, while the step is traced, if `train_step` returned something: it would be lost.

    Raises:
        TypeError: Naming what was returned and where such a figure goes instead.
    """
    if result is not None:
        what = f"a {type(result).__name__}"
        if isinstance(result, Mapping):
            what += f" of {', '.join(map(str, result))}"
        raise TypeError(RETURNED.format(what=what))


class Optimizers(Protocol):
    """What the loop uses of a task's optimizers (the project's `optimizers.OptimizerSet`).

    Attributes:
        variables: Every variable the optimizers update, for the guard to restore.
    """

    variables: list[tf.Variable]

    def begin_step(self, batch_size: tf.Tensor) -> None:
        """Start a training step of `batch_size` examples (the whole batch's)."""
        ...

    def end_step(self) -> tf.Tensor:
        """End the step `begin_step` started; its `gradients.update_status` code."""
        ...

    def flush(self) -> None:
        """Apply the micro-batches accumulated so far: an epoch's last, smaller group.

        Called only with `RunOptions.accumulation_steps` above 1, which a task may refuse
        (the GAN's does).
        """
        ...

    def learning_rates(self) -> dict[str, float]:
        """Each optimizer's learning rate now, keyed as the epoch logs name it."""
        ...

    def checkpoint_items(self) -> dict[str, object]:
        """The optimizers' state for a checkpoint."""
        ...


class Task:
    """The model, its optimizers, metrics and steps, as `train.Trainer` runs them.

    A subclass sets the attributes below in its `__init__` (called in the strategy's scope,
    so that variables it creates are the strategy's) and gives `train_step` (or
    `make_train_step`, which wraps it for the loop) and `prepare_dataset`; with `evaluates`,
    `make_eval_step` too. The hooks on the model's outputs have defaults for a model with one
    output: override `primary_output` for a model with several.

    Attributes:
        evaluates: Whether the task has an evaluation step; without one (a GAN), the loop
            refuses `val_ds` and `evaluate`.
        model: The model the loop trains, checkpoints and saves.
        config: The run's hyperparameters, the project's `Config`.
        optimizers: Its optimizers, on its trainable variables.
        train_metrics: What the training step records; the loop resets them every epoch and
            logs them by name.
        val_metrics: What the evaluation step records, likewise; empty without evaluation.
        input_signature: The steps' input signature for one batch, the batch dimension
            `None`; `signature` refines it for a dataset.
    """

    evaluates: ClassVar[bool] = True
    model: keras.Model
    config: Any
    optimizers: Optimizers
    train_metrics: Iterable[keras.metrics.Metric]
    val_metrics: Iterable[keras.metrics.Metric]
    input_signature: tuple[tf.TensorSpec, ...]

    def train_step(self, *batch: tf.Tensor) -> None:
        """Train on one batch: this replica's share of it. Must be `tf.function`-compatible."""
        raise NotImplementedError("give the task a train_step method")

    def make_train_step(self) -> StepFn:
        """The training step for the model's trainable variables now, as the loop runs it.

        A plain `tf.function`-compatible function of one batch's tensors (this replica's share
        of it under a strategy) that returns the step's `gradients.update_status` code: by
        default `train_step` between the optimizers' `begin_step` and `end_step`, the batch
        size taken from the batch's first tensor.
        """

        def step(*batch: tf.Tensor) -> tf.Tensor:
            self.optimizers.begin_step(global_batch_size(batch[0]))
            check_step_result(self.train_step(*batch))
            return self.optimizers.end_step()

        return step

    def make_eval_step(self) -> StepFn:
        """The evaluation step, likewise; it returns nothing. Only with `evaluates`."""
        raise NotImplementedError("give the task a make_eval_step method, or set evaluates")

    def signature(self, spec: object) -> tuple[tf.TensorSpec, ...]:
        """The steps' input signature for a prepared dataset of element spec `spec`."""
        del spec  # One signature for every dataset, unless a subclass says otherwise.
        return self.input_signature

    def prepare_dataset(
        self,
        dataset: tf.data.Dataset,
        name: str,
        class_weight: Mapping[int, float] | None = None,
    ) -> tf.data.Dataset:
        """`dataset` as the steps take it: checked, and converted where that is unambiguous.

        Called on every dataset before it is read, so that a problem fails before tracing.
        The result has the same cardinality and order.

        Args:
            dataset: The batches.
            name: What the dataset is called in errors, e.g. `train_ds`.
            class_weight: The weight of each class id, for the training dataset, as for
                `model.fit`; a task without classes refuses it.
        """
        raise NotImplementedError("give the task a prepare_dataset method")

    def checkpoint_items(self) -> dict[str, object]:
        """What a checkpoint holds beyond the model, its optimizers and the loop's state."""
        return {}

    def callbacks(self, chief: bool) -> list[keras.callbacks.Callback]:
        """The task's own callbacks for a run; none unless the task gives some.

        The loop runs them after the callbacks passed to `fit` and before the default ones,
        on every worker: `chief` is false on the workers other than the chief of a
        multi-worker run, where a callback that writes or prints has nothing to do.
        """
        del chief
        return []

    @tf.autograph.experimental.do_not_convert
    def primary_output(self, outputs: Any) -> Any:
        """The output that the loss, the metrics, `check` and `predict` read, of `outputs`.

        `outputs` is what the model returns, called on a batch (or, for `serving_model`, on
        its symbolic inputs). For a model with several outputs, e.g. a dict
        `{"logits": ..., "hidden": ...}`, return the one the labels are compared with, e.g.
        `outputs["logits"]`; the others stay yours to use in the step. Must be
        `tf.function`-compatible. By default, the outputs themselves.
        """
        return outputs

    def serving_model(self) -> keras.Model:
        """The model `trained.export` writes and `trained.predict` runs: inputs in, one out.

        Its output is the primary output (`primary_output`). By default `self.model`, cut to
        its primary output where that is not all of it (a functional model's; override this
        for a subclassed model with several outputs).

        Raises:
            ValueError: If the model has several outputs and no symbolic ones to cut.
        """
        try:
            outputs = self.model.output
        except (AttributeError, ValueError):  # Not built on keras.Input: nothing to cut.
            return self.model
        primary = self.primary_output(outputs)
        if primary is outputs:
            return self.model
        if not isinstance(primary, keras.KerasTensor):
            raise ValueError(
                "the task's primary_output does not pick one of the model's outputs; "
                "return one tensor from it, or override the task's serving_model"
            )
        return keras.Model(self.model.input, primary, name=f"{self.model.name}_served")

    def prediction_input(self, inputs: np.ndarray) -> np.ndarray:
        """`inputs`, as `trained.predict` got them, checked and cast for `serving_model`.

        By default: an array of at least one example, each of the shape the serving model
        takes, of integers or floats, cast to its input dtype.

        Raises:
            ValueError: One line, starting "the input ", naming what does not fit.
        """
        (spec,) = tf.nest.flatten(self.serving_model().input)
        shape = tuple(spec.shape[1:])
        if inputs.ndim < 1 or not tf.TensorShape((None, *shape)).is_compatible_with(inputs.shape):
            raise ValueError(
                f"the input has shape {inputs.shape}, but the model takes (n, "
                f"{', '.join(str(size) for size in shape)})"
            )
        if len(inputs) == 0:
            raise ValueError(f"the input has shape {inputs.shape}: no examples; give at least one")
        if inputs.dtype.kind not in "iuf":  # Signed or unsigned integers, or floats.
            raise ValueError(f"the input holds {inputs.dtype} values; give integers or floats")
        return inputs.astype(spec.dtype)

    def prediction(self, outputs: np.ndarray, *, class_ids: bool = False) -> np.ndarray:
        """What `trained.predict` returns for the serving model's `outputs` on its inputs.

        By default the outputs as they are.

        Args:
            outputs: `serving_model()`'s outputs, one row per example.
            class_ids: Each example's class id instead, where the task has classes.

        Raises:
            ValueError: If `class_ids` is asked of a task without classes.
        """
        if class_ids:
            raise ValueError("this task's predictions have no class ids; drop --class-ids")
        return outputs
