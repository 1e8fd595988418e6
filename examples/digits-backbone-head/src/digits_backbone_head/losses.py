"""Loss, accuracy and label contract for sparse labels: integer class ids of shape `(batch,)`.

The loss, the metric, the label shape, the labels' encoding and the model's output layer are
chosen together here, so they cannot disagree, and your `data.py` and `model.py` need not know
the label answer: they call `encode_labels` and `output_layer`.
Template-owned: `copier update` merges template changes into it; to change the label answer,
run `scaffold update --data labels=...` rather than editing the constants below.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from .config import Config
from .contract import Conversion, SpecCheck, cast_to, describe, fits
from .inputs import model_features_spec, probe_features

LABEL_ENCODING = "sparse"
EXPECTED = "int32 class ids of shape (batch,)"
# The mean over the batch, as `model.fit` reduces; stated rather than left to a default.
REDUCTION = "sum_over_batch_size"
FROM_LOGITS = True


def class_count(config: Config) -> int:
    """Number of classes the labels distinguish."""
    return config.num_classes


def output_units(config: Config) -> int:
    """Units the model's last layer must have."""
    return config.num_classes


def encode_labels(class_ids: np.ndarray, config: Config) -> np.ndarray:
    """Class ids `(n,)`, integers from 0, in the encoding the loss expects (`EXPECTED`)."""
    del config  # Class ids are already the encoding.
    return np.asarray(class_ids).astype(np.int32)


def output_layer(config: Config) -> keras.layers.Dense:
    """The model's last layer: `output_units(config)` units, no activation (logits).

    float32 under any dtype policy, so that a mixed precision model gives the loss float32.
    """
    return keras.layers.Dense(output_units(config), name="logits", dtype="float32")


def probabilities(outputs: tf.Tensor) -> tf.Tensor:
    """The probability of each class for each example, `(batch, num_classes)`."""
    return tf.nn.softmax(outputs, axis=-1)


def class_ids(outputs: tf.Tensor) -> tf.Tensor:
    """The predicted class id of each example, int32 `(batch,)`, from the model's outputs."""
    return tf.argmax(outputs, axis=-1, output_type=tf.int32)


def label_class_ids(y: tf.Tensor) -> tf.Tensor:
    """The class id of each label of a batch in this encoding, int32 `(batch,)`."""
    return tf.cast(y, tf.int32)


def label_spec(config: Config) -> tf.TensorSpec:
    """The labels of one batch, as the step functions' input signature declares them."""
    del config  # Class ids have no class dimension.
    return tf.TensorSpec(shape=(None,), dtype=tf.int32, name="labels")


def make_loss(reduction: str = REDUCTION) -> keras.losses.Loss:
    """The loss for these labels, averaged over the batch (the reduction `model.fit` uses).

    The training and evaluation steps take `make_loss("sum")` and divide by the examples of
    the whole batch themselves (see `steps.total_loss`): under `tf.distribute`, Keras 3's
    mean divides by the number of replicas, which is exact only when every replica gets as
    many examples.
    """
    return keras.losses.SparseCategoricalCrossentropy(from_logits=FROM_LOGITS, reduction=reduction)


def make_accuracy(name: str) -> keras.metrics.Metric:
    """The accuracy metric that reads these labels and these outputs."""
    return keras.metrics.SparseCategoricalAccuracy(name=name)


def check_labels(spec: object, config: Config, name: str = "labels") -> SpecCheck:
    """How labels of `spec` fit `label_spec(config)`: as they are, converted, or not.

    Class ids of any integer dtype (int64 is numpy's default) are cast to int32, saturating,
    so that an id too large for int32 still fails the step's range check; a `(batch, 1)`
    column of them (what `y.reshape(-1, 1)` or a one-column DataFrame gives) is flattened to
    `(batch,)`. Floats are not cast: they could be one-hot rows, probabilities or ids.

    Args:
        spec: The labels' `tf.TypeSpec`, e.g. `dataset.element_spec[1]`.
        config: The run's configuration.
        name: What the labels are called in the message, e.g. `train_ds labels`.

    Returns:
        The conversion to apply in the pipeline, if any, or the problem and its fix.
    """
    expected = label_spec(config)
    if fits(spec, expected):
        return SpecCheck()
    if not isinstance(spec, tf.TensorSpec) or spec.shape.rank is None:
        fix = "make the dataset yield (features, labels) pairs of dense tensors of known rank"
    elif spec.dtype == tf.string:
        fix = "map the strings to integer class ids in data.py, e.g. with keras.layers.StringLookup"
    else:
        accepted = _accepted(spec, expected)
        if accepted is not None:
            convert, how = accepted
            return SpecCheck(convert=convert, note=f"{name}: {describe(spec)} {how}")
        fix = _fix(spec, config)
    return SpecCheck(
        problem=(
            f"{name} are {describe(spec)}, but this project expects {LABEL_ENCODING} labels, "
            f"{EXPECTED}; {fix}"
        )
    )


def _accepted(spec: tf.TensorSpec, expected: tf.TensorSpec) -> tuple[Conversion, str] | None:
    """The conversion of integer class ids, `(batch,)` or `(batch, 1)`, and its words."""
    if not spec.dtype.is_integer:
        return None
    cast = cast_to(expected.dtype)
    if spec.shape.rank == 1:
        return cast, f"cast to {expected.dtype.name}"
    if spec.shape.rank == 2 and spec.shape[1] == 1:
        return (lambda y: cast(y[:, 0])), f"cast to {expected.dtype.name}, shape (batch,)"
    return None


def _fix(spec: tf.TensorSpec, config: Config) -> str:
    """How to turn labels of `spec`, which `_accepted` refused, into class ids."""
    rank = spec.shape.rank
    if rank == 1 or (rank == 2 and spec.shape[1] == 1):
        return (
            "class ids must be integers: if these hold whole class ids, cast them with "
            "tf.cast(y, tf.int32) in data.py"
        )
    if rank == 2 and spec.shape[1] == config.num_classes:
        return (
            "if each row is one-hot, turn the rows into class ids with "
            "tf.argmax(y, axis=-1, output_type=tf.int32) in data.py, "
            "or generate the project with --labels one-hot"
        )
    if rank == 2:
        return (
            f"give one class id per example: {spec.shape[1]} columns are neither one id nor "
            f"one-hot rows of Config.num_classes = {config.num_classes}"
        )
    return "give one class id per example, shape (batch,)"


def checked_label_values(y: tf.Tensor, config: Config) -> tf.Tensor:
    """Return `y`, checked inside the step, where only graph-compatible checks can run.

    Must be `tf.function`-compatible. The returned tensor depends on the assertions, so a
    loss computed from it cannot run first: a bad label fails the step with this readable
    message instead of a NaN loss or an opaque kernel error.
    """
    message = f"sparse labels must be class ids in [0, {config.num_classes})"
    checks = [
        tf.debugging.assert_non_negative(y, message=message),
        tf.debugging.assert_less(y, tf.constant(config.num_classes, y.dtype), message=message),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(y)


def check_model_output(model: keras.Model, config: Config) -> tf.Tensor:
    """Fail fast when the model's output does not fit the loss; return it for a probe batch.

    Checks the number of output units and that the last layer's activation matches
    `FROM_LOGITS`: a softmax or sigmoid in front of a `from_logits=True` loss trains on the
    wrong quantity without any error.

    Raises:
        ValueError: Naming the mismatch and the fix.
    """
    outputs = model(probe_features(model_features_spec(model, config), config), training=False)
    units = output_units(config)
    if tuple(outputs.shape) != (2, units):
        raise ValueError(
            f"the model outputs shape {tuple(outputs.shape[1:])} per example, but "
            f"{LABEL_ENCODING} labels need ({units},); give the last layer {units} units"
        )
    last: object = model
    while isinstance(last, keras.Model) and last.layers:
        last = last.layers[-1]  # Descend into nested models to the layer that outputs.
    activation = getattr(last, "activation", None)
    if activation is None:
        return outputs
    name = keras.activations.serialize(activation)
    name = name if isinstance(name, str) else str(name.get("config", name))
    if name in ("softmax", "sigmoid"):
        raise ValueError(
            f"the model's last layer applies {name}, but this project's loss expects logits "
            "(from_logits=True); remove the activation from the last layer"
        )
    return outputs
