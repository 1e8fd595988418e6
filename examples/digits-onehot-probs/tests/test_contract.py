"""The loss, the metric and the label encoding agree; datasets are converted or refused with a
fix that, followed literally, trains on the same batches."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import (
    QUIET,
    dataset,
    dict_features,
    encoder,
    features,
    labels_for,
    linear_model,
    traced_once_per_phase,
    two_input_model,
)

from digits_onehot_probs import PROJECT, data
from digits_onehot_probs.__main__ import main
from digits_onehot_probs.config import Config
from digits_onehot_probs.data import load_arrays, load_datasets, split
from digits_onehot_probs.engine.contract import DatasetError, SpecCheck
from digits_onehot_probs.engine.train import Trainer, fit
from digits_onehot_probs.model import build_model
from digits_onehot_probs.task import build_task


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


# Forms of the features and the labels, each made from the canonical arrays: features as
# `helpers.features` makes them and class ids.
Form = Callable[[np.ndarray, np.ndarray, Config], tuple[np.ndarray, np.ndarray]]
FEATURES_ACCEPTED = "float64"


def _other_features(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float64)


def _canonical(x: np.ndarray, ids: np.ndarray, config: Config) -> tuple[np.ndarray, np.ndarray]:
    return x, config.labels.encode(ids)


ACCEPTED: dict[str, Form] = {
    "float64 rows": lambda x, ids, c: (x, np.eye(c.num_classes)[ids]),
    "int64 rows": lambda x, ids, c: (x, np.eye(c.num_classes, dtype=np.int64)[ids]),
    f"{FEATURES_ACCEPTED} features": lambda x, ids, c: (
        _other_features(x),
        c.labels.encode(ids),
    ),
}
REFUSED: dict[str, Form] = {
    "int ids (batch,)": lambda x, ids, c: (x, ids.astype(np.int32)),
    "int ids (batch, 1)": lambda x, ids, c: (x, ids.reshape(-1, 1)),
    "float ids (batch,)": lambda x, ids, c: (x, ids.astype(np.float32)),
}
REFUSED["int features"] = lambda x, ids, c: ((x * 10).astype(np.int32), *_canonical(x, ids, c)[1:])
REFUSED["an extra axis"] = lambda x, ids, c: (x[..., np.newaxis], *_canonical(x, ids, c)[1:])


def _arrays(config: Config, num_examples: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Canonical features and class ids that cover every class."""
    return features(config, num_examples), np.arange(num_examples) % config.labels.class_count


def _batches(ds: tf.data.Dataset) -> list[tuple[np.ndarray, ...]]:
    return [tuple(part.numpy() for part in batch) for batch in ds]


def _assert_same_batches(ds: tf.data.Dataset, expected: tf.data.Dataset) -> None:
    assert ds.element_spec == expected.element_spec
    assert ds.cardinality() == expected.cardinality()
    for batch, want in zip(_batches(ds), _batches(expected), strict=True):
        for part, want_part in zip(batch, want, strict=True):
            np.testing.assert_array_equal(part, want_part)


def follow_hint(message: str, part: str, value: tf.Tensor) -> tf.Tensor:
    """Apply the conversion the error's line about `part` tells to apply, literally.

    The code between `with` and `in data.py` is evaluated with `x`, `y` or `w` (the
    features, the labels or the sample weights) bound to `value`; `value` is returned as it is
    when no line is about `part`.
    """
    lines = [line for line in message.splitlines() if f"train_ds {part} are" in line]
    if not lines:
        return value
    code = re.search(r" with (.+?) in data\.py", lines[0])
    assert code is not None, lines[0]
    name = {"features": "x", "labels": "y", "sample weights": "w"}[part]
    return eval(code.group(1), {"tf": tf}, {name: value})


@pytest.mark.parametrize("form", list(ACCEPTED))
def test_accepted_forms_reach_the_step_as_the_canonical_batches(config: Config, form: str) -> None:
    x, ids = _arrays(config)
    task = build_task(linear_model(config), config, QUIET)
    prepared = task.prepare_dataset(dataset(*ACCEPTED[form](x, ids, config), 8), "train_ds")
    _assert_same_batches(prepared, dataset(*_canonical(x, ids, config), 8))


def test_an_accepted_form_trains_as_the_canonical_one(config: Config) -> None:
    x, ids = _arrays(config)
    weights = []
    for form in (_canonical, *ACCEPTED.values()):
        keras.utils.set_random_seed(config.seed)
        trainer = Trainer(PROJECT, config, linear_model(config), QUIET)
        prepared = trainer.task.prepare_dataset(dataset(*form(x, ids, config), 16), "train_ds")
        trainer.train_step(*next(iter(prepared)))
        weights.append([w.numpy() for w in trainer.model.weights])
        if len(weights) == 2:
            break  # One accepted form trains: the test above shows the others are the same.
    for got, want in zip(weights[1], weights[0], strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("form", list(REFUSED))
def test_following_the_hint_of_a_refused_form_gives_the_canonical_batches(
    config: Config, form: str
) -> None:
    x, ids = _arrays(config)
    task = build_task(linear_model(config), config, QUIET)
    bad = dataset(*REFUSED[form](x, ids, config), 8)
    with pytest.raises(DatasetError) as error:
        task.prepare_dataset(bad, "train_ds")
    message = str(error.value)
    assert len(error.value.problems) == 1, message
    fixed = bad.map(
        lambda x, y: (follow_hint(message, "features", x), follow_hint(message, "labels", y))
    )
    expected_x, expected_y = _canonical(x, ids, config)
    if form == "int features":
        expected_x = (x * 10).astype(np.int32).astype(np.float32)
    _assert_same_batches(
        task.prepare_dataset(fixed, "train_ds"), dataset(expected_x, expected_y, 8)
    )


def test_every_problem_is_reported_at_once_and_the_hints_lead_to_training(config: Config) -> None:
    x, ids = _arrays(config, 32)
    _, bad_y = next(iter(REFUSED.values()))(x, ids, config)
    bad_x, _ = list(REFUSED.values())[-1](x, ids, config)
    bad = dataset(bad_x, bad_y, 8)
    with pytest.raises(DatasetError) as error:
        fit(PROJECT, config, model=linear_model(config), train_ds=bad, options=QUIET)
    message = str(error.value)
    assert message.startswith("train_ds does not fit this project (2 problems):\n"), message
    assert [line.split(" are ")[0] for line in message.splitlines()[1:]] == [
        "  - train_ds features",
        "  - train_ds labels",
    ]
    fixed = bad.map(
        lambda x, y: (follow_hint(message, "features", x), follow_hint(message, "labels", y))
    )
    followed = np.concatenate([y for _, y in _batches(fixed)])
    np.testing.assert_array_equal(followed, config.labels.encode(ids))
    config = dataclasses.replace(config, epochs=1)
    history = fit(PROJECT, config, model=linear_model(config), train_ds=fixed, options=QUIET)
    # Labels of every class, and a model that has seen them once: far from a perfect score.
    assert history.history["accuracy"][-1] < 1.0
    assert np.isfinite(history.history["loss"]).all()


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


# Forms of sample weights, each made from canonical float32 weights `(batch,)` of whole numbers.
WEIGHTS_ACCEPTED: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "float64 (batch,)": lambda w: w.astype(np.float64),
    "int64 (batch, 1)": lambda w: w.astype(np.int64).reshape(-1, 1),
    "float16 (batch,)": lambda w: w.astype(np.float16),
}


def _weighted(x: np.ndarray, y: np.ndarray, w: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """Batches of `(x, y, w)` in order."""
    return tf.data.Dataset.from_tensor_slices((x, y, w)).batch(batch_size)


def _weights(num_examples: int) -> np.ndarray:
    """Canonical sample weights: 0, 1, 2, 0, 1, 2, ..."""
    return (np.arange(num_examples) % 3).astype(np.float32)


@pytest.mark.parametrize("form", list(WEIGHTS_ACCEPTED))
def test_accepted_sample_weights_reach_the_step_as_float32_per_example(
    config: Config, form: str
) -> None:
    x, ids = _arrays(config)
    y, w = config.labels.encode(ids), _weights(len(ids))
    task = build_task(linear_model(config), config, QUIET)
    given = _weighted(x, y, WEIGHTS_ACCEPTED[form](w), 8)
    _assert_same_batches(task.prepare_dataset(given, "train_ds"), _weighted(x, y, w, 8))


def test_following_the_hint_for_string_sample_weights_gives_the_canonical_batches(
    config: Config,
) -> None:
    x, ids = _arrays(config)
    y, w = config.labels.encode(ids), _weights(len(ids))
    task = build_task(linear_model(config), config, QUIET)
    bad = _weighted(x, y, w.astype(str), 8)
    with pytest.raises(DatasetError) as error:
        task.prepare_dataset(bad, "train_ds")
    message = str(error.value)
    assert len(error.value.problems) == 1, message
    fixed = bad.map(lambda x, y, w: (x, y, follow_hint(message, "sample weights", w)))
    _assert_same_batches(task.prepare_dataset(fixed, "train_ds"), _weighted(x, y, w, 8))


def test_every_problem_of_a_weighted_dataset_is_reported_at_once(config: Config) -> None:
    x, ids = _arrays(config)
    bad_x, bad_y = next(iter(REFUSED.values()))(x, ids, config)
    two_columns = np.stack([_weights(len(ids))] * 2, axis=1)  # Which one is the weight?
    with pytest.raises(DatasetError) as error:
        bad = _weighted(bad_x, bad_y, two_columns, 8)
        fit(PROJECT, config, model=linear_model(config), train_ds=bad, options=QUIET)
    problems = error.value.problems
    assert [problem.split(" are ")[0] for problem in problems][-1] == "train_ds sample weights"
    assert "give one weight per example" in problems[-1]
    assert len(problems) == 1 + len(set(problem.split(" are ")[0] for problem in problems[:-1]))


def test_class_weight_weighs_each_training_example_by_its_class(config: Config) -> None:
    x, ids = _arrays(config)
    y = config.labels.encode(ids)
    last = config.labels.class_count - 1
    task = build_task(linear_model(config), config, QUIET)
    prepared = task.prepare_dataset(dataset(x, y, 8), "train_ds", {0: 4.0, last: 0.5})
    expected = np.ones(len(ids), dtype=np.float32)  # Classes the mapping omits weigh 1.
    expected[ids == 0], expected[ids == last] = 4.0, 0.5
    _assert_same_batches(prepared, _weighted(x, y, expected, 8))


def test_class_weight_with_sample_weights_is_refused_and_the_hint_trains(config: Config) -> None:
    x, ids = _arrays(config)
    y, w = config.labels.encode(ids), _weights(len(ids))
    class_weight = {0: 4.0}
    config = dataclasses.replace(config, epochs=1)
    with pytest.raises(DatasetError, match="drop class_weight, or multiply each sample weight"):
        fit(
            PROJECT,
            config,
            model=linear_model(config),
            train_ds=_weighted(x, y, w, 8),
            class_weight=class_weight,
            options=QUIET,
        )
    # Followed: each sample weight times its class's weight, and no class_weight.
    followed = w * np.array([class_weight.get(int(i), 1.0) for i in ids], dtype=np.float32)
    history = fit(
        PROJECT,
        config,
        model=linear_model(config),
        train_ds=_weighted(x, y, followed, 8),
        options=QUIET,
    )
    assert np.isfinite(history.history["loss"]).all()


def test_a_bad_class_weight_is_refused_naming_each_entry(config: Config) -> None:
    n = config.labels.class_count
    task = build_task(linear_model(config), config, QUIET)
    x, ids = _arrays(config)
    given = {-1: 1.0, n: 2.0, 0: float("nan"), 1: -0.5, "cat": 1.0}
    with pytest.raises(ValueError) as error:
        task.prepare_dataset(dataset(x, config.labels.encode(ids), 8), "train_ds", given)
    message = str(error.value)
    for part in (
        f"class -1 is not in [0, {n})",
        f"class {n} is not",
        "class 0 has weight nan",
        "class 1 has weight -0.5",
        "key 'cat' is not a class id",
    ):
        assert part in message, message


def test_weighted_runs_trace_each_step_once(config: Config) -> None:
    x, ids = _arrays(config, 40)  # Batches of 16: the last is smaller.
    y, w = config.labels.encode(ids), _weights(len(ids))
    trainer = Trainer(PROJECT, config, linear_model(config), QUIET)
    val_ds = _weighted(x, y, w.astype(np.int64), 16)  # Converted in the pipeline.
    history = trainer.fit(dataset(x, y, 16), val_ds, class_weight={0: 2.0})
    assert traced_once_per_phase(trainer)
    assert np.isfinite(history.history["val_loss"]).all()


def test_dict_features_reach_the_step_converted_per_input(config: Config) -> None:
    x, ids = dict_features(config, 16), np.arange(16) % config.labels.class_count
    y = config.labels.encode(ids)
    task = build_task(two_input_model(config), config, QUIET)
    given = {"pixels": x["pixels"].astype(np.float64), "extra": x["extra"].astype(np.float16)}
    prepared = task.prepare_dataset(dataset(given, y, 8), "train_ds")
    expected = {"pixels": x["pixels"], "extra": x["extra"].astype(np.float16).astype(np.float32)}
    assert prepared.element_spec == dataset(expected, y, 8).element_spec
    for (got, _), (want, _) in zip(prepared, dataset(expected, y, 8), strict=True):
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])


def test_every_problem_of_dict_features_is_listed_and_the_hints_train(config: Config) -> None:
    x, ids = dict_features(config, 16), np.arange(16) % config.labels.class_count
    y = config.labels.encode(ids)
    pixels = (x["pixels"] * 10).astype(np.int32)
    bad = dataset({"pixels": pixels, "other": x["extra"]}, y, 8)
    model = two_input_model(config)
    with pytest.raises(DatasetError) as error:
        fit(PROJECT, config, model=model, train_ds=bad, options=QUIET)
    problems = error.value.problems
    assert [problem.split(" ")[1] for problem in problems] == [
        "features",
        "features",
        "features['pixels']",
    ], problems
    assert problems[0].startswith("train_ds features lack 'extra', which the model takes")
    assert problems[1].startswith("train_ds features have 'other', which the model has no input")
    # Followed: 'extra' added, 'other' dropped, the pixels cast as the hint says.
    code = re.search(r" with (.+?) in data\.py", problems[2])
    assert code is not None, problems[2]
    cast = eval(code.group(1), {"tf": tf}, {"x": tf.constant(pixels)})
    fixed = dataset({"pixels": cast.numpy(), "extra": x["extra"]}, y, 8)
    history = fit(
        PROJECT, dataclasses.replace(config, epochs=1), model=model, train_ds=fixed, options=QUIET
    )
    assert np.isfinite(history.history["loss"]).all()


def test_dict_features_and_a_one_input_model_are_refused_both_ways(config: Config) -> None:
    x, ids = dict_features(config, 16), np.arange(16) % config.labels.class_count
    y = config.labels.encode(ids)
    one_input = build_task(linear_model(config), config, QUIET)
    with pytest.raises(DatasetError, match=r"build the model on a dict of keras\.Input"):
        one_input.prepare_dataset(dataset(x, y, 8), "train_ds")
    two_inputs = build_task(two_input_model(config), config, QUIET)
    with pytest.raises(DatasetError, match="but the model takes a dict of 'pixels', 'extra'"):
        two_inputs.prepare_dataset(dataset(x["pixels"], y, 8), "train_ds")
