"""The default project learns its default data."""

from __future__ import annotations

from digits_backbone_head.config import Config
from digits_backbone_head.train import fit

TARGET = 0.95  # Digits, held-out accuracy.


def test_default_run_reaches_target_accuracy() -> None:
    config = Config()
    history = fit(config, verbose=False)
    assert len(history) == config.epochs
    assert history[-1]["val_acc"] >= TARGET, history[-1]
