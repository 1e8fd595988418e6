"""Use a finished run: evaluate its model, predict with it, export it.

Each function takes the run's directory, which holds `model.keras` (written when the run
ended) and `run.json` (its config). The command line calls them:
    python -m breast_cancer_binary evaluate DIR
    python -m breast_cancer_binary predict DIR --input X.npy --output Y.npy [--class-ids]
    python -m breast_cancer_binary export DIR OUT

Template-owned: `copier update` merges template changes into it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import tempfile
import zipfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from . import PROJECT
from .config import Config, RunOptions
from .data import load_datasets
from .engine import distribution, precision
from .engine.checkpoints import MODEL_FILE, CheckpointError, read_run
from .engine.contract import describe
from .engine.loop import EpochLogs
from .engine.train import Trainer

NPY_MAGIC = b"\x93NUMPY"  # How every .npy file starts.
ZIP_MAGIC = b"PK\x03\x04"  # How a .npz file, a zip archive, starts.


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
    config, options = read_run(logdir, Config, RunOptions)
    scope = contextlib.nullcontext() if strategy is None else strategy.scope()
    with precision.dtype_policy(options.precision), scope:
        return config, keras.saving.load_model(path)


def finished_model(logdir: str | Path) -> Path:
    """The path of the model a finished run in `logdir` saved.

    Raises:
        RunFileError: If `logdir` holds no finished run, or its model file is not whole.
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
    if not zipfile.is_zipfile(path):
        raise RunFileError(
            f"{path} is truncated or unreadable; write it again from the run's last checkpoint "
            f"with `python -m {__package__} train --logdir {logdir} --resume`"
        )
    return path


def evaluate(logdir: str | Path) -> EpochLogs:
    """The run's model on the validation split of `load_datasets`: `val_loss`, `val_accuracy`.

    The same evaluation step as during training, with the run's options (its strategy and
    precision included), so for the model of the last epoch these are that epoch's
    `val_loss` and `val_accuracy` in `metrics.jsonl`, to the last digit.

    Raises:
        RunFileError: If `logdir` holds no finished run.
        contract.DatasetError: If the validation split does not fit the steps.
        distribution.DistributionError: If the run's strategy cannot be built here.
    """
    finished_model(logdir)
    _, options = read_run(logdir, Config, RunOptions)
    options = dataclasses.replace(options, verbose=0, logdir=None, resume=False)
    strategy = distribution.make_strategy(options.strategy, options.cpu_devices)
    config, model = load_run(logdir, strategy)
    _, val_ds = load_datasets(config)
    trainer = Trainer(PROJECT, config, model, options, strategy)
    return trainer.evaluate(trainer.task.prepare_dataset(val_ds, "val_ds"))


def predict(logdir: str | Path, features: np.ndarray, *, as_class_ids: bool = False) -> np.ndarray:
    """Predict for `features`, an array of examples of the model's input shape.

    Args:
        logdir: The run's directory.
        features: `(n, *config.input_shape)`, as `data.load_datasets` yields its features
            (the model standardizes them itself).
        as_class_ids: Return class ids `(n,)` instead of probabilities.

    Returns:
        The probability of class 1, float32 `(n, 1)`, or class ids 0/1, int32 `(n,)`.

    Raises:
        RunFileError: If the run has no model, or `features` does not fit it.
    """
    config, model = load_run(logdir)
    features = check_features(features, config)
    outputs = model.predict(features, batch_size=config.batch_size, verbose=0)
    labels = config.labels
    result = labels.class_ids(outputs) if as_class_ids else labels.probabilities(outputs)
    return np.asarray(result)


def check_features(features: np.ndarray, config: Config) -> np.ndarray:
    """`features` in the model's input dtype, or a one-line error naming what does not fit."""
    spec = config.features.spec
    if features.ndim < 1 or not spec.shape.is_compatible_with((None, *features.shape[1:])):
        raise RunFileError(
            f"the input has shape {features.shape}, but the model takes {describe(spec)}"
        )
    if len(features) == 0:
        raise RunFileError(f"the input has shape {features.shape}: no examples; give at least one")
    if features.dtype.kind not in "iuf":  # Signed or unsigned integers, or floats.
        raise RunFileError(f"the input holds {features.dtype} values; give integers or floats")
    return features.astype(spec.dtype.as_numpy_dtype)


def export(logdir: str | Path, out: str | Path) -> Path:
    """Write the run's model as a SavedModel for serving, with `model.export`.

    Load it with `tf.saved_model.load(out)` and call its `serve` endpoint:
    features in, the model's raw outputs (logits) out; apply `Config.labels.probabilities` for
    probabilities.

    Missing directories above `out` are made. The SavedModel is written in a temporary
    directory beside `out` and renamed to `out` once whole, so an export that fails or is
    interrupted leaves nothing: neither `out` nor the directories it made.

    Raises:
        RunFileError: If the run has no model, or `out` exists already or cannot be made.
        OSError, tf.errors.OpError: If writing fails (a full disk); nothing is left.
    """
    out = Path(out)
    if out.exists() or out.is_symlink():
        raise RunFileError(f"{out} exists already; give a new path for the SavedModel")
    blocker = _file_above(out)
    if blocker is not None:
        raise RunFileError(
            f"{blocker} is not a directory, so {out} cannot be made in it; "
            "give a new path for the SavedModel in a directory"
        )
    _, model = load_run(logdir)
    made = [parent for parent in out.parents if not parent.exists()]
    staging = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
        staged = staging / out.name  # Made by the export, with the usual permissions.
        model.export(str(staged), verbose=False)
        if out.exists() or out.is_symlink():
            raise RunFileError(f"{out} exists already; give a new path for the SavedModel")
        staged.rename(out)
    except BaseException:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        for parent in made:  # Deepest first.
            with contextlib.suppress(OSError):
                parent.rmdir()
        raise
    staging.rmdir()
    return out


def load_input(path: str | Path) -> np.ndarray:
    """The array in `path`, a `.npy` file written with `numpy.save`, or a one-line error.

    Raises:
        RunFileError: If `path` is missing, not a `.npy` file, or holds no array of numbers.
    """
    path = Path(path)
    expected = "give a .npy file of one array of numbers, written with numpy.save"
    if path.is_dir():
        raise RunFileError(f"{path} is a directory; {expected}")
    if not path.is_file():
        raise RunFileError(f"{path} does not exist; {expected}")
    with path.open("rb") as file:
        head = file.read(len(NPY_MAGIC))
    if not head:
        raise RunFileError(f"{path} is empty (0 bytes); {expected}")
    if head.startswith(ZIP_MAGIC):
        raise RunFileError(
            f"{path} is a .npz archive of arrays; save the one to use alone with numpy.save"
        )
    if head != NPY_MAGIC:
        raise RunFileError(f"{path} is not a .npy file (it lacks NumPy's header); {expected}")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise RunFileError(f"{path} cannot be read as an array: {error}; {expected}") from None


def output_file(path: str | Path) -> Path:
    """The file that `numpy.save(path, ...)` would write, checked to be new, in a directory.

    `numpy.save` adds `.npy` to a name without it, so `Y` means `Y.npy`.

    Raises:
        RunFileError: If `path` is a directory, or that file exists, or its directory does not.
    """
    path = Path(path)
    if path.is_dir():
        raise RunFileError(f"{path} is a directory; give a new .npy file to write")
    file = path if path.name.endswith(".npy") else path.with_name(f"{path.name}.npy")
    if file.exists() or file.is_symlink():
        named = "" if file == path else f" (numpy.save adds .npy to {path})"
        raise RunFileError(f"{file} exists already{named}; give a new file to write")
    blocker = _file_above(file)
    if blocker is not None:
        raise RunFileError(f"{blocker} is not a directory; give a new file in a directory")
    if not file.parent.is_dir():
        raise RunFileError(
            f"{file.parent} does not exist; make it, or give a new file in a directory that exists"
        )
    return file


def save_output(file: Path, array: np.ndarray) -> None:
    """Write `array` to `file`, a new file (`output_file`); a write that fails leaves no file.

    Raises:
        RunFileError: If `file` exists by now.
    """
    try:
        stream = file.open("xb")
    except FileExistsError:
        raise RunFileError(f"{file} exists already; give a new file to write") from None
    with stream:
        try:
            np.save(stream, array, allow_pickle=False)
        except BaseException:
            stream.close()
            file.unlink()
            raise


def _file_above(path: Path) -> Path | None:
    """The nearest existing path above `path` if it is not a directory, else `None`."""
    existing = next((parent for parent in path.parents if parent.exists()), None)
    return None if existing is None or existing.is_dir() else existing
