"""The features' contract: the one place that declares what a batch of inputs is.

The step functions' input signature, the check of every dataset before it is read
(`check_features`) and the probe batch that checks a model's output all come from
`features_spec`, so they cannot disagree.
Template-owned: `copier update` merges template changes into it.
"""

from __future__ import annotations

import tensorflow as tf

from .config import Config
from .contract import SpecCheck, cast_to, describe, fits


def features_spec(config: Config) -> tf.TensorSpec:
    """The features of one batch, as the step functions' input signature declares them.

    Token ids padded with 0. The batch and the length dimensions are both `None`, so batches of
    any size and any padded length reuse one trace: a whole run traces each step once.
    """
    del config  # Any batch size, any length.
    return tf.TensorSpec(shape=(None, None), dtype=tf.int32, name="token_ids")


def probe_batch(config: Config) -> tf.Tensor:
    """A batch of two examples that fits `features_spec`, to check a model's output."""
    return tf.ones((2, min(8, config.max_length)), dtype=tf.int32)


def check_features(
    spec: object,
    config: Config,
    name: str = "features",
) -> SpecCheck:
    """How features of `spec` fit `features_spec(config)`: as they are, converted, or not.

    Token ids of any integer dtype (int64 is numpy's default) are cast to int32, saturating, so
    that an id too large for int32 still fails the step's check against `config.vocab_size`.

    Args:
        spec: The features' `tf.TypeSpec`, e.g. `dataset.element_spec[0]`.
        config: The run's configuration.
        name: What the features are called in the message, e.g. `train_ds features`.

    Returns:
        The conversion to apply in the pipeline, if any, or the problem and its fix.
    """
    expected = features_spec(config)
    if fits(spec, expected):
        return SpecCheck()
    if (
        isinstance(spec, tf.TensorSpec)
        and expected.shape.is_compatible_with(spec.shape)
        and spec.dtype.is_integer
    ):
        note = f"{name}: {spec.dtype.name} cast to {expected.dtype.name}"
        return SpecCheck(convert=cast_to(expected.dtype), note=note)
    return SpecCheck(
        problem=(
            f"{name} are {describe(spec)}, but the model takes {describe(expected)}; "
            + _fix(spec, expected, config)
        )
    )


def _fix(spec: object, expected: tf.TensorSpec, config: Config) -> str:
    """How to turn features of `spec` into features of `expected`, for what `spec` is."""
    del config  # Token ids have no configured shape.
    if isinstance(spec, tf.RaggedTensorSpec) or (
        isinstance(spec, tf.TensorSpec) and spec.shape.rank == 1
    ):
        return (
            "batch the unbatched sequences with sequences.batch_sequences in data.py, which pads "
            "them with 0 to (batch, length)"
        )
    if isinstance(spec, tf.TensorSpec) and expected.shape.is_compatible_with(spec.shape):
        return (
            "token ids must be integers, 0 for padding: if these hold whole ids, cast them with "
            "tf.cast(x, tf.int32) in data.py; map strings to ids with keras.layers.StringLookup"
        )
    return (
        "give each example one sequence of token ids, padded to (batch, length); for frames of "
        "float features, generate the project with fixed shapes or change model.py and inputs.py"
    )


def checked_token_ids(x: tf.Tensor, config: Config) -> tf.Tensor:
    """Return `x`, checked inside the step, where only graph-compatible checks can run.

    Must be `tf.function`-compatible. The returned tensor depends on the assertions, so the
    model cannot read `x` first: an id outside `[0, config.vocab_size)` fails the step with
    this readable message instead of the embedding's `indices[i,j] = ... is not in [0, ...)`
    on a CPU, or a silent all-zero embedding on a GPU.
    """
    message = (
        f"token ids must be in [0, config.vocab_size) = [0, {config.vocab_size}), 0 being "
        "padding; raise Config.vocab_size, or map the ids into that range in data.py"
    )
    checks = [
        tf.debugging.assert_non_negative(x, message=message),
        tf.debugging.assert_less(x, tf.constant(config.vocab_size, x.dtype), message=message),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(x)
