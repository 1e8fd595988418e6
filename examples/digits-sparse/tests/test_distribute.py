"""More devices and lower precision: the same run under `tf.distribute` and mixed precision.

The CPU is split into logical devices in `conftest.py`, so `MirroredStrategy` runs here with
up to three replicas.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import dict_features, linear_model, raw_features, two_input_model

from digits_sparse import PROJECT
from digits_sparse.config import Config, RunOptions
from digits_sparse.engine import interrupts, precision
from digits_sparse.engine.distribution import DistributionError
from digits_sparse.engine.optimizers import OptimizerSet
from digits_sparse.engine.train import fit
from digits_sparse.model import build_model

# One device in float32 unless a test says otherwise, whatever the project's defaults.
QUIET = RunOptions(verbose=0, steps_per_execution=4, strategy="none", precision="float32")
# 45 examples in batches of 12: the last batch of 9 splits unevenly over 2 replicas (4 and 5).
EXAMPLES, BATCH = 45, 12


def mirrored(replicas: int) -> tf.distribute.MirroredStrategy:
    """A strategy over the first `replicas` logical CPU devices."""
    devices = [f"/cpu:{index}" for index in range(replicas)]
    return tf.distribute.MirroredStrategy(
        devices, cross_device_ops=tf.distribute.ReductionToOneDevice()
    )


def small_config(config: Config) -> Config:
    """Two epochs of a few small batches."""
    return dataclasses.replace(config, epochs=2, batch_size=BATCH)


def datasets(config: Config, weighted: bool = False) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """Training and validation batches, in order, each ending with a smaller batch.

    With `weighted`, `(features, labels, sample_weights)` batches, some weights 0.
    """
    rng = np.random.default_rng(0)
    x = raw_features(config, 2 * EXAMPLES)
    labels = config.labels.encode(rng.integers(0, config.labels.class_count, 2 * EXAMPLES))
    weights = rng.uniform(0.0, 3.0, 2 * EXAMPLES).astype(np.float32)
    weights[rng.random(2 * EXAMPLES) < 0.2] = 0.0

    def batches(rows: slice) -> tf.data.Dataset:
        parts = (x[rows], labels[rows], weights[rows]) if weighted else (x[rows], labels[rows])
        return tf.data.Dataset.from_tensor_slices(parts).batch(config.batch_size)

    return batches(slice(0, EXAMPLES)), batches(slice(EXAMPLES, None))


Run = tuple[dict[str, list[float]], list[np.ndarray], list[np.ndarray]]


@pytest.fixture(scope="module")
def one_device() -> Run:
    """The float32 run on one device that the others are held to."""
    return train(small_config(Config()), None)


def train(
    config: Config,
    strategy: tf.distribute.Strategy | None,
    policy: str = "float32",
    *,
    weighted: bool = False,
    **options: object,
) -> Run:
    """Train the project's model without dropout; its history, first and last weights."""
    keras.utils.set_random_seed(config.seed)
    scope = contextlib.nullcontext() if strategy is None else strategy.scope()
    with precision.dtype_policy(policy), scope:
        model = build_model(config)
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0  # Replicas draw other dropout masks than one device.
    before = [w.numpy() for w in model.weights]
    train_ds, val_ds = datasets(config, weighted)
    run_options = dataclasses.replace(QUIET, precision=policy, **options)
    history = fit(PROJECT, config, model, train_ds, val_ds, options=run_options, strategy=strategy)
    after = [w.numpy() for w in model.weights]
    return history.history, before, after


@pytest.mark.parametrize("replicas", [2, 3])
def test_replicas_train_exactly_as_one_device(one_device: Run, replicas: int) -> None:
    """The same global batches give the same weights and figures on 1, 2 or 3 replicas.

    The loss is scaled exactly once (the replicas' parts add up to the batch's mean, even
    for the last, uneven batch), and the reported figures are reduced across replicas. The
    model's dropout is off (see `train`): each replica draws its own masks, so with dropout
    the runs would differ.
    """
    one_history, _, one_device_weights = one_device
    history, _, weights = train(small_config(Config()), mirrored(replicas))
    for ours, theirs in zip(weights, one_device_weights, strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert history.keys() == one_history.keys()
    for key, values in one_history.items():
        if key != "steps_per_second":
            np.testing.assert_allclose(history[key], values, rtol=1e-5, atol=1e-6, err_msg=key)


@pytest.mark.parametrize(
    ("replicas", "policy", "tolerance"),
    [(None, "float32", 0.0), (2, "float32", 0.0), (None, "mixed_float16", 0.05)],
)
def test_accumulated_micro_batches_update_as_one_step_on_their_concatenation(
    one_device: Run, replicas: int | None, policy: str, tolerance: float
) -> None:
    """Four micro-batches of 3 give the update of one batch of 12, weighted by examples.

    Each epoch ends with a smaller group, 3 micro-batches as a batch of 9, applied when the
    epoch ends. The weights agree to 1e-5; in float16, where the two round differently,
    to 5 % of the update's norm.
    """
    concatenated = one_device
    if policy != "float32":
        concatenated = train(small_config(Config()), None, policy)
    micro = dataclasses.replace(small_config(Config()), batch_size=BATCH // 4)
    strategy = None if replicas is None else mirrored(replicas)
    _, start, weights = train(micro, strategy, policy, accumulation_steps=4)
    if tolerance == 0.0:
        for ours, theirs in zip(weights, concatenated[2], strict=True):
            np.testing.assert_allclose(ours, theirs, atol=1e-5)
    else:
        ours, theirs, first = (
            np.concatenate([w.ravel() for w in run]) for run in (weights, concatenated[2], start)
        )
        assert np.linalg.norm(ours - theirs) <= tolerance * np.linalg.norm(theirs - first)


@pytest.mark.slow  # Three runs, about 3 s: the projects that run slow tests run it.
def test_clipping_bounds_the_whole_batch_gradient_on_replicas_and_in_micro_batches(
    one_device: Run,
) -> None:
    """`clip_global_norm` clips the gradient of the whole batch, not each replica's part.

    3 replicas, and 2 replicas accumulating 4 micro-batches, end with the weights of one
    device clipped to the same norm; the norm is small enough that every step is clipped.
    """
    config = small_config(Config())
    clip = {"clip_global_norm": 0.01}
    _, _, clipped = train(config, None, **clip)
    _, _, replicas = train(config, mirrored(3), **clip)
    micro = dataclasses.replace(config, batch_size=BATCH // 4)
    _, _, accumulated = train(micro, mirrored(2), accumulation_steps=4, **clip)
    # The clip binds: the weights are far from those of the unclipped run (Adam's update is
    # nearly invariant to the gradient's scale, so not by much).
    assert max(np.abs(c - u).max() for c, u in zip(clipped, one_device[2], strict=True)) > 1e-4
    for run in (replicas, accumulated):
        for ours, theirs in zip(run, clipped, strict=True):
            np.testing.assert_allclose(ours, theirs, atol=1e-6)


@pytest.mark.slow  # Three runs, about 3 s: the projects that run slow tests run it.
def test_sample_weights_train_exactly_alike_on_replicas_and_in_micro_batches() -> None:
    """Weighted batches train on 3 replicas, and in 4 accumulated micro-batches, as on one device.

    Each part's weighted sum is divided by the examples of the whole batch (not its weights),
    so the parts add up exactly as unweighted ones do; one epoch ends with an uneven batch.
    """
    config = dataclasses.replace(small_config(Config()), epochs=1)
    dense: dict[str, object] = {}
    one_history, _, one_device_weights = train(config, None, weighted=True, **dense)
    history, _, weights = train(config, mirrored(3), weighted=True, **dense)
    micro = dataclasses.replace(config, batch_size=BATCH // 4)
    _, _, accumulated = train(micro, None, weighted=True, accumulation_steps=4, **dense)
    for run in (weights, accumulated):
        for ours, theirs in zip(run, one_device_weights, strict=True):
            np.testing.assert_allclose(ours, theirs, atol=1e-5)
    for key, values in one_history.items():
        if key != "steps_per_second":
            np.testing.assert_allclose(history[key], values, rtol=1e-5, err_msg=key)


@pytest.mark.slow  # Two runs, about 1 s: the projects that run slow tests run it.
def test_weighted_dict_batches_train_exactly_alike_on_replicas() -> None:
    """A model on named inputs, fed `(dict, labels, sample_weights)`, on 3 replicas as on one."""
    config = dataclasses.replace(small_config(Config()), epochs=1)
    labels = config.labels.encode(np.arange(EXAMPLES) % config.labels.class_count)
    parts = (dict_features(config, EXAMPLES), labels, np.linspace(0.0, 2.0, EXAMPLES))
    dataset = tf.data.Dataset.from_tensor_slices(parts).batch(BATCH)
    runs = []
    for strategy in (None, mirrored(3)):
        keras.utils.set_random_seed(config.seed)
        with contextlib.nullcontext() if strategy is None else strategy.scope():
            model = two_input_model(config)
        history = fit(PROJECT, config, model, dataset, options=QUIET, strategy=strategy)
        weights = [w.numpy() for w in model.weights]
        runs.append((history.history["loss"], weights))
    (one_loss, one_weights), (loss, weights) = runs
    np.testing.assert_allclose(loss, one_loss, rtol=1e-5)
    for ours, theirs in zip(weights, one_weights, strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-5)


class InterruptInEpoch2(keras.callbacks.Callback):
    """Asks the run to stop after its second call of steps in epoch 2, as Ctrl-C does."""

    def __init__(self) -> None:
        super().__init__()
        self.epoch = self.calls = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch, self.calls = epoch, 0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.calls += 1
        if self.epoch == 1 and self.calls == 2:
            interrupts.request()


def test_a_run_stopped_in_the_middle_of_a_group_resumes_bit_for_bit(tmp_path: Path) -> None:
    """The accumulated gradients go into the checkpoint with the rest of the run."""
    config = dataclasses.replace(small_config(Config()), batch_size=BATCH // 4)
    # Calls of 3 steps: the stop after 6 steps of epoch 2 leaves a group of 4 half full.
    options = dataclasses.replace(QUIET, accumulation_steps=4, steps_per_execution=3)
    _, _, uninterrupted = train(config, None, accumulation_steps=4, steps_per_execution=3)

    def resumed_run(resume: bool, callbacks: list[keras.callbacks.Callback]) -> keras.Model:
        keras.utils.set_random_seed(config.seed)
        model = build_model(config)
        for layer in model._flatten_layers():
            if isinstance(layer, keras.layers.Dropout):
                layer.rate = 0.0
        train_ds, val_ds = datasets(config)
        run_options = dataclasses.replace(options, logdir=tmp_path, resume=resume)
        fit(PROJECT, config, model, train_ds, val_ds, options=run_options, callbacks=callbacks)
        return model

    with pytest.raises(interrupts.Interrupted):
        resumed_run(False, [InterruptInEpoch2()])
    interrupts.clear()
    model = resumed_run(True, [])
    for ours, theirs in zip(model.weights, uninterrupted, strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs)


def test_a_model_built_outside_the_scope_is_refused_until_built_inside(config: Config) -> None:
    """The error names the fix; following it trains."""
    config = dataclasses.replace(small_config(config), epochs=1)
    strategy = mirrored(2)
    train_ds, val_ds = datasets(config)
    with pytest.raises(DistributionError, match=r"build it inside `with strategy.scope\(\):`"):
        fit(
            PROJECT, config, build_model(config), train_ds, val_ds, options=QUIET, strategy=strategy
        )
    with strategy.scope():
        model = build_model(config)
    history = fit(PROJECT, config, model, train_ds, val_ds, options=QUIET, strategy=strategy)
    assert len(next(iter(history.history.values()))) == 1


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_moves_the_weights_as_float32_does(one_device: Run, policy: str) -> None:
    """Within 30 % of float32's update after two epochs, every figure finite.

    bfloat16 keeps 8 bits of mantissa: on these short runs the updates differed from
    float32's by up to 17 % (float16: 12 %), measured on five projects of the render matrix.
    """
    _, start, float32 = one_device
    history, _, mixed = train(small_config(Config()), None, policy)
    assert all(np.isfinite(values).all() for values in history.values())
    moved = np.concatenate([(w - s).ravel() for w, s in zip(float32, start, strict=True)])
    ours = np.concatenate([(w - s).ravel() for w, s in zip(mixed, start, strict=True)])
    assert np.linalg.norm(ours - moved) <= 0.3 * np.linalg.norm(moved)


def test_loss_scaling_keeps_small_float16_gradients_from_vanishing() -> None:
    """Gradients below float16's smallest number would be 0 without `scale_loss`."""
    with precision.dtype_policy("mixed_float16"):
        inputs = keras.Input((4,))
        hidden = keras.layers.Dense(4, name="hidden")(inputs)
        outputs = keras.layers.Dense(1, dtype="float32")(hidden)
        model = keras.Model(inputs, outputs)
    options = RunOptions(strategy="none", precision="mixed_float16")
    optimizers = OptimizerSet([("model", model, keras.optimizers.Adam(1e-3))], options)
    kernel = model.get_layer("hidden").kernel
    before = kernel.numpy()
    with tf.GradientTape() as tape:
        loss = 1e-7 * tf.reduce_sum(model(tf.ones((8, 4))))  # float16 gradients of ~1e-8.
        scaled = optimizers.scale_loss(loss)
    optimizers.apply(tape.gradient(scaled, model.trainable_variables), model.trainable_variables)
    assert not np.array_equal(kernel.numpy(), before)


def test_an_output_that_is_not_float32_is_named_until_made_float32(config: Config) -> None:
    """The error names the layer and the fix; following it trains."""
    config = dataclasses.replace(small_config(config), epochs=1)
    train_ds, val_ds = datasets(config)
    options = dataclasses.replace(QUIET, precision="mixed_float16")

    def model_with_output(dtype: str | None) -> keras.Model:
        with precision.dtype_policy("mixed_float16"):
            return linear_model(config, output_dtype=dtype)

    model = model_with_output(None)
    fix = r"layer 'last'.*give that layer dtype='float32'"
    with pytest.raises(precision.PrecisionError, match=fix):
        fit(PROJECT, config, model, train_ds, val_ds, options=options)
    history = fit(PROJECT, config, model_with_output("float32"), train_ds, val_ds, options=options)
    assert all(np.isfinite(values).all() for values in history.history.values())
