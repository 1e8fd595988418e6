"""Steps per second and peak memory of the generated loop against `model.fit` on a large dataset.

Renders a project with a dense MLP on 784 features (`input_shape: 784`, 10 classes) from this
working tree, at batch 256. The data are synthetic, generated from a fixed seed with no
network: `--rows` examples of 784 float32 features drawn from a standard normal, and int32
class ids in [0, 10) that are the argmax of a fixed random linear projection of the features,
so that the task is learnable. There is no validation split: every figure is pure training
throughput. The contenders:

- `loop, shuffled_batches`: the generated `Trainer.fit` with `RunOptions(verbose=0,
  logdir=None)` (the project's default steps per call, K) on the project's array helper
  `engine.batches.shuffled_batches((x, y), 256, seed=0)`, which gathers the whole split in a
  new permuted order every epoch;
- `loop, from_tensor_slices`: the same loop on
  `from_tensor_slices((x, y)).shuffle(10_000, seed=0).batch(256).prefetch(AUTOTUNE)`;
- `fit, arrays`: `model.fit(x, y, batch_size=256, shuffle=True)` on the model compiled as
  `loop_vs_fit.py` compiles it (Adam at `config.learning_rate`, the task's loss and accuracy,
  Keras' default of one step per call);
- `fit, from_tensor_slices`: `model.fit` on the dataset of `loop, from_tensor_slices`;
- `loop, files` / `fit, files`: the loop and `model.fit` on TFRecord files of the same data,
  which the parent process writes once before any contender runs (8 shards of serialized
  `tf.train.Example`s: the features as raw float32 bytes, the class id as an int64), read with
  `TFRecordDataset(files, num_parallel_reads=AUTOTUNE).map(parse,
  num_parallel_calls=AUTOTUNE).shuffle(10_000, seed=0).batch(256).prefetch(AUTOTUNE)`.
  tf.data cannot count the batches of such a pipeline, so it is given
  `.apply(tf.data.experimental.assert_cardinality(n))` with the true number of batches: the
  loop then takes its counted path (as for a dataset of known length), and `fit` knows its
  steps per epoch. The files were just written, so they are likely in the OS page cache:
  the figure prices parsing and the pipeline, not the disk.

Each measurement runs in a fresh process (`python benchmarks/large_data.py --child NAME ...`),
so that its peak memory (`getrusage(RUSAGE_SELF).ru_maxrss`, Linux) is that contender's
alone. The child imports TensorFlow and the project, generates the arrays (same seed: the same
data as the files; the `files` contenders, which read none, skip this), records its resident
memory right then (the baseline: the runtime, plus the arrays where there are any), builds the
model (`PROJECT.build_model(config)`, seeded), and runs one call of one warm-up epoch plus
`--epochs` timed epochs; it is timed from the start of the first timed epoch (a callback,
`loop_vs_fit.py`'s `EpochClock`) to the call's return. The child prints one JSON line: steps
per second over the timed epochs, peak resident memory, and the baseline. The contenders are
interleaved round by round over `--rounds` rounds, so that machine noise hits every contender
alike; medians per contender, ratios from the medians.

    python benchmarks/large_data.py [--rows 200000] [--epochs 3] [--rounds 3]
        [--out benchmarks/large_data]
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
from loop_vs_fit import engine_module, load_project, machine, time_run

NAME, ANSWERS = "bench-large", {"input_shape": "784"}
FEATURES, CLASSES, BATCH_SIZE = 784, 10, 256
SEED, SHUFFLE_BUFFER, SHARDS = 0, 10_000, 8
MIB = 1024 * 1024

LOOP_HELPER = "loop, shuffled_batches"
LOOP_SLICES = "loop, from_tensor_slices"
FIT_ARRAYS = "fit, arrays"
FIT_SLICES = "fit, from_tensor_slices"
LOOP_FILES = "loop, files"
FIT_FILES = "fit, files"
CONTENDERS = (LOOP_HELPER, LOOP_SLICES, FIT_ARRAYS, FIT_SLICES, LOOP_FILES, FIT_FILES)
FIT_IN_MEMORY = (FIT_ARRAYS, FIT_SLICES)


def make_data(rows: int) -> tuple[np.ndarray, np.ndarray]:
    """`rows` float32 examples of `FEATURES` features and their int32 class ids, from `SEED`.

    The class of an example is the argmax of a fixed random projection of its features, so
    that the task is learnable. Generated in float32 directly: no float64 copy at any time.
    """
    rng = np.random.default_rng(SEED)
    projection = rng.standard_normal((FEATURES, CLASSES), dtype=np.float32)
    x = rng.standard_normal((rows, FEATURES), dtype=np.float32)
    y = np.empty(rows, dtype=np.int32)
    for start in range(0, rows, 65_536):  # The logits a chunk at a time.
        y[start : start + 65_536] = np.argmax(x[start : start + 65_536] @ projection, axis=1)
    return x, y


def num_batches(rows: int) -> int:
    return math.ceil(rows / BATCH_SIZE)


def shard_paths(root: Path) -> list[Path]:
    return [root / "records" / f"shard-{i:02d}-of-{SHARDS:02d}.tfrecord" for i in range(SHARDS)]


def write_records(root: Path, rows: int) -> None:
    """The data of `make_data(rows)` as `SHARDS` TFRecord files of `tf.train.Example`s."""
    x, y = make_data(rows)
    paths = shard_paths(root)
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    for path, index in zip(paths, np.array_split(np.arange(rows), SHARDS), strict=True):
        with tf.io.TFRecordWriter(str(path)) as writer:
            for i in index:
                feature = {
                    "x": tf.train.Feature(bytes_list=tf.train.BytesList(value=[x[i].tobytes()])),
                    "y": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(y[i])])),
                }
                example = tf.train.Example(features=tf.train.Features(feature=feature))
                writer.write(example.SerializeToString())


def parse(record: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """One `tf.train.Example` of `write_records` as float32 features and an int32 class id."""
    spec = {
        "x": tf.io.FixedLenFeature([], tf.string),
        "y": tf.io.FixedLenFeature([], tf.int64),
    }
    example = tf.io.parse_single_example(record, spec)
    features = tf.reshape(tf.io.decode_raw(example["x"], tf.float32), [FEATURES])
    return features, tf.cast(example["y"], tf.int32)


def files_dataset(root: Path, rows: int) -> tf.data.Dataset:
    """The TFRecord files, parsed, shuffled in a bounded buffer and batched; of known length."""
    autotune = tf.data.AUTOTUNE
    files = [str(path) for path in shard_paths(root)]
    return (
        tf.data.TFRecordDataset(files, num_parallel_reads=autotune)
        .map(parse, num_parallel_calls=autotune)
        .shuffle(SHUFFLE_BUFFER, seed=SEED)
        .batch(BATCH_SIZE)
        .prefetch(autotune)
        .apply(tf.data.experimental.assert_cardinality(num_batches(rows)))
    )


def slices_dataset(x: np.ndarray, y: np.ndarray) -> tf.data.Dataset:
    return (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(SHUFFLE_BUFFER, seed=SEED)
        .batch(BATCH_SIZE)
        .prefetch(tf.data.AUTOTUNE)
    )


def resident_mib() -> float:
    """This process's resident memory now (Linux: `/proc/self/statm`)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / MIB


def peak_mib() -> float:
    """This process's peak resident memory so far (`ru_maxrss` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def import_project(root: Path) -> ModuleType:
    """The package that the parent rendered under `root`."""
    sys.path.insert(0, str(root / NAME / "src"))
    return importlib.import_module(NAME.replace("-", "_"))


def child(name: str, root: Path, rows: int, epochs: int) -> dict[str, object]:
    """One measurement of contender `name`, in this process; see the module's docstring."""
    project = import_project(root)
    batches, engine_train = engine_module(project, "batches"), engine_module(project, "train")
    config = project.Config(batch_size=BATCH_SIZE, num_classes=CLASSES)
    if name not in (LOOP_FILES, FIT_FILES):  # Reading files needs no arrays.
        x, y = make_data(rows)
    baseline = resident_mib()
    keras.utils.set_random_seed(config.seed)
    model = project.PROJECT.build_model(config)
    steps = num_batches(rows)

    if name == LOOP_HELPER:
        data = batches.shuffled_batches((x, y), BATCH_SIZE, seed=SEED)
    elif name in (LOOP_SLICES, FIT_SLICES):
        data = slices_dataset(x, y)
    elif name in (LOOP_FILES, FIT_FILES):
        data = files_dataset(root, rows)
    elif name != FIT_ARRAYS:
        raise ValueError(f"unknown contender {name!r}; choose from {', '.join(CONTENDERS)}")

    if name.startswith("loop"):
        options = project.RunOptions(verbose=0, logdir=None)
        trainer = engine_train.Trainer(project.PROJECT, config, model, options)

        def run(total: int, clock: keras.callbacks.Callback) -> int:
            return len(trainer.fit(data, epochs=total, callbacks=[clock]).epoch)

    else:
        labels = config.labels
        model.compile(
            optimizer=keras.optimizers.Adam(config.learning_rate),
            loss=labels.make_loss(),
            metrics=[labels.make_accuracy("acc")],
        )
        if name == FIT_ARRAYS:
            inputs = {"x": x, "y": y, "batch_size": BATCH_SIZE, "shuffle": True}
        else:
            inputs = {"x": data, "shuffle": False}  # The dataset shuffles; `fit` cannot.

        def run(total: int, clock: keras.callbacks.Callback) -> int:
            history = model.fit(**inputs, epochs=total, verbose=0, callbacks=[clock])
            return len(history.epoch)

    steps_per_second = time_run(run, epochs, steps)
    return {
        "contender": name,
        "steps_per_second": steps_per_second,
        "peak_mib": peak_mib(),
        "baseline_mib": baseline,
        "steps_per_epoch": steps,
    }


def measure(name: str, root: Path, rows: int, epochs: int) -> dict[str, object]:
    """Run contender `name` in a fresh process; its last line of output is its JSON result."""
    argv = [sys.executable, __file__, "--child", name, "--root", str(root)]
    argv += ["--rows", str(rows), "--epochs", str(epochs)]
    done = subprocess.run(argv, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def ratios(sps: dict[str, float], peak: dict[str, float]) -> dict[str, float]:
    """Loop over `fit`, in steps per second and in peak memory, for each form of the data."""
    best_fit = max(FIT_IN_MEMORY, key=lambda name: sps[name])
    return {
        f"steps/s: {LOOP_HELPER} / best fit in memory ({best_fit})": sps[LOOP_HELPER]
        / sps[best_fit],
        f"steps/s: {LOOP_SLICES} / {FIT_SLICES}": sps[LOOP_SLICES] / sps[FIT_SLICES],
        f"steps/s: {LOOP_FILES} / {FIT_FILES}": sps[LOOP_FILES] / sps[FIT_FILES],
        f"steps/s: {LOOP_HELPER} / {LOOP_SLICES}": sps[LOOP_HELPER] / sps[LOOP_SLICES],
        f"steps/s: {LOOP_FILES} / {LOOP_HELPER}": sps[LOOP_FILES] / sps[LOOP_HELPER],
        f"peak memory: {LOOP_HELPER} / {best_fit}": peak[LOOP_HELPER] / peak[best_fit],
        f"peak memory: {LOOP_SLICES} / {FIT_SLICES}": peak[LOOP_SLICES] / peak[FIT_SLICES],
        f"peak memory: {LOOP_FILES} / {FIT_FILES}": peak[LOOP_FILES] / peak[FIT_FILES],
        f"peak memory: {LOOP_HELPER} / {LOOP_SLICES}": peak[LOOP_HELPER] / peak[LOOP_SLICES],
    }


def when_to_use(
    sps: dict[str, float], peak: dict[str, float], baseline: dict[str, float], data_mib: float
) -> str:
    """The advice the figures support, and what holds by construction."""

    def above(name: str) -> float:
        return peak[name] - baseline[name]

    fastest = max(CONTENDERS, key=lambda name: sps[name])
    helper = sps[LOOP_HELPER] / sps[LOOP_SLICES]
    files = sps[LOOP_FILES] / max(sps[LOOP_HELPER], sps[LOOP_SLICES])
    buffer_mib = SHUFFLE_BUFFER * (FEATURES * 4 + 4) / MIB
    faster = "faster" if helper >= 1 else "slower"
    return (
        f"When to use what: here `{fastest}` trained fastest ({sps[fastest]:.0f} steps/s). "
        f"In the loop, `shuffled_batches` was {abs(helper - 1):.0%} {faster} than "
        f"`from_tensor_slices` with a shuffle buffer, and peaked {above(LOOP_HELPER):.0f} "
        "MiB above its baseline (the runtime plus the arrays) against "
        f"{above(LOOP_SLICES):.0f} MiB, for {data_mib:.0f} MiB of data. By construction, "
        "`shuffled_batches` holds one permuted copy of the arrays per epoch, on top of the "
        "arrays themselves: about 2x the data, so "
        "use it for data that fits in memory twice. `shuffle` with a buffer holds "
        f"buffer_size examples ({SHUFFLE_BUFFER} here, about {buffer_mib:.0f} MiB) beside "
        "whatever holds the data, so `from_tensor_slices` needs the data in memory once, and "
        "TFRecord files not at all: their memory does not grow with the rows (here `loop, "
        f"files` peaked at {peak[LOOP_FILES]:.0f} MiB in all, against "
        f"{peak[LOOP_HELPER]:.0f} MiB for `{LOOP_HELPER}`). Reading the files ran at "
        f"{files:.2f}x the steps/s of the loop's best in-memory pipeline"
        + (
            ": the price of streaming data that need not fit in memory."
            if files < 1
            else ", so streaming them cost no speed here."
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("large_data"))
    parser.add_argument("--child", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.root, args.rows, args.epochs)), flush=True)
        return

    samples: dict[str, list[dict[str, object]]] = {name: [] for name in CONTENDERS}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        project = load_project(root, NAME, ANSWERS)
        write_records(root, args.rows)
        for round_ in range(args.rounds):
            for name in CONTENDERS:
                samples[name].append(measure(name, root, args.rows, args.epochs))
            print(
                f"round {round_ + 1}: "
                + ", ".join(
                    f"{name} {s[-1]['steps_per_second']:.0f} steps/s {s[-1]['peak_mib']:.0f} MiB"
                    for name, s in samples.items()
                ),
                flush=True,
            )
        k = project.RunOptions().steps_per_execution

    def medians(key: str) -> dict[str, float]:
        return {name: statistics.median(s[key] for s in runs) for name, runs in samples.items()}

    sps, peak, baseline = medians("steps_per_second"), medians("peak_mib"), medians("baseline_mib")
    data_mib = args.rows * (FEATURES * 4 + 4) / MIB
    meta = {
        **machine(),
        "rows": args.rows,
        "features": FEATURES,
        "data_mib": data_mib,
        "batch_size": BATCH_SIZE,
        "steps_per_epoch": num_batches(args.rows),
        "loop_steps_per_execution": k,
        "rounds": args.rounds,
        "timed_epochs": args.epochs,
    }
    advice = when_to_use(sps, peak, baseline, data_mib)
    results = {
        "steps_per_second": sps,
        "peak_mib": peak,
        "baseline_mib": baseline,
        "ratios": ratios(sps, peak),
        "samples": samples,
        "when_to_use": advice,
    }
    args.out.with_suffix(".json").write_text(
        json.dumps({"meta": meta, "results": results}, indent=2) + "\n"
    )
    lines = [
        f"TF {meta['tensorflow']}, Keras {meta['keras']}, Python {meta['python']}, "
        f"{meta['cpus']} CPUs; {args.rows} rows x {FEATURES} float32 features "
        f"({data_mib:.0f} MiB with the labels), batch {BATCH_SIZE} ({meta['steps_per_epoch']} "
        f"steps per epoch), training only (no validation); medians of {args.rounds} "
        f"interleaved rounds, each contender in its own process, of {args.epochs} timed "
        f"epochs after one warm-up epoch; the loop at K={k} steps per call (the project's "
        "default), `fit` at Keras' default of one; peak: the process's peak resident memory; "
        "baseline: its resident memory right after creating the arrays (the runtime plus the "
        "data; the runtime alone for the `files` contenders, which create none).",
        "",
        "| contender | steps/s | peak MiB | baseline MiB | peak - baseline MiB |",
        "|---|---|---|---|---|",
    ]
    for name in CONTENDERS:
        lines.append(
            f"| {name} | {sps[name]:.0f} | {peak[name]:.0f} | {baseline[name]:.0f} | "
            f"{peak[name] - baseline[name]:.0f} |"
        )
    lines += ["", "| ratio | value |", "|---|---|"]
    lines += [f"| {name} | {value:.2f}x |" for name, value in results["ratios"].items()]
    lines += ["", advice]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
