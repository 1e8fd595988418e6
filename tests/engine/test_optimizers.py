"""OptimizerSet's clipping per part: the part's whole gradient, the other parts untouched."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from engine.optimizers import OptimizerSet
from engine.options import RunOptions

LEARNING_RATE = 0.5


def _parts() -> tuple[keras.Layer, keras.Layer]:
    keras.utils.set_random_seed(0)
    first, second = keras.layers.Dense(3, name="first"), keras.layers.Dense(1, name="second")
    second(first(tf.zeros((1, 4))))
    return first, second


def _updates(clip: dict[str, float] | None) -> tuple[float, float]:
    """The norm of each part's SGD update, over its gradient: the part's gradient norm."""
    first, second = _parts()
    sgd = [keras.optimizers.SGD(LEARNING_RATE, name=f"sgd_{i}") for i in range(2)]
    parts = [("first", first, sgd[0]), ("second", second, sgd[1])]
    optimizers = OptimizerSet(parts, RunOptions(), clip_global_norm=clip)
    variables = [*first.trainable_variables, *second.trainable_variables]
    before = [v.numpy() for v in variables]
    x = tf.constant(np.random.default_rng(0).normal(size=(8, 4)), tf.float32)

    @tf.function
    def step() -> None:
        optimizers.begin_step(tf.constant(8))
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(second(first(x)) ** 2)
            scaled = optimizers.scale_loss(loss)
        optimizers.apply(tape.gradient(scaled, variables), variables)

    step()
    moved = [
        (b - v.numpy()).ravel() / LEARNING_RATE for b, v in zip(before, variables, strict=True)
    ]
    split = len(first.trainable_variables)
    return (
        float(np.linalg.norm(np.concatenate(moved[:split]))),
        float(np.linalg.norm(np.concatenate(moved[split:]))),
    )


def test_a_part_s_clip_norm_clips_that_part_only() -> None:
    first, second = _updates(None)
    assert first > 0.1 and second > 0.1
    clipped_first, same_second = _updates({"first": 0.1})
    np.testing.assert_allclose(clipped_first, 0.1, rtol=1e-4)
    np.testing.assert_allclose(same_second, second, rtol=1e-6)


@pytest.mark.parametrize(
    ("clip", "message"),
    [
        ({"head": 1.0}, "clip_global_norm names the part 'head', which the optimizers do not have"),
        ({"first": 0.0}, "clip_global_norm['first']=0.0 is invalid; use a positive number"),
    ],
)
def test_a_bad_part_clip_norm_is_one_line(clip: dict[str, float], message: str) -> None:
    first, second = _parts()
    parts = [("first", first, keras.optimizers.SGD()), ("second", second, keras.optimizers.SGD())]
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        OptimizerSet(parts, RunOptions(), clip_global_norm=clip)
