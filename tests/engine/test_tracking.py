"""Tracking's options and params, without a project: URIs, what a store needs, param values."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from engine.options import RunOptions, missing_modules, show, tracking_problem
from engine.tracking import resolve_uri, run_params


@pytest.mark.parametrize(
    "uri",
    ["sqlite:///mlflow.db", "sqlite:////abs/m.db", "http://localhost:5000", "databricks"],
)
def test_tracking_uris_are_accepted(uri: str) -> None:
    assert RunOptions(tracking_uri=uri).tracking_uri == uri


@pytest.mark.parametrize("uri", ["", "mlruns", "sqlite:///my runs.db", None])
def test_a_bad_tracking_uri_is_one_line(uri: object) -> None:
    with pytest.raises(ValueError, match=r"^RunOptions.tracking_uri=.* is invalid; use a URI") as e:
        RunOptions(tracking_uri=uri)  # type: ignore[arg-type]
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("field", ["tracking_experiment", "tracking_parent"])
def test_an_empty_experiment_or_parent_is_refused(field: str) -> None:
    with pytest.raises(ValueError, match=rf"^RunOptions.{field}='' is invalid"):
        RunOptions(**{field: ""})


def test_a_database_store_needs_sqlalchemy_and_alembic(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("sqlalchemy", "alembic"):
        monkeypatch.setitem(sys.modules, name, None)
    assert missing_modules("sqlite:///mlflow.db") == ["sqlalchemy", "alembic"]
    assert missing_modules("postgresql+psycopg2://host/db") == ["sqlalchemy", "alembic"]
    assert missing_modules("http://localhost:5000") == []
    problem = tracking_problem(RunOptions(track=True))
    assert problem == (
        "--track needs sqlalchemy and alembic, which are not installed; install the tracking "
        "extra: pip install -e '.[tracking]'"
    )
    assert tracking_problem(RunOptions(track=False)) is None


def test_a_relative_sqlite_path_is_taken_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_uri("sqlite:///runs/m.db") == f"sqlite:///{tmp_path / 'runs' / 'm.db'}"
    assert resolve_uri("sqlite:////abs/m.db") == "sqlite:////abs/m.db"
    assert resolve_uri("http://host:5000/x") == "http://host:5000/x"


@dataclasses.dataclass(frozen=True)
class Config:
    epochs: int = 2
    input_shape: tuple[int, ...] = (8, 8, 1)
    dropout: float | None = None


def test_params_are_the_config_fields_and_the_options_as_flags_write_them() -> None:
    params = run_params(Config(), RunOptions(logdir="runs/a", clip_global_norm=1.5))
    assert params["epochs"] == "2"
    assert params["input_shape"] == "8,8,1"
    assert params["dropout"] == "none"
    assert params["options.clip_global_norm"] == "1.5"
    assert params["options.tracking_uri"] == "sqlite:///mlflow.db"
    assert not {"options.logdir", "options.resume", "options.verbose"} & set(params)
    assert show(True) == "True"
