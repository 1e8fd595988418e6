"""A whole default run and the time before its first step: the generated loop against `model.fit`.

Renders the default project (the batch-32 MLP on digits) from this working tree, then measures,
interleaved round by round so that machine noise hits both alike:

- in one process, `loop`: `engine.train.fit(PROJECT, Config(), options=RunOptions(verbose=0,
  logdir=<a new directory>))`, the default run (10 epochs, validation every epoch, a checkpoint
  every epoch, metrics.jsonl, TensorBoard and `model.keras`), from building the model to the
  end; against `fit`: the same model built and compiled (Adam, the task's loss and accuracy),
  the project's `load_datasets`, and `model.fit(train, validation_data=val, epochs=10,
  verbose=0)` with what keeps a run in Keras (`TensorBoard`, `BackupAndRestore` saving every
  epoch, `CSVLogger`) and `model.save` at the end. Both are timed from before building the
  model; `to first step` is the time until the first `on_train_batch_begin` (the first call of
  steps is about to run; `fit` calls it before its first step too), `whole run` until the run
  returns (`model.keras` written);
- the same pair as commands, each in a new Python process: `python -m bench train --quiet
  --logdir <a new directory>` against a script that does what `fit` does above. The figure is
  the command's wall time less the median time of `python -c "import tensorflow, keras"`
  (TensorFlow's import, which both pay alike).

The first round of each warms the file cache and is not counted. Medians over the rounds,
ratios from the same run.

    python benchmarks/startup.py [--rounds 5] [--out benchmarks/startup]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
from loop_vs_fit import engine_module, load_project, machine

FIT_SCRIPT = """
import sys

import keras

from bench import PROJECT
from bench.config import Config

logdir = sys.argv[1]
config = Config()
keras.utils.set_random_seed(config.seed)
model = PROJECT.build_model(config)
model.compile(
    optimizer=keras.optimizers.Adam(config.learning_rate),
    loss=config.labels.make_loss(),
    metrics=[config.labels.make_accuracy("acc")],
)
train, val = PROJECT.load_datasets(config)
callbacks = [
    keras.callbacks.TensorBoard(logdir, write_graph=False, profile_batch=0),
    keras.callbacks.BackupAndRestore(logdir + "/backup", save_freq="epoch"),
    keras.callbacks.CSVLogger(logdir + "/metrics.csv"),
]
model.fit(train, validation_data=val, epochs=config.epochs, verbose=0, callbacks=callbacks)
model.save(logdir + "/model.keras")
"""


class FirstStep(keras.callbacks.Callback):
    """Records when the first call of training steps is about to run."""

    def __init__(self) -> None:
        super().__init__()
        self.at: float | None = None

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if self.at is None:
            self.at = time.perf_counter()


def in_process(package: ModuleType) -> dict[str, Callable[[], tuple[float, float]]]:
    """The in-process contenders: each returns (seconds to first step, seconds in all)."""
    train = engine_module(package, "train")
    config = package.Config()

    def loop() -> tuple[float, float]:
        first = FirstStep()
        with tempfile.TemporaryDirectory() as logdir:
            start = time.perf_counter()
            options = package.RunOptions(verbose=0, logdir=Path(logdir) / "run")
            train.fit(package.PROJECT, config, options=options, callbacks=[first])
            end = time.perf_counter()
        assert first.at is not None
        return first.at - start, end - start

    def fit() -> tuple[float, float]:
        first = FirstStep()
        with tempfile.TemporaryDirectory() as logdir:
            start = time.perf_counter()
            keras.utils.set_random_seed(config.seed)
            model = package.PROJECT.build_model(config)
            model.compile(
                optimizer=keras.optimizers.Adam(config.learning_rate),
                loss=config.labels.make_loss(),
                metrics=[config.labels.make_accuracy("acc")],
            )
            train_ds, val_ds = package.PROJECT.load_datasets(config)
            callbacks = [
                first,
                keras.callbacks.TensorBoard(logdir, write_graph=False, profile_batch=0),
                keras.callbacks.BackupAndRestore(f"{logdir}/backup", save_freq="epoch"),
                keras.callbacks.CSVLogger(f"{logdir}/metrics.csv"),
            ]
            model.fit(
                train_ds,
                validation_data=val_ds,
                epochs=config.epochs,
                verbose=0,
                callbacks=callbacks,
            )
            model.save(f"{logdir}/model.keras")
            end = time.perf_counter()
        assert first.at is not None
        return first.at - start, end - start

    return {"loop": loop, "fit": fit}


def commands(root: Path) -> dict[str, Callable[[], float]]:
    """The command-line contenders and TensorFlow's import: each returns its wall seconds."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(root / "bench" / "src")
    script = root / "fit_script.py"
    script.write_text(textwrap.dedent(FIT_SCRIPT))

    def timed(argv: list[str]) -> float:
        start = time.perf_counter()
        subprocess.run(argv, check=True, env=env, cwd=root, stdout=subprocess.DEVNULL)
        return time.perf_counter() - start

    def loop() -> float:
        with tempfile.TemporaryDirectory() as logdir:
            return timed([sys.executable, "-m", "bench", "train", "--quiet", "--logdir", logdir])

    def fit() -> float:
        with tempfile.TemporaryDirectory() as logdir:
            return timed([sys.executable, str(script), logdir])

    def tf_import() -> float:
        return timed([sys.executable, "-c", "import tensorflow, keras"])

    return {"python -m bench train": loop, "fit script": fit, "import": tf_import}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("startup"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        package = load_project(root, "bench", {})
        runs, shells = in_process(package), commands(root)
        first: dict[str, list[float]] = {name: [] for name in runs}
        whole: dict[str, list[float]] = {name: [] for name in runs}
        walls: dict[str, list[float]] = {name: [] for name in shells}
        for round_ in range(args.rounds + 1):
            for name, run in runs.items():
                with contextlib.redirect_stdout(sys.stderr):
                    to_first, total = run()
                if round_:
                    first[name].append(to_first)
                    whole[name].append(total)
            for name, shell in shells.items():
                seconds = shell()
                if round_:
                    walls[name].append(seconds)
            print(f"round {round_} done", file=sys.stderr)
    median = statistics.median
    tf_import = median(walls["import"])
    command = {
        name: median(walls[name]) - tf_import for name in ("python -m bench train", "fit script")
    }
    rows = {
        name: {"to first step": median(first[name]), "whole run": median(whole[name])}
        for name in runs
    }
    ratios = {
        "whole run: fit / loop": rows["fit"]["whole run"] / rows["loop"]["whole run"],
        "to first step: loop / fit": rows["loop"]["to first step"] / rows["fit"]["to first step"],
        "command less import: loop / fit": command["python -m bench train"] / command["fit script"],
    }
    meta = {**machine(), "rounds": args.rounds}
    report = {
        "meta": meta,
        "in_process": rows,
        "commands_less_import": command,
        "tf_import": tf_import,
        "ratios": ratios,
        "samples": {"first": first, "whole": whole, "walls": walls},
    }
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# A whole default run, and the time before its first step",
        "",
        f"`python benchmarks/startup.py --rounds {args.rounds}`; TF {meta['tensorflow']}, Keras "
        f"{meta['keras']}, Python {meta['python']}, {meta['cpus']} CPUs; medians of "
        f"{args.rounds} rounds after one warm-up round.",
        "",
        "| in one process | to first step | whole run (10 epochs) |",
        "|---|---|---|",
        *(
            f"| {name} | {row['to first step']:.2f} s | {row['whole run']:.2f} s |"
            for name, row in rows.items()
        ),
        "",
        f"| command, less TensorFlow's import ({tf_import:.2f} s) | seconds |",
        "|---|---|",
        *(f"| `{name}` | {seconds:.2f} s |" for name, seconds in command.items()),
        "",
        "| ratio | |",
        "|---|---|",
        *(f"| {name} | {value:.2f}x |" for name, value in ratios.items()),
        "",
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
