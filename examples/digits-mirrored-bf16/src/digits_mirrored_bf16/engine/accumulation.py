"""Gradient accumulation: one update from N micro-batches, weighted by their examples.

With `RunOptions.accumulation_steps = N`, each training step still reads one batch of
`Config.batch_size` examples (a micro-batch), but the optimizers update the weights once per
N micro-batches, with the gradient of the mean loss over all their examples: exactly one
step on their concatenation. Each micro-batch's gradient is weighted by its examples, so a
smaller micro-batch counts for what it holds (Keras's `gradient_accumulation_steps` averages
the micro-batches' means instead). An epoch's last group may hold fewer micro-batches: it is
applied when the epoch ends (`OptimizerSet.flush`), so every epoch trains on all its data.

Template-owned: `copier update` merges template changes into it.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf


class GradientAccumulator:
    """Sums of gradients times examples, and the examples they hold, between two updates.

    Under `tf.distribute`, each replica sums its own gradients (the sums synchronize on read,
    like metrics), and the optimizers' all-reduce adds them up when the group is applied.

    Args:
        steps: Micro-batches per update.
        variables: The variables that can get gradients, in a fixed order.

    Attributes:
        sums: For each variable, the sum over the group's micro-batches of the gradient of
            the micro-batch's mean loss times its examples.
        examples: Examples in the group so far (all replicas together).
        micro_batches: Micro-batches in the group so far, skipped ones included.
    """

    def __init__(self, steps: int, variables: Sequence[tf.Variable]) -> None:
        self.steps = steps
        self.sums = [
            tf.Variable(
                tf.zeros(variable.shape, variable.dtype),
                trainable=False,
                synchronization=tf.VariableSynchronization.ON_READ,
                aggregation=tf.VariableAggregation.SUM,
                name="accumulated_gradient",
            )
            for variable in variables
        ]
        # The same on every replica: the steps add the whole batch's figures.
        first = tf.VariableAggregation.ONLY_FIRST_REPLICA
        self.examples = tf.Variable(0.0, trainable=False, aggregation=first, name="examples")
        self.micro_batches = tf.Variable(
            0, dtype=tf.int64, trainable=False, aggregation=first, name="micro_batches"
        )
        self._index = {id(variable): i for i, variable in enumerate(variables)}

    @property
    def variables(self) -> list[tf.Variable]:
        """The accumulator's state, for checkpoints: a group can span a resume."""
        return [*self.sums, self.examples, self.micro_batches]

    def add(
        self,
        gradients: Sequence[tf.Tensor],
        variables: Sequence[tf.Variable],
        batch_size: tf.Tensor,
        keep: tf.Tensor,
    ) -> None:
        """Add one micro-batch. `tf.function`-compatible; runs on each replica.

        Args:
            gradients: This replica's gradients of the micro-batch's loss (its part of the
                mean over the whole micro-batch, see `steps.total_loss`).
            variables: Their variables.
            batch_size: The examples in the whole micro-batch.
            keep: False for a micro-batch the guard skips: it is counted, not added.
        """
        for gradient, variable in zip(gradients, variables, strict=True):
            weighted = tf.convert_to_tensor(gradient) * batch_size  # Sparse ones made dense.
            self.sums[self._index[id(variable)]].assign_add(
                tf.where(keep, weighted, tf.zeros_like(weighted))
            )
        self.examples.assign_add(tf.where(keep, batch_size, 0.0))
        self.micro_batches.assign_add(1)

    def full(self) -> tf.Tensor:
        """Whether the group holds `steps` micro-batches. `tf.function`-compatible."""
        return self.micro_batches >= self.steps

    def pending(self) -> tf.Tensor:
        """Whether the group holds any micro-batch. `tf.function`-compatible."""
        return self.micro_batches > 0

    def means(self, variables: Sequence[tf.Variable]) -> list[tf.Tensor]:
        """This replica's part of the group's gradient of the mean loss over its examples."""
        return [
            tf.math.divide_no_nan(self.sums[self._index[id(variable)]].read_value(), self.examples)
            for variable in variables
        ]

    def reset(self) -> None:
        """Empty the group. `tf.function`-compatible; runs on each replica."""
        for total in self.sums:
            total.assign(tf.zeros_like(total))
        self.examples.assign(0.0)
        self.micro_batches.assign(0)
