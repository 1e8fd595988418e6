"""The data, the model, the loss and the metrics agree on the label encoding; labels the loss
cannot read fail in one line."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import QUIET, encoder, features, labels_for, linear_model

from digits_onehot_probs import PROJECT, data
from digits_onehot_probs.__main__ import main
from digits_onehot_probs.config import Config
from digits_onehot_probs.data import load_arrays, load_datasets, split
from digits_onehot_probs.engine.contract import SpecCheck
from digits_onehot_probs.engine.train import Trainer
from digits_onehot_probs.model import build_model


def test_datasets_yield_the_declared_encoding(config: Config) -> None:
    train_ds, val_ds = load_datasets(config)
    for ds in (train_ds, val_ds):
        x_spec, y_spec = ds.element_spec
        assert config.features.check(x_spec) == SpecCheck()
        assert config.labels.check(y_spec) == SpecCheck()
        _, y = next(iter(ds))
        config.labels.checked_values(y)


def test_the_model_standardizes_with_the_training_split_only(config: Config) -> None:
    """The model's first layer centres and scales each feature over the training split, not
    the validation split; a feature constant there (a blank pixel) is only centred."""
    features, _ = load_arrays(config)
    train = features[split(config, len(features))[0]]
    standardize = build_model(config).get_layer("standardize")
    standardized = np.asarray(standardize(train))
    np.testing.assert_allclose(standardized.mean(axis=0), 0.0, atol=1e-5)
    varying = train.std(axis=0) > 0
    np.testing.assert_allclose(standardized.std(axis=0)[varying], 1.0, rtol=1e-4)
    shifted = np.asarray(standardize(train + 1.0))  # Blank pixels that are not blank.
    np.testing.assert_allclose(shifted[:, ~varying], 1.0, rtol=1e-6)  # Centred, not divided.
    assert np.isfinite(np.asarray(standardize(features))).all()


def test_loss_and_accuracy_read_the_labels_as_encoded(config: Config) -> None:
    model = linear_model(config)
    x = features(config, 64)
    right = labels_for(model, x, config, agree=True)
    wrong = labels_for(model, x, config, agree=False)
    y_pred = model(x, training=False)
    loss_fn = config.labels.make_loss()
    accuracy = config.labels.make_accuracy("acc")

    accuracy.update_state(right, y_pred)
    assert float(accuracy.result()) == 1.0
    accuracy.reset_state()
    accuracy.update_state(wrong, y_pred)
    assert float(accuracy.result()) == 0.0
    assert float(loss_fn(right, y_pred)) < float(loss_fn(wrong, y_pred))
    assert loss_fn.get_config()["from_logits"] is False


def test_default_model_fits_the_loss(config: Config) -> None:
    config.labels.check_model_output(build_model(config), config.features)


def test_model_with_wrong_units_is_refused(config: Config) -> None:
    inputs, x = encoder(config)
    outputs = keras.layers.Dense(config.labels.output_units + 1)(x)
    with pytest.raises(ValueError, match=r"give the last layer \d+ units"):
        config.labels.check_model_output(keras.Model(inputs, outputs), config.features)


def test_model_with_wrong_activation_is_refused(config: Config) -> None:
    inputs, x = encoder(config)
    activation = None
    expected = f"give the last layer a {config.labels.output_activation} activation"
    outputs = keras.layers.Dense(config.labels.output_units, activation=activation)(x)
    with pytest.raises(ValueError, match=expected):
        config.labels.check_model_output(keras.Model(inputs, outputs), config.features)


def test_labels_with_impossible_values_fail_in_the_step(config: Config) -> None:
    trainer = Trainer(PROJECT, config, build_model(config), QUIET)
    x = tf.constant(features(config, 4))
    impossible = 0.5
    message = "one-hot labels must be rows of values in"
    # The loss must wait for the check: unordered, the loss kernel's own error wins some runs.
    for call in range(100):
        labels = config.labels.encode(np.zeros(4, dtype=np.int64))
        labels[call % 4] = impossible
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            trainer.train_step(x, tf.constant(labels))


@pytest.mark.slow
def test_labels_with_impossible_values_fail_in_one_line_on_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    original = data.load_datasets
    message = "one-hot labels must be rows of values in [0, 1] that sum to 1"

    def impossible(config: Config) -> tuple[tf.data.Dataset, tf.data.Dataset]:
        train_ds, val_ds = original(config)
        return train_ds.map(lambda x, y: (x, y * 0.5)), val_ds

    monkeypatch.setattr(data, "load_datasets", impossible)
    assert main(["train", "--epochs", "1", "--quiet", "--logdir", str(tmp_path / "run")]) == 2
    prog = "python -m digits_onehot_probs"
    assert capsys.readouterr().err == (
        f"{prog} train: error: train_ds does not fit this project: {message}\n"
    )
