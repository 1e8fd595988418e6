"""Update rules: what happens between `tape.gradient` and the weights moving.

Gradients that are `None` are named rather than silently skipped; gradients can be clipped by
their global norm; a step whose loss is not finite, or whose gradients are not finite or too
large to square in float32, is skipped, in the graph, without moving any weight, optimizer
variable, layer state or metric; and `NonFiniteGuard` stops a run after too many such steps in
a row. Every function here is `tf.function`-compatible and works
in a `tf.distribute` replica context.

Template-owned: `copier update` merges template changes into it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import keras
import tensorflow as tf

# `update_status` codes: 0 is a finite step, 1 a non-finite loss, 2 + i a non-finite (or too
# large) gradient of the i-th variable (the first one found), -1 a bad value on another replica.
FINITE = 0
NONFINITE_LOSS = 1
NONFINITE_ELSEWHERE = -1


class NoneGradientWarning(UserWarning):
    """Some trainable variables got no gradient and were left unchanged."""


class NoneGradientError(ValueError):
    """Some trainable variables got no gradient and `RunOptions.strict_gradients` is set."""

    ag_pass_through = True  # Raised while tracing: AutoGraph passes it on as it is.


class NonFiniteError(RuntimeError):
    """Too many steps in a row had a loss or gradients that were not finite (or too large)."""


@tf.autograph.experimental.do_not_convert
def drop_none_gradients(
    gradients: Sequence[tf.Tensor | None],
    variables: Sequence[tf.Variable],
    *,
    strict: bool,
    owner: str | None = None,
) -> tuple[list[tf.Tensor], list[tf.Variable]]:
    """The gradients and variables without the pairs whose gradient is `None`, named.

    A `None` gradient is known while tracing, so the warning (or error) fires once per trace,
    not once per step.

    Args:
        gradients: One gradient, or `None`, per variable.
        variables: The variables they belong to.
        strict: Raise instead of warn.
        owner: What the variables belong to, e.g. `backbone`, to start the message with.

    Raises:
        NoneGradientError: If a variable got no gradient and `strict` is set.
    """
    missing = [v.path for g, v in zip(gradients, variables, strict=True) if g is None]
    if missing:
        message = (
            f"{owner + ': ' if owner else ''}{len(missing)} trainable variable(s) got no "
            f"gradient and are not updated: {', '.join(missing)}. The loss does not depend on "
            "them: check that they are used in the forward pass inside the tape, that no "
            "tf.stop_gradient or non-differentiable op cuts them off, and that the variable "
            "list belongs to this model. Freeze them with `layer.trainable = False` if that is "
            "intended."
        )
        if strict:
            raise NoneGradientError(message)
        warnings.warn(message, NoneGradientWarning, stacklevel=3)
    kept = [(g, v) for g, v in zip(gradients, variables, strict=True) if g is not None]
    return [g for g, _ in kept], [v for _, v in kept]


@tf.autograph.experimental.do_not_convert
def update_status(
    loss: tf.Tensor, gradients: Sequence[tf.Tensor], indices: Sequence[int]
) -> tf.Tensor:
    """An int32 code: `FINITE`, `NONFINITE_LOSS`, or 2 + the index of the first bad gradient.

    A gradient is bad when the sum of its squares is not finite: when it holds a NaN or an
    infinity, and also when it is finite but too large to square in float32 (a norm above
    about 1e19), as Adam squares it into its second moment and clipping into the global norm:
    such an update would make a slot, and then the weights, infinite or NaN. One reduction
    per gradient, and one check for them all. Under `tf.distribute`, a step that is bad on one
    replica is bad on all of them (`NONFINITE_ELSEWHERE` where the replica's own values were
    finite), so that every replica skips the same steps.

    Args:
        loss: The scalar loss of the step.
        gradients: The gradients, none of them `None`.
        indices: For each gradient, its variable's index in the list that names them.
    """
    squares = [tf.cast(tf.nn.l2_loss(_values(g)), tf.float32) for g in gradients]
    finite = tf.math.is_finite(tf.stack([tf.cast(loss, tf.float32), *squares]))
    codes = tf.constant([NONFINITE_LOSS, *(2 + i for i in indices)], dtype=tf.int32)
    # The first code that is not finite: the loss before any gradient, gradients in order.
    first_bad = tf.gather(codes, tf.argmin(tf.cast(finite, tf.int32)))
    status = tf.where(tf.reduce_all(finite), FINITE, first_bad)
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        bad_replicas = context.all_reduce("sum", tf.cast(status != FINITE, tf.int32))
        status = tf.where((bad_replicas > 0) & (status == FINITE), NONFINITE_ELSEWHERE, status)
    return status


def _values(gradient: tf.Tensor | tf.IndexedSlices) -> tf.Tensor:
    """What a gradient adds: its values, without making a sparse one dense."""
    return gradient.values if isinstance(gradient, tf.IndexedSlices) else gradient


def scale_gradient(gradient: tf.Tensor | tf.IndexedSlices, factor: tf.Tensor) -> tf.Tensor:
    """`gradient * factor`, keeping a sparse gradient (`tf.IndexedSlices`) sparse."""
    if isinstance(gradient, tf.IndexedSlices):
        return tf.IndexedSlices(gradient.values * factor, gradient.indices, gradient.dense_shape)
    return gradient * factor


@tf.autograph.experimental.do_not_convert
def clip_by_global_norm(
    gradients: list[tf.Tensor], clip_norm: float | tf.Tensor | None
) -> list[tf.Tensor]:
    """Scale `gradients` down so that the whole batch's gradient has a norm <= `clip_norm`.

    The norm is the global norm over all of `gradients`; `None` clips nothing. Under
    `tf.distribute`, `gradients` are this replica's part of the batch's gradient, which is
    their sum over the replicas (the optimizer's all-reduce adds them up): the norm is that of
    the sum, all-reduced here, and every replica scales its part by the same factor, so that
    the parts add up to the clipped sum, as one device clips it. Sparse gradients
    (`tf.IndexedSlices`, from an `Embedding`) are made dense first: their values repeat an
    index once per occurrence in the batch, and the norm of the values is not the norm of the
    update they add up to.
    """
    if clip_norm is None or not gradients:
        return gradients
    dense = [tf.convert_to_tensor(g) for g in gradients]
    whole = dense
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        whole = context.all_reduce("sum", dense)
    clipped, _ = tf.clip_by_global_norm(dense, clip_norm, use_norm=tf.linalg.global_norm(whole))
    return clipped


@tf.autograph.experimental.do_not_convert
def run_if(condition: tf.Tensor, fn: Callable[..., object], *args: object) -> None:
    """Run `fn(*args)` only where `condition` holds, also when `fn` applies gradients.

    A `tf.cond` whose branch applies gradients fails inside `MirroredStrategy.run` (the
    optimizer's all-reduce is a `merge_call`). As Keras's `LossScaleOptimizer` does, the cond
    then moves to the cross-replica context and runs `fn` on every replica from there.
    `condition` must be the same on every replica; pass per-replica values in `args`, never
    by closure.
    """
    context = tf.distribute.get_replica_context()
    needs_merge = (
        tf.distribute.has_strategy()
        and context is not None
        and not tf.__internal__.distribute.strategy_supports_no_merge_call()
    )
    if not needs_merge:

        def run() -> None:
            fn(*args)

        tf.cond(condition, run, lambda: None)
        return

    def cross_replica(
        distribution: tf.distribute.Strategy, condition: object, *args: object
    ) -> None:
        def run_on_each_replica() -> None:
            distribution.extended.call_for_each_replica(fn, args=args)

        first = distribution.experimental_local_results(condition)[0]
        tf.cond(first, run_on_each_replica, lambda: None)

    context.merge_call(cross_replica, args=(condition, *args))


class NonFiniteGuard:
    """Undoes what a skipped step moved beyond the weights, counts such steps, and stops a run.

    `OptimizerSet.apply` already skips the update of a step whose loss or gradients are
    bad (see `update_status`). The forward pass has run all the same, and layers keep state
    that it moves: BatchNormalization's moving statistics (a NaN there would spoil every
    later prediction) and the seed generators of Dropout; and the step recorded its figures in
    the metrics. The guard saves both before each step and restores them after a bad one, so
    that a skipped step, whatever was bad, leaves the model and the epoch's figures exactly as
    if its batch had never been seen; only `skipped_steps` counts it. Its counters live in
    variables that the K-step loop updates in the graph, so a run stops within the call in
    which the limit is reached.

    Args:
        max_bad_steps: Bad steps in a row that stop the run.
        names: The names of the variables that `update_status` codes index, for the message.
        state: The variables a forward pass moves: the model's non-trainable variables, taken
            before any layer is frozen (a frozen layer's weights do not move).
        metrics: The variables of the metrics the step records, as stored on each local
            replica (`distribution.local_variables`).

    Attributes:
        skipped: A metric, `skipped_steps`: the steps skipped this epoch.
    """

    def __init__(
        self,
        max_bad_steps: int,
        names: Sequence[str],
        state: Sequence[tf.Variable],
        metrics: Sequence[tf.Variable] = (),
    ) -> None:
        self.max_bad_steps = max_bad_steps
        self.names = tuple(names)
        self.state = (*state, *metrics)
        self.skipped = keras.metrics.Sum(name="skipped_steps")
        self.bad_in_a_row = tf.Variable(0, dtype=tf.int64, trainable=False, name="bad_in_a_row")
        self.first_bad_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="first_bad")
        self.first_bad_status = tf.Variable(0, dtype=tf.int32, trainable=False, name="status")

    @property
    def variables(self) -> list[tf.Variable]:
        """Its counters, for checkpoints (`skipped` is a metric, read and reset by the loop)."""
        return [self.bad_in_a_row, self.first_bad_step, self.first_bad_status]

    @tf.autograph.experimental.do_not_convert
    def save_state(self) -> list[tf.Tensor]:
        """The layer state and the metrics before a step. `tf.function`-compatible."""
        return [tf.identity(variable) for variable in self.state]

    @tf.autograph.experimental.do_not_convert
    def record(self, status: tf.Tensor, step: tf.Tensor, saved: Sequence[tf.Tensor]) -> None:
        """Count the step numbered `step`; undo its state and metrics if it was skipped.

        `tf.function`-compatible.
        """

        def undo() -> None:
            for variable, value in zip(self.state, saved, strict=True):
                variable.assign(value)
            self.skipped.update_state(1.0)
            starts = self.bad_in_a_row == 0
            self.first_bad_step.assign(tf.where(starts, step, self.first_bad_step))
            self.first_bad_status.assign(tf.where(starts, status, self.first_bad_status))
            self.bad_in_a_row.assign_add(1)

        def keep() -> None:
            self.bad_in_a_row.assign(0)

        # A good step, the common case, runs one assign: no select over the state per step.
        tf.cond(status != FINITE, undo, keep)

    @tf.autograph.experimental.do_not_convert
    def tripped(self) -> tf.Tensor:
        """Whether the run must stop. `tf.function`-compatible."""
        return self.bad_in_a_row >= self.max_bad_steps

    def error(self, step: int) -> NonFiniteError:
        """The one-line error for a run that tripped at global step `step`."""
        status = int(self.first_bad_status.numpy())
        what = (
            "the loss was not finite"
            if status == NONFINITE_LOSS
            else f"the gradient of {self.names[status - 2]} was not finite or too large"
            if 2 <= status < 2 + len(self.names)
            else "the loss or a gradient was not finite or too large"
        )
        first = int(self.first_bad_step.numpy())
        return NonFiniteError(
            f"stopped at step {step}: {self.max_bad_steps} steps in a row were skipped because "
            f"{what} (first at step {first}); the weights are those before step {first}. Look "
            "for NaN, infinite or very large values in the data, lower the learning rate, or "
            "set RunOptions.clip_global_norm"
        )
