"""Steps per second of the generated loop against `model.fit`, measured in one process.

Renders the default project (an MLP on digits) and a small-CNN variant from this working tree,
then times, interleaved round by round so that machine noise hits every contender alike:

- `loop K=1` / `loop K=<default>`: the generated `Trainer`'s `train_epoch` and `evaluate`, one
  or K steps per `tf.function` call, with no callbacks (`RunOptions.steps_per_execution`);
- `loop K=<default>, all off`: `Trainer.fit` with `RunOptions(verbose=0, logdir=None)` and no
  callbacks of yours: what `fit` itself (callback list, batch hooks, `History`, learning rate
  and `steps_per_second` in the logs) adds to the bare epochs above;
- `loop K=<default>, all on`: `Trainer.fit` with `RunOptions(verbose=1, logdir=<a temporary
  directory>, tensorboard=True)`, standard output redirected to a non-terminal (so one line
  per epoch), `metrics.jsonl`, TensorBoard events and a checkpoint written every epoch and
  `model.keras` at the end (what a run directory holds), and
  `keras.callbacks.EarlyStopping(monitor="val_loss")` with a patience longer than the run, so
  that it never stops it; checkpoints are written in the background (the default);
- `loop K=<default>, all on, checkpoints waited for`: the same with
  `background_checkpoints=False`: each checkpoint is written while the run waits;
- `fit` / `fit K=<default>`: `model.fit` with default settings, and with the same
  `steps_per_execution`;
- `fit, callbacks` / `fit K=<default>, callbacks`: the same with what `all on` does:
  `verbose=2` to a non-terminal, `keras.callbacks.TensorBoard` (per-epoch scalars, no graph,
  no profiling), the same `EarlyStopping`, and `TerminateOnNaN` for the guard;
- `guide loop`: the guide's plain loop, one `tf.function` step per batch;
- `... (classic data)`: the same on the training split as
  `from_tensor_slices().cache().shuffle().batch().prefetch()`. `fit` and the guide loop create
  an iterator every epoch, which costs them more on the project's `shuffled_batches` (it maps),
  so their ratios are taken against whichever pipeline suits them better;
- `loop K=<default> train only`: the generated loop without its validation pass;
- `loop K=<default> train only, cached batches`: the same over the first epoch's batches cached
  in memory, so that no shuffling or batching is left: what the loop itself costs over the floor;
- `floor`: the task's train step (`trainer.task.make_train_step()`, compiled as the trainer
  compiles it, without the guard's wrapper) in a `tf.while_loop` over one in-memory batch: no
  input pipeline, no validation, no Python: the compute floor;
- `floor, guarded step`: the same with the trainer's step (`trainer.train_step`: the task's
  step inside the non-finite guard's wrapper), so the two floors price the guard;
- `floor, reading batches`: the floor's loop with the task's step on batches read from the
  iterator the loop reads (`loop.repeated` over the cached batches above), one `get_next`
  per step: what reading a batch costs a step, whatever the pipeline.

The non-finite guard cannot be switched off: every `loop` contender runs it, `all off`
included; only the floor runs the bare task step. The task's step itself skips a non-finite
update in the graph (`OptimizerSet.apply`), in the floor too.

Every figure is training steps per second over whole epochs, validation included (except the
floor), after one warm-up epoch. The `fit`, `fit K=<default>` and loop contenders without
`all on`/`all off` are timed one epoch per call, as before; the `all on`, `all off` and
`callbacks` contenders are timed inside one call of warm-up plus timed epochs, from the start of
the first timed epoch to the call's return, so that callbacks keep their state (open event
files, early-stopping record) across epochs as in a real run. Medians over the rounds; ratios
from the same run.

    python benchmarks/loop_vs_fit.py [--rounds 5] [--epochs 30] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

from scaffold.render import render_project

CLASSIC = "classic data"
ALL_ON = "all on"
ALL_OFF = "all off"
CALLBACKS = "callbacks"
WAITED = "checkpoints waited for"

CASES = {
    "mlp-b32": ({"input_shape": "64"}, 32),
    "mlp-b256": ({"input_shape": "64"}, 256),
    "cnn-b32": ({"input_shape": "8,8,1"}, 32),
}


def load_project(root: Path, name: str, answers: dict[str, object]) -> ModuleType:
    """Render a project and import its package under a unique name.

    The package holds `Config`, `RunOptions` and `PROJECT` (its `engine.project.Project`);
    its engine's modules are `engine_module(package, name)`.
    """
    render_project(root / name, {"project_name": name, **answers}, quiet=True)
    sys.path.insert(0, str(root / name / "src"))
    return importlib.import_module(name.replace("-", "_"))


def machine() -> dict[str, object]:
    """The versions and the CPU count a benchmark ran with, for its report."""
    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def engine_module(package: ModuleType, name: str) -> ModuleType:
    """The module `name` of the package's engine, e.g. `train` for `PKG.engine.train`."""
    return importlib.import_module(f"{package.__name__}.engine.{name}")


def time_epochs(run_epoch: Callable[[], int], epochs: int) -> float:
    """Steps per second over `epochs` timed epochs after one warm-up epoch."""
    run_epoch()
    steps = 0
    start = time.perf_counter()
    for _ in range(epochs):
        steps += run_epoch()
    return steps / (time.perf_counter() - start)


class EpochClock(keras.callbacks.Callback):
    """Starts the clock when the second epoch (the first timed one) begins.

    Put first in the callback list, so that the warm-up epoch's own callbacks have all run.
    """

    def __init__(self) -> None:
        super().__init__()
        self.start: float | None = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if epoch == 1:
            self.start = time.perf_counter()


def time_run(run: Callable[[int, keras.callbacks.Callback], int], epochs: int, steps: int) -> float:
    """Steps per second over `epochs` epochs of one run of warm-up plus `epochs` epochs.

    `run(total_epochs, clock)` runs `total_epochs` epochs with `clock` as its first callback
    and returns how many epochs it ran; timing ends when it returns.
    """
    clock = EpochClock()
    ran = run(epochs + 1, clock)
    end = time.perf_counter()
    if ran != epochs + 1 or clock.start is None:
        raise RuntimeError(f"the run stopped after {ran} of {epochs + 1} epochs")
    return epochs * steps / (end - clock.start)


@contextlib.contextmanager
def quiet_run() -> Iterator[str]:
    """A temporary log directory, and standard output sent to a non-terminal."""
    with tempfile.TemporaryDirectory() as logdir, contextlib.redirect_stdout(io.StringIO()):
        yield logdir


def never_stops(epochs: int) -> keras.callbacks.EarlyStopping:
    """Early stopping on `val_loss` that does all its work but never ends the run."""
    return keras.callbacks.EarlyStopping(monitor="val_loss", patience=epochs + 10)


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
    train_ds, val_ds = project.PROJECT.load_datasets(config)
    classic = classic_pipeline(train_ds, config)
    pipelines = {"": train_ds, f" ({CLASSIC})": classic}
    num_steps = sum(1 for _ in train_ds)
    labels, build = config.labels, project.PROJECT.build_model
    run_options, engine_train = project.RunOptions, engine_module(project, "train")
    engine_loop = engine_module(project, "loop")
    k = run_options().steps_per_execution

    def trainer(**options: object):
        return engine_train.Trainer(project.PROJECT, config, build(config), run_options(**options))

    def loop(steps_per_execution: int, train: tf.data.Dataset) -> Callable[[], float]:
        def measure() -> float:
            loop_trainer = trainer(steps_per_execution=steps_per_execution)

            def epoch() -> int:
                _, steps = loop_trainer.train_epoch(train)
                loop_trainer.evaluate(val_ds)
                return steps

            return time_epochs(epoch, epochs)

        return measure

    def loop_fit(all_on: bool, background: bool = True) -> Callable[[], float]:
        def measure() -> float:
            with quiet_run() as logdir:
                if all_on:
                    options = {"verbose": 1, "logdir": logdir, "tensorboard": True}
                    options["background_checkpoints"] = background
                    callbacks = [never_stops(epochs)]
                else:
                    options, callbacks = {"verbose": 0, "logdir": None}, []
                fit_trainer = trainer(steps_per_execution=k, **options)

                def run(total: int, clock: keras.callbacks.Callback) -> int:
                    history = fit_trainer.fit(
                        train_ds, val_ds, epochs=total, callbacks=[clock, *callbacks]
                    )
                    return len(history.epoch)

                return time_run(run, epochs, num_steps)

        return measure

    cached_batches = train_ds.cache()
    for _ in cached_batches:  # Fill the cache: later epochs replay these batches.
        pass

    def loop_train_only(dataset: tf.data.Dataset) -> Callable[[], float]:
        def measure() -> float:
            loop_trainer = trainer(steps_per_execution=k)
            return time_epochs(lambda: loop_trainer.train_epoch(dataset)[1], epochs)

        return measure

    def compiled(**compile_args: object) -> keras.Model:
        model = build(config)
        model.compile(
            optimizer=keras.optimizers.Adam(config.learning_rate),
            loss=labels.make_loss(),
            metrics=[labels.make_accuracy("acc")],
            **compile_args,
        )
        return model

    def fit(train: tf.data.Dataset, **compile_args: object) -> Callable[[], float]:
        def measure() -> float:
            model = compiled(**compile_args)
            return time_epochs(
                lambda: len(model.fit(train, validation_data=val_ds, verbose=0).epoch) * num_steps,
                epochs,
            )

        return measure

    def fit_callbacks(train: tf.data.Dataset, **compile_args: object) -> Callable[[], float]:
        def measure() -> float:
            model = compiled(**compile_args)
            with quiet_run() as logdir:
                callbacks = [
                    keras.callbacks.TensorBoard(
                        log_dir=logdir, update_freq="epoch", write_graph=False, profile_batch=0
                    ),
                    never_stops(epochs),
                    keras.callbacks.TerminateOnNaN(),
                ]

                def run(total: int, clock: keras.callbacks.Callback) -> int:
                    history = model.fit(
                        train,
                        validation_data=val_ds,
                        epochs=total,
                        verbose=2,
                        callbacks=[clock, *callbacks],
                    )
                    return len(history.epoch)

                return time_run(run, epochs, num_steps)

        return measure

    def guide(train: tf.data.Dataset) -> Callable[[], float]:
        def measure() -> float:
            model = build(config)
            optimizer = keras.optimizers.Adam(config.learning_rate)
            loss_fn = labels.make_loss()
            train_loss, val_loss = keras.metrics.Mean(), keras.metrics.Mean()
            train_acc, val_acc = labels.make_accuracy("a"), labels.make_accuracy("b")

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

    def floor(guarded: bool, reading: bool = False) -> Callable[[], float]:
        def measure() -> float:
            floor_trainer = trainer()
            if guarded:
                step = floor_trainer.train_step
            else:
                step = tf.function(
                    floor_trainer.task.make_train_step(),
                    input_signature=floor_trainer.task.input_signature,
                )
            x, y = next(iter(train_ds))
            batches = iter(engine_loop.repeated(cached_batches))

            def body(i: tf.Tensor) -> tf.Tensor:
                if reading:
                    step(*batches.get_next())
                else:
                    step(x, y)
                return i + 1

            @tf.function
            def run(n: tf.Tensor) -> tf.Tensor:
                return tf.while_loop(lambda i: i < n, body, [0])[0]

            n = tf.constant(num_steps)
            return time_epochs(lambda: int(run(n)), epochs)

        return measure

    return {
        "loop K=1": loop(1, train_ds),
        f"loop K={k}": loop(k, train_ds),
        f"loop K={k} ({CLASSIC})": loop(k, classic),
        f"loop K={k}, {ALL_OFF}": loop_fit(all_on=False),
        f"loop K={k}, {ALL_ON}": loop_fit(all_on=True),
        f"loop K={k}, {ALL_ON}, {WAITED}": loop_fit(all_on=True, background=False),
        **{f"fit{suffix}": fit(train) for suffix, train in pipelines.items()},
        **{
            f"fit K={k}{suffix}": fit(train, steps_per_execution=k)
            for suffix, train in pipelines.items()
        },
        **{
            f"fit, {CALLBACKS}{suffix}": fit_callbacks(train) for suffix, train in pipelines.items()
        },
        **{
            f"fit K={k}, {CALLBACKS}{suffix}": fit_callbacks(train, steps_per_execution=k)
            for suffix, train in pipelines.items()
        },
        **{f"guide loop{suffix}": guide(train) for suffix, train in pipelines.items()},
        f"loop K={k} train only": loop_train_only(train_ds),
        f"loop K={k} train only, cached batches": loop_train_only(cached_batches),
        "floor": floor(guarded=False),
        "floor, guarded step": floor(guarded=True),
        "floor, reading batches": floor(guarded=False, reading=True),
    }


def interleaved(
    case: str, measures: dict[str, Callable[[], float]], rounds: int
) -> dict[str, list[float]]:
    """Each measure's figures over `rounds` rounds, every measure once per round, in order.

    Interleaving lets machine noise hit every contender alike; each round is printed.
    """
    samples: dict[str, list[float]] = {name: [] for name in measures}
    for round_ in range(rounds):
        for name, measure in measures.items():
            samples[name].append(measure())
        print(
            f"{case} round {round_ + 1}: "
            + ", ".join(f"{n} {s[-1]:.0f}" for n, s in samples.items()),
            flush=True,
        )
    return samples


def tables(results: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """Two Markdown tables, a column per case: steps per second, then the ratios."""
    first = next(iter(results.values()))
    lines: list[str] = []
    for key, form in (("steps_per_second", "{:.0f}"), ("ratios", "{:.2f}x")):
        lines += ["", "| contender | " + " | ".join(results) + " |"]
        lines.append("|---" * (1 + len(results)) + "|")
        for column in first[key]:
            row = [form.format(result[key][column]) for result in results.values()]
            lines.append(f"| {column} | " + " | ".join(row) + " |")
    return lines


def ratios(medians: dict[str, float], k: int) -> dict[str, float]:
    """The figures the README quotes; `fit` and the guide loop on whichever data suits them."""

    def best(name: str) -> float:
        return max(medians[name], medians[f"{name} ({CLASSIC})"])

    ours = medians[f"loop K={k}"]
    all_on, all_off = medians[f"loop K={k}, {ALL_ON}"], medians[f"loop K={k}, {ALL_OFF}"]
    return {
        f"loop K={k} / best fit": ours / best("fit"),
        f"loop K={k} / best fit K={k}": ours / best(f"fit K={k}"),
        f"loop K={k}, {ALL_ON} / loop K={k}, {ALL_OFF}": all_on / all_off,
        f"loop K={k}, {ALL_ON}, {WAITED} / loop K={k}, {ALL_OFF}": medians[
            f"loop K={k}, {ALL_ON}, {WAITED}"
        ]
        / all_off,
        f"loop K={k}, {ALL_OFF} / loop K={k}": all_off / ours,
        f"loop K={k}, {ALL_ON} / best fit, {CALLBACKS}": all_on / best(f"fit, {CALLBACKS}"),
        f"loop K={k}, {ALL_ON} / best fit K={k}, {CALLBACKS}": all_on
        / best(f"fit K={k}, {CALLBACKS}"),
        f"loop K={k}, {ALL_ON} / best fit": all_on / best("fit"),
        f"loop K={k} / floor": ours / medians["floor"],
        f"loop K={k} train only / floor": medians[f"loop K={k} train only"] / medians["floor"],
        f"loop K={k} train only, cached batches / floor": medians[
            f"loop K={k} train only, cached batches"
        ]
        / medians["floor"],
        "floor, guarded step / floor": medians["floor, guarded step"] / medians["floor"],
        "floor, reading batches / floor": medians["floor, reading batches"] / medians["floor"],
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
            config = dataclasses.replace(project.Config(), batch_size=batch_size)
            measures = contenders(project, config, args.epochs)
            samples = interleaved(case, measures, args.rounds)
            medians = {name: statistics.median(s) for name, s in samples.items()}
            results[case] = {
                "steps_per_second": medians,
                "samples": samples,
                "ratios": ratios(medians, project.RunOptions().steps_per_execution),
            }
    meta = {**machine(), "rounds": args.rounds, "timed_epochs": args.epochs}
    report = {"meta": meta, "results": results}
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"TF {meta['tensorflow']}, Keras {meta['keras']}, {meta['cpus']} CPUs; medians of "
        f"{args.rounds} interleaved rounds of {args.epochs} epochs; training steps per second, "
        f"validation included unless the name says otherwise; `{CLASSIC}`: the training split "
        "as `from_tensor_slices().cache().shuffle().batch().prefetch()` instead of the "
        "project's `shuffled_batches`; the loop's non-finite guard is always on, and `floor` "
        f"alone runs the task step without it; `{ALL_ON}`: progress lines to a non-terminal, "
        "`metrics.jsonl`, TensorBoard, a checkpoint every epoch, `model.keras` at the end and "
        f"`EarlyStopping`; `{ALL_OFF}`: `verbose=0`, no "
        f"logdir, no callbacks; `fit, {CALLBACKS}`: `verbose=2` to a non-terminal, "
        "TensorBoard, `EarlyStopping` and `TerminateOnNaN`.",
    ]
    lines += tables(results)
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
