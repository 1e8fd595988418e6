"""`check` passes on the default data and model, and lists each problem of bad data with its fix."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import QUIET, encoder, features, linear_model

from sequences_sparse import PROJECT
from sequences_sparse.config import Config
from sequences_sparse.engine.preflight import check

SRC = Path(__file__).resolve().parents[1] / "src"


def test_check_passes_on_the_default_data_and_model(config: Config) -> None:
    report = check(PROJECT, config, batches=2)
    assert report.ok, str(report)
    topics = [topic for topic, _ in report.findings]
    assert topics[:2] == ["data", "data"], str(report)
    assert {"labels", "initial loss", "one step", "gradients", "model.fit", "one call"} <= set(
        topics
    )
    assert "the step traced once" in str(report), str(report)
    assert str(report).endswith("ok: no problems found")


def test_check_lists_each_problem_with_its_fix(config: Config) -> None:
    x = features(config, 16)
    x[3, 0] = config.vocab_size
    bad_values = r"^1 token ids are outside \[0, config\.vocab_size\) = \[0, \d+\): raise"
    labels = config.labels.encode(np.zeros(16, dtype=np.int64))
    weights = np.ones(16)
    weights[5] = np.inf
    dataset = tf.data.Dataset.from_tensor_slices((x, labels, weights)).batch(8)
    report = check(PROJECT, config, linear_model(config), dataset, options=QUIET, batches=2)
    text = str(report)
    assert not report.ok
    one_class = "the first 16 training examples are all of class 0: shuffle the examples"
    assert any(problem.startswith(one_class) for problem in report.problems), text
    assert any(re.search(bad_values, problem) for problem in report.problems), text
    bad_weights = "1 sample weights are NaN or infinite, which makes their steps' loss NaN"
    assert any(problem.startswith(bad_weights) for problem in report.problems), text


def test_check_trains_weighted_data_as_model_fit_does(config: Config) -> None:
    x = features(config, 16)
    labels = config.labels.encode(np.arange(16) % config.labels.class_count)
    weights = np.arange(16) % 3  # Integers, converted to float32 in the pipeline.
    dataset = tf.data.Dataset.from_tensor_slices((x, labels, weights)).batch(8)
    report = check(PROJECT, config, linear_model(config), dataset, options=QUIET, batches=2)
    findings = dict(report.findings)
    assert findings["sample weights"] == "from 0 to 2, mean 0.9375; 6 of 16 are 0, 0 negative"
    assert "int64 batches of shape (batch,) cast to float32" in findings["data"], str(report)
    assert "differ from them by up to" in findings["model.fit"], str(report)
    assert not any("model.train_on_batch" in problem for problem in report.problems), str(report)


def test_check_reports_contract_problems_before_reading_data(config: Config) -> None:
    x = features(config, 8)
    labels = config.labels.encode(np.arange(8) % 2)
    bad = tf.data.Dataset.from_tensor_slices((x, labels, x, labels)).batch(4)
    report = check(PROJECT, config, linear_model(config), bad, options=QUIET)
    assert report.problems == [
        "train_ds yields 4-tuples, but the steps take (features, labels) pairs or "
        "(features, labels, sample_weights) triples; make data.py yield those"
    ]
    assert str(report).splitlines()[0].split() == ["data", "train_ds:", "does", "not", "fit"]


def test_check_reports_a_model_that_does_not_fit_the_loss(config: Config) -> None:
    inputs, x = encoder(config)
    outputs = keras.layers.Dense(config.labels.output_units + 1)(x)
    report = check(PROJECT, config, keras.Model(inputs, outputs), options=QUIET)
    assert len(report.problems) == 1, str(report)
    assert re.search(r"give the last layer \d+ units$", report.problems[0]), str(report)


@pytest.mark.slow
def test_check_command_exits_0_and_prints_the_report() -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    result = subprocess.run(
        [sys.executable, "-m", "sequences_sparse", "check", "--batches", "2"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "ok: no problems found", result.stdout
