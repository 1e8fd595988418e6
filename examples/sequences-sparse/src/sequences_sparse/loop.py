"""What every training loop of this project shares: many steps per call, epochs and logs.

Template-owned: `copier update` replaces this file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import tensorflow as tf

EpochLogs = dict[str, float]
LoopFn = Callable[[tf.data.Iterator, tf.Tensor], tf.Tensor]


def make_loop(step: Callable[..., object]) -> LoopFn:
    """Return a `tf.function` that runs up to `num_steps` steps of `step` in one call.

    One Python-to-TensorFlow dispatch then covers many steps, which is where small models spend
    their time. The step count is a tensor, so changing it does not retrace, and the iterator's
    spec is the same every epoch, so a new iterator does not retrace either. The end of the data
    is found with `get_next_as_optional`, so no batch is dropped or repeated.

    Args:
        step: Takes the elements of one batch as positional arguments.

    Returns:
        A function of `(iterator, num_steps)` that returns the number of steps it ran: fewer
        than `num_steps` only when the iterator is exhausted.
    """

    def loop(iterator: tf.data.Iterator, num_steps: tf.Tensor) -> tf.Tensor:
        steps = tf.constant(0, dtype=tf.int32)
        for _ in tf.range(num_steps):
            batch = iterator.get_next_as_optional()
            if not batch.has_value():
                break
            step(*tf.nest.flatten(batch.get_value()))
            steps += 1
        return steps

    return tf.function(loop)


def run_epoch(
    step: Callable[..., object],
    loop: LoopFn,
    dataset: tf.data.Dataset,
    steps_per_execution: int,
    *,
    run_eagerly: bool,
) -> int:
    """Run `step` on every batch of `dataset` once; return the number of steps.

    Args:
        step: The step, as plain Python when `run_eagerly`.
        loop: `make_loop(step)`, used unless `run_eagerly`.
        dataset: The batches.
        steps_per_execution: Steps per call of `loop`.
        run_eagerly: Call `step` batch by batch from Python, for readable stack traces.
    """
    steps = 0
    if run_eagerly:
        for batch in dataset:
            step(*tf.nest.flatten(batch))
            steps += 1
        return steps
    iterator = iter(dataset)
    num_steps = tf.constant(steps_per_execution, dtype=tf.int32)
    while True:
        ran = int(loop(iterator, num_steps))
        steps += ran
        if ran < steps_per_execution:
            return steps


def format_logs(logs: EpochLogs, epochs: int, steps_per_second: float) -> str:
    """One line per epoch: `epoch 3/10 | train_loss 0.1234 | ... | 812 steps/s`."""
    figures = " | ".join(f"{key} {value:.4f}" for key, value in logs.items() if key != "epoch")
    return f"epoch {logs['epoch']}/{epochs} | {figures} | {steps_per_second:.0f} steps/s"


def append_logs(logdir: str | Path, logs: EpochLogs) -> None:
    """Append one epoch's figures as a JSON line to `logdir/metrics.jsonl`."""
    Path(logdir).mkdir(parents=True, exist_ok=True)
    with (Path(logdir) / "metrics.jsonl").open("a", encoding="utf-8") as stream:
        stream.write(json.dumps(logs) + "\n")
