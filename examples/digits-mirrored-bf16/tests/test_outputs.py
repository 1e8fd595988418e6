"""A model with several outputs: the task's primary output is what trains, checks and serves.

The project's model, made to return `{"logits": ..., "hidden": ...}`, and the project's task
told which output the labels are compared with (`primary_output`): the run trains, evaluates,
passes `check`, predicts and exports with no other change.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import QUIET

from digits_mirrored_bf16 import PROJECT
from digits_mirrored_bf16.config import Config, RunOptions
from digits_mirrored_bf16.engine import trained
from digits_mirrored_bf16.engine.preflight import check
from digits_mirrored_bf16.engine.project import Project
from digits_mirrored_bf16.engine.train import fit
from digits_mirrored_bf16.model import build_model
from digits_mirrored_bf16.task import Task


class TwoOutputTask(Task):
    """The project's task, for a model that also returns the hidden tensor its logits read."""

    def primary_output(self, outputs: dict[str, tf.Tensor]) -> tf.Tensor:
        """The logits: what the loss, the metrics, `check` and `predict` read."""
        return outputs["logits"]


def two_output_model(config: Config) -> keras.Model:
    """The project's model, returning its logits and the hidden tensor its last layer reads."""
    model = build_model(config)
    hidden, logits = model.layers[-1].input, model.output
    return keras.Model(model.input, {"logits": logits, "hidden": hidden}, name="two_outputs")


def two_output_task(model: keras.Model, config: Config, options: RunOptions) -> TwoOutputTask:
    """`task.build_task`, with the task that reads the logits."""
    return TwoOutputTask(model, config, options)


@pytest.fixture
def project(monkeypatch: pytest.MonkeyPatch) -> Project:
    """The project, its model and task those above, as a user points `PROJECT` to their own."""
    module = types.ModuleType(f"{PROJECT.package}.two_outputs")
    module.build_model = two_output_model  # type: ignore[attr-defined]
    module.build_task = two_output_task  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return dataclasses.replace(
        PROJECT, model="two_outputs:build_model", task="two_outputs:build_task"
    )


def test_a_model_with_two_outputs_trains_checks_predicts_and_exports_its_logits(
    project: Project, config: Config, tmp_path: Path
) -> None:
    config = dataclasses.replace(config, epochs=1)
    logdir = tmp_path / "run"
    history = fit(project, config, options=dataclasses.replace(QUIET, logdir=str(logdir)))
    assert np.isfinite(history.history["loss"]).all(), history.history

    logged = json.loads((logdir / "metrics.jsonl").read_text().splitlines()[-1])
    evaluated = trained.evaluate(project, logdir)
    assert evaluated == pytest.approx(
        {name: logged[name] for name in evaluated}, rel=1e-6, abs=1e-7
    )

    report = check(project, config, options=QUIET, batches=2)
    assert report.ok, str(report)
    assert "differ from them by up to" in dict(report.findings)["model.fit"], str(report)

    x = config.features.probe_batch().numpy()
    _, model = trained.load_run(project, logdir)
    logits = model(x, training=False)["logits"]
    predicted = trained.predict(project, logdir, x)
    np.testing.assert_allclose(predicted, config.labels.probabilities(logits), rtol=1e-5, atol=1e-6)
    class_ids = trained.predict(project, logdir, x, as_class_ids=True)
    np.testing.assert_array_equal(class_ids, config.labels.class_ids(logits))

    served = tf.saved_model.load(str(trained.export(project, logdir, tmp_path / "served")))
    np.testing.assert_allclose(served.serve(tf.constant(x)), logits, rtol=1e-5, atol=1e-6)
