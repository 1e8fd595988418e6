"""Hyperparameters of digits-mirrored-bf16, in one frozen dataclass.

This module is yours: change the defaults, add fields. Each field is a flag of `train`
(`batch_size` is `--batch-size`), with its line under `Attributes:` below as its help, so a
field you add with a default can be set from the command line, and the run's `run.json` records
it (flags take int, float, str, bool, `Path`, tuples of these, `Literal` and `| None`; a field
of another type gets none).
How a run executes (steps per call, XLA, gradient clipping, logging) is `RunOptions`: the
engine's options with this project's defaults. `search_space`, at the end, is what
`python -m digits_mirrored_bf16 sweep` searches.
`copier update` three-way merges template changes into this file too, so your edits stay and
the template's arrive; where both changed the same lines, the file keeps both, marked.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from .engine import options

if TYPE_CHECKING:  # They import TensorFlow (or Optuna), which `--help` must not wait for.
    import optuna

    from .engine.features import DenseFeatures
    from .engine.labels import SparseLabels


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a training run depends on.

    Attributes:
        input_shape: Shape of one example, without the batch dimension.
        num_classes: Number of classes; the model's output has this many units.
        epochs: Passes over the training data, in all when a run resumes.
        batch_size: Examples per training step; the last batch of an epoch may be smaller.
        learning_rate: Learning rate of the Adam optimizer.
        validation_fraction: Fraction of the data held out for validation.
        seed: Seeds weight initialisation, dropout and shuffling, so runs repeat exactly.
    """

    input_shape: tuple[int, ...] = (8, 8, 1)
    num_classes: int = 10
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 0.001
    validation_fraction: float = 0.2
    seed: int = 42

    def __post_init__(self) -> None:
        """Reject values that would fail later with a less helpful error."""
        if not self.input_shape or any(int(d) < 1 for d in self.input_shape):
            raise ValueError(
                f"Config.input_shape={self.input_shape!r} is invalid; "
                "use positive sizes, e.g. (64,)"
            )
        if self.num_classes < 2:
            raise ValueError(f"Config.num_classes={self.num_classes} is invalid; use 2 or more")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"Config.{name}={value} is invalid; use 1 or more")
        if self.learning_rate <= 0:
            raise ValueError(
                f"Config.learning_rate={self.learning_rate} is invalid; use a positive number"
            )
        if not 0 < self.validation_fraction < 1:
            raise ValueError(
                f"Config.validation_fraction={self.validation_fraction} is invalid; "
                "use a number between 0 and 1"
            )

    @property
    def labels(self) -> SparseLabels:
        """The labels' encoding, which picks the loss, the accuracy and the output layer."""
        from .engine.labels import SparseLabels

        return SparseLabels(self.num_classes, from_logits=True)

    @property
    def features(self) -> DenseFeatures:
        """What a batch of features is: float32 examples of shape `input_shape`."""
        from .engine.features import DenseFeatures

        return DenseFeatures(self.input_shape)


@dataclasses.dataclass(frozen=True)
class RunOptions(options.RunOptions):
    """How a run executes by default: the engine's `RunOptions`, with this project's defaults.

    Every field of the engine's class (see `engine/options.py`) is a flag of `train`; change a
    default here, or override one field at a time from the command line.
    """

    steps_per_execution: int = 64
    jit_compile: bool = False
    strategy: options.Strategy = "mirrored"
    precision: options.Precision = "mixed_bfloat16"


def search_space(trial: optuna.Trial) -> dict[str, object]:
    """The `Config` fields a sweep searches, each suggested by the Optuna `trial`.

    Returns a value per field, by name; the other fields keep their defaults, or the flags
    given to `sweep`. Any of Optuna's `trial.suggest_*` works here, and so do branches (a field
    searched for some values of another only). `sweep` checks every end of each range and
    every choice against `Config` before its first trial.
    """
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.0001, 0.01, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [16, 32, 64]),
    }
