"""Use a finished run: evaluate its model, predict with it, export it.

Each function takes the run's directory, which holds `model.keras` (written when the run
ended) and `run.json` (its config). The command line calls them:
    python -m digits_backbone_head evaluate DIR
    python -m digits_backbone_head predict DIR --input X.npy --output Y.npy [--class-ids]
    python -m digits_backbone_head export DIR OUT

Template-owned: `copier update` merges template changes into it.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from . import distribution, precision
from .checkpoints import MODEL_FILE, CheckpointError, read_run
from .config import Config
from .data import load_datasets
from .inputs import describe, features_spec
from .loop import EpochLogs
from .losses import class_ids, probabilities
from .train import Trainer


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


def evaluate(logdir: str | Path) -> EpochLogs:
    """The run's model on the validation split of `load_datasets`: `val_loss`, `val_accuracy`.

    The same evaluation step as during training, with the run's options (its strategy and
    precision included), so for the model of the last epoch these are that epoch's
    `val_loss` and `val_accuracy` in `metrics.jsonl`, to the last digit.
    The saved model has every layer trainable, so `val_loss` adds the backbone's
    regularization: after a last epoch with the backbone frozen, it differs from the logged
    one (which, as in `model.fit`, counts the trainable weights' regularization only).

    Raises:
        RunFileError: If `logdir` holds no finished run.
        contract.DatasetError: If the validation split does not fit the steps.
        distribution.DistributionError: If the run's strategy cannot be built here.
    """
    finished_model(logdir)
    _, options = read_run(logdir)
    options = dataclasses.replace(options, verbose=0, logdir=None, resume=False)
    strategy = distribution.make_strategy(options.strategy, options.cpu_devices)
    config, model = load_run(logdir, strategy)
    _, val_ds = load_datasets(config)
    trainer = Trainer(config, model, options, strategy)
    return trainer.evaluate(trainer.task.prepare_dataset(val_ds, "val_ds"))


def predict(logdir: str | Path, features: np.ndarray, *, as_class_ids: bool = False) -> np.ndarray:
    """Predict for `features`, an array of examples of the model's input shape.

    Args:
        logdir: The run's directory.
        features: `(n, *config.input_shape)`.
        as_class_ids: Return class ids `(n,)` instead of probabilities.

    Returns:
        The probability of each class, float32 `(n, num_classes)`, or class ids, int32 `(n,)`.

    Raises:
        RunFileError: If the run has no model, or `features` does not fit it.
    """
    config, model = load_run(logdir)
    features = check_features(features, config)
    outputs = model.predict(features, batch_size=config.batch_size, verbose=0)
    result = class_ids(outputs) if as_class_ids else probabilities(outputs)
    return np.asarray(result)


def check_features(features: np.ndarray, config: Config) -> np.ndarray:
    """`features` in the model's input dtype, or a one-line error naming what does not fit."""
    spec = features_spec(config)
    if features.ndim < 1 or not spec.shape.is_compatible_with((None, *features.shape[1:])):
        raise RunFileError(
            f"the input has shape {features.shape}, but the model takes {describe(spec)}"
        )
    if features.dtype.kind not in "iuf":  # Signed or unsigned integers, or floats.
        raise RunFileError(f"the input holds {features.dtype} values; give numbers")
    return features.astype(spec.dtype.as_numpy_dtype)


def export(logdir: str | Path, out: str | Path) -> Path:
    """Write the run's model as a SavedModel for serving, with `model.export`.

    Load it with `tf.saved_model.load(out)` and call its `serve` endpoint:
    features in, the model's raw outputs (logits) out; apply `losses.probabilities` for
    probabilities.

    Raises:
        RunFileError: If the run has no model, or `out` exists already.
    """
    out = Path(out)
    if out.exists():
        raise RunFileError(f"{out} exists already; give a new path for the SavedModel")
    _, model = load_run(logdir)
    model.export(str(out), verbose=False)
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
