"""A finished run's model: saved, predicted with, exported; config flags."""

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

import digits_gan.config
from digits_gan import PROJECT
from digits_gan.__main__ import main
from digits_gan.config import Config, RunOptions
from digits_gan.engine import train as training
from digits_gan.engine.cli import HAND_WRITTEN, field_help, flag_name
from digits_gan.engine.project import Project

PROG = "python -m digits_gan"


@pytest.fixture
def logdir(finished_run: Path) -> Path:
    """A finished two-epoch run (the session's), read but not changed here."""
    return finished_run


def test_the_run_ends_with_a_loadable_model(logdir: Path) -> None:
    model = keras.saving.load_model(logdir / "model.keras")
    assert isinstance(model, keras.Model)
    assert json.loads((logdir / "run.json").read_text())["config"]["epochs"] == 2


def test_predict_writes_the_generators_images(logdir: Path, tmp_path: Path, config: Config) -> None:
    noise = np.random.default_rng(0).normal(size=(3, config.latent_dim)).astype(np.float32)
    np.save(tmp_path / "z.npy", noise)
    argv = ["predict", str(logdir), "--input", str(tmp_path / "z.npy")]
    assert main([*argv, "--output", str(tmp_path / "images.npy")]) == 0

    images = np.load(tmp_path / "images.npy")
    model = keras.saving.load_model(logdir / "model.keras")
    assert images.shape == (3, *config.image_shape)
    np.testing.assert_allclose(images, model.generator(noise), rtol=1e-5, atol=1e-6)


def test_export_writes_a_saved_model_of_the_generator(
    logdir: Path, tmp_path: Path, config: Config
) -> None:
    out = tmp_path / "exports" / "served"  # Missing directories above it are made.
    assert main(["export", str(logdir), str(out)]) == 0
    assert list(out.parent.iterdir()) == [out]  # No temporary directory is left beside it.
    served = tf.saved_model.load(str(out))
    noise = tf.random.normal((2, config.latent_dim))
    model = keras.saving.load_model(logdir / "model.keras")
    np.testing.assert_allclose(served.serve(noise), model.generator(noise), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("noise", "problem"),
    [
        (np.zeros((2, 3, 4), np.float32), "has shape (2, 3, 4), but the generator takes"),
        (np.zeros((2, Config().latent_dim), np.complex64), "holds complex64 values"),
        (np.zeros((0, Config().latent_dim), np.float32), "has shape (0, "),
    ],
    ids=["shape", "complex", "no-rows"],
)
def test_predict_refuses_input_that_does_not_fit_in_one_line(
    logdir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    noise: np.ndarray,
    problem: str,
) -> None:
    np.save(tmp_path / "z.npy", noise)
    argv = ["predict", str(logdir), "--input", str(tmp_path / "z.npy")]
    assert main([*argv, "--output", str(tmp_path / "images.npy")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{PROG} predict: error: the input {problem}")
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "images.npy").exists()


def _edited_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, field: str = "dropout_rate"
) -> type:
    """`Config` as a user makes it by adding a field to config.py: `dropout_rate: float`."""
    source = Path(digits_gan.config.__file__).read_text()
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
