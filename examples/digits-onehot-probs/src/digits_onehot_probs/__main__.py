"""Command line: `python -m digits_onehot_probs train [--epochs N] [--logdir DIR] ...`.

`--help` imports no TensorFlow, so it answers at once; TensorFlow's start-up messages are
silenced unless `TF_CPP_MIN_LOG_LEVEL` is set. Exit codes: 0 when the run finished, 1 when it
stopped on non-finite steps, 2 for a usage error (nothing is written then), 130 on Ctrl-C.

Template-owned: `copier update` merges template changes into it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import sys
from pathlib import Path

from .config import Config
from .options import RunOptions

RUNS = Path("runs")
EXIT_NONFINITE = 1
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; `train` is the one command. Defaults come from `Config`."""
    config, options = Config(), RunOptions()
    parser = argparse.ArgumentParser(
        prog=f"python -m {__package__}", description="Train the model with the custom loop."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser(
        "train",
        help="train with the custom loop",
        description="Train with the custom loop; every figure goes to the run's directory.",
    )
    train.add_argument(
        "--epochs", type=_positive_int, help=f"passes over the data (default: {config.epochs})"
    )
    train.add_argument(
        "--batch-size",
        type=_positive_int,
        help=f"examples per training step (default: {config.batch_size})",
    )
    train.add_argument(
        "--logdir",
        type=Path,
        help=(
            "the run's directory, for metrics.jsonl and TensorBoard events; it must not hold "
            f"a run already (default: a new {RUNS}/<date>-<time>)"
        ),
    )
    train.add_argument(
        "--steps-per-execution",
        type=_positive_int,
        help=f"steps per tf.function call (default: {options.steps_per_execution})",
    )
    train.add_argument(
        "--jit-compile",
        action=argparse.BooleanOptionalAction,
        help=f"compile the steps with XLA (default: {options.jit_compile})",
    )
    train.add_argument(
        "--clip-global-norm",
        type=_positive_float,
        help="clip each step's gradients to this global norm (default: no clipping)",
    )
    train.add_argument(
        "--max-bad-steps",
        type=_positive_int,
        help=(
            "stop after this many non-finite steps in a row; each is skipped "
            f"(default: {options.max_bad_steps})"
        ),
    )
    train.add_argument(
        "--strict-gradients",
        action="store_true",
        help="fail, rather than warn, when a trainable variable gets no gradient",
    )
    train.add_argument(
        "--deterministic",
        action="store_true",
        help="make every op deterministic, so two runs give identical results (slower)",
    )
    train.add_argument("--no-tensorboard", action="store_true", help="write no TensorBoard events")
    train.add_argument(
        "--eager", action="store_true", help="run the steps eagerly for readable stack traces"
    )
    train.add_argument("--quiet", action="store_true", help="print nothing but errors")
    return parser


def new_run_dir(runs: Path = RUNS) -> Path:
    """A directory under `runs` named for the time now that no run has taken."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path, suffix = runs / stamp, 1
    while path.exists():
        path, suffix = runs / f"{stamp}-{suffix}", suffix + 1
    return path


def check_run_dir(path: Path) -> str | None:
    """Why `path` cannot take a new run, or `None` when it can."""
    if path.is_file():
        return f"--logdir {path} is a file; give a directory"
    if path.is_dir() and any(path.iterdir()):
        return (
            f"--logdir {path} already holds a run; choose a new directory, "
            f"or leave out --logdir for a new one under {RUNS}/"
        )
    return None


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


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, train, and return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    overrides = {"epochs": args.epochs, "batch_size": args.batch_size}
    config = dataclasses.replace(Config(), **{k: v for k, v in overrides.items() if v is not None})
    logdir = new_run_dir() if args.logdir is None else args.logdir
    problem = check_run_dir(logdir)
    if problem:
        parser.exit(EXIT_USAGE, f"{parser.prog} train: error: {problem}\n")
    changes = {
        "steps_per_execution": args.steps_per_execution,
        "jit_compile": args.jit_compile,
        "clip_global_norm": args.clip_global_norm,
        "max_bad_steps": args.max_bad_steps,
    }
    options = dataclasses.replace(
        RunOptions(),
        **{k: v for k, v in changes.items() if v is not None},
        strict_gradients=args.strict_gradients,
        deterministic=args.deterministic,
        tensorboard=not args.no_tensorboard,
        run_eagerly=args.eager,
        logdir=logdir,
        verbose=0 if args.quiet else 1,
    )
    import_tensorflow_quietly()
    from .gradients import NonFiniteError
    from .train import fit

    if not args.quiet:
        print(f"run directory: {logdir}  (watch it: tensorboard --logdir {logdir.parent})")
    try:
        fit(config, options=options)
    except NonFiniteError as error:
        print(f"{parser.prog} train: error: {error}", file=sys.stderr)
        return EXIT_NONFINITE
    except KeyboardInterrupt:
        print(f"{parser.prog} train: interrupted; finished epochs are in {logdir}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
