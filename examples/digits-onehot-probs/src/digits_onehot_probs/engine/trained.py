"""Use a finished run: evaluate its model, predict with it, export it.

Each function takes the project (`project.Project`, the package's `PROJECT`) and the run's
directory, which holds `model.keras` (written when the run ended) and `run.json` (its config).
What the model's outputs mean is the task's business: `predict` and `export` ask the run's
task (`task.Task.prediction_input`, `serving_model`, `prediction`). The command line calls
them:

    python -m PACKAGE evaluate DIR
    python -m PACKAGE predict DIR --input X.npy --output Y.npy [--class-ids]
    python -m PACKAGE export DIR OUT

Template-owned: `copier update` replaces it with the template's later versions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from . import distribution, precision
from .checkpoints import MODEL_FILE, CheckpointError, read_run
from .loop import EpochLogs
from .project import Project
from .task import Task
from .train import Trainer

NPY_MAGIC = b"\x93NUMPY"  # How every .npy file starts.
ZIP_MAGIC = b"PK\x03\x04"  # How a .npz file, a zip archive, starts.


class RunFileError(CheckpointError):
    """A run's directory or an input file cannot be used: what is wrong, and the fix."""


def load_run(
    project: Project, logdir: str | Path, strategy: tf.distribute.Strategy | None = None
) -> tuple[Any, keras.Model]:
    """The config and the trained model of the run in `logdir`.

    The project's task module is imported first, so that the model classes it registers
    with Keras (a GAN's) load. The model is loaded under the dtype policy the run trained
    with (its `precision`), so that its layers compute as they did in training, and in the
    scope of `strategy` if given.

    Raises:
        RunFileError: If `logdir` holds no finished run.
    """
    path = finished_model(project, logdir)
    config, options = read_run(logdir, project.config, project.options)
    _ = project.build_task  # Imports the task's module, and the classes it registers.
    scope = contextlib.nullcontext() if strategy is None else strategy.scope()
    with precision.dtype_policy(options.precision), scope:
        return config, keras.saving.load_model(path)


def load_task(project: Project, logdir: str | Path) -> Task:
    """The task of the run in `logdir`, on its trained model, as `predict` and `export` ask it.

    Built by `project.build_task` with the run's config and options, quietly and without a
    logdir, so that it writes nothing.

    Raises:
        RunFileError: If `logdir` holds no finished run.
    """
    config, model = load_run(project, logdir)
    _, options = read_run(logdir, project.config, project.options)
    options = dataclasses.replace(options, verbose=0, logdir=None, resume=False)
    return project.build_task(model, config, options)


def finished_model(project: Project, logdir: str | Path) -> Path:
    """The path of the model a finished run in `logdir` saved.

    Raises:
        RunFileError: If `logdir` holds no finished run, or its model file is not whole.
    """
    logdir = Path(logdir)
    if not logdir.is_dir():
        raise RunFileError(f"{logdir} is not a directory; give a run's directory, e.g. runs/…")
    path = logdir / MODEL_FILE
    resume = f"`python -m {project.package} train --logdir {logdir} --resume`"
    if not path.is_file():
        raise RunFileError(
            f"{path} does not exist: the run has not finished; resume it with {resume}"
        )
    if not zipfile.is_zipfile(path):
        raise RunFileError(
            f"{path} is truncated or unreadable; write it again from the run's last checkpoint "
            f"with {resume}"
        )
    return path


def evaluate(project: Project, logdir: str | Path) -> EpochLogs:
    """The run's model on the validation split of `load_datasets`: `val_loss`, `val_accuracy`.

    The same evaluation step as during training, with the run's options (its strategy and
    precision included), so for the model of the last epoch these are that epoch's figures in
    `metrics.jsonl`, to the last digit. The saved model has every layer trainable, so
    `val_loss` counts the regularization of every layer: after a last epoch with some layers
    frozen (a backbone), it differs from the logged one, which, as in `model.fit`, counts the
    trainable weights' regularization only.

    Raises:
        RunFileError: If `logdir` holds no finished run.
        contract.DatasetError: If the validation split does not fit the steps.
        distribution.DistributionError: If the run's strategy cannot be built here.
        ValueError: If the run's task has no evaluation step (a GAN's).
    """
    finished_model(project, logdir)
    _, options = read_run(logdir, project.config, project.options)
    options = dataclasses.replace(options, verbose=0, logdir=None, resume=False)
    strategy = distribution.make_strategy(options.strategy, options.cpu_devices)
    config, model = load_run(project, logdir, strategy)
    _, val_ds = project.load_datasets(config)
    trainer = Trainer(project, config, model, options, strategy)
    return trainer.evaluate(trainer.task.prepare_dataset(val_ds, "val_ds"))


def predict(
    project: Project, logdir: str | Path, inputs: np.ndarray, *, as_class_ids: bool = False
) -> np.ndarray:
    """What the run's task predicts for `inputs`, an array of examples.

    The task checks the inputs (`Task.prediction_input`), its serving model (the one `export`
    writes) computes its outputs in batches of `config.batch_size`, and the task turns them
    into predictions (`Task.prediction`). For a classifier: features as `data.load_datasets`
    yields them, `(n, *config.input_shape)` (or token ids padded with 0 to one length), in;
    each class's probability, float32 `(n, num_classes)` (`(n, 1)`, class 1's, for binary
    labels), or with `as_class_ids` class ids, int32 `(n,)`, out. For a GAN: latent vectors
    in, images out.

    Raises:
        RunFileError: If the run has no model, or `inputs` does not fit it.
    """
    task = load_task(project, logdir)
    try:
        inputs = task.prediction_input(inputs)
    except ValueError as error:
        raise RunFileError(str(error)) from None
    served = task.serving_model()
    outputs = served.predict(inputs, batch_size=task.config.batch_size, verbose=0)
    return np.asarray(task.prediction(outputs, class_ids=as_class_ids))


def export(project: Project, logdir: str | Path, out: str | Path) -> Path:
    """Write the run's serving model (`Task.serving_model`) as a SavedModel, with `model.export`.

    Load it with `tf.saved_model.load(out)` and call its `serve` endpoint: for a classifier,
    features in and the model's primary output (`Task.primary_output`) out, logits or
    probabilities as the model gives them (`Config.labels.probabilities` turns logits into
    probabilities); for a GAN, latent vectors in, images out.

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
    model = load_task(project, logdir).serving_model()
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
