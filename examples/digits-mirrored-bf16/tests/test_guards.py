"""Special update rules: non-finite steps are skipped without a trace, and gradient clipping."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import QUIET, dataset, encoder, features, linear_model

from digits_mirrored_bf16 import PROJECT
from digits_mirrored_bf16.config import Config
from digits_mirrored_bf16.engine.gradients import NonFiniteError
from digits_mirrored_bf16.engine.optimizers import OptimizerSet
from digits_mirrored_bf16.engine.train import Trainer


class Poison(keras.layers.Layer):
    """Adds `value` (NaN by default) to its second input for a batch whose first holds `mark`."""

    def __init__(self, mark: float, value: float = float("nan"), **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.mark = mark
        self.value = value

    def call(self, inputs: list[tf.Tensor]) -> tf.Tensor:
        raw, x = inputs
        marked = tf.reduce_any(tf.equal(tf.cast(raw, x.dtype), self.mark))
        return x + tf.where(marked, self.value, 0.0)


class Lever(keras.layers.Layer):
    """Adds 0, but gives `gain` a huge gradient on a batch whose first input holds `mark`.

    The loss and the gradients stay finite, but the square of that gradient overflows float32
    in Adam's second moment: applied, it would make the slot infinite, then the weights NaN.
    """

    def __init__(self, mark: float, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.mark = mark

    def build(self, input_shape: list[tuple[int, ...]]) -> None:
        self.gain = self.add_weight(name="gain", shape=(), initializer="ones")

    def call(self, inputs: list[tf.Tensor]) -> tf.Tensor:
        raw, x = inputs
        marked = tf.reduce_any(tf.equal(tf.cast(raw, x.dtype), self.mark))
        return x + tf.where(marked, 1e35, 0.0) * (self.gain - tf.stop_gradient(self.gain))


class Fuse(keras.layers.Layer):
    """Adds sqrt(fuse), fuse = 0: a finite output whose gradient for `fuse` is infinite."""

    def build(self, input_shape: tuple[int, ...]) -> None:
        self.fuse = self.add_weight(name="fuse", shape=(), initializer="zeros")

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return inputs + tf.sqrt(self.fuse)


def _mark(config: Config) -> float:
    del config
    return 777.0  # No standard normal feature comes near it.


def _model(
    config: Config,
    layer: keras.layers.Layer | None = None,
    *,
    value: float = float("nan"),
    lever: bool = False,
) -> keras.Model:
    """Batch normalization and seeded dropout (state a forward pass moves), then the output.

    A marked batch gets `value` added to its representation, or with `lever`, a gradient too
    large to square (see `Lever`).
    """
    keras.utils.set_random_seed(config.seed)
    inputs, x = encoder(config)
    spoil = Lever(_mark(config), name="lever") if lever else Poison(_mark(config), value)
    x = keras.layers.Dense(8)(spoil([inputs, x]))
    if layer is not None:
        x = layer(x)
    x = keras.layers.Dropout(0.5, seed=config.seed)(keras.layers.BatchNormalization()(x))
    return keras.Model(inputs, config.labels.output_layer()(x))


def _trained_whole(config: Config) -> Config:
    """`config` with every trainable variable updated from the first step."""
    return config


def _examples(config: Config, marked: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """64 examples, as 4 batches of 16; one example of each batch in `marked` is marked."""
    x = features(config, 64)
    for batch in marked:
        x[batch * 16 + 5, 0] = _mark(config)
    labels = config.labels.encode(np.arange(64) % config.labels.class_count)
    return x, labels


def _state(model: keras.Model) -> list[np.ndarray]:
    """Every variable: weights, BatchNormalization statistics and the dropout seed's state."""
    return [v.numpy() for v in model.variables]


def _optimizer_state(trainer: Trainer) -> list[np.ndarray]:
    """Every optimizer variable: iterations, learning rates, slots."""
    optimizers = trainer.task.optimizers.by_part.values()
    return [np.asarray(v) for optimizer in optimizers for v in optimizer.variables]


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param({"value": float("nan")}, id="nan"),
        pytest.param({"value": float("inf")}, id="inf", marks=pytest.mark.slow),
        pytest.param({"lever": True}, id="too-large-to-square", marks=pytest.mark.slow),
    ],
)
def test_a_bad_batch_leaves_the_run_as_one_that_skipped_it(
    config: Config, spoil: dict[str, object]
) -> None:
    """A NaN or infinite loss, or a finite gradient too large to square: all skipped alike.

    The skipped step moves no weight, optimizer variable, layer state or metric: the epochs'
    figures are those of a run that never saw the batch, so `TerminateOnNaN` lets it go on.
    """
    x, y = _examples(config, marked=[2])
    config = dataclasses.replace(_trained_whole(config), epochs=2)
    skipping = Trainer(PROJECT, config, _model(config, **spoil), QUIET)
    terminate = keras.callbacks.TerminateOnNaN()
    history = skipping.fit(dataset(x, y, 16), callbacks=[terminate])
    clean = Trainer(PROJECT, config, _model(config, **spoil), QUIET)
    keep = np.r_[0:32, 48:64]
    clean_history = clean.fit(dataset(x[keep], y[keep], 16))

    assert history.history["skipped_steps"] == [1.0, 1.0]
    for key, values in clean_history.history.items():
        if key not in ("skipped_steps", "steps_per_second"):
            assert history.history[key] == values, key
    for ours, theirs in zip(_state(skipping.model), _state(clean.model), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    for ours, theirs in zip(_optimizer_state(skipping), _optimizer_state(clean), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert max(int(o.iterations) for o in skipping.task.optimizers.by_part.values()) == 6
    assert int(skipping.global_step) == 8  # Steps taken, the skipped ones included.


def test_a_group_of_skipped_micro_batches_updates_nothing(config: Config) -> None:
    x, y = _examples(config, marked=[2, 3])
    options = dataclasses.replace(QUIET, accumulation_steps=2)
    skipping = Trainer(PROJECT, config, _model(config), options)
    skipping.fit(dataset(x, y, 16), epochs=1)
    clean = Trainer(PROJECT, config, _model(config), options)
    clean.fit(dataset(x[:32], y[:32], 16), epochs=1)

    # The second group held only skipped micro-batches: no update, not even a zero one
    # (Adam's moments would move the weights all the same).
    for ours, theirs in zip(_state(skipping.model), _state(clean.model), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    for name, optimizer in skipping.task.optimizers.by_part.items():
        assert int(optimizer.iterations) == int(clean.task.optimizers.by_part[name].iterations)
    assert max(int(o.iterations) for o in skipping.task.optimizers.by_part.values()) == 1


def test_bad_steps_in_a_row_stop_the_run_naming_the_loss(config: Config) -> None:
    x, y = _examples(config, marked=[1, 2, 3])
    options = dataclasses.replace(QUIET, max_bad_steps=3)
    trainer = Trainer(PROJECT, config, _model(config), options)
    weights = trainer.model.get_weights()

    with pytest.raises(NonFiniteError) as error:
        trainer.fit(dataset(x[16:], y[16:], 16), dataset(x[:16], y[:16], 16))

    assert str(error.value) == (
        "stopped at step 3: 3 steps in a row were skipped because the loss was not finite "
        "(first at step 1); the weights are those before step 1. Look for NaN, infinite or "
        "very large values in the data, lower the learning rate, or set "
        "RunOptions.clip_global_norm"
    )
    for ours, theirs in zip(trainer.model.get_weights(), weights, strict=True):
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.slow  # Engine behaviour: the projects that run slow tests run it.
def test_gradients_too_large_to_square_stop_the_run_at_the_first(config: Config) -> None:
    """Named by their variable, from the first step on: Adam's slots never overflow.

    Applied, the first such gradient would make Adam's second moment infinite and, one step
    later, the weights NaN: the run would then stop on a NaN loss and blame a later step.
    """
    x, y = _examples(config, marked=[1, 2, 3])
    config = _trained_whole(config)
    options = dataclasses.replace(QUIET, max_bad_steps=3)
    trainer = Trainer(PROJECT, config, _model(config, lever=True), options)
    weights, slots = trainer.model.get_weights(), _optimizer_state(trainer)

    with pytest.raises(
        NonFiniteError,
        match=r"^stopped at step 3: 3 steps in a row were skipped because the gradient of "
        r"\S*lever/gain was not finite or too large \(first at step 1\); the weights are those "
        r"before step 1\.",
    ):
        trainer.fit(dataset(x[16:], y[16:], 16))

    for ours, theirs in zip(trainer.model.get_weights(), weights, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    for ours, theirs in zip(_optimizer_state(trainer), slots, strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_a_non_finite_gradient_is_named_by_its_variable(config: Config) -> None:
    x, y = _examples(config, marked=[])
    options = dataclasses.replace(QUIET, max_bad_steps=2)
    trainer = Trainer(PROJECT, config, _model(config, Fuse(name="bomb")), options)

    with pytest.raises(
        NonFiniteError, match=r"^stopped at step 2: .* the gradient of \S*bomb/fuse was not finite"
    ):
        trainer.train_epoch(dataset(x, y, 16))

    assert int(trainer.global_step) == 2  # The call stopped at once, not at the end of K steps.


def test_clipping_bounds_the_global_norm_of_the_update(config: Config) -> None:
    x = features(config, 16)
    y = config.labels.encode(np.arange(16) % config.labels.class_count)
    loss_fn = config.labels.make_loss()
    norms = []
    for clip in (None, 1e-3):
        keras.utils.set_random_seed(config.seed)
        model = linear_model(config)
        sgd = keras.optimizers.SGD(learning_rate=1.0)
        options = dataclasses.replace(QUIET, clip_global_norm=clip)
        optimizers = OptimizerSet([("model", model, sgd)], options)
        before = [v.numpy() for v in model.trainable_variables]
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        optimizers.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        after = [v.numpy() for v in model.trainable_variables]
        moved = [np.sum((a - b) ** 2) for a, b in zip(after, before, strict=True)]
        norms.append(np.sqrt(sum(moved)))
    unclipped, clipped = norms
    assert unclipped > 1e-2
    assert clipped == pytest.approx(1e-3, rel=1e-4)
