"""`check` passes on the default data and model, and names a model that does not fit the loss."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import pytest
from helpers import QUIET, encoder

from digits_onehot_probs import PROJECT
from digits_onehot_probs.config import Config
from digits_onehot_probs.engine.preflight import check

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
        [sys.executable, "-m", "digits_onehot_probs", "check", "--batches", "2"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "ok: no problems found", result.stdout
