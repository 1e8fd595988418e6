"""Use a finished run: predict with it, export it.

Each function takes the run's directory, which holds `model.keras` (written when the run
ended) and `run.json` (its config). The command line calls them:
    python -m digits_gan predict DIR --input Z.npy --output IMAGES.npy
    python -m digits_gan export DIR OUT

Template-owned: `copier update` merges template changes into it.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from . import precision
from .checkpoints import MODEL_FILE, CheckpointError, read_run
from .config import Config
from .gan import GAN


class RunFileError(CheckpointError):
    """A run's directory or an input file cannot be used: what is wrong, and the fix."""


def load_run(
    logdir: str | Path, strategy: tf.distribute.Strategy | None = None
) -> tuple[Config, keras.Model]:
    """The config and the trained model of the run in `logdir`.

    The model is loaded under the dtype policy the run trained with (its `precision`), so
    that its layers compute as they did in training, and in the scope of `strategy` if given.

    Raises:
        RunFileError: If `logdir` holds no finished run.
    """
    path = finished_model(logdir)
    config, options = read_run(logdir)
    scope = contextlib.nullcontext() if strategy is None else strategy.scope()
    with precision.dtype_policy(options.precision), scope:
        return config, keras.saving.load_model(path)


def finished_model(logdir: str | Path) -> Path:
    """The path of the model a finished run in `logdir` saved.

    Raises:
        RunFileError: If `logdir` holds no finished run.
    """
    logdir = Path(logdir)
    if not logdir.is_dir():
        raise RunFileError(f"{logdir} is not a directory; give a run's directory, e.g. runs/…")
    path = logdir / MODEL_FILE
    if not path.is_file():
        raise RunFileError(
            f"{path} does not exist: the run has not finished; resume it with "
            f"`python -m {__package__} train --logdir {logdir} --resume`"
        )
    return path


def predict(logdir: str | Path, noise: np.ndarray) -> np.ndarray:
    """The generator's images for latent vectors `noise`, float32 `(n, *image_shape)`.

    Raises:
        RunFileError: If the run has no model, or `noise` is not `(n, latent_dim)` numbers.
    """
    config, model = load_run(logdir)
    if noise.ndim != 2 or noise.shape[1] != config.latent_dim:
        raise RunFileError(
            f"the input has shape {noise.shape}, but the generator takes "
            f"(n, {config.latent_dim}) latent vectors"
        )
    if not np.issubdtype(noise.dtype, np.number):
        raise RunFileError(f"the input holds {noise.dtype} values; give numbers")
    assert isinstance(model, GAN)
    images = model.generator.predict(noise.astype(np.float32), verbose=0)
    return np.asarray(images)


def export(logdir: str | Path, out: str | Path) -> Path:
    """Write the run's generator as a SavedModel for serving, with `model.export`.

    Load it with `tf.saved_model.load(out)` and call its `serve` endpoint:
    latent vectors in, images out.

    Raises:
        RunFileError: If the run has no model, or `out` exists already.
    """
    out = Path(out)
    if out.exists():
        raise RunFileError(f"{out} exists already; give a new path for the SavedModel")
    _, model = load_run(logdir)
    assert isinstance(model, GAN)
    model.generator.export(str(out), verbose=False)
    return out


def load_input(path: str | Path) -> np.ndarray:
    """An array from a `.npy` file, or a one-line error.

    Raises:
        RunFileError: If `path` is missing or not a NumPy array file.
    """
    path = Path(path)
    if not path.is_file():
        raise RunFileError(f"{path} does not exist; give a .npy file made with numpy.save")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise RunFileError(f"{path} is not a .npy array file: {error}") from None
