"""The model learns the data, with the template's default settings.

The settings are fixed here rather than read from `Config()`, so that answers such as a single
epoch or a tiny learning rate do not make this test fail; change them with your model.
"""

from __future__ import annotations

import dataclasses

from helpers import QUIET

from digits_onehot_probs import PROJECT
from digits_onehot_probs.config import Config
from digits_onehot_probs.engine.train import fit

TARGET = 0.95  # Digits, held-out accuracy.


def test_default_run_reaches_target_accuracy() -> None:
    config = dataclasses.replace(
        Config(),
        epochs=10,
        batch_size=32,
        learning_rate=1e-3,
    )
    history = fit(PROJECT, config, options=QUIET)
    assert history.epoch == list(range(config.epochs))
    assert history.history["val_accuracy"][-1] >= TARGET, history.history
