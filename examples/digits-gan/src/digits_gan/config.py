"""Hyperparameters of digits-gan, in one frozen dataclass.

This module is yours: change the defaults, add fields. Each field is a flag of `train`
(`batch_size` is `--batch-size`), with its line under `Attributes:` below as its help, so a
field you add with a default can be set from the command line, and the run's `run.json` records
it (flags take int, float, str, bool, `Path`, tuples of these, `Literal` and `| None`; a field
of another type gets none).
How a run executes (steps per call, XLA, gradient clipping, logging) is `RunOptions`, at the
end: the engine's options with this project's defaults.
`copier update` three-way merges template changes into this file too, so your edits stay and
the template's arrive; where both changed the same lines, the file keeps both, marked.
"""

from __future__ import annotations

import dataclasses
import math

from .engine import options


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a training run depends on.

    Attributes:
        image_shape: Shape of one image, `(height, width, channels)`, pixels in [-1, 1].
        latent_dim: Length of the noise vector the generator turns into an image.
        epochs: Passes over the training images, in all when a run resumes.
        batch_size: Real images per training step; the last batch of an epoch may be smaller.
        generator_learning_rate: Learning rate of the generator's Adam optimizer.
        discriminator_learning_rate: Learning rate of the discriminator's Adam optimizer.
        beta_1: Adam's first-moment decay for both optimizers; GANs train more stably with
            0.5 than with Adam's default 0.9.
        num_samples: Images in each epoch's sample grid; a square number.
        seed: Seeds weight initialisation, the noise and shuffling, so runs repeat exactly.
    """

    image_shape: tuple[int, int, int] = (8, 8, 1)
    latent_dim: int = 16
    epochs: int = 10
    batch_size: int = 32
    generator_learning_rate: float = 0.001
    discriminator_learning_rate: float = 0.001
    beta_1: float = 0.5
    num_samples: int = 64
    seed: int = 42

    def __post_init__(self) -> None:
        """Reject values that would fail later with a less helpful error."""
        if len(self.image_shape) != 3 or any(int(d) < 1 for d in self.image_shape):
            raise ValueError(
                f"Config.image_shape={self.image_shape!r} is invalid; "
                "use (height, width, channels), e.g. (8, 8, 1)"
            )
        for name in ("latent_dim", "epochs", "batch_size"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"Config.{name}={value} is invalid; use 1 or more")
        for name in ("generator_learning_rate", "discriminator_learning_rate"):
            value = getattr(self, name)
            if value <= 0:
                raise ValueError(f"Config.{name}={value} is invalid; use a positive number")
        if not 0 <= self.beta_1 < 1:
            raise ValueError(f"Config.beta_1={self.beta_1} is invalid; use a number in [0, 1)")
        if self.num_samples < 1 or math.isqrt(self.num_samples) ** 2 != self.num_samples:
            raise ValueError(
                f"Config.num_samples={self.num_samples} is invalid; use a square number, e.g. 64"
            )


@dataclasses.dataclass(frozen=True)
class RunOptions(options.RunOptions):
    """How a run executes by default: the engine's `RunOptions`, with this project's defaults.

    Every field of the engine's class (see `engine/options.py`) is a flag of `train`; change a
    default here, or override one field at a time from the command line.
    """

    steps_per_execution: int = 64
    jit_compile: bool = False
    strategy: options.Strategy = "none"
    precision: options.Precision = "float32"
