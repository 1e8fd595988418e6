"""A finished run's model: saved, evaluated, predicted with, exported; bad input in one line."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from digits_mirrored_bf16.__main__ import main
from digits_mirrored_bf16.config import Config
from digits_mirrored_bf16.inputs import probe_batch
from digits_mirrored_bf16.losses import probabilities
from digits_mirrored_bf16.trained import load_run

PROG = "python -m digits_mirrored_bf16"


@pytest.fixture
def logdir(finished_run: Path) -> Path:
    """A finished two-epoch run (the session's), read but not changed here."""
    return finished_run


def test_the_run_ends_with_a_loadable_model(logdir: Path) -> None:
    model = keras.saving.load_model(logdir / "model.keras")
    assert isinstance(model, keras.Model)
    assert json.loads((logdir / "run.json").read_text())["config"]["epochs"] == 2


def test_evaluate_prints_the_figures_the_run_logged(
    logdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", str(logdir)]) == 0
    logged = json.loads((logdir / "metrics.jsonl").read_text().splitlines()[-1])
    expected = f"val_loss {logged['val_loss']:.4f} | val_accuracy {logged['val_accuracy']:.4f}"
    assert capsys.readouterr().out == expected + "\n"


@pytest.mark.parametrize("class_ids", [False, True], ids=["probabilities", "class-ids"])
def test_predict_writes_probabilities_or_class_ids(
    logdir: Path, tmp_path: Path, config: Config, class_ids: bool
) -> None:
    x = probe_batch(config).numpy()
    np.save(tmp_path / "x.npy", x)
    argv = ["predict", str(logdir), "--input", str(tmp_path / "x.npy")]
    argv += ["--output", str(tmp_path / "y.npy")] + (["--class-ids"] if class_ids else [])
    assert main(argv) == 0

    predicted = np.load(tmp_path / "y.npy")
    _, model = load_run(logdir)  # Under the run's dtype policy, as predict loads it.
    outputs = model(x)
    if class_ids:
        assert predicted.dtype == np.int32 and predicted.shape == (len(x),)
        np.testing.assert_array_equal(predicted, np.argmax(outputs, axis=-1))
    else:
        # In bfloat16, `model.predict`'s graph and the eager model round differently.
        np.testing.assert_allclose(predicted, probabilities(outputs), rtol=1e-2, atol=1e-3)
        np.testing.assert_allclose(predicted.sum(axis=-1), 1.0, rtol=1e-5)


def test_export_writes_a_saved_model_that_serves_the_same_outputs(
    logdir: Path, tmp_path: Path, config: Config
) -> None:
    assert main(["export", str(logdir), str(tmp_path / "served")]) == 0
    served = tf.saved_model.load(str(tmp_path / "served"))
    x = probe_batch(config)
    _, model = load_run(logdir)  # Under the run's dtype policy, as export loads it.
    # In bfloat16, the served graph and the eager model round differently (by up to
    # 2e-3 in bfloat16 on digits, about one unit in the last place of a logit).
    np.testing.assert_allclose(served.serve(x), model(x), rtol=2e-2, atol=5e-3)


@pytest.mark.parametrize("wrong", ["shape", "dtype"])
def test_predict_refuses_input_that_does_not_fit_in_one_line(
    logdir: Path, tmp_path: Path, config: Config, capsys: pytest.CaptureFixture[str], wrong: str
) -> None:
    x = probe_batch(config).numpy()
    x = x[..., np.newaxis] if wrong == "shape" else x.astype(str)
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
