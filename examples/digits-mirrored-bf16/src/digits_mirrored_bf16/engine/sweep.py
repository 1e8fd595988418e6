"""Hyperparameter sweeps with Optuna: `python -m PKG sweep`.

The space is yours: `search_space(trial)` in config.py suggests values for `Config` fields with
Optuna's `trial.suggest_*` and returns them by field name. Each trial is a run of its own, in
a run directory like `train`'s, so it can be watched, resumed and used (`evaluate`, `predict`,
`export`) as any run. A sweep's directory holds:

    sweep.json        what the sweep searches: trials, metric, direction, the fixed flags
    study.log         Optuna's journal: every trial, its parameters, figures and state (or
                      the database given with `--storage`)
    trials/NNNN/      trial NNNN's run directory (run.json, metrics.jsonl, checkpoints, ...)
    summary.md        the best trial, its config and a table of every trial (summary.json too)
    history.png       the objective by trial, and the best so far
    importances.png   how much each searched field mattered (from 2 finished trials on)

Several processes share the journal: `--jobs N` runs N at once on this machine, and each takes
the next trial under a lock (`sweep.lock`), so no more trials run than were asked for. Processes
on several machines need a database every one reaches (`--storage postgresql://...`), and the
sweep's directory on a filesystem they share whose locks work across machines (NFSv4 does). A
trial's process holds its run directory's lock while it trains (as `train` does): a trial
left RUNNING in the journal by a process that died (SIGKILL, a lost machine) is then known
by its lock being free, and the next process to look resumes it from its latest checkpoint,
or runs it again from the start when it had none. No trial is lost or counted twice.

Pruning reads the per-epoch figure the loop logs (`--metric`, `val_loss` by default): after
each epoch the trial reports it, and Optuna's median pruner stops a trial that is worse than
the median of earlier trials at that epoch; a pruned trial keeps its run directory.

This module imports neither TensorFlow nor Optuna until a sweep runs, so that `--help` and the
check of a search space (`check_space`) are fast.

Template-owned: `copier update` replaces it with the template's later versions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .cli import flag_name
from .options import from_json, show, to_json

SWEEP_FILE = "sweep.json"
STUDY_FILE = "study.log"
LOCK_FILE = "sweep.lock"
TRIALS = "trials"
STUDY_NAME = "sweep"
DIRECTIONS = ("minimize", "maximize")
INSTALL = "pip install -e '.[sweep]'"


class SweepError(Exception):
    """A sweep that cannot run as asked: one line that says why and what to do."""


@dataclasses.dataclass(frozen=True)
class SweepSettings:
    """What a sweep searches, kept in its `sweep.json` so that `--resume` goes on with it.

    Attributes:
        trials: Trials to run in all (finished, pruned and failed ones count).
        metric: The per-epoch figure a trial is judged by, as `metrics.jsonl` names it; its
            value at the trial's last epoch is the trial's.
        direction: `minimize` or `maximize` the metric.
        pruning: Stop trials early with Optuna's `MedianPruner`.
        config: The `Config` fields every trial takes as given (the flags of `sweep`).
        options: Likewise the `RunOptions` fields.
        storage: The database URL of the study (any SQLAlchemy URL Optuna's `RDBStorage`
            takes, e.g. `postgresql://user@host/db`), for processes on several machines;
            `None` keeps it in the journal file `study.log` of the sweep's directory.
        study: The study's name in its storage.
    """

    trials: int
    metric: str = "val_loss"
    direction: str = "minimize"
    pruning: bool = True
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    storage: str | None = None
    study: str = STUDY_NAME

    def write(self, sweep_dir: Path) -> None:
        """Write `sweep_dir/sweep.json`, atomically."""
        _write_atomically(
            sweep_dir / SWEEP_FILE, json.dumps(dataclasses.asdict(self), indent=2) + "\n"
        )

    @classmethod
    def read(cls, sweep_dir: Path) -> SweepSettings:
        """The settings in `sweep_dir/sweep.json`.

        Raises:
            SweepError: If `sweep_dir` holds no sweep, or its file cannot be read.
        """
        path = sweep_dir / SWEEP_FILE
        if not path.is_file():
            raise SweepError(f"{sweep_dir} holds no sweep ({SWEEP_FILE} is missing)")
        try:
            return cls(**json.loads(path.read_text()))
        except (ValueError, TypeError) as error:
            raise SweepError(f"{path} cannot be read: {error}") from None


class _Probe:
    """A stand-in for `optuna.Trial` that checks each suggestion and answers with one end.

    Pass `index` answers the low end (or the first choice) for index 0, the high end (or the
    last choice) for index 1, and the choices between after that, so that every end and every
    choice is tried over `passes` passes.
    """

    def __init__(self, index: int) -> None:
        self.index = index
        self.passes = 2
        self.names: list[str] = []

    def _name(self, name: str) -> None:
        if name in self.names:
            raise SweepError(f"search_space suggests {name!r} twice; give each its own name")
        self.names.append(name)

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        """The low or the high end of `[low, high]`, after checking the range."""
        self._name(name)
        if not (math.isfinite(low) and math.isfinite(high)) or low > high:
            raise SweepError(
                f"search_space: {name} ranges over [{low}, {high}], which is empty; "
                "give low <= high, both finite"
            )
        if log and low <= 0:
            raise SweepError(f"search_space: {name} is log-scaled from {low}; start above 0")
        if step is not None and (step <= 0 or log):
            raise SweepError(f"search_space: {name} has step={step}; use a step > 0, not log")
        return float(low if self.index % 2 == 0 else high)

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int:
        """The low or the high end of `[low, high]`, after checking the range."""
        self._name(name)
        if low > high:
            raise SweepError(
                f"search_space: {name} ranges over [{low}, {high}], which is empty; "
                "give low <= high"
            )
        if log and low < 1:
            raise SweepError(f"search_space: {name} is log-scaled from {low}; start at 1 or above")
        if step < 1:
            raise SweepError(f"search_space: {name} has step={step}; use a step >= 1")
        if self.index % 2 == 0:
            return int(low)
        return int(low + (high - low) // step * step)

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        """One of `choices`, after checking there is one."""
        self._name(name)
        if len(choices) == 0:
            raise SweepError(f"search_space: {name} has no choices; give at least one")
        self.passes = max(self.passes, len(choices))
        if self.index in (0, 1):
            return choices[0] if self.index == 0 else choices[-1]
        return choices[(self.index - 1) % len(choices)]  # The ones between the ends.


def check_space(
    search_space: Callable[[Any], Mapping[str, Any]],
    base_config: Any,
    fixed: Mapping[str, Any] | None = None,
) -> list[str]:
    """Check a search space before any trial; return the `Config` fields it searches.

    `search_space` is called with a stand-in trial that answers each end of every range and
    each choice, and every config it gives is built: the values must name `Config` fields, not
    ones fixed by a flag (`fixed`), and give a config that `Config` accepts.

    Raises:
        SweepError: Naming the first problem: an empty range or list of choices, an unknown
            or fixed field, or a value `Config` refuses.
    """
    fixed = fixed or {}
    fields = {field.name for field in dataclasses.fields(base_config) if field.init}
    searched: list[str] = []
    index = passes = 0
    while index < max(passes, 2):
        probe = _Probe(index)
        values = search_space(probe)
        passes = probe.passes
        if not isinstance(values, Mapping) or not values:
            raise SweepError(
                "search_space returns no field to search; return a dict of Config fields, e.g. "
                "{'learning_rate': trial.suggest_float('learning_rate', 1e-4, 1e-2, log=True)}"
            )
        for name in values:
            if name not in fields:
                raise SweepError(
                    f"search_space sets {name!r}, which is not a field of Config; use one of "
                    + ", ".join(sorted(fields))
                )
            if name in fixed:
                flag = flag_name(name)
                raise SweepError(
                    f"{flag} is given, but search_space searches {name}; drop {flag}, or take "
                    f"{name} out of search_space"
                )
            if name not in searched:
                searched.append(name)
        try:
            dataclasses.replace(base_config, **fixed, **values)
        except (ValueError, TypeError) as error:
            shown = ", ".join(f"{k}={v!r}" for k, v in values.items())
            raise SweepError(f"search_space gives {shown}, which Config refuses: {error}") from None
        index += 1
    return searched


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    partial.replace(path)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive `flock` on the file `path` while the block runs (other processes wait)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _try_lock_dir(path: Path) -> int | None:
    """An open descriptor of the directory `path` holding its `flock`, or `None` if held."""
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def storage(sweep_dir: Path, url: str | None = None) -> Any:
    """The Optuna storage of a sweep: the journal `sweep_dir/study.log`, or the database `url`."""
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    if url is not None:
        return RDBStorage(url)
    return JournalStorage(JournalFileBackend(str(sweep_dir / STUDY_FILE)))


def load_study(sweep_dir: Path, settings: SweepSettings, **how: Any) -> Any:
    """The sweep's Optuna study, with the sampler and pruner in `how`, if any."""
    optuna = import_optuna()
    return optuna.load_study(
        study_name=settings.study, storage=storage(sweep_dir, settings.storage), **how
    )


def import_optuna() -> Any:
    """Optuna, with its per-trial log lines silenced.

    Raises:
        SweepError: If it is not installed, naming the extra that installs it.
    """
    try:
        import optuna
    except ImportError:
        raise SweepError(f"sweep needs Optuna, which is not installed; {INSTALL}") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def create(sweep_dir: Path, settings: SweepSettings) -> None:
    """Start the sweep in the empty or new directory `sweep_dir`.

    Raises:
        SweepError: If `settings.storage` holds a study of that name already, or cannot be
            reached.
    """
    optuna = import_optuna()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    try:
        store = storage(sweep_dir, settings.storage)
    except Exception as error:  # SQLAlchemy's and the drivers' errors have no common base.
        raise SweepError(f"cannot open --storage {settings.storage}: {error}") from None
    try:
        optuna.create_study(study_name=settings.study, storage=store, direction=settings.direction)
    except optuna.exceptions.DuplicatedStudyError:
        raise SweepError(
            f"--storage {settings.storage} holds a study named {settings.study} already; "
            "give --dir another name"
        ) from None
    settings.write(sweep_dir)  # Last: a directory with sweep.json holds a whole study.


@dataclasses.dataclass
class _Next:
    """The trial a process runs next, and the lock on its run directory it holds."""

    trial: Any
    run_dir: Path
    lock_fd: int


def _next_trial(study: Any, sweep_dir: Path, settings: SweepSettings) -> _Next | None:
    """The next trial for this process, or `None` when every trial is taken.

    Under the sweep's lock: a RUNNING trial whose run directory nobody holds (its process
    died) comes first, then a new one while fewer than `settings.trials` are finished or
    running.
    """
    optuna = import_optuna()
    states = optuna.trial.TrialState
    with _locked(sweep_dir / LOCK_FILE):
        trials = study.get_trials(deepcopy=False)
        for frozen in trials:
            if frozen.state != states.RUNNING:
                continue
            run_dir = trial_dir(sweep_dir, frozen.number)
            fd = _try_lock_dir(run_dir)
            if fd is not None:  # Its process died: take it over.
                trial = optuna.trial.Trial(study, frozen._trial_id)
                return _Next(trial, run_dir, fd)
        taken = [t for t in trials if t.state != states.WAITING]
        if len(taken) >= settings.trials:
            return None
        trial = study.ask()
        run_dir = trial_dir(sweep_dir, trial.number)
        fd = _try_lock_dir(run_dir)
        assert fd is not None, run_dir  # A new trial's directory: nobody else knows it.
        return _Next(trial, run_dir, fd)


def trial_dir(sweep_dir: Path, number: int) -> Path:
    """The run directory of trial `number`."""
    return sweep_dir / TRIALS / f"{number:04d}"


def last_figures(run_dir: Path) -> dict[str, Any] | None:
    """The last epoch's line of `run_dir/metrics.jsonl`, or `None` before its first epoch."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    for line in reversed(lines):
        with contextlib.suppress(ValueError):
            return json.loads(line)
    return None


def _pruning_callback(trial: Any, metric: str, pruning: bool) -> Any:
    """A Keras callback that reports `metric` to `trial` after each epoch, and may prune."""
    import keras

    class ReportToTrial(keras.callbacks.Callback):
        """Reports each epoch's figure; stops the run when the pruner says so."""

        def __init__(self) -> None:
            super().__init__()
            self.pruned = False
            self.reported = set(trial.storage.get_trial(trial._trial_id).intermediate_values)

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = logs or {}
            if metric not in logs:
                known = ", ".join(sorted(k for k in logs if k != "steps_per_second"))
                raise SweepError(f"the runs log no {metric!r}; give --metric one of: {known}")
            value = float(logs[metric])
            if epoch + 1 not in self.reported and math.isfinite(value):
                trial.report(value, epoch + 1)  # Resumed: an epoch run again is not reported.
            if pruning and trial.should_prune():
                self.pruned = True
                self.model.stop_training = True

    return ReportToTrial()


def _run_trial(project: Any, study: Any, chosen: _Next, settings: SweepSettings) -> str:
    """Train one trial in its run directory and tell the study how it ended; its line.

    Raises:
        interrupts.Interrupted: If a stop was requested; the trial stays RUNNING, with its
            checkpoint, for the next process to resume.
    """
    import keras

    from . import interrupts
    from .checkpoints import resume_position
    from .gradients import NonFiniteError
    from .train import fit

    optuna = import_optuna()
    trial, run_dir = chosen.trial, chosen.run_dir
    config = dataclasses.replace(project.config(), **from_json(project.config, settings.config))
    searched = dict(project.search_space(trial))
    config = dataclasses.replace(config, **searched)
    trial.set_user_attr("config", {name: to_json(value) for name, value in searched.items()})
    resume = resume_position(run_dir) is not None
    if not resume:  # A new trial, or one whose process died before its first checkpoint.
        for entry in run_dir.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    options = dataclasses.replace(
        trial_options(project, settings), logdir=run_dir, resume=resume, verbose=0
    )
    if options.track:  # Each trial's MLflow run nested under the sweep's.
        options = dataclasses.replace(
            options,
            tracking_experiment=options.tracking_experiment or project.package,
            tracking_parent=parent_run(project, sweep_dir_of(run_dir), options),
        )
    trial.set_user_attr("run_dir", str(run_dir))
    keras.backend.clear_session()
    report = _pruning_callback(trial, settings.metric, settings.pruning)
    start = time.perf_counter()
    try:
        fit(project, config, options=options, callbacks=[report])
    except NonFiniteError as error:
        trial.set_user_attr("error", str(error))
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return f"trial {trial.number} failed: {error}"
    except interrupts.Interrupted:
        raise
    except BaseException:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise
    seconds = time.perf_counter() - start
    figures = last_figures(run_dir) or {}
    value = figures.get(settings.metric)
    params = ", ".join(f"{name} {_show(value)}" for name, value in trial.params.items())
    how = "resumed, " if resume else ""
    epochs = figures.get("epoch", 0)
    done = f"{epochs} epoch{'' if epochs == 1 else 's'}, {how}{seconds:.1f} s"
    if report.pruned:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        return f"trial {trial.number} pruned after {done} | {params} | {run_dir}"
    if value is None or not math.isfinite(value):
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return f"trial {trial.number} failed: {settings.metric} is {value} | {params}"
    study.tell(trial, value)
    return f"trial {trial.number} {settings.metric} {value:.4f} ({done}) | {params} | {run_dir}"


def trial_options(project: Any, settings: SweepSettings) -> Any:
    """The `RunOptions` every trial of the sweep trains with, but for its run directory."""
    return dataclasses.replace(project.options(), **from_json(project.options, settings.options))


def sweep_dir_of(run_dir: Path) -> Path:
    """The sweep's directory of the trial's run directory `run_dir`."""
    return run_dir.parent.parent


def parent_run(project: Any, sweep_dir: Path, options: Any) -> str:
    """The id of the sweep's MLflow run, which nests its trials' (created on first use).

    Its id is kept in `sweep_dir/mlflow.json`; each process of the sweep reopens it there,
    under the sweep's lock, so the sweep has one parent run however many processes it has.
    """
    from . import tracking

    with _locked(sweep_dir / LOCK_FILE):
        return tracking.open_run(
            options.tracking_uri,
            options.tracking_experiment or project.package,
            sweep_dir / tracking.TRACKING_FILE,
            name=f"sweep {sweep_dir.name}",
            tags={**project.tags, "project": project.package, "sweep": str(sweep_dir)},
        )


def end_parent_run(project: Any, sweep_dir: Path, status: str) -> None:
    """Mark the sweep's MLflow run `status`; a `FINISHED` one gets the best trial's figure.

    Does nothing for a sweep whose trials are not tracked.

    Raises:
        SweepError: If MLflow's store cannot be reached, or does not hold the run.
    """
    settings = SweepSettings.read(sweep_dir)
    options = trial_options(project, settings)
    if not options.track:
        return
    from . import tracking

    try:
        run_id = parent_run(project, sweep_dir, options)
        mlflow = tracking.client(options.tracking_uri)
        study = load_study(sweep_dir, settings)
        if status == "FINISHED" and any(t.state.name == "COMPLETE" for t in study.trials):
            best = study.best_trial
            mlflow.log_metric(run_id, f"best_{settings.metric}", best.value)
            mlflow.set_tag(run_id, "best_trial", str(best.number))
            mlflow.set_tag(run_id, "best_run_dir", str(trial_dir(sweep_dir, best.number)))
        tracking.end_run(options.tracking_uri, run_id, status)
    except tracking.TrackingError as error:
        raise SweepError(str(error)) from None


def _flags(values: Mapping[str, Any]) -> list[str]:
    """`values` (`Config` fields) as `train`'s flags: `--batch-size 32`, `--input-shape 8,8`."""
    flags = []
    for name, value in values.items():
        flag = flag_name(name)
        if isinstance(value, bool):  # --flag or --no-flag.
            flags.append(flag if value else flag.replace("--", "--no-", 1))
        else:
            flags.append(f"{flag} {show(value)}")
    return flags


def _show(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def work(project: Any, sweep_dir: Path, *, seed: int = 0, out: Any = None) -> None:
    """Run trials of the sweep in `sweep_dir` until every one is taken.

    A process of its own, of `--jobs`: it shares the study with the others through its
    journal and its lock. Prints one line per trial. The sampler draws from `seed` plus the
    number of trials so far, so that a resumed sweep does not draw its first trials again
    (give each job its own `seed`, far apart).

    Raises:
        interrupts.Interrupted: If a stop was requested (Ctrl-C, SIGTERM): the trial it was
            running keeps its checkpoint and stays RUNNING for a later process to resume.
        SweepError: If the runs do not log `settings.metric`.
    """
    optuna = import_optuna()
    settings = SweepSettings.read(sweep_dir)
    out = out or sys.stdout
    import tensorflow as tf

    from . import interrupts

    tf.get_logger().addFilter(_not_about_retracing)

    pruner = optuna.pruners.MedianPruner() if settings.pruning else optuna.pruners.NopPruner()
    study = load_study(sweep_dir, settings, pruner=pruner)
    with interrupts.catch_signals(), _ended_as_killed(project, sweep_dir):
        while interrupts.requested() is None:
            trials_so_far = len(study.get_trials(deepcopy=False))
            study.sampler = optuna.samplers.TPESampler(seed=seed + trials_so_far)
            chosen = _next_trial(study, sweep_dir, settings)
            if chosen is None:
                return
            try:
                line = _run_trial(project, study, chosen, settings)
            finally:
                os.close(chosen.lock_fd)
            print(line, file=out, flush=True)
        raise interrupts.Interrupted(interrupts.requested(), 0, 0, None)


@contextlib.contextmanager
def _ended_as_killed(project: Any, sweep_dir: Path) -> Iterator[None]:
    """Mark the sweep's MLflow run `KILLED` when the block is interrupted (resumed: `RUNNING`)."""
    from . import interrupts

    try:
        yield
    except interrupts.Interrupted:
        end_parent_run(project, sweep_dir, "KILLED")
        raise


def _not_about_retracing(record: Any) -> bool:
    """Leave out TensorFlow's warning that the loop's functions traced again.

    Each trial builds its model and steps anew, which that warning counts as retracing; one
    run's steps do not retrace.
    """
    return "triggered tf.function retracing" not in record.getMessage()


def unfinished(sweep_dir: Path) -> int:
    """Trials of the sweep in `sweep_dir` still to run or to finish."""
    settings = SweepSettings.read(sweep_dir)
    trials = load_study(sweep_dir, settings).get_trials(deepcopy=False)
    done = sum(t.state.is_finished() for t in trials)
    running = sum(t.state.name == "RUNNING" for t in trials)
    return max(settings.trials - done, running)


def summarize(sweep_dir: Path, package: str) -> str:
    """Write `summary.md`, `summary.json` and the plots of the sweep; return its best line.

    Raises:
        SweepError: If no trial finished with a value.
    """
    optuna = import_optuna()
    settings = SweepSettings.read(sweep_dir)
    study = load_study(sweep_dir, settings)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise SweepError(
            f"no trial of {sweep_dir} finished with a value of {settings.metric}; see the "
            f"trials' run directories under {sweep_dir / TRIALS}"
        )
    best = study.best_trial
    best_dir = trial_dir(sweep_dir, best.number)
    run = json.loads((best_dir / "run.json").read_text())
    names = sorted({name for t in trials for name in t.params})
    rows = []
    for t in trials:
        figures = last_figures(trial_dir(sweep_dir, t.number)) or {}
        rows.append(
            {
                "number": t.number,
                "state": t.state.name.lower(),
                "value": t.value,
                "params": dict(t.params),
                "epochs": figures.get("epoch", 0),
                "seconds": (
                    (t.datetime_complete - t.datetime_start).total_seconds()
                    if t.datetime_complete and t.datetime_start
                    else None
                ),
                "run_dir": str(trial_dir(sweep_dir, t.number)),
            }
        )
    summary = {
        "metric": settings.metric,
        "direction": settings.direction,
        "best": {
            "number": best.number,
            "value": best.value,
            "params": best.params,
            "config": run["config"],
            "run_dir": str(best_dir),
        },
        "trials": rows,
    }
    _write_atomically(sweep_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    lines = [
        f"# Sweep {sweep_dir}",
        "",
        f"Best: trial {best.number}, {settings.metric} {best.value:.4f} ({settings.direction}d), "
        f"in `{best_dir}`.",
        "",
        "Train it again (or copy its values into config.py):",
        "",
        "```",
        f"python -m {package} train "
        + " ".join(_flags({**settings.config, **best.user_attrs.get("config", best.params)})),
        "```",
        "",
        "Its whole config, from its `run.json`:",
        "",
        "```",
        *(f"{name} = {value!r}" for name, value in run["config"].items()),
        "```",
        "",
        f"| trial | state | {settings.metric} | " + " | ".join(names) + " | epochs | seconds |",
        "|" + "---|" * (len(names) + 5),
    ]
    for row in rows:
        value = "" if row["value"] is None else f"{row['value']:.4f}"
        params = " | ".join(_show(row["params"][n]) if n in row["params"] else "" for n in names)
        seconds = "" if row["seconds"] is None else f"{row['seconds']:.1f}"
        lines.append(
            f"| {row['number']} | {row['state']} | {value} | {params} | {row['epochs']} | "
            f"{seconds} |"
        )
    _write_atomically(sweep_dir / "summary.md", "\n".join(lines) + "\n")
    _plot(study, sweep_dir)
    params = ", ".join(f"{name} {_show(value)}" for name, value in best.params.items())
    return f"best: trial {best.number}, {settings.metric} {best.value:.4f} | {params} | {best_dir}"


def _plot(study: Any, sweep_dir: Path) -> None:
    """`history.png` and, from 2 finished trials on, `importances.png`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental.
        figure = plots.plot_optimization_history(study).figure
        figure.savefig(sweep_dir / "history.png", bbox_inches="tight")
        plt.close(figure)
        if len(complete) >= 2 and any(len(t.params) for t in complete):
            figure = plots.plot_param_importances(study).figure
            figure.savefig(sweep_dir / "importances.png", bbox_inches="tight")
            plt.close(figure)
