"""A run's optimizers behind the interface of one Keras optimizer: `OptimizerSet`.

The task builds its optimizers, one per part of the model (a single part, or several with a
learning rate each), and puts them in an `OptimizerSet`; its step calls `scale_loss` and
`apply` as it would call one Keras optimizer, and the loop and its callbacks see one
optimizer, whatever the number of parts.

Template-owned: `copier update` merges template changes into it.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Iterable, Mapping, Sequence

import keras
import tensorflow as tf

from . import precision
from .accumulation import GradientAccumulator
from .gradients import (
    FINITE,
    clip_by_global_norm,
    drop_none_gradients,
    run_if,
    scale_gradient,
    update_status,
)
from .options import RunOptions

SCALE_LOSS_FIRST = (
    "under mixed_float16 the gradients must be those of the scaled loss: write "
    "`scaled = self.optimizers.scale_loss(loss)` inside the tape and take "
    "`tape.gradient(scaled, ...)`"
)
ONLY_IF_DIFFERS = (
    "only_if differs between the replicas, so they would update different weights; decide on "
    "the whole batch, the same on every replica: all-reduce this replica's part first, e.g. "
    "`tf.distribute.get_replica_context().all_reduce('sum', loss)` for the whole batch's loss"
)

ACCUMULATION_NEEDS_A_STEP = (
    "accumulating gradients needs the batch size, which the loop gives each step it runs; "
    "call apply inside the task's train_step"
)


class StepError(ValueError):
    """The step broke a rule that keeps it exact; the message says which, and what to write."""


class OptimizerSet:
    """Named optimizers, each updating the trainable variables of one part of the model.

    Every optimizer is built here, up front, on its part's trainable variables: a Keras 3
    optimizer updates only the variables it was built with, and one built while a step is
    traced makes the step trace twice (and fails under `tf.distribute`).

    Under the `mixed_float16` precision each optimizer is wrapped in a
    `keras.optimizers.LossScaleOptimizer` (see `precision.py`); `scale_loss` scales the
    loss.

    Stock Keras callbacks that read or set `model.optimizer.learning_rate`
    (`ReduceLROnPlateau`, `LearningRateScheduler`) see this object as the model's optimizer
    during a run: its `learning_rate` is the first part's, and setting it scales every
    part's learning rate by the same factor, so the ratios between them stay as configured.

    Args:
        parts: `(name, layer, optimizer)` for each part; every trainable variable of the
            model must belong to exactly one layer. The first part's learning rate is the
            one `learning_rate` reads.
        options: Gives `strict_gradients`, `clip_global_norm` and `precision`.
        clip_global_norm: Per part, by name: clip that part's gradients by their global norm
            (the whole batch's, as `RunOptions.clip_global_norm` clips all of them), after
            the run's clipping if any. Keras's own `clipnorm`, `global_clipnorm` and
            `clipvalue` clip each replica's share on its own, so they are refused on several
            replicas.

    Attributes:
        names: The parts' names, in order.
        by_part: The optimizer of each part, by name. (Not `optimizers`: Keras's learning-rate
            callbacks would take an object with that attribute for one of Keras's own, and
            set each optimizer's rate on its own, so that a schedule which ignores the current
            rate would give every part the same one.)
        variables: Every variable that an optimizer of the set was built on; the guard
            against non-finite steps names a variable by its index here.
        status: The training step's `gradients.update_status` code, an int32 variable: the
            loop sets it to `FINITE` before each step (`begin_step`), `apply` records the
            first bad code, and the loop reads it after the step (`end_step`). Each replica
            holds its own; the codes are all-reduced already, so they agree.
        accumulator: With `RunOptions.accumulation_steps` above 1, the gradients summed
            between two updates (see `accumulation.py`); `None` otherwise.
    """

    def __init__(
        self,
        parts: Sequence[tuple[str, keras.Layer, keras.optimizers.Optimizer]],
        options: RunOptions,
        clip_global_norm: Mapping[str, float] | None = None,
    ) -> None:
        self.names = tuple(name for name, _, _ in parts)
        self._part_clip_norms = _part_clip_norms(self.names, clip_global_norm or {})
        if tf.distribute.get_strategy().num_replicas_in_sync > 1:
            for name, _, optimizer in parts:
                for attribute in ("clipnorm", "global_clipnorm", "clipvalue"):
                    value = getattr(optimizer, attribute, None)
                    if value is not None:
                        raise ValueError(
                            f"the {name} optimizer clips with Keras's {attribute}={value}, which "
                            "under tf.distribute clips each replica's share of the gradient, not "
                            "the whole batch's; drop it, and clip with RunOptions.clip_global_norm "
                            "(--clip-global-norm) for every part, or with OptimizerSet(..., "
                            f"clip_global_norm={ {name: value} }) for this one"
                        )
        self.layers = {name: layer for name, layer, _ in parts}
        self.by_part = {
            name: precision.loss_scaled(optimizer, options.precision)
            for name, _, optimizer in parts
        }
        self.variables: list[tf.Variable] = []
        for name, layer, _ in parts:
            self.by_part[name].build(layer.trainable_variables)
            self.variables.extend(layer.trainable_variables)
        self._index = {id(v): i for i, v in enumerate(self.variables)}
        self._part = {id(v): name for name, layer, _ in parts for v in layer.trainable_variables}
        self._base_rates = {name: self._rate(name) for name in self.names}
        self._strict = options.strict_gradients
        self._clip_norm = options.clip_global_norm
        self._loss_scaling = options.precision == "mixed_float16"
        self.status = tf.Variable(
            FINITE,
            dtype=tf.int32,
            trainable=False,
            synchronization=tf.VariableSynchronization.ON_READ,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            name="update_status",
        )
        # What the step being traced gave so far (its loss, its batch size), per replica:
        # `MirroredStrategy` traces each replica's step in a thread of its own.
        self._step = threading.local()
        self.accumulator = (
            GradientAccumulator(options.accumulation_steps, self.variables)
            if options.accumulation_steps > 1
            else None
        )
        # The variables each traced step updates, by the trainable variables it was traced for.
        self._groups: dict[tuple[int, ...], list[list[tf.Variable]]] = {}

    @tf.autograph.experimental.do_not_convert
    def begin_step(self, batch_size: tf.Tensor) -> None:
        """Start a training step of `batch_size` examples (the whole batch's, as float32).

        The loop calls it on each replica, inside the traced step, before your `train_step`:
        `status` goes back to `FINITE`, and the last step's loss is forgotten.
        """
        self.status.assign(FINITE)
        self._step.batch_size = batch_size
        self._step.loss = None
        self._step.scaled = False

    @tf.autograph.experimental.do_not_convert
    def end_step(self) -> tf.Tensor:
        """End the step that `begin_step` started; return its `status` on this replica."""
        self._step.batch_size = self._step.loss = None
        self._step.scaled = False
        return self.status.read_value()

    @tf.autograph.experimental.do_not_convert
    def scale_loss(self, loss: tf.Tensor) -> tf.Tensor:
        """`loss` as its gradients must be taken: times the loss scale under `mixed_float16`.

        Call it inside the tape, on the scalar loss the step minimizes, and take the
        gradients of what it returns; `apply` divides the scale out. It also records the
        loss, so that a step whose loss is not finite updates nothing. In float32 and
        `mixed_bfloat16` it returns `loss` as it is.
        """
        return self._scale_loss(loss, self.names[0])

    @tf.autograph.experimental.do_not_convert
    def apply(
        self,
        gradients: Sequence[tf.Tensor | None],
        variables: Sequence[tf.Variable],
        *,
        only_if: tf.Tensor | None = None,
    ) -> None:
        """Update `variables` by `gradients`, as a Keras optimizer's `apply` does.

        Must be `tf.function`-compatible; runs as is under `tf.distribute.Strategy.run`, with
        this replica's gradients. Each variable goes to the optimizer of its part. On the way:
        `None` gradients are named and dropped (see `gradients.drop_none_gradients`); a step
        whose loss (recorded by `scale_loss`) or gradients are not finite, on any replica,
        updates nothing and sets `status`, so that the loop's guard undoes the rest of it;
        the gradients are clipped by the global norm of the whole batch's gradient when
        `RunOptions.clip_global_norm` is set; with loss scaling, each `LossScaleOptimizer`
        divides its scale out and skips a step whose scaled gradients overflowed (only a
        non-finite loss then counts as a bad step).

        With `RunOptions.accumulation_steps` above 1, the gradients are added to the
        `accumulator` (weighted by the batch's examples) and applied once its group is full.

        Args:
            gradients: One gradient, or `None`, per variable: this replica's.
            variables: The variables, each trained by one optimizer of the set.
            only_if: A boolean tensor, the same on every replica (a decision on the whole
                batch, e.g. through `tf.distribute.get_replica_context().all_reduce`): when
                false, nothing is updated. Unlike an `apply` inside a Python `if` on a tensor,
                it works on several replicas too.

        Raises:
            precision.PrecisionError: Under `mixed_float16`, if the step being traced did not
                call `scale_loss`: the gradients would be unscaled, and dividing the scale out
                would shrink them.
            ValueError: If a variable belongs to no optimizer of the set.
        """
        self._update(gradients, variables, self.names, only_if)

    @tf.autograph.experimental.do_not_convert
    def apply_gradients(
        self,
        grads_and_vars: Iterable[tuple[tf.Tensor | None, tf.Variable]],
        *,
        only_if: tf.Tensor | None = None,
    ) -> None:
        """`apply`, on `(gradient, variable)` pairs, as a Keras optimizer's `apply_gradients`."""
        pairs = list(grads_and_vars)
        self.apply([g for g, _ in pairs], [v for _, v in pairs], only_if=only_if)

    @tf.autograph.experimental.do_not_convert
    def minimize(
        self,
        loss: tf.Tensor,
        tape: tf.GradientTape,
        parts: Sequence[str] | None = None,
        only_if: tf.Tensor | None = None,
    ) -> tf.Tensor:
        """Differentiate `loss` and `apply` the gradients to the parts' trainable variables.

        Must be `tf.function`-compatible; runs as is under `tf.distribute.Strategy.run`. The
        variables are those trainable when the step is traced: a part frozen with
        `layer.trainable = False` is neither differentiated nor updated, and the loop traces
        the step again when that changes. `None` gradients are named (see
        `gradients.drop_none_gradients`); the gradients are clipped by their global norm when
        `RunOptions.clip_global_norm` is set.

        `scale_loss` and `apply` in one call, for a step that updates some parts only: with
        loss scaling (`mixed_float16`), the loss is multiplied by the first named part's
        dynamic scale inside `tape`.

        Args:
            loss: The scalar loss, computed inside `tape`.
            tape: The tape that recorded the forward pass.
            parts: The names of the parts to update; all of them by default.
            only_if: A boolean tensor, the same on every replica: when false, nothing is
                updated (e.g. an earlier update of the same step was skipped).

        Returns:
            The `gradients.update_status` code: `FINITE` when the update was applied (or
            left to the loss scale), and otherwise what was not finite, in which case nothing
            was updated.

        Raises:
            ValueError: If a trainable variable belongs to no optimizer of the set.
        """
        names = self.names if parts is None else tuple(parts)
        variables = [v for name in names for v in self.layers[name].trainable_variables]
        with tape:  # Recorded by the tape, so that the backward pass runs scaled.
            target = self._scale_loss(loss, names[0])
        gradients = tape.gradient(target, variables)
        return self._update(gradients, variables, names, only_if)

    def _scale_loss(self, loss: tf.Tensor, name: str) -> tf.Tensor:
        self._step.loss = loss
        self._step.scaled = True
        return self.by_part[name].scale_loss(loss) if self._loss_scaling else loss

    def _update(
        self,
        gradients: Sequence[tf.Tensor | None],
        variables: Sequence[tf.Variable],
        names: Sequence[str],
        only_if: tf.Tensor | None = None,
    ) -> tf.Tensor:
        """`apply` for the parts `names`, the first of which gave the loss scale; the status."""
        if self._loss_scaling and not getattr(self._step, "scaled", False):
            raise precision.PrecisionError(SCALE_LOSS_FIRST)
        for variable in variables:
            if id(variable) not in self._index:
                raise ValueError(
                    f"trainable variable {variable.path} was not trainable when the optimizers "
                    "were built, so no optimizer can update it; make every layer trainable "
                    "before training starts and freeze parts from a callback instead"
                )
        pairs = list(zip(gradients, variables, strict=True))
        kept_gradients: list[tf.Tensor] = []
        kept_per_part: list[list[tf.Variable]] = []
        for name in names:
            part = [(g, v) for g, v in pairs if self._part[id(v)] == name]
            kept, part_variables = drop_none_gradients(
                [g for g, _ in part],
                [v for _, v in part],
                strict=self._strict,
                owner=name if len(self.names) > 1 else None,
            )
            kept_gradients.extend(kept)
            kept_per_part.append(part_variables)
        flat = [v for part in kept_per_part for v in part]
        loss = getattr(self._step, "loss", None)
        checked = [] if self._loss_scaling else kept_gradients
        status = update_status(
            tf.constant(0.0) if loss is None else loss,
            checked,
            [self._index[id(v)] for v in flat],
        )
        self.status.assign(tf.where(self.status == FINITE, status, self.status))
        condition = status == FINITE
        if only_if is not None:
            condition = condition & _the_same_on_every_replica(only_if)
        if self.accumulator is None:
            apply = functools.partial(self._apply, names=names, kept_per_part=kept_per_part)
            run_if(condition, apply, self._clipped(kept_gradients, names, kept_per_part))
            return status
        batch_size = getattr(self._step, "batch_size", None)
        if batch_size is None:
            raise ValueError(ACCUMULATION_NEEDS_A_STEP)
        self._groups[self._key()] = kept_per_part
        self.accumulator.add(kept_gradients, flat, batch_size, condition)
        self._apply_group(kept_per_part, self.accumulator.full())
        return status

    @tf.autograph.experimental.do_not_convert
    def flush(self) -> None:
        """Apply the micro-batches accumulated so far, if any: an epoch's last group.

        `tf.function`-compatible; under `tf.distribute`, run it on every replica. The
        variables are those of the last step traced for the trainable variables now.
        """
        assert self.accumulator is not None, "flush is for RunOptions.accumulation_steps > 1"
        kept_per_part = self._groups.get(self._key())
        if kept_per_part is not None:  # Else no step ran since they were trainable.
            self._apply_group(kept_per_part, self.accumulator.pending())

    def _key(self) -> tuple[int, ...]:
        return tuple(id(v) for name in self.names for v in self.layers[name].trainable_variables)

    def _apply_group(self, kept_per_part: list[list[tf.Variable]], condition: tf.Tensor) -> None:
        """Apply the accumulated group and empty it, where `condition` holds.

        A group whose every micro-batch was skipped holds no examples: it is emptied without
        an update, as a skipped step updates nothing (a zero gradient would still move
        Adam's moments, and with them the weights).
        """
        accumulator = self.accumulator
        assert accumulator is not None
        means = accumulator.means([v for part in kept_per_part for v in part])
        examples = accumulator.examples > 0
        apply = functools.partial(self._apply, names=self.names, kept_per_part=kept_per_part)
        run_if(condition & examples, apply, self._clipped(means, self.names, kept_per_part))
        run_if(condition, accumulator.reset)

    def _scale(self, names: Sequence[str]) -> tf.Variable | None:
        """The loss scale the gradients are in units of: the first part's; `None` unscaled."""
        return self.by_part[names[0]].dynamic_scale if self._loss_scaling else None

    def _clipped(
        self,
        gradients: list[tf.Tensor],
        names: Sequence[str],
        kept_per_part: list[list[tf.Variable]],
    ) -> list[tf.Tensor]:
        """The gradients clipped by the run's norm, then each part's by its own, if any."""
        scale = self._scale(names)

        def scaled(clip_norm: float | None) -> float | tf.Tensor | None:
            if clip_norm is None or scale is None:
                return clip_norm
            return clip_norm * scale  # The gradients are scaled; so is their norm.

        gradients = clip_by_global_norm(gradients, scaled(self._clip_norm))
        if not self._part_clip_norms:
            return gradients
        clipped: list[tf.Tensor] = []
        start = 0
        for name, variables in zip(names, kept_per_part, strict=True):
            part = gradients[start : start + len(variables)]
            clipped.extend(clip_by_global_norm(part, scaled(self._part_clip_norms.get(name))))
            start += len(variables)
        return clipped

    def _apply(
        self,
        gradients: list[tf.Tensor],
        names: Sequence[str],
        kept_per_part: list[list[tf.Variable]],
    ) -> None:
        scale = self._scale(names)
        start = 0
        for name, variables in zip(names, kept_per_part, strict=True):
            if variables:  # Keras 3 optimizers reject an empty list.
                part_gradients = gradients[start : start + len(variables)]
                optimizer = self.by_part[name]
                if scale is not None and name != names[0]:
                    # The scales part ways once one part skipped an overflowing step alone.
                    ratio = optimizer.dynamic_scale / scale
                    part_gradients = [scale_gradient(g, ratio) for g in part_gradients]
                optimizer.apply(part_gradients, variables)
            start += len(variables)

    @property
    def learning_rate(self) -> float:
        """The first part's learning rate; setting it scales every part's by the same factor."""
        return self._rate(self.names[0])

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        factor = float(value) / self._base_rates[self.names[0]]
        for name in self.names:
            self.by_part[name].learning_rate = self._base_rates[name] * factor

    def learning_rates(self) -> dict[str, float]:
        """Each part's learning rate now, keyed as the epoch logs show it."""
        if len(self.names) == 1:
            return {"learning_rate": self.learning_rate}
        return {f"{name}_learning_rate": self._rate(name) for name in self.names}

    def checkpoint_items(self) -> dict[str, object]:
        """The optimizers by name, for `tf.train.Checkpoint(**items)`.

        With gradient accumulation, also the accumulator's state: a group can span a resume.
        """
        if self.accumulator is not None:
            return {**self.by_part, "accumulator": self.accumulator.variables}
        return dict(self.by_part)

    def _rate(self, name: str) -> float:
        # Through NumPy: `float()` of a variable fails under `tf.distribute`.
        return float(self.by_part[name].learning_rate.numpy())


def _part_clip_norms(names: Sequence[str], norms: Mapping[str, float]) -> dict[str, float]:
    """`norms`, checked: each a part's name and a positive number.

    Raises:
        ValueError: Naming the unknown part or the invalid norm.
    """
    for name, norm in norms.items():
        if name not in names:
            raise ValueError(
                f"clip_global_norm names the part {name!r}, which the optimizers do not have; "
                f"use one of {', '.join(names)}"
            )
        if (
            isinstance(norm, bool)
            or not isinstance(norm, int | float)
            or not (math.isfinite(norm) and norm > 0)
        ):
            raise ValueError(
                f"clip_global_norm[{name!r}]={norm!r} is invalid; use a positive number"
            )
    return dict(norms)


def _the_same_on_every_replica(only_if: tf.Tensor) -> tf.Tensor:
    """`only_if`, checked to be the same on every replica: a decision on the whole batch.

    Raises (when the step runs):
        tf.errors.InvalidArgumentError: With `ONLY_IF_DIFFERS`, if the replicas disagree (the
            loop raises it as a `StepError`).
    """
    only_if = tf.convert_to_tensor(only_if)
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return only_if
    votes = context.all_reduce("sum", tf.cast(only_if, tf.int32))
    unanimous = (votes == 0) | (votes == context.num_replicas_in_sync)
    with tf.control_dependencies([tf.debugging.assert_equal(unanimous, True, ONLY_IF_DIFFERS)]):
        return tf.identity(only_if)
