"""Steps per second of the generated loop against `model.fit`, measured in one process.

Renders the default project (an MLP on digits) and a small-CNN variant from this working tree,
then times, interleaved round by round so that machine noise hits every contender alike:

- `loop K=1` / `loop K=<default>`: the generated `Trainer`, one or K steps per `tf.function` call;
- `fit` / `fit K=<default>`: `model.fit` with default settings, and with the same
  `steps_per_execution`;
- `guide loop`: the guide's plain loop, one `tf.function` step per batch;
- `... (classic data)`: the same on the training split as
  `from_tensor_slices().cache().shuffle().batch().prefetch()`. `fit` and the guide loop create
  an iterator every epoch, which costs them more on the project's `shuffled_batches` (it maps),
  so their ratios are taken against whichever pipeline suits them better;
- `loop K=<default> train only`: the generated loop without its validation pass;
- `loop K=<default> train only, cached batches`: the same over the first epoch's batches cached
  in memory, so that no shuffling or batching is left: what the loop itself costs over the floor;
- `floor`: the generated train step in a `tf.while_loop` over one in-memory batch: no input
  pipeline, no validation, no Python: the compute floor.

Every figure is training steps per second over whole epochs, validation included (except the
floor), after one warm-up epoch. Medians over the rounds; ratios from the same run.

    python benchmarks/loop_vs_fit.py [--rounds 5] [--epochs 30] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

from scaffold.render import render_project

CLASSIC = "classic data"

CASES = {
    "mlp-b32": ({"input_shape": "64"}, 32),
    "mlp-b256": ({"input_shape": "64"}, 256),
    "cnn-b32": ({"input_shape": "8,8,1"}, 32),
}


def load_project(root: Path, name: str, answers: dict[str, object]):
    """Render a project and import its package under a unique name."""
    render_project(root / name, {"project_name": name, **answers}, quiet=True)
    sys.path.insert(0, str(root / name / "src"))
    package = name.replace("-", "_")
    modules = ("config", "data", "model", "losses", "train")
    return {m: importlib.import_module(f"{package}.{m}") for m in modules}


def time_epochs(run_epoch: Callable[[], int], epochs: int) -> float:
    """Steps per second over `epochs` timed epochs after one warm-up epoch."""
    run_epoch()
    steps = 0
    start = time.perf_counter()
    for _ in range(epochs):
        steps += run_epoch()
    return steps / (time.perf_counter() - start)


def classic_pipeline(train_ds: tf.data.Dataset, config) -> tf.data.Dataset:
    """The same training split as `from_tensor_slices().cache().shuffle().batch().prefetch()`.

    The idiom most code uses, and the one `fit` prefers: `fit` creates a new iterator every
    epoch, which costs several ms for a pipeline with a `map` such as `shuffled_batches`.
    """
    batches = list(train_ds.as_numpy_iterator())
    features = np.concatenate([x for x, _ in batches])
    labels = np.concatenate([y for _, y in batches])
    options = tf.data.Options()
    options.autotune.enabled = False
    return (
        tf.data.Dataset.from_tensor_slices((features, labels))
        .cache()
        .shuffle(len(features), seed=config.seed, reshuffle_each_iteration=True)
        .batch(config.batch_size)
        .prefetch(2)
        .with_options(options)
    )


def contenders(project, config, epochs: int) -> dict[str, Callable[[], float]]:
    train_ds, val_ds = project["data"].load_datasets(config)
    classic = classic_pipeline(train_ds, config)
    pipelines = {"": train_ds, f" ({CLASSIC})": classic}
    num_steps = sum(1 for _ in train_ds)
    losses, build = project["losses"], project["model"].build_model
    k = config.steps_per_execution

    def loop(steps_per_execution: int, train: tf.data.Dataset) -> Callable[[], float]:
        def measure() -> float:
            run_config = dataclasses.replace(config, steps_per_execution=steps_per_execution)
            trainer = project["train"].Trainer(run_config, build(run_config))

            def epoch() -> int:
                _, steps = trainer.train_epoch(train)
                trainer.evaluate(val_ds)
                return steps

            return time_epochs(epoch, epochs)

        return measure

    cached_batches = train_ds.cache()
    for _ in cached_batches:  # Fill the cache: later epochs replay these batches.
        pass

    def loop_train_only(dataset: tf.data.Dataset) -> Callable[[], float]:
        def measure() -> float:
            run_config = dataclasses.replace(config, steps_per_execution=k)
            trainer = project["train"].Trainer(run_config, build(run_config))
            return time_epochs(lambda: trainer.train_epoch(dataset)[1], epochs)

        return measure

    def fit(train: tf.data.Dataset, **compile_args: object) -> Callable[[], float]:
        def measure() -> float:
            model = build(config)
            model.compile(
                optimizer=keras.optimizers.Adam(config.learning_rate),
                loss=losses.make_loss(),
                metrics=[losses.make_accuracy("acc")],
                **compile_args,
            )
            return time_epochs(
                lambda: len(model.fit(train, validation_data=val_ds, verbose=0).epoch) * num_steps,
                epochs,
            )

        return measure

    def guide(train: tf.data.Dataset) -> Callable[[], float]:
        def measure() -> float:
            model = build(config)
            optimizer = keras.optimizers.Adam(config.learning_rate)
            loss_fn = losses.make_loss()
            train_loss, val_loss = keras.metrics.Mean(), keras.metrics.Mean()
            train_acc, val_acc = losses.make_accuracy("a"), losses.make_accuracy("b")

            @tf.function
            def train_step(x, y):
                with tf.GradientTape() as tape:
                    y_pred = model(x, training=True)
                    loss = loss_fn(y, y_pred) + tf.add_n(model.losses)
                grads = tape.gradient(loss, model.trainable_variables)
                optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
                train_loss.update_state(loss)
                train_acc.update_state(y, y_pred)

            @tf.function
            def test_step(x, y):
                y_pred = model(x, training=False)
                val_loss.update_state(loss_fn(y, y_pred) + tf.add_n(model.losses))
                val_acc.update_state(y, y_pred)

            def epoch() -> int:
                for metric in (train_loss, val_loss, train_acc, val_acc):
                    metric.reset_state()
                steps = 0
                for x, y in train:
                    train_step(x, y)
                    steps += 1
                for x, y in val_ds:
                    test_step(x, y)
                float(train_loss.result()), float(val_acc.result())
                return steps

            return time_epochs(epoch, epochs)

        return measure

    def floor() -> float:
        trainer = project["train"].Trainer(config, build(config))
        x, y = next(iter(train_ds))

        @tf.function
        def run(n: tf.Tensor) -> tf.Tensor:
            return tf.while_loop(
                lambda i: i < n, lambda i: (trainer.train_step(x, y), i + 1)[1:], [0]
            )[0]

        n = tf.constant(num_steps)
        return time_epochs(lambda: int(run(n)), epochs)

    return {
        "loop K=1": loop(1, train_ds),
        f"loop K={k}": loop(k, train_ds),
        f"loop K={k} ({CLASSIC})": loop(k, classic),
        **{f"fit{suffix}": fit(train) for suffix, train in pipelines.items()},
        **{
            f"fit K={k}{suffix}": fit(train, steps_per_execution=k)
            for suffix, train in pipelines.items()
        },
        **{f"guide loop{suffix}": guide(train) for suffix, train in pipelines.items()},
        f"loop K={k} train only": loop_train_only(train_ds),
        f"loop K={k} train only, cached batches": loop_train_only(cached_batches),
        "floor": floor,
    }


def ratios(medians: dict[str, float], k: int) -> dict[str, float]:
    """The figures the README quotes; `fit` and the guide loop on whichever data suits them."""

    def best(name: str) -> float:
        return max(medians[name], medians[f"{name} ({CLASSIC})"])

    ours = medians[f"loop K={k}"]
    return {
        f"loop K={k} / best fit": ours / best("fit"),
        f"loop K={k} / best fit K={k}": ours / best(f"fit K={k}"),
        f"loop K={k} / floor": ours / medians["floor"],
        f"loop K={k} train only / floor": medians[f"loop K={k} train only"] / medians["floor"],
        f"loop K={k} train only, cached batches / floor": medians[
            f"loop K={k} train only, cached batches"
        ]
        / medians["floor"],
        "loop K=1 / best fit": medians["loop K=1"] / best("fit"),
        "best guide loop / best fit": best("guide loop") / best("fit"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30, help="timed epochs per measurement")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results"))
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    args = parser.parse_args()

    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases:
            answers, batch_size = CASES[case]
            project = load_project(Path(tmp), f"bench-{case}", answers)
            config = dataclasses.replace(project["config"].Config(), batch_size=batch_size)
            measures = contenders(project, config, args.epochs)
            samples: dict[str, list[float]] = {name: [] for name in measures}
            for round_ in range(args.rounds):
                for name, measure in measures.items():
                    samples[name].append(measure())
                print(
                    f"{case} round {round_ + 1}: "
                    + ", ".join(f"{n} {s[-1]:.0f}" for n, s in samples.items()),
                    flush=True,
                )
            medians = {name: statistics.median(s) for name, s in samples.items()}
            results[case] = {
                "steps_per_second": medians,
                "samples": samples,
                "ratios": ratios(medians, config.steps_per_execution),
            }
    meta = {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "rounds": args.rounds,
        "timed_epochs": args.epochs,
    }
    report = {"meta": meta, "results": results}
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    first = next(iter(results.values()))
    lines = [
        f"TF {meta['tensorflow']}, Keras {meta['keras']}, {meta['cpus']} CPUs; medians of "
        f"{args.rounds} interleaved rounds of {args.epochs} epochs; training steps per second, "
        f"validation included unless the name says otherwise; `{CLASSIC}`: the training split "
        "as `from_tensor_slices().cache().shuffle().batch().prefetch()` instead of the "
        "project's `shuffled_batches`.",
    ]
    for key, form in (("steps_per_second", "{:.0f}"), ("ratios", "{:.2f}x")):
        columns = list(first[key])
        lines += [
            "",
            "| contender | " + " | ".join(results) + " |",
            "|---" * (1 + len(results)) + "|",
        ]
        for column in columns:
            row = [form.format(result[key][column]) for result in results.values()]
            lines.append(f"| {column} | " + " | ".join(row) + " |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
