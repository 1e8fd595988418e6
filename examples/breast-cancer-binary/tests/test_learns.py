"""The default project learns its default data."""

from __future__ import annotations

from helpers import QUIET

from breast_cancer_binary.config import Config
from breast_cancer_binary.train import fit

TARGET = 0.93  # Breast cancer, held-out accuracy.


def test_default_run_reaches_target_accuracy() -> None:
    config = Config()
    history = fit(config, options=QUIET)
    assert history.epoch == list(range(config.epochs))
    assert history.history["val_accuracy"][-1] >= TARGET, history.history
