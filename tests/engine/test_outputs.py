"""The task's hooks on the model's outputs: the one the loss reads, what is served."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from engine.classifier import ClassifierTask, StepMetrics
from engine.features import DenseFeatures, TokenSequences
from engine.labels import SparseLabels
from engine.task import Task

FEATURES = DenseFeatures((3,))
LABELS = SparseLabels(4)


def two_output_model(activation: str | None = None) -> keras.Model:
    """Features in; `{"logits": ..., "hidden": ...}` out, the logits read from the hidden units."""
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(5, activation="relu", name="hidden")(inputs)
    logits = keras.layers.Dense(4, activation=activation, name="logits")(hidden)
    return keras.Model(inputs, {"logits": logits, "hidden": hidden})


class LogitsTask(Task):
    """A task that reads the logits of `two_output_model`."""

    def __init__(self, model: keras.Model) -> None:
        self.model = model

    def primary_output(self, outputs: dict[str, tf.Tensor]) -> tf.Tensor:
        return outputs["logits"]


def test_the_serving_model_is_the_model_cut_to_its_primary_output() -> None:
    model = two_output_model()
    x = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)
    served = LogitsTask(model).serving_model()
    np.testing.assert_allclose(served(x), model(x)["logits"], rtol=1e-6)
    assert served.weights[0] is model.weights[0]  # The same variables, not a copy.

    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
    task = Task()
    task.model = plain
    assert task.serving_model() is plain  # One output: the model itself.


def test_a_primary_output_that_is_no_output_of_the_model_is_refused() -> None:
    class PickingTwo(LogitsTask):
        def primary_output(self, outputs: dict[str, tf.Tensor]) -> object:
            return [outputs["logits"], outputs["hidden"]]

    with pytest.raises(ValueError, match=r"^the task's primary_output does not pick one"):
        PickingTwo(two_output_model()).serving_model()


@pytest.mark.parametrize(
    ("inputs", "problem"),
    [
        (
            np.zeros((2, 4), np.float32),
            r"the input has shape \(2, 4\), but the model takes \(n, 3\)",
        ),
        (np.zeros((0, 3), np.float32), r"the input has shape \(0, 3\): no examples"),
        (
            np.zeros((2, 3), np.complex64),
            "the input holds complex64 values; give integers or floats",
        ),
    ],
    ids=["shape", "no-rows", "complex"],
)
def test_the_default_prediction_input_refuses_what_the_serving_model_cannot_take(
    inputs: np.ndarray, problem: str
) -> None:
    with pytest.raises(ValueError, match=f"^{problem}"):
        LogitsTask(two_output_model()).prediction_input(inputs)


def test_the_default_prediction_input_casts_numbers_and_predicts_the_outputs() -> None:
    task = LogitsTask(two_output_model())
    cast = task.prediction_input(np.ones((2, 3), np.int64))
    assert cast.dtype == np.float32
    outputs = np.ones((2, 4), np.float32)
    assert task.prediction(outputs) is outputs
    with pytest.raises(ValueError, match=r"no class ids; drop --class-ids$"):
        task.prediction(outputs, class_ids=True)


@pytest.mark.parametrize(
    ("features", "x", "problem"),
    [
        (FEATURES, np.zeros((2, 3), np.complex64), "holds complex64 values; give integers or"),
        (
            TokenSequences(10, 8),
            np.zeros((2, 5), np.float32),
            "holds float32 values, but the model",
        ),
        (TokenSequences(10, 8), np.zeros((2,), np.int32), "has shape (2,), but the model takes"),
    ],
    ids=["dense-complex", "tokens-float", "tokens-rank"],
)
def test_features_check_a_numpy_batch_in_one_line(
    features: DenseFeatures | TokenSequences, x: np.ndarray, problem: str
) -> None:
    with pytest.raises(ValueError) as error:
        features.check_array(x)
    assert str(error.value).startswith(f"the input {problem}")
    assert "\n" not in str(error.value)


def test_features_cast_a_numpy_batch_to_their_dtype() -> None:
    assert FEATURES.check_array(np.ones((2, 3), np.float64)).dtype == np.float32
    assert TokenSequences(10, 8).check_array(np.ones((2, 5), np.int64)).dtype == np.int32


def test_the_output_check_reads_the_primary_output_and_its_layer() -> None:
    def logits(outputs: dict[str, tf.Tensor]) -> tf.Tensor:
        return outputs["logits"]

    checked = LABELS.check_model_output(two_output_model(), FEATURES, logits)
    assert tuple(checked.shape) == (2, 4)
    # The softmax is on the logits layer, not on the model's last layer, a deeper output's.
    model = two_output_model("softmax")
    last = keras.layers.Dense(2, name="projection")(keras.layers.Dense(2)(model.output["hidden"]))
    model = keras.Model(model.input, {**model.output, "projection": last})
    assert model.layers[-1].name == "projection"
    with pytest.raises(ValueError, match="last layer applies softmax, but this project's loss"):
        LABELS.check_model_output(model, FEATURES, logits)
    with pytest.raises(ValueError, match=r"^the model outputs dict, but the loss takes one tensor"):
        LABELS.check_model_output(two_output_model(), FEATURES)


def test_step_metrics_read_the_output_they_are_told() -> None:
    metrics = StepMetrics.create(LABELS).reading(lambda outputs: outputs["logits"])
    y = tf.constant([0, 1])
    logits = tf.constant([[5.0, 0, 0, 0], [5.0, 0, 0, 0]])
    metrics.update(tf.constant(1.0), y, {"logits": logits, "hidden": tf.zeros((2, 5))})
    assert float(metrics.accuracy.result()) == 0.5


def test_batch_mean_is_the_mean_over_the_batch_in_float32() -> None:
    task = ClassifierTask.__new__(ClassifierTask)  # batch_mean reads nothing of the task.
    values = tf.constant([1.0, 2.0, 6.0], dtype=tf.float16)
    mean = task.batch_mean(values)
    assert mean.dtype == tf.float32
    assert float(mean) == 3.0
