"""A finished run's model: saved, predicted with, exported; bad input in one line."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from digits_gan.__main__ import main
from digits_gan.config import Config

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
    assert main(["export", str(logdir), str(tmp_path / "served")]) == 0
    served = tf.saved_model.load(str(tmp_path / "served"))
    noise = tf.random.normal((2, config.latent_dim))
    model = keras.saving.load_model(logdir / "model.keras")
    np.testing.assert_allclose(served.serve(noise), model.generator(noise), rtol=1e-5, atol=1e-6)


def test_predict_refuses_input_that_does_not_fit_in_one_line(
    logdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "z.npy", np.zeros((2, 3, 4), np.float32))
    argv = ["predict", str(logdir), "--input", str(tmp_path / "z.npy")]
    assert main([*argv, "--output", str(tmp_path / "images.npy")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{PROG} predict: error: the input has shape (2, 3, 4)")
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "images.npy").exists()


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
