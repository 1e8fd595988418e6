"""The loss, the metric and the label encoding agree, and wrong labels fail fast."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import QUIET, dataset, encoder, features, labels_for, linear_model

from sequences_sparse import losses
from sequences_sparse.config import Config
from sequences_sparse.data import load_datasets
from sequences_sparse.inputs import InputSignatureError, check_features_spec, features_spec
from sequences_sparse.model import build_model
from sequences_sparse.train import Trainer, fit


def test_datasets_yield_the_declared_encoding(config: Config) -> None:
    train_ds, val_ds = load_datasets(config)
    for ds in (train_ds, val_ds):
        x, y = next(iter(ds))
        check_features_spec(tf.TensorSpec.from_tensor(x), config)
        losses.check_label_spec(tf.TensorSpec.from_tensor(y), config)
        losses.checked_label_values(y, config)


def test_loss_and_accuracy_read_the_labels_as_encoded(config: Config) -> None:
    model = linear_model(config)
    x = features(config, 64)
    right = labels_for(model, x, config, agree=True)
    wrong = labels_for(model, x, config, agree=False)
    y_pred = model(x, training=False)
    loss_fn = losses.make_loss()
    accuracy = losses.make_accuracy("acc")

    accuracy.update_state(right, y_pred)
    assert float(accuracy.result()) == 1.0
    accuracy.reset_state()
    accuracy.update_state(wrong, y_pred)
    assert float(accuracy.result()) == 0.0
    assert float(loss_fn(right, y_pred)) < float(loss_fn(wrong, y_pred))
    assert loss_fn.get_config()["from_logits"] is losses.FROM_LOGITS


def test_default_model_fits_the_loss(config: Config) -> None:
    losses.check_model_output(build_model(config), config)


def test_model_with_wrong_units_is_refused(config: Config) -> None:
    inputs, x = encoder(config)
    outputs = keras.layers.Dense(losses.output_units(config) + 1)(x)
    with pytest.raises(ValueError, match=r"give the last layer \d+ units"):
        losses.check_model_output(keras.Model(inputs, outputs), config)


def test_model_with_wrong_activation_is_refused(config: Config) -> None:
    inputs, x = encoder(config)
    activation = "sigmoid" if losses.LABEL_ENCODING == "binary" else "softmax"
    expected = "remove the activation from the last layer"
    outputs = keras.layers.Dense(losses.output_units(config), activation=activation)(x)
    with pytest.raises(ValueError, match=expected):
        losses.check_model_output(keras.Model(inputs, outputs), config)


def _wrong_labels(config: Config, num_examples: int) -> list[tuple[np.ndarray, str]]:
    """Labels in encodings this project does not use, each with the hint it must get."""
    class_ids = np.arange(num_examples) % losses.class_count(config)
    one_hot = np.eye(config.num_classes, dtype=np.float32)[class_ids]
    return [
        (one_hot, r"labels are float32 of shape \(batch, \d+\).*They look one-hot"),
        (class_ids.astype(np.int64), r"labels are int64 of shape \(batch,\).*Cast them"),
    ]


@pytest.mark.parametrize("case", [0, 1])
def test_wrongly_encoded_labels_fail_before_training(config: Config, case: int) -> None:
    labels, message = _wrong_labels(config, 40)[case]
    bad = dataset(features(config, 40), labels, 8)
    model = build_model(config)
    with pytest.raises(losses.LabelEncodingError, match=f"train_ds: {message}"):
        fit(config, model=model, train_ds=bad, options=QUIET)


def test_labels_with_impossible_values_fail_in_the_step(config: Config) -> None:
    trainer = Trainer(config, build_model(config), QUIET)
    x = tf.constant(features(config, 4))
    impossible = config.num_classes
    message = r"sparse labels must be class ids in \[0, \d+\)"
    # The loss must wait for the check: unordered, the loss kernel's own error wins some runs.
    for call in range(100):
        labels = losses.encode_labels(np.zeros(4, dtype=np.int64), config)
        labels[call % 4] = impossible
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            trainer.train_step(x, tf.constant(labels))


@pytest.mark.parametrize("wrong", ["rank", "dtype"])
def test_features_of_the_wrong_rank_or_dtype_fail_before_training(
    config: Config, wrong: str
) -> None:
    x = features(config, 16)
    labels = labels_for(linear_model(config), x, config, agree=True)
    bad_x = x[..., np.newaxis] if wrong == "rank" else x.astype(np.float64)
    # What was found, what is expected, then the fix.
    found = rf"{bad_x.dtype.name} batches of shape \(batch(, \w+)+\)"
    expected = rf"{features_spec(config).dtype.name} batches of shape \(batch(, \w+)+\)"
    fix = r"(reshape them|one sequence of token ids)" if wrong == "rank" else r"tf\.cast\(x, tf\."
    with pytest.raises(
        InputSignatureError,
        match=f"^train_ds features are {found}, but the model takes {expected}; .*{fix}",
    ):
        fit(config, train_ds=dataset(bad_x, labels, 8), options=QUIET)
