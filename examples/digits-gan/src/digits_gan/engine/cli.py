"""The command line of a project: `python -m PKG train|launch|profile|check|evaluate|...`.

    python -m PKG train [--epochs N] [--logdir DIR] ...
    python -m PKG train --logdir DIR --resume [--epochs N]
    python -m PKG launch --workers N -- train [...]
    python -m PKG profile [--calls N] [--logdir DIR] ...
    python -m PKG check [--batches N]                      (a classifier's)
    python -m PKG evaluate DIR                             (a classifier's)
    python -m PKG predict DIR --input X.npy --output Y.npy [--class-ids]
    python -m PKG export DIR OUT
    python -m PKG sweep [--trials N] [--jobs N] [--dir DIR] [--resume] ...  (with Optuna)

The project's `__main__.py` runs `main(PROJECT)`, and PKG is its package. `train` trains into a
run directory, or with `--resume` goes on from its latest checkpoint; its flags are the fields
of the project's `Config` and `RunOptions` (see `add_field_flags`); `launch` runs `train` as N
workers of a multi-worker run on this machine; `profile` times a few calls of steps of a fresh
model, writes a profiler trace and prints where the time goes (see `profiling.py`); `check`
tries the data and the model on a few batches and lists any problem with its fix; the others
use the model a finished run saved: its validation figures, predictions (a GAN's: generated
images), a SavedModel; `sweep` runs trials of the project's `search_space` with
Optuna (see `sweep.py`). `check`, `evaluate` and `--class-ids` are a classifier's: a project
whose `Config` declares `labels`.
`--help` imports no TensorFlow, so it answers at once; TensorFlow's start-up messages are
silenced unless `TF_CPP_MIN_LOG_LEVEL` is set.

Exit codes: 0 when the command did its work, 1 when training stopped on non-finite steps or
`check` found a problem, 2 for a usage error or a run that cannot be used (one line; nothing
is written), a run directory that cannot be written (in use by another `train`, read-only,
or a full disk: one line; nothing is left half-written) or data that does not fit (one line
per problem), 130 on Ctrl-C and 143 on SIGTERM (after a checkpoint); `launch` returns the
first non-zero code of a worker.

Template-owned: `copier update` replaces it with the template's later versions.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import errno
import fcntl
import inspect
import os
import re
import shutil
import sys
import types
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, NoReturn, Union, get_args, get_origin, get_type_hints

from .cluster import EXIT_TIMEOUT, ClusterError, read_tf_config, run_processes, run_workers
from .options import show, to_json, tracking_problem
from .project import Project

RUNS = Path("runs")
SWEEPS = Path("sweeps")
EXIT_NONFINITE = 1
EXIT_PROBLEMS = 1  # What `check` returns when it found a problem.
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line that says where the usage is."""

    def error(self, message: str) -> NoReturn:
        """Print `message` in one line, as `usage_error` does, and exit with code 2."""
        usage_error(self.prog, message)


def usage_error(prog: str, message: str) -> NoReturn:
    """Print a usage error of the command `prog` in one line, and exit with code 2."""
    print(f"{prog}: error: {message}; see '{prog} --help'", file=sys.stderr)
    sys.exit(EXIT_USAGE)


# The flags of `train` come from the fields of `Config` and `RunOptions`, but for these options.
HAND_WRITTEN = frozenset({"logdir", "resume", "verbose"})  # --logdir, --resume, --quiet
FLAG_NAMES = {"run_eagerly": "--eager"}
RESUME_CAN_CHANGE = frozenset({"epochs"})  # The run's other Config fields stay.
RESUME_CANNOT_CHANGE = frozenset({"precision"})  # The run's other options can change.
# `profile` writes no run and runs compiled steps in one process: these options do nothing there.
PROFILE_SKIPS = HAND_WRITTEN | {
    "run_eagerly",
    "checkpoint_every_steps",
    "max_checkpoints",
    "background_checkpoints",
    "tensorboard",
    "validation_steps",
}


def flag_name(name: str) -> str:
    """The `train` flag of the field `name`: `batch_size` is `--batch-size`."""
    return FLAG_NAMES.get(name, "--" + name.replace("_", "-"))


def field_help(cls: type) -> dict[str, str]:
    """Each field's text under `Attributes:` in the docstring of `cls`, as one line.

    A subclass's text wins; fields it does not document keep its base classes' text (as
    `RunOptions` in config.py keeps the engine's).
    """
    helps: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        _, _, section = inspect.cleandoc(klass.__doc__ or "").partition("Attributes:\n")
        name = None
        for line in section.splitlines():
            if line and not line.startswith(" "):
                break  # The next section.
            entry = re.fullmatch(r" {1,4}(\w+)(?: \(.*\))?: (.*)", line)
            if entry:
                name = entry[1]
                helps[name] = entry[2]
            elif name and line.strip():
                helps[name] += " " + line.strip()
    return helps


def _without_none(kind: object) -> tuple[object, bool]:
    """`kind` without `None` (for `int | None`, `int`), and whether it allowed `None`."""
    if get_origin(kind) in (Union, types.UnionType):
        args = tuple(arg for arg in get_args(kind) if arg is not type(None))
        if len(args) == 1:
            return args[0], len(args) < len(get_args(kind))
    return kind, False


def _scalar(kind: object) -> tuple[Callable[[str], object], str] | None:
    """A parser of one value of the type `kind`, and its metavar; `None` if unsupported."""
    names = {int: ("an integer", "N"), float: ("a number", "X"), str: ("", "TEXT")}
    if kind is Path:
        return Path, "PATH"
    if kind not in names:
        return None
    expected, metavar = names[kind]

    def parse(text: str) -> object:
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None

    return parse, metavar


def field_parser(kind: object) -> tuple[Callable[[str], object], str] | None:
    """A parser of the type `kind` from the command line, and its metavar.

    Supported: `int`, `float`, `str`, `Path`, tuples of them (`8,8,1`), and any of these or
    `None` (`none`). `None` for other types: their fields get no flag.
    """
    kind, optional = _without_none(kind)
    scalar = _scalar(kind)
    if scalar is None and get_origin(kind) is tuple:
        args = get_args(kind)
        length = None if len(args) == 2 and args[1] is Ellipsis else len(args)
        item = _scalar(args[0]) if args and all(arg in (args[0], ...) for arg in args) else None
        if item is None:
            return None
        parse_item, item_metavar = item

        def parse_tuple(text: str) -> object:
            items = tuple(parse_item(part.strip()) for part in text.split(","))
            if length is not None and len(items) != length:
                raise argparse.ArgumentTypeError(
                    f"expected {length} values separated by commas, got {text!r}"
                )
            return items

        scalar = parse_tuple, ",".join([item_metavar] * (length or 2)) + ("" if length else ",...")
    if scalar is None or not optional:
        return scalar
    parse, metavar = scalar
    return (lambda text: None if text.lower() == "none" else parse(text)), f"{metavar}|none"


def add_field_flags(
    parser: argparse.ArgumentParser,
    instance: Any,
    group: str,
    title: str,
    skip: frozenset[str] = frozenset(),
) -> None:
    """A group of flags titled `title`, one for each field of the dataclass `instance`.

    The help is the field's text under `Attributes:` in the class docstring; the flag's value
    lands in the namespace as `<group>.<field>`, only when given (see `flag_values`).
    """
    cls = type(instance)
    hints, helps = get_type_hints(cls), field_help(cls)
    flags = parser.add_argument_group(title)
    for field in dataclasses.fields(cls):
        if field.name in skip or not field.init:
            continue
        kind = hints[field.name]
        default = show(getattr(instance, field.name))
        text = f"{helps.get(field.name, '')} (default: {default})".strip().replace("%", "%%")
        flag, dest = flag_name(field.name), f"{group}.{field.name}"
        how: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS, "help": text}
        if kind is bool:  # --flag and --no-flag.
            how["action"] = argparse.BooleanOptionalAction
        elif get_origin(kind) is Literal:
            choices = get_args(kind)
            how.update(type=type(choices[0]), choices=choices)
        elif (found := field_parser(kind)) is not None:
            how.update(type=found[0], metavar=found[1])
        else:
            continue
        flags.add_argument(flag, **how)


def flag_values(args: argparse.Namespace, group: str) -> dict[str, object]:
    """The fields of `group` (`config` or `options`) given as flags, by field name."""
    prefix = f"{group}."
    return {k.removeprefix(prefix): v for k, v in vars(args).items() if k.startswith(prefix)}


def with_flags(instance: Any, values: dict[str, object]) -> Any:
    """`instance` with the fields in `values` replaced.

    Raises:
        ValueError: The dataclass's own one-line error, with its fields named as flags:
            `Config.epochs=0 is invalid` reads `--epochs 0 is invalid`, and a field given as a
            flag, `strategy='mirrored'`, reads `--strategy mirrored`.
    """
    try:
        return dataclasses.replace(instance, **values)
    except ValueError as error:
        message = str(error)
        owner = type(instance).__name__
        for field in dataclasses.fields(instance):
            written = f"{owner}.{field.name}="
            if field.name in values:
                value, flag = values[field.name], flag_name(field.name)
                if isinstance(value, bool):
                    given = flag if value else flag.replace("--", "--no-", 1)
                else:
                    given = f"{flag} {show(value)}"
                for shown in (repr(value), str(value)):
                    message = message.replace(written + shown, given)
                    bare = rf"(?<![\w.]){field.name}={re.escape(shown)}"
                    message = re.sub(bare, lambda _, given=given: given, message)
            message = message.replace(written, f"{flag_name(field.name)}=")
        raise ValueError(message) from None


def classifies(project: Project) -> bool:
    """Whether the project is a classifier's: its `Config` declares `labels` (an encoding).

    Known without importing TensorFlow, so that `--help` lists the commands at once.
    """
    return hasattr(project.config, "labels")


def build_parser(project: Project) -> Parser:
    """The argument parser, one sub-command per task; `train`'s flags come from the fields."""
    parser = Parser(
        prog=f"python -m {project.package}",
        description="Train the model with the custom loop, and use what it trained.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser(
        "train",
        help="train with the custom loop",
        description=(
            "Train with the custom loop; every figure, checkpoint and the trained model go to "
            "the run's directory."
        ),
    )
    add_field_flags(train, project.config(), "config", "hyperparameters (Config, in config.py)")
    train.add_argument(
        "--logdir",
        type=Path,
        help=(
            "the run's directory; it must not hold a run already, unless --resume "
            f"(default: a new {RUNS}/<date>-<time>)"
        ),
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help=(
            "go on with the run in --logdir from its latest checkpoint, with its config "
            "(run.json) and options; --epochs and the run options given now replace "
            "theirs, but for --precision"
        ),
    )
    title = "run options (RunOptions, in config.py)"
    add_field_flags(train, project.options(), "options", title, skip=HAND_WRITTEN)
    train.add_argument("--quiet", action="store_true", help="print nothing but errors")
    _add_profile(commands, project)
    if classifies(project):
        _add_classifier_commands(commands)
    _add_run_commands(commands, classifies(project))
    _add_launch(commands)
    if project.space is not None:
        _add_sweep(commands, project)
    return parser


def _add_sweep(commands: Any, project: Project) -> None:
    """`sweep`: trials of the project's search space, with Optuna."""
    sweep = commands.add_parser(
        "sweep",
        help="search hyperparameters with Optuna: a run per trial, then the best",
        description=(
            "Run trials of search_space (config.py), each a run of its own under the sweep's "
            "directory, judged by --metric at its last epoch; print the best and write "
            "summary.md, summary.json, history.png and importances.png there. Needs the sweep "
            "extra: pip install -e '.[sweep]'. Ctrl-C stops it after a checkpoint; --resume "
            "goes on where it stopped."
        ),
    )
    sweep.add_argument(
        "--dir",
        type=Path,
        help=(
            "the sweep's directory; it must not hold one already, unless --resume "
            f"(default: a new {SWEEPS}/<date>-<time>)"
        ),
    )
    sweep.add_argument(
        "--resume",
        action="store_true",
        help=(
            "go on with the sweep in --dir, with its settings (sweep.json): trials that a "
            "stopped or killed sweep left unfinished resume from their checkpoints; only "
            "--trials and --jobs can be given"
        ),
    )
    sweep.add_argument(
        "--trials",
        type=_positive_int,
        help="trials in all, finished, pruned or failed (default: 20; with --resume, the sweep's)",
    )
    sweep.add_argument(
        "--jobs",
        type=_positive_int,
        default=1,
        help="trials at once, each in a process of its own on this machine (default: 1)",
    )
    sweep.add_argument(
        "--metric",
        help=(
            "the per-epoch figure a trial is judged by, as metrics.jsonl names it "
            "(default: val_loss)"
        ),
    )
    sweep.add_argument(
        "--direction",
        choices=("minimize", "maximize"),
        help="minimize or maximize --metric (default: minimize)",
    )
    sweep.add_argument(
        "--storage",
        metavar="URL",
        help=(
            "keep the study in this database (an SQLAlchemy URL, e.g. postgresql://host/db) "
            "for processes on several machines, with --dir on a filesystem they share "
            "(default: the journal file study.log in --dir)"
        ),
    )
    sweep.add_argument(
        "--no-pruning",
        action="store_true",
        help="run every trial to its last epoch (default: the median pruner stops poor ones)",
    )
    add_field_flags(
        sweep,
        project.config(),
        "config",
        "hyperparameters every trial takes (Config, in config.py); not those search_space sets",
    )
    title = "run options of every trial (RunOptions, in config.py)"
    # A tracked sweep nests its trials under its own MLflow run.
    skip = HAND_WRITTEN | {"tracking_parent"}
    add_field_flags(sweep, project.options(), "options", title, skip=skip)
    sweep.add_argument("--job", type=int, default=0, help=argparse.SUPPRESS)
    sweep.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)


def _add_profile(commands: Any, project: Project) -> None:
    """`profile`: a few timed and profiled calls of steps, with `train`'s field flags."""
    profile = commands.add_parser(
        "profile",
        help="time a few calls of training steps under the profiler, and say what limits them",
        description=(
            "Train a fresh model for a few calls of --steps-per-execution steps, as train "
            "runs them: time the steps, the input alone and the compute alone, count the "
            "traces, the parameters, the FLOPs per step and the peak memory, and print a "
            "one-line verdict (input-bound, compute-bound or retracing). The last calls run "
            "under the TensorFlow profiler, whose trace TensorBoard's Profile tab opens (pip "
            "install the project's 'profile' extra). Writes no run: no checkpoint, no model."
        ),
    )
    profile.add_argument(
        "--calls",
        type=_positive_int,
        default=5,
        help="calls of steps to time, after one warm-up call (default: 5)",
    )
    profile.add_argument(
        "--logdir",
        type=Path,
        help=(
            "where the profiler's trace and report.txt go "
            f"(default: a new {RUNS}/profile-<date>-<time>)"
        ),
    )
    # A Config field named `calls` keeps train's flag only.
    config_title = "hyperparameters (Config, in config.py)"
    add_field_flags(profile, project.config(), "config", config_title, skip=frozenset({"calls"}))
    title = "run options (RunOptions, in config.py)"
    add_field_flags(profile, project.options(), "options", title, skip=PROFILE_SKIPS)


def _add_classifier_commands(commands: Any) -> None:
    """`check` and `evaluate`, a classifier's commands."""
    check = commands.add_parser(
        "check",
        help="check the data and the model in seconds, before a long run",
        description=(
            "Read a few training batches, train a fresh model for a few steps, and print a "
            "report: the data against the contract, the labels, the loss at initialisation, "
            "trace counts, gradients and one step against model.train_on_batch. Exits with 1 "
            "and each problem's fix when something is wrong."
        ),
    )
    check.add_argument(
        "--batches", type=_positive_int, default=4, help="training batches to read (default: 4)"
    )

    evaluate = commands.add_parser(
        "evaluate",
        help="evaluate a run's model on the validation split",
        description=(
            "Print the loss and accuracy of a finished run's model on the validation split: "
            "for the last epoch's model, the figures the run logged."
        ),
    )
    evaluate.add_argument("logdir", type=Path, help="the run's directory")


def _add_run_commands(commands: Any, classifier: bool) -> None:
    """`predict` and `export`: what a finished run's model does, a classifier's or a GAN's."""
    if classifier:
        predict = commands.add_parser(
            "predict",
            help="predict with a run's model",
            description=(
                "Write predictions for the examples in --input: float32 probabilities, one "
                "row per example (of each class, or of class 1 for binary labels), or with "
                "--class-ids int32 class ids, (n,)."
            ),
        )
        inputs = "a .npy file of examples, one per row, as data.py's load_datasets yields them"
    else:
        predict = commands.add_parser(
            "predict",
            help="generate images with a run's generator",
            description=(
                "Write the images the generator makes of latent vectors: --input holds an "
                "(n, latent_dim) array, --output gets float32 (n, *image_shape) images."
            ),
        )
        inputs = "a .npy file of latent vectors, one per row"
    predict.add_argument("logdir", type=Path, help="the run's directory")
    predict.add_argument("--input", type=Path, required=True, help=inputs)
    predict.add_argument(
        "--output",
        type=Path,
        required=True,
        help="the .npy file to write (.npy is added to a name without it); must not exist",
    )
    if classifier:
        predict.add_argument(
            "--class-ids", action="store_true", help="write class ids instead of probabilities"
        )

    export = commands.add_parser(
        "export",
        help="export a run's model as a SavedModel for serving",
        description=(
            f"Write a finished run's {'model' if classifier else 'generator'} as a TensorFlow "
            "SavedModel (model.export); tf.saved_model.load(OUT).serve(x) runs it."
        ),
    )
    export.add_argument("logdir", type=Path, help="the run's directory")
    export.add_argument("out", type=Path, help="where to write the SavedModel; must not exist")


def _add_launch(commands: Any) -> None:
    """`launch`: `train` as N local workers of a multi-worker run."""
    launch = commands.add_parser(
        "launch",
        help="try a multi-worker run: train as N local workers",
        description=(
            "Run `train --strategy multi-worker` as N worker processes on this machine, each "
            "with its TF_CONFIG on free ports of 127.0.0.1, their output prefixed with "
            "[worker i]. Ctrl-C and SIGTERM go to every worker; when one fails, the others "
            "are stopped; the exit code is the first non-zero one of a worker."
        ),
    )
    launch.add_argument(
        "--workers", type=_positive_int, required=True, help="how many worker processes"
    )
    launch.add_argument(
        "--timeout",
        type=_positive_float,
        help="stop every worker after this many seconds, exit code 124 (default: no limit)",
    )
    launch.add_argument(
        "train_args",
        nargs=argparse.REMAINDER,
        metavar="-- train ...",
        help="the train command every worker runs, after --",
    )


def new_run_dir(runs: Path = RUNS, prefix: str = "") -> Path:
    """A directory under `runs` named for the time now (after `prefix`) that none has taken."""
    stamp = prefix + datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path, suffix = runs / stamp, 1
    while path.exists():
        path, suffix = runs / f"{stamp}-{suffix}", suffix + 1
    return path


def check_run_dir(
    path: Path, flag: str = "--logdir", what: str = "a run", parent: Path = RUNS
) -> str | None:
    """Why `path` (given as `flag`) cannot take `what` (new), or `None` when it can.

    A new one goes under `parent` when the flag is left out.
    """
    problem = not_a_directory(path, flag)
    if problem:
        return problem
    if path.is_dir() and any(path.iterdir()):
        return (
            f"{flag} {path} already holds {what}; choose a new directory, "
            f"or leave out {flag} for a new one under {parent}/"
        )
    return None


def not_a_directory(path: Path, flag: str) -> str | None:
    """Why `path` (given as `flag`) cannot be a directory, or `None` when it can.

    It cannot when it, or a path above it, is a file.
    """
    if path.is_file():
        return f"{flag} {path} is a file; give a directory"
    for above in path.parents:
        if above.is_file():
            return f"{flag} {path} is under {above}, which is a file; give a directory"
    return None


class RunDirError(Exception):
    """A run directory cannot be written now: in use by another run, or not writable."""


@contextlib.contextmanager
def hold_run_dir(
    path: Path, *, new: bool, resumable: Callable[[], bool] = lambda: False
) -> Iterator[Callable[[], None]]:
    """Make this process the one writer of the run directory `path` while the block runs.

    The lock is an exclusive `flock` on the directory itself, so it writes nothing, and the
    kernel releases it when the process ends, however it ends: the directory of a killed
    run can be resumed at once. A filesystem that cannot lock a directory (some network
    filesystems) leaves the run unlocked. For a new run (`new`), `path` is created first and
    checked again once locked (it must be empty), so that of two runs started together into
    it, one trains. If the block of a new run raises (an error, an interrupt) while it
    cannot be resumed (`resumable()` is false: no checkpoint yet), what it wrote is removed,
    still under the lock, and so is `path` if it was created here: the same command can run
    into it again. The block gets that removal as a function, for an exit that skips it
    (see `interrupts.catch_signals`).

    Raises:
        RunDirError: If another process holds `path`, or it cannot be created or written.
    """
    created = new and not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as error:
        raise RunDirError(
            f"cannot create --logdir {path}: {error.strerror}; give one you can write"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirError(
                f"--logdir {path} is in use by another train command; wait for it to end, "
                "or choose another directory"
            ) from None
        except OSError:
            pass
        if not os.access(path, os.W_OK):
            raise RunDirError(f"--logdir {path} is read-only; make it writable")
        problem = check_run_dir(path) if new else None
        if problem:
            raise RunDirError(problem)

        def discard() -> None:
            with contextlib.suppress(OSError):
                if new and not resumable():
                    for entry in path.iterdir():  # All written by this run: `path` was empty.
                        if entry.is_dir() and not entry.is_symlink():
                            shutil.rmtree(entry, ignore_errors=True)
                        else:
                            entry.unlink(missing_ok=True)
                if created:
                    path.rmdir()  # Only if empty: the run wrote nothing, or it was removed.

        try:
            yield discard
        except BaseException:
            discard()
            raise
        if created:
            with contextlib.suppress(OSError):
                path.rmdir()  # Only if empty: the run wrote nothing.
    finally:
        os.close(fd)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow without its start-up messages, unless `TF_CPP_MIN_LOG_LEVEL` is set.

    Some are printed by C++ before any logging setting applies, so standard error is sent
    to the null device while TensorFlow loads; an import error still raises as usual.
    """
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        import tensorflow

        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def main(project: Project, argv: Sequence[str] | None = None) -> int:
    """Parse the command line for `project`, run the command, and return the exit code.

    `argv` is `sys.argv[1:]` by default. A usage error exits (`SystemExit` with code 2) after
    one line naming the command's `--help`.
    """
    try:
        parser = build_parser(project)
    except argparse.ArgumentError as error:  # A Config field named like a flag of train's.
        flag = (error.argument_name or "").partition("/")[0]
        field = flag.removeprefix("--").replace("-", "_")
        problem = f"Config.{field} would be the flag {flag}, which train has already"
        return _usage(f"python -m {project.package}", f"{problem}; rename the field")
    args, unknown = parser.parse_known_args(argv)
    prog = f"{parser.prog} {args.command}"
    if unknown:
        usage_error(prog, f"unrecognized arguments: {' '.join(unknown)}")
    try:
        if args.command == "train":
            return train(project, args, prog)
        if args.command == "launch":
            return launch(project, args, prog)
        if args.command == "check":
            return check(project, args)
        if args.command == "sweep":
            return sweep(project, args, prog)
        if args.command == "profile":
            return profile(project, args, prog)
        import_tensorflow_quietly()
        from .checkpoints import CheckpointError
        from .contract import DatasetError

        try:
            return use_run(project, args)
        except (CheckpointError, DatasetError) as error:
            return _usage(prog, str(error))
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED


def train(project: Project, args: argparse.Namespace, prog: str) -> int:
    """`train`: a new run, or `--resume` of one; the exit code."""
    config_flags, option_flags = flag_values(args, "config"), flag_values(args, "options")
    if args.resume:
        if args.logdir is None:
            return _usage(prog, "--resume needs --logdir DIR, the directory of the run to resume")
        fixed = [name for name in config_flags if name not in RESUME_CAN_CHANGE]
        fixed += [name for name in option_flags if name in RESUME_CANNOT_CHANGE]
        if fixed:
            return _usage(
                prog,
                f"{flag_name(fixed[0])} cannot change when resuming; "
                f"the run's is in {args.logdir}/run.json",
            )
        if not args.logdir.is_dir():
            return _usage(prog, f"--logdir {args.logdir} does not exist: no run to resume")
        logdir = args.logdir
    else:  # Bad values are usage errors, found before TensorFlow loads.
        try:
            config = with_flags(project.config(), config_flags)
            options = with_flags(project.options(), option_flags)
        except ValueError as error:
            usage_error(prog, str(error))
        problem = tracking_problem(options)
        if problem:
            return _usage(prog, problem)
    chief = True
    if option_flags.get("strategy") == "multi-worker":
        try:
            chief = read_tf_config().is_chief
        except ClusterError as error:
            return _usage(prog, str(error))
    if not args.resume:
        logdir = new_run_dir() if args.logdir is None else args.logdir
        # The other workers write nothing there, and find the chief's run.json in it.
        problem = check_run_dir(logdir) if chief else None
        if problem:
            return _usage(prog, problem)
    import_tensorflow_quietly()
    import tensorflow as tf

    from . import interrupts
    from .checkpoints import MODEL_FILE, CheckpointError, read_run, resume_position
    from .contract import DatasetError
    from .distribution import DistributionError
    from .gradients import NoneGradientError, NonFiniteError
    from .optimizers import StepError
    from .precision import PrecisionError
    from .tracking import TrackingError  # Which imports no MLflow.
    from .train import fit

    try:
        if args.resume:  # The run's config and options, with the flags given now.
            saved_config, saved_options = read_run(logdir, project.config, project.options)
            config = with_flags(saved_config, config_flags)
            options = with_flags(saved_options, option_flags)
        options = dataclasses.replace(
            options, logdir=logdir, resume=args.resume, verbose=0 if args.quiet else 1
        )
    except (CheckpointError, ValueError) as error:
        return _usage(prog, str(error))
    problem = tracking_problem(options)
    if problem:  # A resumed run tracked by its run.json, or by --track now.
        return _usage(prog, problem)
    if options.strategy == "multi-worker" and "strategy" not in option_flags:
        try:  # Resuming a multi-worker run.
            chief = read_tf_config().is_chief
        except ClusterError as error:
            return _usage(prog, str(error))
    position = resume_position(logdir) if args.resume else None
    finished = position is not None and position[0] >= config.epochs
    try:
        with contextlib.ExitStack() as held:
            discard = None
            if chief:  # The other workers of a multi-worker run write nothing there.
                discard = held.enter_context(
                    hold_run_dir(
                        logdir,
                        new=not args.resume,
                        resumable=lambda: resume_position(logdir) is not None,
                    )
                )
            if not args.quiet and chief and not finished:
                print(f"run directory: {logdir}  (watch it: tensorboard --logdir {logdir.parent})")
            with interrupts.catch_signals(before_exit=discard):
                fit(project, config, options=options)
    except RunDirError as error:
        return _usage(prog, str(error))
    except (OSError, tf.errors.OpError) as error:
        problem = write_problem(error)
        if problem is None:
            raise
        if resume_position(logdir) is None:
            then = "train again into a new --logdir"
        else:
            then = f"resume with: python -m {project.package} train --logdir {logdir} --resume"
        return _usage(prog, f"cannot write to {logdir}: {problem}, then {then}")
    except NonFiniteError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return EXIT_NONFINITE
    except (
        CheckpointError,
        DatasetError,
        DistributionError,
        NoneGradientError,
        PrecisionError,
        StepError,
        TrackingError,
    ) as error:
        return _usage(prog, str(error))
    except interrupts.Interrupted as stop:
        resume = f"python -m {project.package} train --logdir {logdir} --resume"
        if options.strategy == "multi-worker":
            workers = len(read_tf_config().workers)
            resume += (
                f" on every worker (locally: python -m {project.package} launch --workers "
                f"{workers} -- train --logdir {logdir} --resume)"
            )
        print(f"{prog}: {stop}; resume with: {resume}", file=sys.stderr)
        return stop.exit_code
    if finished and not args.quiet and chief:
        print(
            f"nothing to train: {logdir} has run all {config.epochs} epochs (its {MODEL_FILE} "
            f"is written again from its last checkpoint); give --epochs above {config.epochs} "
            "to train on"
        )
    return 0


def write_problem(error: BaseException) -> str | None:
    """Why a write failed and the fix, when the disk is full or not writable; else `None`.

    Takes an `OSError`, or a TensorFlow error, whose message carries the system's reason.
    """
    reasons = {
        errno.ENOSPC: "no space left on the device; free some",
        errno.EDQUOT: "the disk quota is exceeded; free some space",
        errno.EROFS: "the file system is read-only; make it writable",
        errno.EACCES: "permission denied; make it writable",
    }
    if isinstance(error, OSError):
        return reasons.get(error.errno or 0)
    text = str(getattr(error, "message", ""))
    return next((reason for code, reason in reasons.items() if os.strerror(code) in text), None)


def launch(project: Project, args: argparse.Namespace, prog: str) -> int:
    """`launch`: `train` as `--workers` local workers of a multi-worker run; the exit code."""
    command = list(args.train_args)
    if command[:1] == ["--"]:
        command = command[1:]
    example = f"python -m {project.package} launch --workers {args.workers} -- train --epochs 2"
    if command[:1] != ["train"]:
        return _usage(prog, f"give the train command every worker runs after --, e.g. {example}")
    for index, word in enumerate(command):
        value = None
        if word == "--strategy" and index + 1 < len(command):
            value = command[index + 1]
        elif word.startswith("--strategy="):
            value = word.split("=", 1)[1]
        if value is not None and value != "multi-worker":
            return _usage(prog, f"launch trains with --strategy multi-worker, not {value}")
        if word == "--cpu-devices" or word.startswith("--cpu-devices="):
            return _usage(
                prog,
                "--cpu-devices cannot run with multi-worker: each worker trains on its CPU as "
                "one device; drop it",
            )
    if "--strategy" not in command and not any(w.startswith("--strategy=") for w in command):
        command += ["--strategy", "multi-worker"]
    code = run_workers(
        [sys.executable, "-m", project.package, *command], args.workers, timeout=args.timeout
    )
    if code == EXIT_TIMEOUT:
        print(f"{prog}: the workers ran past --timeout {args.timeout:g}s: stopped", file=sys.stderr)
    return code


def check(project: Project, args: argparse.Namespace) -> int:
    """`check`: the preflight report of `preflight.check`; the exit code."""
    import_tensorflow_quietly()
    from . import preflight

    report = preflight.check(project, batches=args.batches)
    print(report)
    return 0 if report.ok else EXIT_PROBLEMS


@contextlib.contextmanager
def _removed_unless_done(path: Path) -> Iterator[None]:
    """Remove what the block wrote under `path` if it raises (an error, Ctrl-C).

    `path` itself goes too if it did not exist: a command that did not finish leaves nothing.
    """
    existed = set(path.rglob("*")) if path.is_dir() else None
    try:
        yield
    except BaseException:
        if existed is None:
            shutil.rmtree(path, ignore_errors=True)
        elif path.is_dir():
            for new in sorted(set(path.rglob("*")) - existed, reverse=True):  # Files first.
                with contextlib.suppress(OSError):
                    if new.is_dir() and not new.is_symlink():
                        new.rmdir()
                    else:
                        new.unlink()
        raise


def profile(project: Project, args: argparse.Namespace, prog: str) -> int:
    """`profile`: the report of `profiling.profile`, printed and written; the exit code."""
    try:
        config = with_flags(project.config(), flag_values(args, "config"))
        options = with_flags(project.options(), flag_values(args, "options"))
    except ValueError as error:
        usage_error(prog, str(error))
    if options.strategy == "multi-worker":
        return _usage(
            prog, "profile runs in one process; drop --strategy multi-worker (try mirrored)"
        )
    logdir = new_run_dir(prefix="profile-") if args.logdir is None else args.logdir
    problem = not_a_directory(logdir, "--logdir")
    if problem:
        return _usage(prog, problem)
    import_tensorflow_quietly()
    import tensorflow as tf

    from . import profiling
    from .contract import DatasetError
    from .distribution import DistributionError
    from .gradients import NoneGradientError, NonFiniteError
    from .optimizers import StepError
    from .precision import PrecisionError

    try:
        with _removed_unless_done(logdir):
            report = profiling.profile(
                project, config, logdir=logdir, options=options, calls=args.calls
            )
            text = str(report)
            logdir.mkdir(parents=True, exist_ok=True)
            (logdir / profiling.REPORT).write_text(text + "\n")
    except (OSError, tf.errors.OpError) as error:
        problem = write_problem(error)
        if problem is None:
            raise
        return _usage(prog, f"cannot write to {logdir}: {problem}, then profile again")
    except NonFiniteError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return EXIT_NONFINITE
    except (
        DatasetError,
        DistributionError,
        NoneGradientError,
        PrecisionError,
        StepError,
    ) as error:
        return _usage(prog, str(error))
    print(text)
    print(f"wrote {logdir / profiling.REPORT} and the trace in {report.trace_dir}")
    print(f"look at it: tensorboard --logdir {logdir}, then its Profile tab (needs xprof)")
    return 0


def use_run(project: Project, args: argparse.Namespace) -> int:
    """`evaluate`, `predict` or `export` of a finished run; the exit code.

    Raises:
        checkpoints.CheckpointError: With the one line to print, for exit code 2.
    """
    import tensorflow as tf

    from . import trained
    from .callbacks import format_metrics

    if args.command == "evaluate":
        print(format_metrics(trained.evaluate(project, args.logdir)))
        return 0

    if args.command == "predict":
        output = trained.output_file(args.output)
        inputs = trained.load_input(args.input)
        if classifies(project):
            predictions = trained.predict(project, args.logdir, inputs, as_class_ids=args.class_ids)
        else:
            predictions = trained.predict(project, args.logdir, inputs)
        try:
            trained.save_output(output, predictions)
        except OSError as error:
            problem = write_problem(error)
            if problem is None:
                raise
            raise trained.RunFileError(
                f"cannot write {output}: {problem}, then predict again; nothing was written"
            ) from None
        print(f"wrote {output}: {predictions.dtype} {predictions.shape}")
        return 0
    try:
        out = trained.export(project, args.logdir, args.out)
    except (OSError, tf.errors.OpError) as error:
        problem = write_problem(error)
        if problem is None:
            raise
        raise trained.RunFileError(
            f"cannot write {args.out}: {problem}, then export again; nothing was written"
        ) from None
    print(f"wrote {out}: load it with tf.saved_model.load({str(out)!r}).serve")
    return 0


def _usage(prog: str, problem: str) -> int:
    print(f"{prog}: error: {problem}", file=sys.stderr)
    return EXIT_USAGE


def sweep(project: Project, args: argparse.Namespace, prog: str) -> int:
    """`sweep`: a new sweep, `--resume` of one, or (`--worker`) one of its jobs; the exit code."""
    from . import sweep as sweeps

    config_flags, option_flags = flag_values(args, "config"), flag_values(args, "options")
    if args.worker:
        return _sweep_job(project, args, prog)
    try:
        sweeps.import_optuna()
    except sweeps.SweepError as error:
        return _usage(prog, str(error))
    created = False
    if args.resume:
        if args.dir is None:
            return _usage(prog, "--resume needs --dir DIR, the directory of the sweep to resume")
        given = [flag_name(name) for name in (*config_flags, *option_flags)]
        given += [f"--{name}" for name in ("metric", "direction", "storage") if getattr(args, name)]
        given += ["--no-pruning"] if args.no_pruning else []
        if given:
            return _usage(
                prog,
                f"{given[0]} cannot change when resuming; the sweep's is in "
                f"{args.dir}/{sweeps.SWEEP_FILE}",
            )
        try:
            settings = sweeps.SweepSettings.read(args.dir)
        except sweeps.SweepError as error:
            return _usage(prog, str(error))
        problem = tracking_problem(sweeps.trial_options(project, settings))
        if problem:
            return _usage(prog, problem)
        sweep_dir = args.dir
        if args.trials is not None and args.trials != settings.trials:
            settings = dataclasses.replace(settings, trials=args.trials)
            settings.write(sweep_dir)
    else:
        try:
            config = with_flags(project.config(), config_flags)
            options = with_flags(project.options(), option_flags)
        except ValueError as error:
            usage_error(prog, str(error))
        if options.strategy == "multi-worker":
            return _usage(
                prog,
                "a sweep's trials cannot train with --strategy multi-worker; use none or "
                "mirrored (or --jobs N for trials side by side)",
            )
        problem = tracking_problem(options)
        if problem:
            return _usage(prog, problem)
        sweep_dir = new_run_dir(SWEEPS) if args.dir is None else args.dir
        problem = check_run_dir(sweep_dir, "--dir", "a sweep", SWEEPS)
        if problem:
            return _usage(prog, problem)
        try:
            sweeps.check_space(project.search_space, config, config_flags)
        except sweeps.SweepError as error:
            return _usage(prog, str(error))
        settings = sweeps.SweepSettings(
            trials=args.trials or 20,
            metric=args.metric or "val_loss",
            direction=args.direction or "minimize",
            pruning=not args.no_pruning,
            config={name: to_json(value) for name, value in config_flags.items()},
            options={name: to_json(value) for name, value in option_flags.items()},
            storage=args.storage,
            study=sweeps.STUDY_NAME if args.storage is None else sweep_dir.name,
        )
        created = not sweep_dir.exists()
        try:
            sweeps.create(sweep_dir, settings)
        except sweeps.SweepError as error:
            if created:
                shutil.rmtree(sweep_dir, ignore_errors=True)
            return _usage(prog, str(error))
    print(f"sweep directory: {sweep_dir}  (watch the trials: tensorboard --logdir {sweep_dir})")
    resume = f"python -m {project.package} sweep --dir {sweep_dir} --resume"
    if args.jobs == 1:
        code = _sweep_job(project, args, prog, sweep_dir)
    else:
        code = _sweep_jobs(project, sweep_dir, args.jobs)
    if code in (130, 143):
        print(f"{prog}: stopped; resume with: {resume}", file=sys.stderr)
        return code
    if (
        code == EXIT_USAGE
        and created
        and not any((sweep_dir / sweeps.TRIALS).glob("*/checkpoints/checkpoint"))
    ):
        shutil.rmtree(sweep_dir, ignore_errors=True)  # Nothing worth resuming: as if not run.
    if code != 0:
        return code
    left = sweeps.unfinished(sweep_dir)
    if left:  # Another process of the sweep still runs trials.
        running = f"{left} trial is" if left == 1 else f"{left} trials are"
        print(f"{running} still running in other processes; {resume} summarizes the sweep")
        return 0
    try:
        print(sweeps.summarize(sweep_dir, project.package))
    except sweeps.SweepError as error:
        return _usage(prog, str(error))
    if sweeps.trial_options(project, settings).track:
        import_tensorflow_quietly()  # MLflow's client comes with the tracker, a Keras callback.
    try:
        sweeps.end_parent_run(project, sweep_dir, "FINISHED")
    except sweeps.SweepError as error:
        return _usage(prog, str(error))
    print(f"summary: {sweep_dir / 'summary.md'}")
    return 0


def _sweep_job(
    project: Project, args: argparse.Namespace, prog: str, sweep_dir: Path | None = None
) -> int:
    """Run the sweep's trials in this process until none is left; the exit code."""
    import_tensorflow_quietly()
    from . import interrupts
    from . import sweep as sweeps
    from .contract import DatasetError
    from .tracking import TrackingError

    sweep_dir = args.dir if sweep_dir is None else sweep_dir
    try:
        sweeps.work(project, sweep_dir, seed=project.config().seed + 1000 * args.job)
    except interrupts.Interrupted as stop:
        return stop.exit_code
    except (sweeps.SweepError, DatasetError, TrackingError) as error:
        return _usage(prog, str(error))
    return 0


def _sweep_jobs(project: Project, sweep_dir: Path, jobs: int) -> int:
    """Run `jobs` processes of the sweep's trials side by side; the first non-zero exit code.

    As `launch` runs its workers (`cluster.run_processes`): their lines prefixed with
    `[job i]`, each signal passed on once (the first stops every job after a checkpoint, a
    second at once), the others stopped when one fails. If this process is killed, the jobs
    get SIGTERM from the kernel (on Linux), and stop after a checkpoint.
    """
    command = [sys.executable, "-m", project.package, "sweep", "--dir", str(sweep_dir)]
    commands = [[*command, "--worker", "--job", str(job)] for job in range(jobs)]
    return run_processes(commands, "job", stop_with_parent=True)
