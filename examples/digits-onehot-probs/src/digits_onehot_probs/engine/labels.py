"""Label encodings: the loss, the metric, the label contract and the output layer, together.

One `Labels` object chooses the loss, the accuracy, the labels' spec and encoding, and the
model's output layer together, so they cannot disagree: `SparseLabels` (integer class ids of
shape `(batch,)`), `OneHotLabels` (rows of shape `(batch, num_classes)`) and `BinaryLabels`
(0/1 floats of shape `(batch, 1)`), each on logits or on probabilities. The project's
`Config.labels` says which; `data.py` and `model.py` call its `encode` and `output_layer`
and need not know the encoding.

Template-owned: `copier update` merges template changes into it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import keras
import numpy as np
import tensorflow as tf

from .contract import Conversion, SpecCheck, cast_to, describe, fits

# The mean over the batch, as `model.fit` reduces; stated rather than left to a default.
REDUCTION = "sum_over_batch_size"


class Probe(Protocol):
    """What makes a probe batch for a model: the project's features (`features.Features`)."""

    def probe(self, model: keras.Model) -> object:
        """A batch of two examples that `model` takes."""
        ...


class Labels:
    """The base of the encodings: what they share; subclasses give the rest.

    Attributes:
        encoding: The encoding's name, e.g. `sparse`, as messages name it.
        expected: The labels the steps take, in words, e.g. `int32 class ids of shape (batch,)`.
        from_logits: Whether the model outputs logits (no activation) or probabilities.
        output_activation: The last layer's activation when the model outputs probabilities.
        class_count: Number of classes the labels distinguish.
        output_units: Units the model's last layer must have.
    """

    encoding = ""
    expected = ""
    output_activation = "softmax"

    def __init__(self, num_classes: int, from_logits: bool = True) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes={num_classes} is invalid; use 2 or more")
        self.num_classes = num_classes
        self.from_logits = from_logits

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.num_classes}, from_logits={self.from_logits})"

    @property
    def class_count(self) -> int:
        """Number of classes the labels distinguish."""
        return self.num_classes

    @property
    def output_units(self) -> int:
        """Units the model's last layer must have."""
        return self.num_classes

    @property
    def spec(self) -> tf.TensorSpec:
        """The labels of one batch, as the step functions' input signature declares them."""
        raise NotImplementedError

    def encode(self, class_ids: np.ndarray) -> np.ndarray:
        """Class ids `(n,)`, integers from 0, in the encoding the loss expects (`expected`)."""
        raise NotImplementedError

    def output_layer(self) -> keras.layers.Dense:
        """The model's last layer: `output_units` units, named `logits` or `probabilities`.

        No activation on logits, else `output_activation`. float32 under any dtype policy, so
        that a mixed precision model gives the loss float32.
        """
        if self.from_logits:
            return keras.layers.Dense(self.output_units, name="logits", dtype="float32")
        return keras.layers.Dense(
            self.output_units,
            activation=self.output_activation,
            name="probabilities",
            dtype="float32",
        )

    def probabilities(self, outputs: tf.Tensor) -> tf.Tensor:
        """The probability of each class for each example, `(batch, num_classes)`."""
        if self.from_logits:
            return tf.nn.softmax(outputs, axis=-1)
        return tf.convert_to_tensor(outputs)

    def class_ids(self, outputs: tf.Tensor) -> tf.Tensor:
        """The predicted class id of each example, int32 `(batch,)`, from the model's outputs."""
        return tf.argmax(outputs, axis=-1, output_type=tf.int32)

    def label_class_ids(self, y: tf.Tensor) -> tf.Tensor:
        """The class id of each label of a batch in this encoding, int32 `(batch,)`."""
        raise NotImplementedError

    def make_loss(self, reduction: str = REDUCTION) -> keras.losses.Loss:
        """The loss for these labels, averaged over the batch (the reduction `model.fit` uses).

        The training and evaluation steps take `make_loss("sum")` and divide by the examples of
        the whole batch themselves (see `steps.total_loss`): under `tf.distribute`, Keras 3's
        mean divides by the number of replicas, which is exact only when every replica gets as
        many examples.
        """
        raise NotImplementedError

    def make_accuracy(self, name: str) -> keras.metrics.Metric:
        """The accuracy metric that reads these labels and these outputs."""
        raise NotImplementedError

    def check(self, spec: object, name: str = "labels") -> SpecCheck:
        """How labels of element spec `spec` fit `self.spec`: as they are, converted, or not.

        Args:
            spec: The labels' `tf.TypeSpec`, e.g. `dataset.element_spec[1]`.
            name: What the labels are called in the message, e.g. `train_ds labels`.

        Returns:
            The conversion to apply in the pipeline, if any, or the problem and its fix.
        """
        expected = self.spec
        if fits(spec, expected):
            return SpecCheck()
        if not isinstance(spec, tf.TensorSpec) or spec.shape.rank is None:
            fix = "make the dataset yield (features, labels) pairs of dense tensors of known rank"
        elif spec.dtype == tf.string:
            fix = (
                "map the strings to integer class ids in data.py, e.g. with "
                "keras.layers.StringLookup"
            )
        else:
            accepted = self._accepted(spec, expected)
            if accepted is not None:
                convert, how = accepted
                return SpecCheck(convert=convert, note=f"{name}: {describe(spec)} {how}")
            fix = self._fix(spec)
        return SpecCheck(
            problem=(
                f"{name} are {describe(spec)}, but this project expects {self.encoding} labels, "
                f"{self.expected}; {fix}"
            )
        )

    def _accepted(
        self, spec: tf.TensorSpec, expected: tf.TensorSpec
    ) -> tuple[Conversion, str] | None:
        """The conversion of labels of `spec` into `expected`, and its words; `None` if none."""
        raise NotImplementedError

    def _fix(self, spec: tf.TensorSpec) -> str:
        """How to turn labels of `spec`, which `_accepted` refused, into this encoding."""
        raise NotImplementedError

    @tf.autograph.experimental.do_not_convert
    def checked_values(self, y: tf.Tensor) -> tf.Tensor:
        """Return `y`, checked inside the step, where only graph-compatible checks can run.

        Must be `tf.function`-compatible. The returned tensor depends on the assertions, so a
        loss computed from it cannot run first: a bad label fails the step with this readable
        message instead of a NaN loss or an opaque kernel error.
        """
        with tf.control_dependencies(self._value_checks(y)):
            return tf.identity(y)

    def _value_checks(self, y: tf.Tensor) -> list[tf.Operation]:
        """The assertions on the values of `y` that `checked_values` runs first."""
        raise NotImplementedError

    def check_model_output(
        self,
        model: keras.Model,
        features: Probe,
        primary_output: Callable[[Any], Any] | None = None,
    ) -> tf.Tensor:
        """Fail fast when the model's output does not fit the loss; return it for a probe batch.

        Checks the number of output units and that the activation of the layer that outputs
        matches `from_logits`: a softmax or sigmoid in front of a `from_logits=True` loss trains
        on the wrong quantity without any error.

        Args:
            model: The model to check.
            features: What makes a probe batch the model takes (`Config.features`).
            primary_output: Picks the output the loss reads from the model's outputs (the
                task's `primary_output`); all of them by default.

        Raises:
            ValueError: Naming the mismatch and the fix.
        """
        select = (lambda outputs: outputs) if primary_output is None else primary_output
        outputs = select(model(features.probe(model), training=False))
        if not isinstance(outputs, tf.Tensor):
            raise ValueError(
                f"the model outputs {type(outputs).__name__}, but the loss takes one tensor; "
                "pick the output it reads in the task's primary_output"
            )
        units = self.output_units
        if tuple(outputs.shape) != (2, units):
            raise ValueError(
                f"the model outputs shape {tuple(outputs.shape[1:])} per example, but "
                f"{self.encoding} labels need ({units},); give the last layer {units} units"
            )
        last = _output_layer(model, select)
        activation = getattr(last, "activation", None)
        if activation is None:
            return outputs
        name = keras.activations.serialize(activation)
        name = name if isinstance(name, str) else str(name.get("config", name))
        if self.from_logits and name in ("softmax", "sigmoid"):
            raise ValueError(
                f"the model's last layer applies {name}, but this project's loss expects logits "
                "(from_logits=True); remove the activation from the last layer"
            )
        if not self.from_logits and name != self.output_activation:
            raise ValueError(
                f"the model's last layer applies {name}, but this project's loss expects "
                f"probabilities (from_logits=False); give the last layer a "
                f"{self.output_activation} activation"
            )
        return outputs


class SparseLabels(Labels):
    """Integer class ids of shape `(batch,)`: sparse categorical cross-entropy.

    `check` casts class ids of any integer dtype (int64 is numpy's default) to int32,
    saturating, so that an id too large for int32 still fails the step's range check, and
    flattens a `(batch, 1)` column of them (what `y.reshape(-1, 1)` or a one-column DataFrame
    gives) to `(batch,)`. Floats are not cast: they could be one-hot rows, probabilities or ids.
    """

    encoding = "sparse"
    expected = "int32 class ids of shape (batch,)"

    @property
    def spec(self) -> tf.TensorSpec:
        """Class ids, int32 `(batch,)`; they have no class dimension."""
        return tf.TensorSpec(shape=(None,), dtype=tf.int32, name="labels")

    def encode(self, class_ids: np.ndarray) -> np.ndarray:
        """Class ids `(n,)` as int32: class ids are already the encoding."""
        return np.asarray(class_ids).astype(np.int32)

    def label_class_ids(self, y: tf.Tensor) -> tf.Tensor:
        """The class id of each label of a batch, int32 `(batch,)`."""
        return tf.cast(y, tf.int32)

    def make_loss(self, reduction: str = REDUCTION) -> keras.losses.Loss:
        """Sparse categorical cross-entropy; see `Labels.make_loss`."""
        return keras.losses.SparseCategoricalCrossentropy(
            from_logits=self.from_logits, reduction=reduction
        )

    def make_accuracy(self, name: str) -> keras.metrics.Metric:
        """Sparse categorical accuracy."""
        return keras.metrics.SparseCategoricalAccuracy(name=name)

    def _accepted(
        self, spec: tf.TensorSpec, expected: tf.TensorSpec
    ) -> tuple[Conversion, str] | None:
        """The conversion of integer class ids, `(batch,)` or `(batch, 1)`, and its words."""
        if not spec.dtype.is_integer:
            return None
        cast = cast_to(expected.dtype)
        if spec.shape.rank == 1:
            return cast, f"cast to {expected.dtype.name}"
        if spec.shape.rank == 2 and spec.shape[1] == 1:
            return (lambda y: cast(y[:, 0])), f"cast to {expected.dtype.name}, shape (batch,)"
        return None

    def _fix(self, spec: tf.TensorSpec) -> str:
        """How to turn labels of `spec`, which `_accepted` refused, into class ids."""
        rank = spec.shape.rank
        if rank == 1 or (rank == 2 and spec.shape[1] == 1):
            return (
                "class ids must be integers: if these hold whole class ids, cast them with "
                "tf.cast(y, tf.int32) in data.py"
            )
        if rank == 2 and spec.shape[1] == self.num_classes:
            return (
                "if each row is one-hot, turn the rows into class ids with "
                "tf.argmax(y, axis=-1, output_type=tf.int32) in data.py, "
                "or generate the project with --labels one-hot"
            )
        if rank == 2:
            return (
                f"give one class id per example: {spec.shape[1]} columns are neither one id nor "
                f"one-hot rows of Config.num_classes = {self.num_classes}"
            )
        return "give one class id per example, shape (batch,)"

    def _value_checks(self, y: tf.Tensor) -> list[tf.Operation]:
        """Every id in `[0, num_classes)`."""
        message = f"sparse labels must be class ids in [0, {self.num_classes})"
        return [
            tf.debugging.assert_non_negative(y, message=message),
            tf.debugging.assert_less(y, tf.constant(self.num_classes, y.dtype), message=message),
        ]


class OneHotLabels(Labels):
    """Float32 one-hot rows of shape `(batch, num_classes)`: categorical cross-entropy.

    `check` casts rows of `num_classes` values of any integer or float dtype to float32. Class
    ids are not converted: `tf.one_hot` would make an out-of-range id an all-zero row.
    """

    encoding = "one-hot"
    expected = "float32 one-hot rows of shape (batch, num_classes)"

    @property
    def spec(self) -> tf.TensorSpec:
        """One-hot rows, float32 `(batch, num_classes)`."""
        return tf.TensorSpec(shape=(None, self.num_classes), dtype=tf.float32, name="labels")

    def encode(self, class_ids: np.ndarray) -> np.ndarray:
        """Class ids `(n,)` as float32 one-hot rows `(n, num_classes)`."""
        return np.eye(self.num_classes, dtype=np.float32)[np.asarray(class_ids)]

    def label_class_ids(self, y: tf.Tensor) -> tf.Tensor:
        """The class id of each row of a batch, int32 `(batch,)`."""
        return tf.argmax(y, axis=-1, output_type=tf.int32)

    def make_loss(self, reduction: str = REDUCTION) -> keras.losses.Loss:
        """Categorical cross-entropy; see `Labels.make_loss`."""
        return keras.losses.CategoricalCrossentropy(
            from_logits=self.from_logits, reduction=reduction
        )

    def make_accuracy(self, name: str) -> keras.metrics.Metric:
        """Categorical accuracy."""
        return keras.metrics.CategoricalAccuracy(name=name)

    def _accepted(
        self, spec: tf.TensorSpec, expected: tf.TensorSpec
    ) -> tuple[Conversion, str] | None:
        """The conversion of one-hot rows of any number dtype, and its words."""
        if (spec.dtype.is_integer or spec.dtype.is_floating) and expected.shape.is_compatible_with(
            spec.shape
        ):
            return cast_to(expected.dtype), f"cast to {expected.dtype.name}"
        return None

    def _fix(self, spec: tf.TensorSpec) -> str:
        """How to turn labels of `spec`, which `_accepted` refused, into one-hot rows."""
        rank = spec.shape.rank
        if rank == 1 or (rank == 2 and spec.shape[1] == 1):
            ids = "y" if rank == 1 else "y[:, 0]"
            if not spec.dtype.is_integer:
                ids = f"tf.cast({ids}, tf.int32)"
            return (
                f"if these are class ids, turn them into one-hot rows with "
                f"tf.one_hot({ids}, {self.num_classes}) in data.py, "
                "or generate the project with --labels sparse"
            )
        if rank == 2:
            return (
                f"give one row of Config.num_classes = {self.num_classes} values per example, "
                f"not {spec.shape[1]}; or change Config.num_classes"
            )
        return f"give one one-hot row per example, shape (batch, {self.num_classes})"

    def _value_checks(self, y: tf.Tensor) -> list[tf.Operation]:
        """Rows of values in [0, 1] that sum to 1 (the shape check pinned their length)."""
        message = "one-hot labels must be rows of values in [0, 1] that sum to 1"
        return [
            tf.debugging.assert_non_negative(y, message=message),
            tf.debugging.assert_near(
                tf.reduce_sum(y, axis=-1), tf.ones_like(y[:, 0]), atol=1e-3, message=message
            ),
        ]


class BinaryLabels(Labels):
    """Float32 0/1 labels of shape `(batch, 1)`: binary cross-entropy on one output unit.

    `check` casts 0/1 labels of shape `(batch,)` or `(batch, 1)`, as bool, integers or floats,
    to float32 `(batch, 1)`; the step checks that each is 0 or 1.

    Attributes:
        threshold: The output above which the predicted class is 1: 0.0 on logits (a logit of
            0 is a probability of 0.5), else 0.5.
    """

    encoding = "binary"
    expected = "float32 0/1 labels of shape (batch, 1)"
    output_activation = "sigmoid"

    def __init__(self, from_logits: bool = True) -> None:
        super().__init__(2, from_logits)
        self.threshold = 0.0 if from_logits else 0.5

    def __repr__(self) -> str:
        return f"BinaryLabels(from_logits={self.from_logits})"

    @property
    def output_units(self) -> int:
        """One logit or probability, of class 1."""
        return 1

    @property
    def spec(self) -> tf.TensorSpec:
        """One 0/1 column, float32 `(batch, 1)`."""
        return tf.TensorSpec(shape=(None, 1), dtype=tf.float32, name="labels")

    def encode(self, class_ids: np.ndarray) -> np.ndarray:
        """Class ids `(n,)`, 0 or 1, as one float32 column `(n, 1)`."""
        return np.asarray(class_ids).astype(np.float32).reshape(-1, 1)

    def probabilities(self, outputs: tf.Tensor) -> tf.Tensor:
        """The probability of class 1 for each example, `(batch, 1)`, from the model's outputs."""
        if self.from_logits:
            return tf.sigmoid(outputs)
        return tf.convert_to_tensor(outputs)

    def class_ids(self, outputs: tf.Tensor) -> tf.Tensor:
        """The predicted class id of each example, int32 `(batch,)`, from the model's outputs."""
        return tf.cast(outputs[:, 0] > self.threshold, tf.int32)

    def label_class_ids(self, y: tf.Tensor) -> tf.Tensor:
        """The class id of each label of a batch, int32 `(batch,)`."""
        return tf.cast(y[:, 0] > 0.5, tf.int32)

    def make_loss(self, reduction: str = REDUCTION) -> keras.losses.Loss:
        """Binary cross-entropy; see `Labels.make_loss`."""
        return keras.losses.BinaryCrossentropy(from_logits=self.from_logits, reduction=reduction)

    def make_accuracy(self, name: str) -> keras.metrics.Metric:
        """Binary accuracy at `threshold`."""
        return keras.metrics.BinaryAccuracy(name=name, threshold=self.threshold)

    def _accepted(
        self, spec: tf.TensorSpec, expected: tf.TensorSpec
    ) -> tuple[Conversion, str] | None:
        """The conversion of 0/1 labels, `(batch,)` or `(batch, 1)`, bools or numbers; its words."""
        if not (spec.dtype.is_integer or spec.dtype.is_floating or spec.dtype == tf.bool):
            return None
        cast = cast_to(expected.dtype)
        how = [] if spec.dtype == expected.dtype else [f"cast to {expected.dtype.name}"]
        if spec.shape.rank == 1:
            how.append("reshaped to (batch, 1)")
            return (lambda y: tf.reshape(cast(y), (-1, 1))), ", ".join(how)
        if spec.shape.rank == 2 and spec.shape[1] == 1:
            return cast, ", ".join(how)
        return None

    def _fix(self, spec: tf.TensorSpec) -> str:
        """How to turn labels of `spec`, which `_accepted` refused, into one 0/1 label each."""
        if spec.shape.rank == 2 and spec.shape[1] == 2:
            return (
                "if each row is one-hot over (class 0, class 1), keep the class-1 column with "
                "y[:, 1:] in data.py"
            )
        return "give one 0/1 label per example, shape (batch,) or (batch, 1)"

    def _value_checks(self, y: tf.Tensor) -> list[tf.Operation]:
        """Every label 0.0 or 1.0."""
        is_binary = tf.logical_or(tf.equal(y, 0.0), tf.equal(y, 1.0))
        return [
            tf.debugging.assert_equal(
                tf.reduce_all(is_binary), True, message="binary labels must be 0.0 or 1.0"
            )
        ]


def _output_layer(model: keras.Model, select: Callable[[Any], Any]) -> object:
    """The layer that computes `select` of the model's outputs, inside nested models.

    For a functional model with several outputs, the layer behind the selected symbolic
    output; otherwise the last layer, as for a model with one output.
    """
    last: object = model
    try:
        symbolic = model.output
    except (AttributeError, ValueError):  # Not built on keras.Input.
        symbolic = None
    if symbolic is not None and not isinstance(symbolic, keras.KerasTensor):
        history = getattr(select(symbolic), "_keras_history", None)
        if history is not None:
            last = history.operation
    while isinstance(last, keras.Model) and last.layers:
        last = last.layers[-1]  # Descend into nested models to the layer that outputs.
    return last
