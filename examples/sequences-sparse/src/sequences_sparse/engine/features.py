"""The features' contract: the one place that declares what a batch of inputs is.

A `Features` object is what the model takes: `DenseFeatures` (float32 examples of one fixed
shape) or `TokenSequences` (int32 token ids padded with 0, of any length). The step functions'
input signature, the check of every dataset before it is read (`check`) and the probe batch
that checks a model's output all come from its `spec`, so they cannot disagree. A model built
on a dict of named inputs takes a dict of features instead, one spec per input (`model_spec`).
The project's `Config.features` says which.

Template-owned: `copier update` merges template changes into it.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from .contract import SpecCheck, cast_to, describe, fits

# One tensor of features, or a dict of them keyed by the model's input names.
FeatureSpec = tf.TensorSpec | dict[str, tf.TensorSpec]


class Features:
    """The base of the kinds of features: what they share; subclasses give the rest."""

    @property
    def spec(self) -> tf.TensorSpec:
        """The features of one batch, as the step functions' input signature declares them."""
        raise NotImplementedError

    def probe_batch(self) -> tf.Tensor:
        """A batch of two examples that fits `spec`, to check a model's output."""
        raise NotImplementedError

    def model_spec(self, model: keras.Model) -> FeatureSpec:
        """The features `model` takes: `spec`, or a dict of one spec per input.

        A functional model built on a dict of named inputs, e.g.
        `keras.Model({"image": image, "meta": meta}, outputs)` with `keras.Input(..., name=...)`,
        takes a dict of features keyed by those names, each of its input's dtype and shape (the
        batch dimension `None`).
        """
        try:
            structure = model.input
        except (AttributeError, ValueError):  # Not built on keras.Input: called on one tensor.
            return self.spec
        if not isinstance(structure, dict):
            return self.spec
        return {
            key: tf.TensorSpec((None, *tensor.shape[1:]), tensor.dtype, name=key)
            for key, tensor in structure.items()
        }

    def probe(self, model: keras.Model) -> tf.Tensor | dict[str, tf.Tensor]:
        """A batch of two examples that `model` takes (see `model_spec`)."""
        return self.probe_features(self.model_spec(model))

    def probe_features(self, spec: FeatureSpec) -> tf.Tensor | dict[str, tf.Tensor]:
        """A batch of two examples that fits `spec`, to check a model's output."""
        if not isinstance(spec, dict):
            return self.probe_batch()
        return {
            key: tf.zeros((2, *(size or 1 for size in part.shape[1:])), part.dtype)
            for key, part in spec.items()
        }

    @tf.autograph.experimental.do_not_convert
    def checked_values(self, x: tf.Tensor) -> object:
        """Return `x`, checked inside the step; `tf.function`-compatible. No check by default."""
        return x

    def check_array(self, x: np.ndarray) -> np.ndarray:
        """`x`, a NumPy batch of features (for `predict`), cast to `spec`'s dtype.

        Raises:
            ValueError: One line, starting "the input ", naming what does not fit.
        """
        spec = self.spec
        if x.ndim < 1 or not spec.shape.is_compatible_with((None, *x.shape[1:])):
            raise ValueError(f"the input has shape {x.shape}, but the model takes {describe(spec)}")
        if len(x) == 0:
            raise ValueError(f"the input has shape {x.shape}: no examples; give at least one")
        problem = self._array_dtype_problem(x.dtype)
        if problem:
            raise ValueError(f"the input holds {x.dtype} values{problem}")
        return x.astype(spec.dtype.as_numpy_dtype)

    def _array_dtype_problem(self, dtype: np.dtype) -> str:
        """What is wrong with features of `dtype` for `check_array`, and the fix; "" if none."""
        raise NotImplementedError

    def check(
        self, spec: object, name: str = "features", model_features: FeatureSpec | None = None
    ) -> SpecCheck:
        """How features of element spec `spec` fit `self.spec`: as they are, converted, or not.

        Args:
            spec: The features' `tf.TypeSpec`, e.g. `dataset.element_spec[0]`.
            name: What the features are called in the message, e.g. `train_ds features`.
            model_features: What the model takes, from `model_spec`; for a dict, the
                features must be a dict too (see `check_feature_dict`).

        Returns:
            The conversion to apply in the pipeline, if any, or the problem and its fix.
        """
        if isinstance(model_features, dict):
            return check_feature_dict(spec, model_features, name)
        expected = self.spec
        if fits(spec, expected):
            return SpecCheck()
        if (
            isinstance(spec, tf.TensorSpec)
            and expected.shape.is_compatible_with(spec.shape)
            and self._castable(spec.dtype)
        ):
            note = f"{name}: {spec.dtype.name} cast to {expected.dtype.name}"
            return SpecCheck(convert=cast_to(expected.dtype), note=note)
        return SpecCheck(
            problem=(
                f"{name} are {describe(spec)}, but the model takes {describe(expected)}; "
                + self._fix(spec, expected)
            )
        )

    def _castable(self, dtype: tf.DType) -> bool:
        """Whether features of `dtype` and the right shape are cast to `spec`'s dtype."""
        raise NotImplementedError

    def _fix(self, spec: object, expected: tf.TensorSpec) -> str:
        """How to turn features of `spec` into features of `expected`, for what `spec` is."""
        raise NotImplementedError


class DenseFeatures(Features):
    """Float32 examples of one fixed shape, `(batch, *input_shape)`.

    `check` casts other float dtypes (float64, numpy's default, and float16) to float32;
    integers are not, since images of 0-255 usually want scaling too, which only you can choose.

    Args:
        input_shape: Shape of one example, without the batch dimension.
    """

    def __init__(self, input_shape: tuple[int, ...]) -> None:
        self.input_shape = tuple(int(size) for size in input_shape)

    def __repr__(self) -> str:
        return f"DenseFeatures({self.input_shape})"

    @property
    def spec(self) -> tf.TensorSpec:
        """Float32 `(batch, *input_shape)`.

        The batch dimension is `None`, so the smaller last batch of an epoch reuses the same
        trace.
        """
        return tf.TensorSpec(shape=(None, *self.input_shape), dtype=tf.float32, name="features")

    def probe_batch(self) -> tf.Tensor:
        """Two examples of zeros."""
        return tf.zeros((2, *self.input_shape), dtype=tf.float32)

    def _castable(self, dtype: tf.DType) -> bool:
        """Floats only."""
        return dtype.is_floating

    def _array_dtype_problem(self, dtype: np.dtype) -> str:
        """Numbers fit: signed or unsigned integers, or floats."""
        return "" if dtype.kind in "iuf" else "; give integers or floats"

    def _fix(self, spec: object, expected: tf.TensorSpec) -> str:
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
                f"reshape them with tf.reshape(x, (-1, {', '.join(map(str, self.input_shape))})) "
                f"in data.py, or set Config.input_shape = {tuple(example.as_list())}"
            )
        return f"set Config.input_shape = {tuple(example.as_list())} in config.py, or reshape them"


class TokenSequences(Features):
    """Int32 token ids padded with 0, `(batch, length)`, of any length.

    `check` casts token ids of any integer dtype (int64 is numpy's default) to int32,
    saturating, so that an id too large for int32 still fails the step's check against
    `vocab_size`.

    Args:
        vocab_size: Token ids are in `[0, vocab_size)`; id 0 is padding.
        max_length: Longest sequence the model sees.
    """

    def __init__(self, vocab_size: int, max_length: int) -> None:
        self.vocab_size = vocab_size
        self.max_length = max_length

    def __repr__(self) -> str:
        return f"TokenSequences({self.vocab_size}, {self.max_length})"

    @property
    def spec(self) -> tf.TensorSpec:
        """Int32 token ids `(batch, length)`, padded with 0.

        The batch and the length dimensions are both `None`, so batches of any size and any
        padded length reuse one trace: a whole run traces each step once.
        """
        return tf.TensorSpec(shape=(None, None), dtype=tf.int32, name="token_ids")

    def probe_batch(self) -> tf.Tensor:
        """Two sequences of id 1, of at most 8 tokens."""
        return tf.ones((2, min(8, self.max_length)), dtype=tf.int32)

    @tf.autograph.experimental.do_not_convert
    def checked_values(self, x: tf.Tensor) -> object:
        """Return `x`, checked inside the step, where only graph-compatible checks can run.

        Must be `tf.function`-compatible. The returned tensor depends on the assertions, so the
        model cannot read `x` first: an id outside `[0, vocab_size)` fails the step with this
        readable message instead of the embedding's `indices[i,j] = ... is not in [0, ...)` on a
        CPU, or a silent all-zero embedding on a GPU.
        """
        if isinstance(x, dict):
            return x
        message = (
            f"token ids must be in [0, config.vocab_size) = [0, {self.vocab_size}), 0 being "
            "padding; raise Config.vocab_size, or map the ids into that range in data.py"
        )
        checks = [
            tf.debugging.assert_non_negative(x, message=message),
            tf.debugging.assert_less(x, tf.constant(self.vocab_size, x.dtype), message=message),
        ]
        with tf.control_dependencies(checks):
            return tf.identity(x)

    def _castable(self, dtype: tf.DType) -> bool:
        """Integers only."""
        return dtype.is_integer

    def _array_dtype_problem(self, dtype: np.dtype) -> str:
        """Integers only: token ids."""
        if np.issubdtype(dtype, np.integer):
            return ""
        return ", but the model takes token ids; give an integer array"

    def _fix(self, spec: object, expected: tf.TensorSpec) -> str:
        """How to turn features of `spec` into token ids, for what `spec` is."""
        if isinstance(spec, tf.RaggedTensorSpec) or (
            isinstance(spec, tf.TensorSpec) and spec.shape.rank == 1
        ):
            return (
                "batch the unbatched sequences with sequences.batch_sequences in data.py, which "
                "pads them with 0 to (batch, length)"
            )
        if isinstance(spec, tf.TensorSpec) and expected.shape.is_compatible_with(spec.shape):
            return (
                "token ids must be integers, 0 for padding: if these hold whole ids, cast them "
                "with tf.cast(x, tf.int32) in data.py; map strings to ids with "
                "keras.layers.StringLookup"
            )
        return (
            "give each example one sequence of token ids, padded to (batch, length); for frames "
            "of float features, generate the project with fixed shapes or change model.py and "
            "config.py"
        )


def with_packed_features(step: Callable[..., object], spec: FeatureSpec) -> Callable[..., object]:
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


def check_feature_dict(spec: object, expected: dict[str, tf.TensorSpec], name: str) -> SpecCheck:
    """How dict features of `spec` fit the model's named inputs: per key, as is, cast, or not.

    A feature of another float dtype than its input's is cast to it, and likewise integers to
    integers (saturating); every missing key, unknown key and feature that cannot be cast is a
    problem of its own, so the error lists them all.

    Args:
        spec: The features' spec, e.g. `dataset.element_spec[0]`.
        expected: The model's inputs, from `Features.model_spec`.
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
