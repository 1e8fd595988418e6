"""The default project learns its default data."""

from __future__ import annotations

from breast_cancer_binary.config import Config
from breast_cancer_binary.train import fit

TARGET = 0.93  # Breast cancer, held-out accuracy.


def test_default_run_reaches_target_accuracy() -> None:
    config = Config()
    history = fit(config, verbose=False)
    assert len(history) == config.epochs
    assert history[-1]["val_acc"] >= TARGET, history[-1]
