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

    The batch dimension is `None`, so the smaller last batch of an epoch reuses the same trace.
    """
    return tf.TensorSpec(shape=(None, *config.input_shape), dtype=tf.float32, name="features")


def probe_batch(config: Config) -> tf.Tensor:
    """A batch of two examples that fits `features_spec`, to check a model's output."""
    return tf.zeros((2, *config.input_shape), dtype=tf.float32)


def check_features(spec: object, config: Config, name: str = "features") -> SpecCheck:
    """How features of `spec` fit `features_spec(config)`: as they are, converted, or not.

    Other float dtypes (float64, numpy's default, and float16) are cast to float32; integers
    are not, since images of 0-255 usually want scaling too, which only you can choose.

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
        and spec.dtype.is_floating
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
    if not isinstance(spec, tf.TensorSpec) or spec.shape.rank is None:
        return "make the dataset yield (features, labels) pairs of dense tensors of known rank"
    if expected.shape.is_compatible_with(spec.shape):
        return (
            "cast them with tf.cast(x, tf.float32) in data.py (scaled as the model needs, "
            "e.g. x / 255 for 8-bit pixels)"
        )
    example = spec.shape[1:]
    if not example.is_fully_defined():
        return "give every example the same shape, config.input_shape, in data.py"
    if example.num_elements() == expected.shape[1:].num_elements():
        return (
            f"reshape them with tf.reshape(x, (-1, {', '.join(map(str, config.input_shape))})) "
            f"in data.py, or set Config.input_shape = {tuple(example.as_list())}"
        )
    return f"set Config.input_shape = {tuple(example.as_list())} in config.py, or reshape them"
