"""Loss, accuracy and label contract for binary labels: 0/1 floats of shape `(batch, 1)`.

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

LABEL_ENCODING = "binary"
EXPECTED = "float32 0/1 labels of shape (batch, 1)"
# The mean over the batch, as `model.fit` reduces; stated rather than left to a default.
REDUCTION = "sum_over_batch_size"
FROM_LOGITS = True
THRESHOLD = 0.0  # A logit of 0 is a probability of 0.5.


def class_count(config: Config) -> int:
    """Number of classes the labels distinguish."""
    del config  # Two classes, whatever the config.
    return 2


def output_units(config: Config) -> int:
    """Units the model's last layer must have."""
    del config  # One logit or probability, whatever the config.
    return 1


def encode_labels(class_ids: np.ndarray, config: Config) -> np.ndarray:
    """Class ids `(n,)`, integers from 0, in the encoding the loss expects (`EXPECTED`)."""
    del config  # One 0/1 column, whatever the config.
    return np.asarray(class_ids).astype(np.float32).reshape(-1, 1)


def output_layer(config: Config) -> keras.layers.Dense:
    """The model's last layer: `output_units(config)` units, no activation (logits).

    float32 under any dtype policy, so that a mixed precision model gives the loss float32.
    """
    return keras.layers.Dense(output_units(config), name="logits", dtype="float32")


def probabilities(outputs: tf.Tensor) -> tf.Tensor:
    """The probability of class 1 for each example, `(batch, 1)`, from the model's outputs."""
    return tf.sigmoid(outputs)


def class_ids(outputs: tf.Tensor) -> tf.Tensor:
    """The predicted class id of each example, int32 `(batch,)`, from the model's outputs."""
    return tf.cast(outputs[:, 0] > THRESHOLD, tf.int32)


def label_class_ids(y: tf.Tensor) -> tf.Tensor:
    """The class id of each label of a batch in this encoding, int32 `(batch,)`."""
    return tf.cast(y[:, 0] > 0.5, tf.int32)


def label_spec(config: Config) -> tf.TensorSpec:
    """The labels of one batch, as the step functions' input signature declares them."""
    del config  # One column, whatever the config.
    return tf.TensorSpec(shape=(None, 1), dtype=tf.float32, name="labels")


def make_loss(reduction: str = REDUCTION) -> keras.losses.Loss:
    """The loss for these labels, averaged over the batch (the reduction `model.fit` uses).

    The training and evaluation steps take `make_loss("sum")` and divide by the examples of
    the whole batch themselves (see `steps.total_loss`): under `tf.distribute`, Keras 3's
    mean divides by the number of replicas, which is exact only when every replica gets as
    many examples.
    """
    return keras.losses.BinaryCrossentropy(from_logits=FROM_LOGITS, reduction=reduction)


def make_accuracy(name: str) -> keras.metrics.Metric:
    """The accuracy metric that reads these labels and these outputs."""
    return keras.metrics.BinaryAccuracy(name=name, threshold=THRESHOLD)


def check_labels(spec: object, config: Config, name: str = "labels") -> SpecCheck:
    """How labels of `spec` fit `label_spec(config)`: as they are, converted, or not.

    0/1 labels of shape `(batch,)` or `(batch, 1)`, as bool, integers or floats, are cast to
    float32 `(batch, 1)`; the step checks that each is 0 or 1.

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
    """The conversion of 0/1 labels, `(batch,)` or `(batch, 1)`, bool or numbers, and its words."""
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


def _fix(spec: tf.TensorSpec, config: Config) -> str:
    """How to turn labels of `spec`, which `_accepted` refused, into one 0/1 label each."""
    del config  # One column, whatever the config.
    if spec.shape.rank == 2 and spec.shape[1] == 2:
        return (
            "if each row is one-hot over (class 0, class 1), keep the class-1 column with "
            "y[:, 1:] in data.py"
        )
    return "give one 0/1 label per example, shape (batch,) or (batch, 1)"


def checked_label_values(y: tf.Tensor, config: Config) -> tf.Tensor:
    """Return `y`, checked inside the step, where only graph-compatible checks can run.

    Must be `tf.function`-compatible. The returned tensor depends on the assertions, so a
    loss computed from it cannot run first: a bad label fails the step with this readable
    message instead of a NaN loss or an opaque kernel error.
    """
    del config  # Binary labels have one column whatever the config.
    is_binary = tf.logical_or(tf.equal(y, 0.0), tf.equal(y, 1.0))
    checks = [
        tf.debugging.assert_equal(
            tf.reduce_all(is_binary), True, message="binary labels must be 0.0 or 1.0"
        )
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
