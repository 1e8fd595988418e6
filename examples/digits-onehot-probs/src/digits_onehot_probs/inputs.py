"""The features' contract: the one place that declares what a batch of inputs is.

The step functions' input signature, the checks run before training and the probe batch that
checks a model's output all come from `features_spec`, so they cannot disagree.
Template-owned: `copier update` merges template changes into it.
"""

from __future__ import annotations

import tensorflow as tf

from .config import Config


class InputSignatureError(ValueError):
    """Features do not fit the step functions' input signature."""


def features_spec(config: Config) -> tf.TensorSpec:
    """The features of one batch, as the step functions' input signature declares them.

    The batch dimension is `None`, so the smaller last batch of an epoch reuses the same trace.
    """
    return tf.TensorSpec(shape=(None, *config.input_shape), dtype=tf.float32, name="features")


def probe_batch(config: Config) -> tf.Tensor:
    """A batch of two examples that fits `features_spec`, to check a model's output."""
    return tf.zeros((2, *config.input_shape), dtype=tf.float32)


def describe(spec: tf.TensorSpec) -> str:
    """A spec in words, e.g. `float32 batches of shape (batch, 64)`."""
    if spec.shape.rank is None:
        return f"{spec.dtype.name} batches of unknown rank"
    dims = [
        "batch" if i == 0 else "length" if d is None else str(d) for i, d in enumerate(spec.shape)
    ]
    return f"{spec.dtype.name} batches of shape ({', '.join(dims)}{',' if len(dims) == 1 else ''})"


def check_features_spec(spec: object, config: Config, name: str = "features") -> None:
    """Fail fast, before tracing, when features do not fit the declared signature.

    Args:
        spec: The features' `tf.TypeSpec`, e.g. `dataset.element_spec[0]`.
        config: The run's configuration.
        name: What the features are called in the message, e.g. `train_ds features`.

    Raises:
        InputSignatureError: Naming what was found, what was expected and the fix.
    """
    expected = features_spec(config)
    if (
        isinstance(spec, tf.TensorSpec)
        and spec.dtype == expected.dtype
        and expected.shape.is_compatible_with(spec.shape)
    ):
        return
    found = describe(spec) if isinstance(spec, tf.TensorSpec) else repr(spec)
    raise InputSignatureError(
        f"{name} are {found}, but the model takes {describe(expected)}; {_fix(spec, expected)}"
    )


def _fix(spec: object, expected: tf.TensorSpec) -> str:
    """How to turn features of `spec` into features of `expected`."""
    if isinstance(spec, tf.TensorSpec) and expected.shape.is_compatible_with(spec.shape):
        return "cast them with tf.cast(x, tf.float32) in data.py"
    return "reshape them in data.py, or change Config.input_shape"
