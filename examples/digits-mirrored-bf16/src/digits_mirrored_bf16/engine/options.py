"""Run options: how a run executes, apart from the hyperparameters in `config.py`.

`Config` holds what you tune (the model learns differently when it changes); `RunOptions`
holds how the loop runs it (the figures stay the same, or the run is only watched differently).
Each field but `logdir`, `resume` and `verbose` (`--logdir`, `--resume`, `--quiet`) is a flag of
`train`, named for it (`--steps-per-execution`; `run_eagerly` is `--eager`), with its text below
as its help.
The defaults here are the engine's; your project's `config.RunOptions` subclasses this class
with the defaults your answers chose, and is yours to change.
This module imports no TensorFlow, so that `python -m <package> --help` starts fast.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import re
from pathlib import Path
from typing import Literal, get_args

Strategy = Literal["none", "mirrored", "multi-worker"]
Precision = Literal["float32", "mixed_float16", "mixed_bfloat16"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
PRECISIONS: tuple[str, ...] = get_args(Precision)
# A tracking URI: a scheme and the rest, without spaces (`sqlite:///mlflow.db`), or `databricks`.
URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+|databricks(-uc)?")


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How a training run executes.

    Attributes:
        steps_per_execution: Training (and evaluation) steps run inside one `tf.function`
            call. Figures are exactly those of one step per call; only the Python overhead
            between steps shrinks. Batch-level callback hooks fire once per call.
        jit_compile: Compile each step with XLA. XLA compiles once per distinct batch shape,
            so a smaller last batch costs one more compile; batches of sequences padded to
            their bucket's length (see `sequences.py`) keep compiles bounded by the buckets.
        run_eagerly: Run the steps as plain Python, one batch at a time, for readable stack
            traces. Much slower.
        strict_gradients: Raise instead of warn when a trainable variable gets no gradient.
        clip_global_norm: If set, scale every update's gradients down so that their global
            norm (over all the variables it updates) is at most this value: the whole batch's
            gradient, summed over the replicas and over an accumulated group.
        max_bad_steps: A step whose loss or gradients are not finite (NaN or infinite), or
            whose gradients are too large to square in float32, is skipped: no weight,
            optimizer slot, layer state or metric moves. After this many bad steps in a row
            the run stops with `NonFiniteError`, naming the step and the loss or the first
            variable whose gradient was bad.
        deterministic: Make every op deterministic (`tf.config.experimental.enable_op_determinism`)
            on top of the seeds, so that two runs give identical figures and weights, at some
            cost in speed. It holds for the rest of the process.
        logdir: Where the run writes `metrics.jsonl`, TensorBoard events (`logdir/train`,
            `logdir/validation`) and what its callbacks write; nothing is written when `None`.
        checkpoint_every_steps: With a `logdir`, also write a checkpoint every this many
            training steps; `None` writes one at the end of every epoch only.
        max_checkpoints: How many of the latest checkpoints to keep.
        background_checkpoints: Write each checkpoint on a thread while the run goes on,
            from the run's state read at the save; a variable updated before the write ends
            takes twice its memory meanwhile. `False` writes it while the run waits (see
            `checkpoints.RunCheckpoint`). A stop, a failure and the end of the run wait for it.
        resume: Go on with the run in `logdir` from its latest checkpoint.
        strategy: Where the steps run (see `distribution.make_strategy`): `none`, one device;
            `mirrored`, a replica on every local GPU, or on every logical CPU device without
            GPUs; `multi-worker`, a replica on every GPU (or the CPU) of every worker of the
            cluster in `TF_CONFIG` (see `cluster.py`). `Config.batch_size` is the global
            batch, split among the replicas; the figures stay those of one device. Not with
            `jit_compile`.
        cpu_devices: Split the CPU into this many logical devices before TensorFlow starts,
            so that `mirrored` can run (and be tried) on a machine without GPUs. Not with
            `multi-worker`, whose workers each train on their CPU as one device.
        precision: The Keras dtype policy the model is built under: `float32`,
            `mixed_float16` (with loss scaling) or `mixed_bfloat16` (see `precision.py`).
        accumulation_steps: Update the weights once per this many batches, with the
            gradient of the mean loss over all their examples: as one step on their
            concatenation (see `accumulation.py`).
        steps_per_epoch: If set, every epoch trains on this many batches, as with
            `model.fit(steps_per_epoch=...)`: needed for a training dataset that repeats
            forever; a finite one is repeated, so that epochs need not match passes over it.
            One iterator still serves the whole run.
        validation_steps: If set, every evaluation reads this many batches, the first ones of
            the validation dataset each time, as with `model.fit(validation_steps=...)`;
            needed for a validation dataset that repeats forever.
        tensorboard: Write TensorBoard events when `logdir` is set.
        track: Track the run in MLflow (needs the `tracking` extra and a `logdir`): its
            config and options as params, every epoch's figures as metrics, `model.keras` as
            an artifact, the project's answers as tags (see `tracking.py`).
        tracking_uri: Where MLflow keeps tracked runs: any tracking URI, e.g.
            `http://host:5000`; by default a SQLite file in the working directory, with the
            artifacts in `./mlruns`.
        tracking_experiment: The MLflow experiment of tracked runs; the package's name when
            `None`.
        tracking_parent: The id of an MLflow run to nest this run under (a sweep's), or `None`.
        verbose: 0 prints nothing; 1 shows a progress bar per epoch on a terminal and one line
            per epoch otherwise; 2 prints one line per epoch.
    """

    steps_per_execution: int = 64
    jit_compile: bool = False
    run_eagerly: bool = False
    strict_gradients: bool = False
    clip_global_norm: float | None = None
    max_bad_steps: int = 10
    deterministic: bool = False
    logdir: str | Path | None = None
    checkpoint_every_steps: int | None = None
    max_checkpoints: int = 3
    background_checkpoints: bool = True
    resume: bool = False
    strategy: Strategy = "none"
    cpu_devices: int | None = None
    precision: Precision = "float32"
    accumulation_steps: int = 1
    steps_per_epoch: int | None = None
    validation_steps: int | None = None
    tensorboard: bool = True
    track: bool = False
    tracking_uri: str = "sqlite:///mlflow.db"
    tracking_experiment: str | None = None
    tracking_parent: str | None = None
    verbose: int = 1

    def __post_init__(self) -> None:
        """Reject values that would fail later with a less helpful error."""
        names = ["steps_per_execution", "max_bad_steps", "max_checkpoints"]
        names.append("accumulation_steps")
        for name in names:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"RunOptions.{name}={value!r} is invalid; use an integer >= 1")
        optional = {
            "checkpoint_every_steps": "None for checkpoints at epoch ends only",
            "steps_per_epoch": "None for one pass over the data per epoch",
            "validation_steps": "None for one pass over the validation data",
        }
        for name, default in optional.items():
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValueError(
                    f"RunOptions.{name}={value!r} is invalid; use an integer >= 1, or {default}"
                )
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"RunOptions.strategy={self.strategy!r} is invalid; use one of "
                + ", ".join(STRATEGIES)
            )
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"RunOptions.precision={self.precision!r} is invalid; use one of "
                + ", ".join(PRECISIONS)
            )
        devices = self.cpu_devices
        if devices is not None and (
            isinstance(devices, bool) or not isinstance(devices, int) or devices < 1
        ):
            raise ValueError(
                f"RunOptions.cpu_devices={devices!r} is invalid; use an integer >= 1, or None "
                "to leave the CPU as one device"
            )
        if devices is not None and self.strategy == "multi-worker":
            raise ValueError(
                f"RunOptions.cpu_devices={devices!r} cannot run with strategy='multi-worker': "
                "its workers use their GPUs, or their CPU as one device; drop cpu_devices "
                "(to try several workers on one machine, use `launch --workers N`)"
            )
        if self.jit_compile and self.strategy != "none":
            raise ValueError(
                f"RunOptions.jit_compile=True cannot run with strategy={self.strategy!r}: XLA "
                "compiles for one device, and the strategy's variables live on several; "
                "drop jit_compile, or use strategy='none'"
            )
        if self.resume and self.logdir is None:
            raise ValueError(
                "RunOptions.resume=True needs the run's directory; set RunOptions.logdir"
            )
        if self.clip_global_norm is not None and not (
            math.isfinite(self.clip_global_norm) and self.clip_global_norm > 0
        ):
            raise ValueError(
                f"RunOptions.clip_global_norm={self.clip_global_norm!r} is invalid; "
                "use a positive number, or None for no clipping"
            )
        if not (isinstance(self.tracking_uri, str) and URI.fullmatch(self.tracking_uri)):
            raise ValueError(
                f"RunOptions.tracking_uri={self.tracking_uri!r} is invalid; use a URI such as "
                "sqlite:///mlflow.db or http://localhost:5000"
            )
        for name in ("tracking_experiment", "tracking_parent"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, str) and value.strip()):
                raise ValueError(
                    f"RunOptions.{name}={value!r} is invalid; use a non-empty name, or None"
                )
        if self.verbose not in (0, 1, 2):
            raise ValueError(f"RunOptions.verbose={self.verbose!r} is invalid; use 0, 1 or 2")


def show(value: object) -> str:
    """`value` as the command line writes it: `8,8,1` for a tuple or list, `none` for `None`.

    MLflow's params of a tracked run are written the same way.
    """
    if isinstance(value, tuple | list):
        return ",".join(str(item) for item in value)
    return "none" if value is None else str(value)


def to_json(value: object) -> object:
    """A field's value as `run.json` and `sweep.json` hold it: a `Path` as its text."""
    return str(value) if isinstance(value, Path) else value


def from_json(cls: type, values: dict[str, object]) -> dict[str, object]:
    """`values` of fields of the dataclass `cls`, read back from JSON, with their tuples again.

    JSON writes a tuple as a list: a list becomes a tuple where the field's default is one.
    """
    defaults = {field.name: field.default for field in dataclasses.fields(cls)}
    return {
        name: tuple(value)
        if isinstance(value, list) and isinstance(defaults.get(name), tuple)
        else value
        for name, value in values.items()
    }


# Stores that MLflow reaches through SQLAlchemy (and creates with Alembic).
DATABASES = ("sqlite", "postgresql", "mysql", "mssql")
TRACKING_EXTRA = "pip install -e '.[tracking]'"


def missing_modules(tracking_uri: str) -> list[str]:
    """The modules that tracking at `tracking_uri` needs and this environment lacks.

    Found without importing them, so that the answer is quick.
    """
    needed = ["mlflow"]
    if tracking_uri.partition(":")[0].partition("+")[0] in DATABASES:
        needed += ["sqlalchemy", "alembic"]
    missing = []
    for module in needed:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # `sys.modules[module]` is None: blocked.
            found = False
        if not found:
            missing.append(module)
    return missing


def tracking_problem(options: RunOptions) -> str | None:
    """Why `options.track` cannot be honoured here, in one line; `None` if it can, or is off.

    Tracking needs MLflow, and SQLAlchemy and Alembic for a database store: the project's
    `tracking` extra installs them. Imports none of them.
    """
    if not options.track:
        return None
    missing = missing_modules(options.tracking_uri)
    if not missing:
        return None
    verb = "is" if len(missing) == 1 else "are"
    return (
        f"--track needs {' and '.join(missing)}, which {verb} not installed; install the "
        f"tracking extra: {TRACKING_EXTRA}"
    )
