"""The features' contract: the one place that declares what a batch of inputs is.

The step functions' input signature, the check of every dataset before it is read
(`check_features`) and the probe batch that checks a model's output all come from
`features_spec`, so they cannot disagree. A model built on a dict of named inputs takes a dict of
features instead, one spec per input (`model_features_spec`).
Template-owned: `copier update` merges template changes into it.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf

from .config import Config
from .contract import SpecCheck, cast_to, describe, fits

# One tensor of features, or a dict of them keyed by the model's input names.
Features = tf.TensorSpec | dict[str, tf.TensorSpec]


def features_spec(config: Config) -> tf.TensorSpec:
    """The features of one batch, as the step functions' input signature declares them.

    The batch dimension is `None`, so the smaller last batch of an epoch reuses the same trace.
    """
    return tf.TensorSpec(shape=(None, *config.input_shape), dtype=tf.float32, name="features")


def probe_batch(config: Config) -> tf.Tensor:
    """A batch of two examples that fits `features_spec`, to check a model's output."""
    return tf.zeros((2, *config.input_shape), dtype=tf.float32)


def model_features_spec(model: keras.Model, config: Config) -> Features:
    """The features `model` takes: `features_spec(config)`, or a dict of one spec per input.

    A functional model built on a dict of named inputs, e.g.
    `keras.Model({"image": image, "meta": meta}, outputs)` with `keras.Input(..., name=...)`,
    takes a dict of features keyed by those names, each of its input's dtype and shape (the
    batch dimension `None`).
    """
    try:
        structure = model.input
    except (AttributeError, ValueError):  # Not built on keras.Input: called on one tensor.
        return features_spec(config)
    if not isinstance(structure, dict):
        return features_spec(config)
    return {
        key: tf.TensorSpec((None, *tensor.shape[1:]), tensor.dtype, name=key)
        for key, tensor in structure.items()
    }


def probe_features(spec: Features, config: Config) -> tf.Tensor | dict[str, tf.Tensor]:
    """A batch of two examples that fits `spec`, to check a model's output."""
    if not isinstance(spec, dict):
        return probe_batch(config)
    return {
        key: tf.zeros((2, *(size or 1 for size in part.shape[1:])), part.dtype)
        for key, part in spec.items()
    }


def with_packed_features(step: Callable[..., object], spec: Features) -> Callable[..., object]:
    """`step` of `(x, y, ...)`, called as the loop calls steps: with the batch's tensors flat.

    For dict features, the first tensors are the dict's values in `tf.nest.flatten`'s order
    (sorted keys), packed back into the dict here; plain features need no packing.
    """
    if not isinstance(spec, dict):
        return step
    count = len(spec)

    def flat_step(*flat: tf.Tensor) -> object:
        return step(tf.nest.pack_sequence_as(spec, list(flat[:count])), *flat[count:])

    return flat_step


def check_features(
    spec: object,
    config: Config,
    name: str = "features",
    model_features: Features | None = None,
) -> SpecCheck:
    """How features of `spec` fit `features_spec(config)`: as they are, converted, or not.

    Other float dtypes (float64, numpy's default, and float16) are cast to float32; integers
    are not, since images of 0-255 usually want scaling too, which only you can choose.

    Args:
        spec: The features' `tf.TypeSpec`, e.g. `dataset.element_spec[0]`.
        config: The run's configuration.
        name: What the features are called in the message, e.g. `train_ds features`.
        model_features: What the model takes, from `model_features_spec`; for a dict, the
            features must be a dict too (see `check_feature_dict`).

    Returns:
        The conversion to apply in the pipeline, if any, or the problem and its fix.
    """
    if isinstance(model_features, dict):
        return check_feature_dict(spec, model_features, name)
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
    if isinstance(spec, dict):
        return (
            "yield one tensor of features, or build the model on a dict of keras.Input(..., "
            f"name=...) for {', '.join(map(repr, spec))} (see the README, dict features)"
        )
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


def check_feature_dict(spec: object, expected: dict[str, tf.TensorSpec], name: str) -> SpecCheck:
    """How dict features of `spec` fit the model's named inputs: per key, as is, cast, or not.

    A feature of another float dtype than its input's is cast to it, and likewise integers to
    integers (saturating); every missing key, unknown key and feature that cannot be cast is a
    problem of its own, so the error lists them all.

    Args:
        spec: The features' spec, e.g. `dataset.element_spec[0]`.
        expected: The model's inputs, from `model_features_spec`.
        name: What the features are called in the message, e.g. `train_ds features`.

    Returns:
        The conversion of the dict to apply in the pipeline, if any, or the problems.
    """
    names = ", ".join(map(repr, expected))
    if not isinstance(spec, dict):
        return SpecCheck(
            problem=(
                f"{name} are {describe(spec)}, but the model takes a dict of {names}; yield the "
                "features as a dict keyed by the model's input names in data.py"
            )
        )
    problems = []
    missing = [key for key in expected if key not in spec]
    unknown = [key for key in spec if key not in expected]
    if missing:
        problems.append(
            f"{name} lack {', '.join(map(repr, missing))}, which the model takes (it takes "
            f"{names}); add them to the features' dict in data.py"
        )
    if unknown:
        problems.append(
            f"{name} have {', '.join(map(repr, unknown))}, which the model has no input for; "
            "drop them from the features' dict in data.py, or give the model an input of that "
            "name"
        )
    converts: dict[str, Callable[[tf.Tensor], tf.Tensor]] = {}
    notes = []
    for key in [key for key in expected if key in spec]:
        check = _check_input(spec[key], expected[key], f"{name}[{key!r}]")
        if check.problem:
            problems.append(check.problem)
        elif check.convert is not None:
            converts[key] = check.convert
            notes.append(check.note)
    if problems:
        return SpecCheck(problem="\n".join(problems))
    if not converts:
        return SpecCheck()

    def convert(x: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return {key: converts[key](x[key]) if key in converts else x[key] for key in x}

    return SpecCheck(convert=convert, note="; ".join(sorted(notes)))


def _check_input(spec: object, expected: tf.TensorSpec, name: str) -> SpecCheck:
    """How one feature of a dict fits its named input."""
    if fits(spec, expected):
        return SpecCheck()
    found = f"{name} are {describe(spec)}, but the model's input takes {describe(expected)}; "
    if not isinstance(spec, tf.TensorSpec) or spec.shape.rank is None:
        return SpecCheck(problem=found + "make it a dense tensor of known rank in data.py")
    if not expected.shape.is_compatible_with(spec.shape):
        return SpecCheck(
            problem=found + f"give each example the shape {tuple(expected.shape[1:])} in "
            "data.py, or change the model's input"
        )
    if (spec.dtype.is_floating and expected.dtype.is_floating) or (
        spec.dtype.is_integer and expected.dtype.is_integer
    ):
        note = f"{name}: {spec.dtype.name} cast to {expected.dtype.name}"
        return SpecCheck(convert=cast_to(expected.dtype), note=note)
    scaled = " (scaled as the model needs)" if expected.dtype.is_floating else ""
    return SpecCheck(
        problem=found + f"cast them with tf.cast(x, tf.{expected.dtype.name}) in data.py{scaled}"
    )
