"""A finished run's model: saved, evaluated, predicted with, exported; config flags."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import digits_onehot_probs.config
from digits_onehot_probs import PROJECT
from digits_onehot_probs.__main__ import main
from digits_onehot_probs.config import Config, RunOptions
from digits_onehot_probs.data import load_arrays, load_datasets, split
from digits_onehot_probs.engine import train as training
from digits_onehot_probs.engine.cli import HAND_WRITTEN, field_help, flag_name
from digits_onehot_probs.engine.project import Project
from digits_onehot_probs.engine.trained import load_task

PROG = "python -m digits_onehot_probs"


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


def _edited_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, field: str = "dropout_rate"
) -> type:
    """`Config` as a user makes it by adding a field to config.py: `dropout_rate: float`."""
    source = Path(digits_onehot_probs.config.__file__).read_text()
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
    ("field", "value"), [("epochs", 0), ("batch_size", -1), ("learning_rate", 0.0)]
)
def test_config_names_the_bad_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"Config.{field}={value} is invalid"):
        Config(**{field: value})
