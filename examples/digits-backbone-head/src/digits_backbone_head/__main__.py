"""Command line: `python -m digits_backbone_head train [--epochs N] [--batch-size B] ...`.

Template-owned: `copier update` replaces this file.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from .config import Config
from .train import fit


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; `train` is the one command."""
    parser = argparse.ArgumentParser(
        prog=f"python -m {__package__}", description="Train the model with the custom loop."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train with the custom loop")
    train.add_argument("--epochs", type=_positive_int, help="default: Config.epochs")
    train.add_argument("--batch-size", type=_positive_int, help="default: Config.batch_size")
    train.add_argument(
        "--logdir", default="runs", help="metrics.jsonl is appended here (default: runs)"
    )
    train.add_argument(
        "--eager", action="store_true", help="run the steps eagerly for readable stack traces"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, train, and return the exit code."""
    args = build_parser().parse_args(argv)
    overrides = {"epochs": args.epochs, "batch_size": args.batch_size}
    config = dataclasses.replace(Config(), **{k: v for k, v in overrides.items() if v is not None})
    fit(config, logdir=args.logdir, run_eagerly=args.eager)
    return 0


if __name__ == "__main__":
    sys.exit(main())
