"""The sweep's checks before any trial, its trial bookkeeping and its summary (engine/sweep.py).

A whole sweep on a project (killed and resumed, side by side, pruned) runs in
tests/engine/in_projects/test_sweep.py.jinja.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import optuna
import pytest

from engine import sweep
from engine.sweep import SweepError, SweepSettings, check_space


@dataclasses.dataclass(frozen=True)
class Config:
    epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 0.001
    optimizer: str = "adam"

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"Config.batch_size={self.batch_size} is invalid; use 1 or more")
        if self.learning_rate <= 0:
            raise ValueError(f"Config.learning_rate={self.learning_rate} is invalid")


def good_space(trial: Any) -> dict[str, object]:
    values: dict[str, object] = {
        "learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
        "optimizer": trial.suggest_categorical("optimizer", ["adam", "sgd", "rmsprop"]),
    }
    if values["optimizer"] == "sgd":
        values["batch_size"] = trial.suggest_int("batch_size", 16, 128, step=16)
    return values


def test_a_good_space_is_checked_at_every_end_and_choice() -> None:
    seen: list[dict[str, object]] = []

    def recording(trial: Any) -> dict[str, object]:
        values = good_space(trial)
        seen.append(values)
        return values

    assert check_space(recording, Config()) == ["learning_rate", "optimizer", "batch_size"]
    assert {v["optimizer"] for v in seen} == {"adam", "sgd", "rmsprop"}
    assert {v["learning_rate"] for v in seen} == {1e-4, 1e-2}
    assert {v["batch_size"] for v in seen if "batch_size" in v} == {16}


def test_the_same_space_runs_under_optuna() -> None:
    study = optuna.create_study()
    study.optimize(lambda trial: float(len(good_space(trial))), n_trials=3)
    assert len(study.trials) == 3


@pytest.mark.parametrize(
    ("space", "expected"),
    [
        (
            lambda t: {"lr": t.suggest_float("lr", 1e-4, 1e-2)},
            "search_space sets 'lr', which is not a field of Config; use one of batch_size, "
            "epochs, learning_rate, optimizer",
        ),
        (
            lambda t: {"learning_rate": t.suggest_float("learning_rate", 1e-2, 1e-4)},
            "search_space: learning_rate ranges over [0.01, 0.0001], which is empty; give low "
            "<= high, both finite",
        ),
        (
            lambda t: {"batch_size": t.suggest_int("batch_size", 64, 32)},
            "search_space: batch_size ranges over [64, 32], which is empty; give low <= high",
        ),
        (
            lambda t: {"optimizer": t.suggest_categorical("optimizer", [])},
            "search_space: optimizer has no choices; give at least one",
        ),
        (
            lambda t: {"learning_rate": t.suggest_float("learning_rate", 0.0, 1e-2, log=True)},
            "search_space: learning_rate is log-scaled from 0.0; start above 0",
        ),
        (
            lambda t: {"learning_rate": t.suggest_float("learning_rate", 0.0, 1e-2)},
            "search_space gives learning_rate=0.0, which Config refuses: "
            "Config.learning_rate=0.0 is invalid",
        ),
        (
            lambda t: {"batch_size": t.suggest_categorical("batch_size", [32, 0])},
            "search_space gives batch_size=0, which Config refuses: Config.batch_size=0 is "
            "invalid; use 1 or more",
        ),
        (lambda t: {}, "search_space returns no field to search; return a dict of Config"),
    ],
)
def test_a_bad_space_fails_in_one_line(space: Any, expected: str) -> None:
    with pytest.raises(SweepError) as error:
        check_space(space, Config())
    assert str(error.value).startswith(expected), str(error.value)
    assert "\n" not in str(error.value)


def test_a_field_given_as_a_flag_is_not_searched() -> None:
    with pytest.raises(SweepError, match=r"^--learning-rate is given, but search_space searches"):
        check_space(good_space, Config(), {"learning_rate": 0.1})


def test_settings_round_trip_and_a_missing_sweep_is_named(tmp_path: Path) -> None:
    settings = SweepSettings(trials=4, metric="val_accuracy", direction="maximize", config={})
    settings.write(tmp_path)
    assert SweepSettings.read(tmp_path) == settings
    with pytest.raises(SweepError, match=r"holds no sweep \(sweep.json is missing\)$"):
        SweepSettings.read(tmp_path / "nothing")


def _finished_sweep(tmp_path: Path, values: list[float | None]) -> Path:
    sweep.create(tmp_path, SweepSettings(trials=len(values), config={"epochs": 2}))
    study = optuna.load_study(study_name=sweep.STUDY_NAME, storage=sweep.storage(tmp_path))
    for number, value in enumerate(values):
        trial = study.ask()
        rate = trial.suggest_float("lr", 1e-4, 1e-2, log=True)  # Named apart from its field.
        trial.set_user_attr("config", {"learning_rate": rate})
        run_dir = sweep.trial_dir(tmp_path, number)
        run_dir.mkdir(parents=True)
        config = {"epochs": 2, "learning_rate": rate}
        (run_dir / "run.json").write_text(json.dumps({"config": config}))
        (run_dir / "metrics.jsonl").write_text(
            "".join(json.dumps({"epoch": e, "val_loss": value}) + "\n" for e in (1, 2))
        )
        if value is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, value)
    return tmp_path


def test_the_summary_names_the_best_trial_and_how_to_train_it_again(tmp_path: Path) -> None:
    sweep_dir = _finished_sweep(tmp_path, [0.5, 0.25, None, 0.75])
    line = sweep.summarize(sweep_dir, "digits")
    assert line.startswith("best: trial 1, val_loss 0.2500 | lr "), line
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert summary["best"]["number"] == 1
    assert [row["state"] for row in summary["trials"]] == ["complete"] * 2 + ["fail", "complete"]
    text = (sweep_dir / "summary.md").read_text()
    rate = summary["best"]["params"]["lr"]
    assert f"python -m digits train --epochs 2 --learning-rate {rate}" in text
    assert "| 2 | fail |  | " in text
    assert (sweep_dir / "history.png").stat().st_size > 0
    assert (sweep_dir / "importances.png").stat().st_size > 0


def test_a_sweep_without_a_finished_trial_says_so(tmp_path: Path) -> None:
    sweep_dir = _finished_sweep(tmp_path, [None])
    with pytest.raises(SweepError, match=r"^no trial of .* finished with a value of val_loss"):
        sweep.summarize(sweep_dir, "digits")
