"""Steps per second on one device and on two logical CPUs, in float32 and mixed_bfloat16.

Renders two default-answer projects, the batch-32 MLP on digits and the CNN on 8x8x1 digits,
splits this machine's CPU into two logical devices, and trains each project `--epochs` epochs
under every contender: no strategy, `MirroredStrategy` over the two logical CPUs, each in
float32 and in mixed_bfloat16 (the model built under that policy). Contenders are interleaved
over `--rounds` rounds in one process; each run's figure is the median of its epochs'
`steps_per_second` after the first (which traces). Quotes the median over rounds and the ratio
to no strategy in float32, and writes benchmarks/distribute.md.

Logical CPU devices share the same cores: this measures what the strategy's machinery costs
(splitting each batch, running the replicas, reducing their gradients), not a speed-up.

    python benchmarks/distribute.py [--rounds 5] [--epochs 6]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import tensorflow as tf

from scaffold.render import render_project

OUT = Path(__file__).with_name("distribute.md")
PROJECTS = {"mlp-b32": {}, "cnn-b32": {"input_shape": "8,8,1"}}
CONTENDERS = [
    ("none, float32", None, "float32"),
    ("mirrored x2, float32", 2, "float32"),
    ("none, mixed_bfloat16", None, "mixed_bfloat16"),
    ("mirrored x2, mixed_bfloat16", 2, "mixed_bfloat16"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp())
    modules = {}
    for name, answers in PROJECTS.items():
        package = name.replace("-", "_")
        render_project(root / name, {"project_name": package, **answers}, quiet=True)
        sys.path.insert(0, str(root / name / "src"))
        modules[name] = {
            "package": importlib.import_module(package),
            **{
                part: importlib.import_module(f"{package}.engine.{part}")
                for part in ("distribution", "precision", "train")
            },
        }
    next(iter(modules.values()))["distribution"].use_cpu_devices(2)
    results: dict[tuple[str, str], list[float]] = {}
    for round_ in range(args.rounds):
        for name, module in modules.items():
            for label, replicas, policy in CONTENDERS:
                figure = run(module, replicas, policy, args.epochs)
                results.setdefault((name, label), []).append(figure)
                print(f"round {round_ + 1}: {name} {label}: {figure:.0f} steps/s", flush=True)
    write(results, args)


def run(module: dict, replicas: int | None, policy: str, epochs: int) -> float:
    """One run's steps per second: the median of its epochs after the first."""
    package = module["package"]
    config = dataclasses.replace(package.Config(), epochs=epochs)
    keras.utils.set_random_seed(config.seed)
    strategy = None
    if replicas is not None:
        devices = [f"/cpu:{index}" for index in range(replicas)]
        strategy = tf.distribute.MirroredStrategy(
            devices, cross_device_ops=tf.distribute.ReductionToOneDevice()
        )
    scope = contextlib.nullcontext() if strategy is None else strategy.scope()
    with module["precision"].dtype_policy(policy), scope:
        model = package.PROJECT.build_model(config)
    train_ds, val_ds = package.PROJECT.load_datasets(config)
    options = package.RunOptions(verbose=0, tensorboard=False, precision=policy)
    history = module["train"].fit(
        package.PROJECT, config, model, train_ds, val_ds, options=options, strategy=strategy
    )
    return statistics.median(history.history["steps_per_second"][1:])


def write(results: dict[tuple[str, str], list[float]], args: argparse.Namespace) -> None:
    names = list(PROJECTS)
    lines = [
        "# tf.distribute and mixed precision on this machine's CPU",
        "",
        f"`python benchmarks/distribute.py --rounds {args.rounds} --epochs {args.epochs}`: "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, TensorFlow "
        f"{tf.__version__}, Keras {keras.__version__}. Steps per second of the default "
        "training (batch 32, validation each epoch), the median over rounds of each run's "
        "median epoch after the first; in brackets, the ratio to no strategy in float32. "
        "The two logical CPU devices share the same cores, so `mirrored x2` shows what the "
        "strategy's machinery costs, not what two real devices gain.",
        "",
        "| contender | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for label, _, _ in CONTENDERS:
        cells = []
        for name in names:
            median = statistics.median(results[(name, label)])
            base = statistics.median(results[(name, CONTENDERS[0][0])])
            cells.append(f"{median:.0f} ({median / base:.2f}x)")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    OUT.write_text("\n".join(lines))
    print(OUT.read_text())


if __name__ == "__main__":
    main()
