"""Run options: how a run executes, apart from the hyperparameters in `config.py`.

`Config` holds what you tune (the model learns differently when it changes); `RunOptions`
holds how the loop runs it (the figures stay the same, or the run is only watched differently).
Template-owned, so that later template versions can add options without touching your files.
This module imports no TensorFlow, so that `python -m digits_sparse --help` starts fast.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How a training run executes.

    Attributes:
        steps_per_execution: Training (and evaluation) steps run inside one `tf.function`
            call. Figures are exactly those of one step per call; only the Python overhead
            between steps shrinks. Batch-level callback hooks fire once per call.
        jit_compile: Compile each step with XLA. XLA compiles once per distinct batch shape,
            so a smaller last batch costs one more compile.
        run_eagerly: Run the steps as plain Python, one batch at a time, for readable stack
            traces. Much slower.
        strict_gradients: Raise instead of warn when a trainable variable gets no gradient.
        clip_global_norm: If set, scale every step's gradients down so that their global norm
            (over all the variables the step updates) is at most this value.
        max_bad_steps: A step whose loss or gradients are not finite (NaN or infinite) is
            skipped: no weight, optimizer slot or layer state moves. After this many bad steps
            in a row the run stops with `NonFiniteError`, naming the step and the loss or the
            first variable whose gradient was not finite.
        deterministic: Make every op deterministic (`tf.config.experimental.enable_op_determinism`)
            on top of the seeds, so that two runs give identical figures and weights, at some
            cost in speed. It holds for the rest of the process.
        logdir: Where the run writes `metrics.jsonl` and TensorBoard events (`logdir/train`,
            `logdir/validation`); nothing is written when `None`.
        tensorboard: Write TensorBoard events when `logdir` is set.
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
    resume: bool = False
    tensorboard: bool = True
    verbose: int = 1

    def __post_init__(self) -> None:
        """Reject values that would fail later with a less helpful error."""
        for name in ("steps_per_execution", "max_bad_steps", "max_checkpoints"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"RunOptions.{name}={value!r} is invalid; use an integer >= 1")
        every = self.checkpoint_every_steps
        if every is not None and (
            isinstance(every, bool) or not isinstance(every, int) or every < 1
        ):
            raise ValueError(
                f"RunOptions.checkpoint_every_steps={every!r} is invalid; "
                "use an integer >= 1, or None for checkpoints at epoch ends only"
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
        if self.verbose not in (0, 1, 2):
            raise ValueError(f"RunOptions.verbose={self.verbose!r} is invalid; use 0, 1 or 2")
