"""What the loop makes of a task's `train_step`: the default wrapper, and what it refuses."""

from __future__ import annotations

import keras
import pytest
import tensorflow as tf

from engine.optimizers import OptimizerSet
from engine.options import RunOptions
from engine.task import Task


class OneDenseTask(Task):
    """A task of one dense layer whose `train_step` returns what `returns` gives it."""

    def __init__(self, returns: object = None) -> None:
        self.model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        adam = keras.optimizers.Adam(0.1)
        self.optimizers = OptimizerSet([("model", self.model, adam)], RunOptions())
        self.returns = returns

    def train_step(self, x: tf.Tensor, y: tf.Tensor) -> object:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(self.model(x, training=True) - y))
            scaled = self.optimizers.scale_loss(loss)
        gradients = tape.gradient(scaled, self.model.trainable_variables)
        self.optimizers.apply(gradients, self.model.trainable_variables)
        return self.returns(loss) if callable(self.returns) else self.returns


BATCH = (tf.ones((4, 2)), tf.zeros((4, 1)))


def test_the_default_wrapper_trains_a_step_that_returns_nothing() -> None:
    task = OneDenseTask()
    before = [w.copy() for w in task.model.get_weights()]
    status = tf.function(task.make_train_step())(*BATCH)
    assert int(status) == 0  # gradients.FINITE
    assert any((b != a).any() for b, a in zip(before, task.model.get_weights(), strict=True))


@pytest.mark.parametrize(
    ("returns", "what"),
    [(lambda loss: {"grad_norm": loss}, "a dict of grad_norm"), (lambda loss: loss, "a ")],
)
def test_a_step_that_returns_figures_fails_while_traced_naming_where_they_go(
    returns: object, what: str
) -> None:
    task = OneDenseTask(returns)
    with pytest.raises(TypeError, match="record the figure in a metric") as error:
        tf.function(task.make_train_step())(*BATCH)
    assert f"train_step returned {what}" in str(error.value)
