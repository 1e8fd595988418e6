"""What checkpointing at every epoch's end costs the default run (the batch-32 MLP on digits).

Renders the default project, then runs its default training (`fit(PROJECT, Config())`: 10 epochs,
TensorBoard and metrics.jsonl on) into a fresh run directory, ROUNDS times in one process for
each way of writing checkpoints, interleaved: in the background (`background_checkpoints=True`,
the default: `save` takes a snapshot and a thread writes it) and while the run waits (`False`).
For each run it times `fit` as a whole and, inside it, every `RunCheckpoint.save`: how long the
run waits for it (the first of a run includes tracing). It also times the default command,
`python -m bench train --quiet`, end to end, ROUNDS times. Quotes medians, the time the run
waits for checkpoints as a share of `fit` and of the command, and writes
benchmarks/checkpoints.md.

    python benchmarks/checkpoint_cost.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf

from scaffold.render import render_project

OUT = Path(__file__).with_name("checkpoints.md")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp())
    render_project(root / "bench", {"project_name": "bench"}, quiet=True)
    sys.path.insert(0, str(root / "bench" / "src"))
    package = importlib.import_module("bench")
    checkpoints = importlib.import_module("bench.engine.checkpoints")
    train = importlib.import_module("bench.engine.train")

    saves: list[float] = []
    original = checkpoints.RunCheckpoint.save

    def timed_save(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            saves.append(time.perf_counter() - start)

    checkpoints.RunCheckpoint.save = timed_save
    rows: dict[bool, list[tuple[float, float, int, float]]] = {True: [], False: []}
    for round_ in range(args.rounds):
        for background in (True, False):
            saves.clear()
            logdir = root / f"run{round_}-{background}"
            options = package.RunOptions(
                verbose=0, logdir=logdir, background_checkpoints=background
            )
            start = time.perf_counter()
            train.fit(package.PROJECT, package.Config(), options=options)
            total = time.perf_counter() - start
            rows[background].append((total, sum(saves), len(saves), statistics.median(saves)))
    commands = []
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(root / "bench" / "src")
    for round_ in range(args.rounds):
        argv = ["train", "--quiet", "--logdir", str(root / f"cli{round_}")]
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bench", *argv], check=True, env=env)
        commands.append(time.perf_counter() - start)
    command = statistics.median(commands)
    lines = [
        "# Checkpoint cost on the default run",
        "",
        f"`python benchmarks/checkpoint_cost.py --rounds {args.rounds}`; TensorFlow "
        f"{tf.__version__}, Python {platform.python_version()}, {os.cpu_count()} CPUs.",
        "",
        "| checkpoints written | `fit`, default run (10 epochs) | the run waits for the writes "
        "| per write (median) | share of `fit` | share of `python -m bench train` |",
        "|---|---|---|---|---|---|",
    ]
    for background in (True, False):
        runs = rows[background]
        total = statistics.median(row[0] for row in runs)
        waiting = statistics.median(row[1] for row in runs)
        share = statistics.median(row[1] / row[0] for row in runs)
        per_save = statistics.median(row[3] for row in runs)
        name = "in the background (default)" if background else "while the run waits"
        lines.append(
            f"| {name} | {total:.2f} s | {waiting * 1000:.0f} ms ({runs[0][2]} writes) | "
            f"{per_save * 1000:.1f} ms | {share:.1%} | {waiting / command:.1%} |"
        )
    lines += [
        "",
        f"`python -m bench train --quiet` took {command:.2f} s. Medians over the rounds. The",
        "command's time includes starting Python, importing TensorFlow and loading the data,",
        "which a run pays once. While the run waits, the first write includes its trace. In",
        "the background, the run waits for the reads of the variables and the data's position,",
        "and for the write of the save before if it is still running; the thread traces and",
        "writes while the run trains, sharing the CPUs with it.",
        "",
    ]
    OUT.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
