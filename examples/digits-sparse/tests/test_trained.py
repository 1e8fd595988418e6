"""A finished run's model: saved, evaluated, predicted with, exported; bad input in one line."""

from __future__ import annotations

import dataclasses
import errno
import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path
from typing import BinaryIO

import keras
import numpy as np
import pytest
import tensorflow as tf

import digits_sparse.config
from digits_sparse import PROJECT
from digits_sparse.__main__ import main
from digits_sparse.config import Config, RunOptions
from digits_sparse.data import load_arrays, load_datasets, split
from digits_sparse.engine import train as training
from digits_sparse.engine import trained
from digits_sparse.engine.cli import HAND_WRITTEN, field_help, flag_name
from digits_sparse.engine.project import Project
from digits_sparse.engine.trained import RunFileError, load_task, save_output

PROG = "python -m digits_sparse"


@pytest.fixture
def logdir(finished_run: Path) -> Path:
    """A finished two-epoch run (the session's), read but not changed here."""
    return finished_run


def typical_rows(config: Config) -> np.ndarray:
    """Two copies of the mean of `load_datasets`' training features: features the default model
    standardizes to zeros (raw zeros would be far from anything it was trained on)."""
    mean = np.concatenate([x for x, *_ in load_datasets(config)[0]]).mean(axis=0)
    return np.stack([mean, mean])


def test_the_run_ends_with_a_loadable_model(logdir: Path) -> None:
    model = keras.saving.load_model(logdir / "model.keras")
    assert isinstance(model, keras.Model)
    assert json.loads((logdir / "run.json").read_text())["config"]["epochs"] == 2


def test_evaluate_prints_the_figures_the_run_logged(
    logdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", str(logdir)]) == 0
    logged = json.loads((logdir / "metrics.jsonl").read_text().splitlines()[-1])
    names = sorted((key for key in logged if key.startswith("val_")), key=lambda k: "loss" not in k)
    assert names[:2] == ["val_loss", "val_accuracy"]
    expected = " | ".join(f"{name} {logged[name]:.4f}" for name in names)
    assert capsys.readouterr().out == expected + "\n"


@pytest.mark.parametrize("class_ids", [False, True], ids=["probabilities", "class-ids"])
def test_predict_writes_probabilities_or_class_ids(
    logdir: Path, tmp_path: Path, config: Config, class_ids: bool
) -> None:
    x = typical_rows(config)
    np.save(tmp_path / "x.npy", x)
    argv = ["predict", str(logdir), "--input", str(tmp_path / "x.npy")]
    argv += ["--output", str(tmp_path / "y.npy")] + (["--class-ids"] if class_ids else [])
    assert main(argv) == 0

    predicted = np.load(tmp_path / "y.npy")
    task = load_task(PROJECT, logdir)  # Under the run's dtype policy, as predict loads it.
    outputs = task.primary_output(task.model(x))
    probabilities = config.labels.probabilities(outputs)
    if class_ids:
        assert predicted.dtype == np.int32 and predicted.shape == (len(x),)
        np.testing.assert_array_equal(predicted, np.argmax(outputs, axis=-1))
    else:
        np.testing.assert_allclose(predicted, probabilities, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(predicted.sum(axis=-1), 1.0, rtol=1e-5)


def test_export_writes_a_saved_model_that_serves_the_same_outputs(
    logdir: Path, tmp_path: Path, config: Config
) -> None:
    out = tmp_path / "exports" / "served"  # Missing directories above it are made.
    assert main(["export", str(logdir), str(out)]) == 0
    assert list(out.parent.iterdir()) == [out]  # No temporary directory is left beside it.
    served = tf.saved_model.load(str(out))
    x = tf.constant(typical_rows(config))
    task = load_task(PROJECT, logdir)  # Under the run's dtype policy, as export loads it.
    outputs = task.primary_output(task.model(x))
    np.testing.assert_allclose(served.serve(x), outputs, rtol=1e-5, atol=1e-6)


def test_predict_on_raw_rows_gives_what_the_pipeline_measured(
    logdir: Path, tmp_path: Path, config: Config
) -> None:
    """What is trained is what is served: `predict` takes the validation rows as `load_arrays`
    reads them and gives the class ids the model gives on `load_datasets`' batches, so the
    accuracy the run logged. Preprocessing outside the model (in `load_datasets`) fails here."""
    features, labels = load_arrays(config)
    rows = split(config, len(features))[1]
    np.save(tmp_path / "x.npy", features[rows])
    argv = ["predict", str(logdir), "--input", str(tmp_path / "x.npy")]
    assert main([*argv, "--output", str(tmp_path / "y.npy"), "--class-ids"]) == 0
    served = np.load(tmp_path / "y.npy")

    task = load_task(PROJECT, logdir)
    _, val_ds = load_datasets(config)
    outputs = [task.primary_output(task.model(x, training=False)) for x, *_ in val_ds]
    piped = np.concatenate([config.labels.class_ids(batch) for batch in outputs])
    logged = json.loads((logdir / "metrics.jsonl").read_text().splitlines()[-1])
    accuracy = float(np.mean(served == labels[rows]))
    np.testing.assert_array_equal(served, piped)
    assert accuracy == pytest.approx(logged["val_accuracy"], abs=1e-6)


@pytest.mark.parametrize("wrong", ["shape", "dtype", "complex", "no-rows"])
def test_predict_refuses_input_that_does_not_fit_in_one_line(
    logdir: Path, tmp_path: Path, config: Config, capsys: pytest.CaptureFixture[str], wrong: str
) -> None:
    x = config.features.probe_batch().numpy()
    x = {
        "shape": x[..., np.newaxis],
        "dtype": x.astype(str),
        "complex": x.astype(np.complex64),
        "no-rows": x[:0],
    }[wrong]
    np.save(tmp_path / "x.npy", x)
    argv = ["predict", str(logdir), "--input", str(tmp_path / "x.npy")]
    assert main([*argv, "--output", str(tmp_path / "y.npy")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{PROG} predict: error: the input ") and len(err.splitlines()) == 1
    assert not (tmp_path / "y.npy").exists()


@pytest.mark.parametrize("command", ["predict", "export"])
def test_a_directory_without_a_finished_run_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    np.save(tmp_path / "x.npy", np.zeros((1, 1), np.float32))
    extra = {"predict": ["--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y")]}
    argv = [command, str(tmp_path), *extra.get(command, [str(tmp_path / "out")])]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"{PROG} {command}: error: {tmp_path / 'model.keras'} does not exist: the run has not "
        f"finished; resume it with `{PROG} train --logdir {tmp_path} --resume`\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]


NPY = "give a .npy file of one array of numbers, written with numpy.save"


@pytest.mark.parametrize("kind", ["missing", "directory", "empty", "npz", "text", "truncated"])
def test_predict_refuses_an_input_that_is_not_a_npy_array_in_one_line(
    logdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    path = tmp_path / ("x.npz" if kind == "npz" else "x.npy")
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.touch()
    elif kind == "npz":
        np.savez(path, x=np.zeros((2, 3), np.float32))
    elif kind == "text":
        path.write_text("0.5,1.5\n2.5,3.5\n")
    elif kind == "truncated":
        np.save(path, np.zeros((2, 3), np.float32))
        path.write_bytes(path.read_bytes()[:-4])
    problem = {
        "missing": f"does not exist; {NPY}",
        "directory": f"is a directory; {NPY}",
        "empty": f"is empty (0 bytes); {NPY}",
        "npz": "is a .npz archive of arrays; save the one to use alone with numpy.save",
        "text": f"is not a .npy file (it lacks NumPy's header); {NPY}",
        "truncated": "cannot be read as an array: Failed to read all data for array. ",
    }[kind]
    output = tmp_path / "y.npy"
    assert main(["predict", str(logdir), "--input", str(path), "--output", str(output)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{PROG} predict: error: {path} {problem}")
    assert len(err.splitlines()) == 1
    assert not output.exists()


@pytest.mark.parametrize(
    ("output", "problem"),
    [
        ("y", "{d}/y.npy exists already (numpy.save adds .npy to {d}/y); give a new file to write"),
        ("y.npy", "{d}/y.npy exists already; give a new file to write"),
        ("new/y", "{d}/new does not exist; make it, or give a new file in a directory that exists"),
        ("y.npy/z.npy", "{d}/y.npy is not a directory; give a new file in a directory"),
        ("in", "{d}/in is a directory; give a new .npy file to write"),
    ],
    ids=["adds-npy", "exists", "missing-directory", "under-a-file", "directory"],
)
def test_predict_refuses_an_output_it_cannot_write_before_predicting(
    logdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], output: str, problem: str
) -> None:
    """The file is checked before the model loads: nothing is overwritten, nothing is written."""
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "x.npy", np.zeros((2, 3), np.float32))
    np.save(tmp_path / "y.npy", np.arange(3))
    argv = ["predict", str(logdir), "--input", str(tmp_path / "in" / "x.npy")]
    assert main([*argv, "--output", str(tmp_path / output)]) == 2
    assert capsys.readouterr().err == f"{PROG} predict: error: {problem.format(d=tmp_path)}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "y.npy"]
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), np.arange(3))


def test_a_prediction_is_written_to_a_new_file_or_not_at_all(tmp_path: Path) -> None:
    """A file that appeared since the check is kept; a failed write leaves no partial file."""
    (tmp_path / "y.npy").write_bytes(b"earlier")
    with pytest.raises(RunFileError) as error:
        save_output(tmp_path / "y.npy", np.zeros(2, np.float32))
    assert str(error.value) == f"{tmp_path / 'y.npy'} exists already; give a new file to write"
    assert (tmp_path / "y.npy").read_bytes() == b"earlier"

    with pytest.raises(ValueError, match="Object arrays cannot be saved"):
        save_output(tmp_path / "z.npy", np.array([object()]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["y.npy"]


@pytest.mark.parametrize("where", ["exists", "under-a-file"])
def test_export_refuses_a_path_it_cannot_make_in_one_line(
    logdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    (tmp_path / "served").mkdir()
    (tmp_path / "served" / "saved_model.pb").write_bytes(b"earlier")
    (tmp_path / "notes").write_text("a file")
    out = tmp_path / ("served" if where == "exists" else "notes/served")
    problem = {
        "exists": f"{out} exists already; give a new path for the SavedModel",
        "under-a-file": (
            f"{tmp_path / 'notes'} is not a directory, so {out} cannot be made in it; "
            "give a new path for the SavedModel in a directory"
        ),
    }[where]
    assert main(["export", str(logdir), str(out)]) == 2
    assert capsys.readouterr().err == f"{PROG} export: error: {problem}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes", "served"]
    assert [p.name for p in (tmp_path / "served").iterdir()] == ["saved_model.pb"]
    assert (tmp_path / "served" / "saved_model.pb").read_bytes() == b"earlier"


@pytest.mark.parametrize("failure", ["full-disk", "ctrl-c"])
def test_an_export_that_fails_midway_leaves_nothing(
    logdir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    failure: str,
) -> None:
    """What a full disk or a Ctrl-C during the write leaves: no SavedModel, whole or partial."""

    def fail_midway(self: keras.Model, filepath: str, *args: object, **kwargs: object) -> None:
        Path(filepath, "variables").mkdir(parents=True)
        Path(filepath, "saved_model.pb").write_bytes(b"part of a SavedModel")
        if failure == "ctrl-c":
            raise KeyboardInterrupt
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(keras.Model, "export", fail_midway)
    out = tmp_path / "exports" / "served"  # Its directory is made, and removed again.
    code, line = {
        "full-disk": (
            2,
            f"error: cannot write {out}: no space left on the device; free some, then export "
            "again; nothing was written",
        ),
        "ctrl-c": (130, "interrupted; nothing was written"),
    }[failure]
    assert main(["export", str(logdir), str(out)]) == code
    assert capsys.readouterr().err == f"{PROG} export: {line}\n"
    assert list(tmp_path.iterdir()) == []


def test_a_prediction_the_disk_cannot_hold_is_one_line_and_leaves_no_file(
    logdir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    np.save(tmp_path / "x.npy", np.zeros((2, 3), np.float32))
    monkeypatch.setattr(trained, "predict", lambda *args, **kwargs: np.zeros((2, 4), np.float32))

    def fill_the_disk(file: BinaryIO, array: np.ndarray, allow_pickle: bool) -> None:
        file.write(b"\x93NUMPY")  # Part of a header, then the disk is full.
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np, "save", fill_the_disk)
    out = tmp_path / "y.npy"
    argv = ["predict", str(logdir), "--input", str(tmp_path / "x.npy"), "--output", str(out)]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"{PROG} predict: error: cannot write {out}: no space left on the device; free some, "
        "then predict again; nothing was written\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        pytest.param([], "the following arguments are required: command", id="no-command"),
        pytest.param(["trian"], "argument command: invalid choice: 'trian'", id="trian"),
        pytest.param(
            ["train", "--epochs", "0"],
            "--epochs 0 is invalid; use 1 or more",
            id="train-bad-number",
        ),
        pytest.param(
            ["train", "--epochs", "2", "--foo"], "unrecognized arguments: --foo", id="train-foo"
        ),
        pytest.param(
            ["launch", "--", "train"],
            "the following arguments are required: --workers",
            id="launch-no-workers",
        ),
        pytest.param(
            ["check", "--batches", "x"],
            "argument --batches: expected a positive integer, got 'x'",
            id="check-bad-number",
        ),
        pytest.param(
            ["evaluate"], "the following arguments are required: logdir", id="evaluate-no-dir"
        ),
        pytest.param(
            ["predict", "runs/x", "--input", "x.npy"],
            "the following arguments are required: --output",
            id="predict-no-output",
        ),
        pytest.param(
            ["export", "runs/x", "out", "more"], "unrecognized arguments: more", id="export-extra"
        ),
    ],
)
def test_a_usage_error_is_one_line_that_names_the_commands_help(
    argv: list[str], problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    command = PROG if argv[:1] in ([], ["trian"]) else f"{PROG} {argv[0]}"
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{command}: error: {problem}")
    assert err.endswith(f"; see '{command} --help'\n") and len(err.splitlines()) == 1

    with pytest.raises(SystemExit) as exit_info:  # Following the hint.
        main([*command.split()[3:], "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: {command} ")


@pytest.mark.slow
def test_a_truncated_model_is_refused_and_resuming_writes_it_again(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logdir = tmp_path / "run"
    shutil.copytree(finished_run, logdir)
    model = logdir / "model.keras"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])  # As a kill leaves it.
    assert main(["export", str(logdir), str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (
        f"{PROG} export: error: {model} is truncated or unreadable; write it again from the "
        f"run's last checkpoint with `{PROG} train --logdir {logdir} --resume`\n"
    )
    assert not (tmp_path / "out").exists()

    assert main(["train", "--logdir", str(logdir), "--resume", "--quiet"]) == 0
    keras.saving.load_model(model)


def _edited_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, field: str = "dropout_rate"
) -> type:
    """`Config` as a user makes it by adding a field to config.py: `dropout_rate: float`."""
    source = Path(digits_sparse.config.__file__).read_text()
    documented = f"        {field}: Fraction of the hidden units dropped in training.\n"
    source = source.replace("    Attributes:\n", "    Attributes:\n" + documented, 1)
    source = source.replace(
        "    seed: int = 42\n", f"    seed: int = 42\n    {field}: float = 0.5\n", 1
    )
    path = tmp_path / "config.py"
    path.write_text(source)
    package = Config.__module__.rpartition(".")[0]
    name = f"{package}.edited_config"  # In the package, for config.py's relative imports.
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # For the dataclass's types.
    spec.loader.exec_module(module)
    edited = dataclasses.replace(PROJECT, config=module.Config)
    for name, imported in list(sys.modules.items()):  # Every module that imported Config.
        if name.startswith(package) and getattr(imported, "Config", None) is Config:
            monkeypatch.setattr(imported, "Config", module.Config)
        if name.startswith(package) and getattr(imported, "PROJECT", None) is PROJECT:
            monkeypatch.setattr(imported, "PROJECT", edited)
    return module.Config


def test_a_field_added_to_config_is_a_flag_the_run_records_and_resumes_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    edited = _edited_config(monkeypatch, tmp_path)
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = "".join(capsys.readouterr().out.split())
    assert "--dropout-rateX" in help_text
    assert "Fractionofthehiddenunitsdroppedintraining.(default:0.5)" in help_text

    fit = training.fit
    configs = []

    def spy(project: Project, config: Config, **kwargs: object) -> object:
        configs.append(config)
        return fit(project, config, **kwargs)

    monkeypatch.setattr(training, "fit", spy)
    logdir = tmp_path / "run"
    argv = ["train", "--quiet", "--logdir", str(logdir), "--steps-per-epoch", "1"]
    assert main([*argv, "--epochs", "1", "--dropout-rate", "0.25"]) == 0
    assert configs[-1] == dataclasses.replace(edited(), epochs=1, dropout_rate=0.25)
    run = json.loads((logdir / "run.json").read_text())
    assert run["config"]["dropout_rate"] == 0.25

    argv = ["train", "--quiet", "--logdir", str(logdir), "--resume"]
    assert main([*argv, "--dropout-rate", "0.1"]) == 2
    assert capsys.readouterr().err == (
        f"{PROG} train: error: --dropout-rate cannot change when resuming; "
        f"the run's is in {logdir}/run.json\n"
    )
    assert main([*argv, "--epochs", "2"]) == 0  # With the run's config, epochs apart.
    assert configs[-1] == dataclasses.replace(edited(), epochs=2, dropout_rate=0.25)


@pytest.mark.parametrize("field", ["quiet", "precision"])  # Hand-written; a run option's.
def test_a_field_whose_flag_train_has_already_is_one_line(
    field: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _edited_config(monkeypatch, tmp_path, field=field)
    assert main(["train"]) == 2
    assert capsys.readouterr().err == (
        f"{PROG}: error: Config.{field} would be the flag --{field}, which train has "
        "already; rename the field\n"
    )


def test_help_lists_every_field_with_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = "".join(capsys.readouterr().out.split())  # Wherever argparse wraps.
    for cls in (Config, RunOptions):
        helps = field_help(cls)
        for field in dataclasses.fields(cls):
            if cls is RunOptions and field.name in HAND_WRITTEN:
                continue
            assert helps.get(field.name), f"{cls.__name__}.{field.name} has no help"
            text = "".join(helps[field.name].split()).replace("%%", "%")
            assert f"{flag_name(field.name)}" in help_text
            assert text in help_text, field.name


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["--batch-size", "0"], "--batch-size 0 is invalid; use 1 or more"),
        (["--batch-size", "x"], "argument --batch-size: expected an integer, got 'x'"),
        (["--max-bad-steps", "0"], "--max-bad-steps 0 is invalid; use an integer >= 1"),
        (
            ["--clip-global-norm", "-1"],
            "--clip-global-norm -1.0 is invalid; use a positive number, or None for no clipping",
        ),
        (["--steps-per-epoch", "none", "--epochs", "-1"], "--epochs -1 is invalid; use 1 or more"),
        (
            ["--jit-compile", "--strategy", "mirrored"],
            "--jit-compile cannot run with --strategy mirrored:",
        ),
        (["--input-shape", "8,0"], "--input-shape 8,0 is invalid; use positive sizes"),
    ],
)
def test_a_bad_flag_value_is_one_line_that_names_the_flag(
    argv: list[str], problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logdir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--logdir", str(logdir), *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{PROG} train: error: {problem}")
    assert err.endswith(f"; see '{PROG} train --help'\n") and len(err.splitlines()) == 1
    assert not logdir.exists()
