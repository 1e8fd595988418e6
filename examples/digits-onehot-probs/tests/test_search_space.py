"""Your sweep's search space (`search_space` in config.py): each range and choice a `Config`."""

from __future__ import annotations

import pytest

from digits_onehot_probs.config import Config, search_space
from digits_onehot_probs.engine.sweep import check_space


def test_every_end_and_choice_of_the_search_space_is_a_config_config_accepts() -> None:
    # What `sweep` checks before its first trial: fields of Config, ranges and choices that are
    # not empty, and values Config accepts at each end of each range and for each choice.
    assert check_space(search_space, Config())


def test_optuna_samples_the_search_space() -> None:
    optuna = pytest.importorskip("optuna", reason="the sweep extra: pip install -e '.[sweep]'")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda trial: float(len(search_space(trial))), n_trials=5)
    for trial in study.trials:  # Each trial's values again, as a sweep's trial takes them.
        Config(**search_space(optuna.trial.FixedTrial(trial.params)))
