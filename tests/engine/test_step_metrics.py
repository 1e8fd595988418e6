"""A phase's metrics (the loss, the accuracy, those a task adds); its loss for `compile`."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from engine.classifier import StepMetrics
from engine.labels import SparseLabels


def test_extra_metrics_are_updated_and_read_with_the_others() -> None:
    top2 = keras.metrics.SparseTopKCategoricalAccuracy(k=2, name="val_top2")
    metrics = StepMetrics.create(SparseLabels(3), "val_", extra=[top2])
    # Example 0's best class is 0, its second 1; example 1's best 2, its second 0.
    y_pred = tf.constant([[2.0, 1.0, 0.0], [1.0, 0.0, 2.0]])

    metrics.update(tf.constant(0.5), tf.constant([1, 1]), y_pred)

    assert [metric.name for metric in metrics] == ["val_loss", "val_accuracy", "val_top2"]
    results = {metric.name: float(metric.result()) for metric in metrics}
    assert results == {"val_loss": 0.5, "val_accuracy": 0.0, "val_top2": 0.5}


def test_two_metrics_of_one_name_are_refused() -> None:
    twin = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    with pytest.raises(ValueError, match=r"^metric name\(s\) accuracy appear more than once"):
        StepMetrics.create(SparseLabels(3), "", extra=[twin])


def test_without_extra_metrics_there_are_the_loss_and_the_accuracy() -> None:
    metrics = StepMetrics.create(SparseLabels(3))
    metrics.update(tf.constant(1.5), tf.constant([0, 2]), tf.constant(np.eye(3)[[0, 1]]))

    assert [(m.name, float(m.result())) for m in metrics] == [("loss", 1.5), ("accuracy", 0.5)]


def test_the_figures_a_step_returns_go_to_their_means() -> None:
    means = (keras.metrics.Mean(name="grad_norm"), keras.metrics.Mean(name="margin"))
    metrics = dataclasses.replace(StepMetrics.create(SparseLabels(3)), figures=means)

    for norm in (1.0, 2.0, 6.0):
        metrics.record({"grad_norm": tf.constant(norm), "margin": tf.constant(-norm)})

    results = {metric.name: float(metric.result()) for metric in metrics}
    assert results == {"loss": 0.0, "accuracy": 0.0, "grad_norm": 3.0, "margin": -3.0}


@pytest.mark.parametrize("returned", [{}, {"grad_norm": 1.0, "margin": 0.5}])
def test_figures_that_task_figures_does_not_name_are_refused(returned: dict) -> None:
    means = (keras.metrics.Mean(name="grad_norm"),)
    metrics = dataclasses.replace(StepMetrics.create(SparseLabels(3)), figures=means)

    with pytest.raises(ValueError, match=r"^train_step returned the figures \[.*Task\.figures"):
        metrics.record({name: tf.constant(value) for name, value in returned.items()})
