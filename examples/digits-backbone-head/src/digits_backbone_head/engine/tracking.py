"""MLflow tracking of a run: params, per-epoch metrics, `model.keras` and tags, resumed in place.

`train --track` (`RunOptions.track`) adds a `Tracker` to the run's callbacks. It logs the
config and the run options as params, the project's answers as tags, every epoch's figures as
metrics at step = the epoch's number (from 1), and, once the run has written it,
`model.keras` as an artifact. The MLflow run's id is kept in the run directory
(`mlflow.json`), so that `train --resume` goes on with the same MLflow run: each epoch is
logged once, and none is missing. A sweep nests its trials under a run of its own: it opens
one with `open_run`, and each trial trains with `RunOptions.tracking_parent` set to its id.

It talks to MLflow through `mlflow.tracking.MlflowClient` at the run's tracking URI, without
MLflow's global active run, so that several runs in one process keep apart. MLflow is
imported when a tracked run starts: an untracked run imports none of it (nor does `--help`).
It comes with the project's `tracking` extra (`pip install -e '.[tracking]'`), which also
installs what a SQLite store needs (SQLAlchemy, Alembic).

Template-owned: `copier update` replaces it with the template's later versions.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras

from . import PACKAGE, interrupts
from .options import RunOptions, show, tracking_problem

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

TRACKING_FILE = "mlflow.json"
# Options that say where or how the run was started or tracked, not how it trains.
NOT_PARAMS = ("logdir", "resume", "verbose")


class TrackingError(Exception):
    """A run cannot be tracked: MLflow is missing, the store refuses, or the run is not there."""


def resolve_uri(tracking_uri: str) -> str:
    """`tracking_uri` with a relative SQLite path made absolute (from the working directory)."""
    prefix = "sqlite:///"
    if tracking_uri.startswith(prefix) and not tracking_uri[len(prefix) :].startswith("/"):
        path = tracking_uri[len(prefix) :]
        if path and not path.startswith(":memory:"):
            return prefix + str(Path(path).resolve())
    return tracking_uri


def client(tracking_uri: str) -> MlflowClient:
    """An `MlflowClient` of the store at `tracking_uri`.

    Raises:
        TrackingError: If MLflow (or what the store needs) is not installed.
    """
    problem = tracking_problem(RunOptions(track=True, tracking_uri=tracking_uri))
    if problem:
        raise TrackingError(problem)
    from mlflow.tracking import MlflowClient

    # Its notes on creating a new store's tables, which `--quiet` would print otherwise.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=resolve_uri(tracking_uri))


def _mlflow_error(error: Exception, tracking_uri: str) -> TrackingError:
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return TrackingError(f"cannot track in {tracking_uri}: {first}")


def open_run(
    tracking_uri: str,
    experiment: str,
    path: str | Path,
    *,
    parent_run_id: str | None = None,
    name: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> str:
    """The id of the MLflow run that `path` records, reopened; or of a new one recorded there.

    This is what a sweep calls for its parent run: `open_run(uri, experiment,
    sweep_dir / "mlflow.json", name=...)`, then each trial trains with
    `RunOptions(track=True, tracking_uri=uri, tracking_experiment=experiment,
    tracking_parent=<the id>)`, and `end_run(uri, <the id>)` when the sweep ends. The same
    call on a sweep resumed reopens the same run (its status is `RUNNING` again).

    Args:
        tracking_uri: The store (a relative SQLite path is taken from the working directory).
        experiment: The experiment of a new run, created if it does not exist.
        path: A JSON file: `{"tracking_uri", "experiment_id", "run_id"}`, written
            atomically when the run is created.
        parent_run_id: Nest a new run under this run (the tag `mlflow.parentRunId`).
        name: A new run's name (`mlflow.runName`).
        tags: More tags of a new run.

    Raises:
        TrackingError: If MLflow is missing, the store cannot be reached, or the run that
            `path` records is not in it (naming the URI it was created in).
    """
    path = Path(path)
    mlflow = client(tracking_uri)
    from mlflow.exceptions import MlflowException

    try:
        if path.is_file():
            record = json.loads(path.read_text(encoding="utf-8"))
            run_id = record["run_id"]
            try:
                run = mlflow.get_run(run_id)
            except MlflowException:
                run = None
            if run is None or run.info.lifecycle_stage != "active":
                raise TrackingError(
                    f"the MLflow run {run_id} of {path} is not in {resolve_uri(tracking_uri)}; "
                    f"track with --tracking-uri {record.get('tracking_uri')}, where it was made"
                )
            if run.info.status != "RUNNING":
                mlflow.update_run(run_id, status="RUNNING")
            return run_id
        found = mlflow.get_experiment_by_name(experiment)
        if found is None:
            experiment_id = mlflow.create_experiment(experiment)
        else:
            experiment_id = found.experiment_id
        run_tags = dict(tags or {})
        if parent_run_id is not None:
            run_tags["mlflow.parentRunId"] = parent_run_id
        run = mlflow.create_run(experiment_id, tags=run_tags, run_name=name)
    except MlflowException as error:
        raise _mlflow_error(error, tracking_uri) from None
    record = {
        "tracking_uri": resolve_uri(tracking_uri),
        "experiment_id": experiment_id,
        "run_id": run.info.run_id,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    partial.replace(path)  # Atomic: a kill leaves no file or the whole one.
    return run.info.run_id


def end_run(tracking_uri: str, run_id: str, status: str = "FINISHED") -> None:
    """Mark the MLflow run `run_id` ended: `FINISHED`, `KILLED` (stopped) or `FAILED`."""
    client(tracking_uri).set_terminated(run_id, status=status)


def run_params(config: Any, options: RunOptions) -> dict[str, str]:
    """The params of a run: each `Config` field by name, each run option as `options.<name>`.

    The options that say only where the run is (`logdir`) or how it prints are left out.
    """
    params = {name: show(value) for name, value in dataclasses.asdict(config).items()}
    for name, value in dataclasses.asdict(options).items():
        if name not in NOT_PARAMS:
            params[f"options.{name}"] = show(value)
    return params


class Tracker(keras.callbacks.Callback):
    """Tracks a run in MLflow: params, tags, every epoch's figures once, `model.keras`.

    On train begin it creates the MLflow run (recorded in `logdir/mlflow.json`) or, resumed,
    reopens the recorded one. Params are logged once: a param that a resumed run changes
    (`--epochs`, a run option) keeps its first value, and the new one goes to the tag
    `resumed.<param>`. Each epoch's figures are logged at its end, at step = its number
    (from 1), but for those the MLflow run has already: a killed run may have logged epochs
    after its last checkpoint, which the resumed run trains again to the same figures (a
    resume is exact). Epochs the MLflow run lacks (tracking turned on when resuming) are
    logged from `metrics.jsonl` first. `finished` logs the trained model and ends the MLflow
    run; `stopped` marks it `KILLED` (an interrupt) or `FAILED` (an error), and a resume
    reopens it. A run stopped before its first checkpoint cannot be resumed: its MLflow run
    is deleted, as the command line removes its directory.

    Args:
        logdir: The run's directory.
        config: The run's config, a dataclass: its fields are params.
        options: The run's options: the tracking URI, experiment and parent, and params.
        tags: More tags: the project's answers (`Project.tags`).
        parent_run_id: Nest the run under this MLflow run; `options.tracking_parent` by
            default.
    """

    def __init__(
        self,
        logdir: str | Path,
        config: Any,
        options: RunOptions,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
    ) -> None:
        super().__init__()
        self.logdir = Path(logdir)
        self.config = config
        self.options = options
        self.tags = dict(tags or {})
        self.parent_run_id = parent_run_id or options.tracking_parent
        self.run_id: str | None = None
        self._client: MlflowClient | None = None
        self._logged: set[tuple[str, int]] = set()
        self._started = False

    @property
    def tracking_uri(self) -> str:
        """The store the run is tracked in."""
        return self.options.tracking_uri

    def on_train_begin(self, logs: dict | None = None) -> None:
        """Create or reopen the MLflow run; log the params and tags it lacks."""
        path = self.logdir / TRACKING_FILE
        uri = self.tracking_uri
        resolved = resolve_uri(uri)
        if path.is_file() and resolved.startswith("sqlite:///"):
            store = Path(resolved.removeprefix("sqlite:///"))
            if not store.is_file():  # Not there: MLflow would create an empty store.
                recorded = json.loads(path.read_text(encoding="utf-8")).get("tracking_uri")
                raise TrackingError(
                    f"{store} does not exist, so the MLflow run of {path} is not there; "
                    f"track with --tracking-uri {recorded}, where it was made"
                )
        if not self.options.resume:
            path.unlink(missing_ok=True)  # A new run in this directory.
        experiment = self.options.tracking_experiment or PACKAGE
        tags = {**self.tags, "project": PACKAGE, "logdir": str(self.logdir.resolve())}
        self.run_id = open_run(
            uri,
            experiment,
            path,
            parent_run_id=self.parent_run_id,
            name=self.logdir.name,
            tags=tags,
        )
        self._client = client(uri)
        from mlflow.entities import Param, RunTag
        from mlflow.exceptions import MlflowException

        try:
            run = self._client.get_run(self.run_id)
            had = run.data.params
            self._logged = {
                (key, metric.step)
                for key in run.data.metrics
                for metric in self._client.get_metric_history(self.run_id, key)
            }
            params = run_params(self.config, self.options)
            new = [Param(k, v) for k, v in params.items() if k not in had]
            changed = [RunTag(f"resumed.{k}", v) for k, v in params.items() if had.get(k, v) != v]
            missing = [RunTag(k, v) for k, v in tags.items() if run.data.tags.get(k) != v]
            for start in range(0, len(new), 100):  # MLflow takes 100 params per call.
                self._client.log_batch(self.run_id, params=new[start : start + 100])
            if changed or missing:
                self._client.log_batch(self.run_id, tags=changed + missing)
        except MlflowException as error:
            raise _mlflow_error(error, uri) from None
        self._started = False

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        """On the run's first epoch, log the finished epochs the MLflow run lacks."""
        if not self._started:
            self._started = True
            self._log_earlier(epoch)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Log the epoch's figures at step `epoch + 1`, unless the MLflow run has them."""
        self._log(epoch + 1, logs or {})

    def on_train_end(self, logs: dict | None = None) -> None:
        """Log the finished epochs the MLflow run lacks, when no epoch ran (a finished run)."""
        if not self._started:
            self._started = True
            self._log_earlier(None)

    def _log(self, step: int, logs: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(key, float(value), now, step)
            for key, value in logs.items()
            if (key, step) not in self._logged
        ]
        if metrics and self._client is not None:
            self._client.log_batch(self.run_id, metrics=metrics)
            self._logged.update((metric.key, step) for metric in metrics)

    def _log_earlier(self, before: int | None) -> None:
        """Log the lines of `metrics.jsonl` of epochs up to `before` (all: `None`)."""
        path = self.logdir / "metrics.jsonl"
        if not path.is_file():
            return
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # A torn line.
            epoch = row.pop("epoch", None) if isinstance(row, dict) else None
            if isinstance(epoch, int) and epoch >= 1 and (before is None or epoch <= before):
                self._log(epoch, {k: v for k, v in row.items() if isinstance(v, int | float)})

    def finished(self, model_path: str | Path | None) -> None:
        """Log `model_path` (the run's `model.keras`) as an artifact; end the run `FINISHED`."""
        if self._client is None or self.run_id is None:
            return
        if model_path is not None:
            self._client.log_artifact(self.run_id, str(model_path))
        self._client.set_terminated(self.run_id, status="FINISHED")

    def stopped(self, error: BaseException, resumable: bool) -> None:
        """End the MLflow run on `error`: `KILLED` if interrupted, else `FAILED`.

        A run that cannot be `resumable` (no checkpoint yet) is deleted from MLflow, with
        `mlflow.json`: the command line removes its directory, and trains it anew.
        """
        if self._client is None or self.run_id is None:
            return
        stop = (interrupts.Interrupted, KeyboardInterrupt)
        status = "KILLED" if isinstance(error, stop) else "FAILED"
        try:
            self._client.set_terminated(self.run_id, status=status)
            if not resumable:
                self._client.delete_run(self.run_id)
                (self.logdir / TRACKING_FILE).unlink(missing_ok=True)
        except Exception as problem:  # The run's own error is what matters.
            print(f"warning: MLflow did not record the stop: {problem}", file=sys.stderr)
