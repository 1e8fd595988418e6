"""Steps per second of your own arrays: the array helper, and conversions at the boundary.

Renders the default project (an MLP on digits) and the CNN variant on 8x8x1 digits from this
working tree, takes the training split as NumPy arrays, and times training epochs of the
generated `Trainer` (K steps per call, no validation) on each way a user may bring them:

- `shuffled_batches, float32`: the engine's array helper (`engine.batches.shuffled_batches`) on
  float32 features and int32 class ids, what the steps take: nothing to convert;
- `shuffled_batches, float64 + int64`: the same helper on NumPy's default dtypes, which the
  dataset's boundary (`task.prepare_dataset`, as `fit` calls it) casts with one `map`;
- `from_tensor_slices, float32` / `from_tensor_slices, float64 + int64`: the common idiom
  `from_tensor_slices().cache().shuffle().batch().prefetch()` on the same arrays;
- `floor`: the task's train step in a `tf.while_loop` over one in-memory batch: no input
  pipeline, no Python (as in `loop_vs_fit.py`).

Contenders are interleaved over `--rounds` rounds in one process, each timing `--epochs`
epochs after a warm-up epoch; medians over rounds, ratios from the same run. Writes
benchmarks/data_boundary.md.

    python benchmarks/data_boundary.py [--rounds 5] [--epochs 30]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
from loop_vs_fit import engine_module, interleaved, load_project, tables, time_epochs

CASES = {
    "mlp-b32": {"input_shape": "64"},
    "cnn-b32": {"input_shape": "8,8,1"},
}
HELPER, CLASSIC = "shuffled_batches", "from_tensor_slices"
NATIVE, DEFAULTS = "float32", "float64 + int64"


def contenders(project, config, epochs: int) -> dict[str, Callable[[], float]]:
    batches, train = engine_module(project, "batches"), engine_module(project, "train")
    train_ds, _ = project.PROJECT.load_datasets(config)
    pairs = list(train_ds.as_numpy_iterator())
    features = np.concatenate([x for x, _ in pairs]).astype(np.float32)
    labels = np.concatenate([y for _, y in pairs])
    arrays = {
        NATIVE: (features, labels),
        DEFAULTS: (features.astype(np.float64), labels.astype(np.int64)),
    }

    def classic(x: np.ndarray, y: np.ndarray) -> tf.data.Dataset:
        return (
            tf.data.Dataset.from_tensor_slices((x, y))
            .cache()
            .shuffle(len(x), seed=config.seed, reshuffle_each_iteration=True)
            .batch(config.batch_size)
            .prefetch(2)
        )

    def trainer():
        model = project.PROJECT.build_model(config)
        return train.Trainer(project.PROJECT, config, model, project.RunOptions())

    def train_only(make: Callable[[], tf.data.Dataset]) -> Callable[[], float]:
        def measure() -> float:
            loop_trainer = trainer()
            dataset = loop_trainer.task.prepare_dataset(make(), "train_ds")
            return time_epochs(lambda: loop_trainer.train_epoch(dataset)[1], epochs)

        return measure

    def floor() -> float:
        floor_trainer = trainer()
        step = tf.function(
            floor_trainer.task.make_train_step(),
            input_signature=floor_trainer.task.input_signature,
            autograph=False,
        )
        x, y = next(iter(train_ds))
        num_steps = tf.constant(sum(1 for _ in train_ds))

        @tf.function
        def run(n: tf.Tensor) -> tf.Tensor:
            return tf.while_loop(lambda i: i < n, lambda i: (step(x, y), i + 1)[1:], [0])[0]

        return time_epochs(lambda: int(run(num_steps)), epochs)

    measures: dict[str, Callable[[], float]] = {}
    for kind, (x, y) in arrays.items():
        measures[f"{HELPER}, {kind}"] = train_only(
            lambda x=x, y=y: batches.shuffled_batches((x, y), config.batch_size, seed=config.seed)
        )
        measures[f"{CLASSIC}, {kind}"] = train_only(lambda x=x, y=y: classic(x, y))
    measures["floor"] = floor
    return measures


def ratios(medians: dict[str, float]) -> dict[str, float]:
    return {
        f"{HELPER}, {NATIVE} / floor": medians[f"{HELPER}, {NATIVE}"] / medians["floor"],
        f"{HELPER}, {DEFAULTS} / floor": medians[f"{HELPER}, {DEFAULTS}"] / medians["floor"],
        f"{HELPER}, {DEFAULTS} / {HELPER}, {NATIVE}": medians[f"{HELPER}, {DEFAULTS}"]
        / medians[f"{HELPER}, {NATIVE}"],
        f"{CLASSIC}, {DEFAULTS} / {CLASSIC}, {NATIVE}": medians[f"{CLASSIC}, {DEFAULTS}"]
        / medians[f"{CLASSIC}, {NATIVE}"],
        f"{HELPER}, {NATIVE} / {CLASSIC}, {NATIVE}": medians[f"{HELPER}, {NATIVE}"]
        / medians[f"{CLASSIC}, {NATIVE}"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30, help="timed epochs per measurement")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("data_boundary"))
    args = parser.parse_args()

    results: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case, answers in CASES.items():
            name = f"arrays-{case}"
            project = load_project(Path(tmp), name, answers)
            config = dataclasses.replace(project.Config(), batch_size=32)
            measures = contenders(project, config, args.epochs)
            samples = interleaved(case, measures, args.rounds)
            medians = {contender: statistics.median(s) for contender, s in samples.items()}
            results[case] = {"steps_per_second": medians, "ratios": ratios(medians)}

    lines = [
        f"TF {tf.__version__}, Keras {keras.__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs; medians of {args.rounds} interleaved rounds of {args.epochs} "
        "training epochs (no validation) at batch 32, K steps per call as the project's "
        f"default; `{DEFAULTS}`: NumPy's default dtypes, cast once at the dataset's boundary.",
    ]
    lines += tables(results)
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
