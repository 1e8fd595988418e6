"""The GAN: each update touches only its own network, the loop, its logs and its samples.

A GAN has no `model.fit` to match (`fit` cannot alternate two optimizers on two losses), so
there is no parity test; these tests pin the step and the loop instead.
"""

from __future__ import annotations

import dataclasses
import json
import re
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from digits_gan import PROJECT
from digits_gan.__main__ import main
from digits_gan.config import Config, RunOptions
from digits_gan.data import load_datasets, load_images
from digits_gan.engine.checkpoints import save_model
from digits_gan.engine.gradients import NoneGradientWarning, NonFiniteError
from digits_gan.engine.train import Trainer, fit
from digits_gan.gan import GAN, SAMPLE_SCALE, SampleGrid
from digits_gan.model import build_discriminator, build_generator, build_model
from digits_gan.task import build_task

# Tests print no progress, and train on one device in float32 whatever the project's defaults:
# test_distribute.py covers strategies and mixed precision.
QUIET = RunOptions(verbose=0, strategy="none", precision="float32")
LINE = re.compile(
    r"epoch (\d+)/(\d+) \| d_loss \d+\.\d{4} \| g_loss \d+\.\d{4} "
    r"\| d_acc_fake \d\.\d{4} \| d_acc_real \d\.\d{4} "
    r"\| discriminator_learning_rate [\d.e-]+ \| generator_learning_rate [\d.e-]+ \| \d+ steps/s"
)
KEYS = {
    "d_loss",
    "g_loss",
    "d_acc_real",
    "d_acc_fake",
    "skipped_steps",
    "generator_learning_rate",
    "discriminator_learning_rate",
    "steps_per_second",
}


def _trainer(config: Config, options: RunOptions = QUIET) -> Trainer:
    keras.utils.set_random_seed(config.seed)
    return Trainer(PROJECT, config, build_model(config), options)


def _weights(model: keras.Model) -> list[np.ndarray]:
    return [v.numpy() for v in model.trainable_variables]


def _moved(before: list[np.ndarray], after: list[np.ndarray]) -> bool:
    return any(not np.array_equal(b, a) for b, a in zip(before, after, strict=True))


def _real(config: Config, count: int = 32) -> tf.Tensor:
    return tf.constant(load_images(config)[:count])


def _figures(history: keras.callbacks.History) -> dict[str, list[float]]:
    return {k: v for k, v in history.history.items() if k != "steps_per_second"}


def test_images_are_in_the_generators_range(config: Config) -> None:
    images = load_images(config)
    assert images.shape[1:] == config.image_shape
    assert images.min() == -1.0
    assert images.max() == 1.0


@pytest.mark.parametrize("part", ["discriminator", "generator"])
def test_each_update_touches_only_its_own_network(config: Config, part: str) -> None:
    trainer = _trainer(config)
    gan = trainer.model
    other = "generator" if part == "discriminator" else "discriminator"
    optimizers = trainer.task.optimizers.by_part
    optimizers[other].learning_rate = 0.0  # Whatever moves now, `part`'s update moved it.
    before = {name: _weights(getattr(gan, name)) for name in (part, other)}

    trainer.train_step(_real(config))

    assert _moved(before[part], _weights(getattr(gan, part)))
    assert not _moved(before[other], _weights(getattr(gan, other)))
    assert int(optimizers[part].iterations) == 1


def test_training_stays_finite_and_the_discriminator_is_not_perfect() -> None:
    config = Config(epochs=5)
    history = fit(PROJECT, config, options=QUIET).history

    assert np.isfinite([values for values in history.values()]).all()
    last = {key: values[-1] for key, values in history.items()}
    # A discriminator that tells every fake apart has won: the generator learns nothing more.
    # Both fooled sometimes is the sign of a real game; the bound is loose on purpose.
    assert (last["d_acc_real"] + last["d_acc_fake"]) / 2 < 0.95, last
    assert last["d_acc_fake"] < 0.99, last


def test_a_whole_run_traces_the_step_once(config: Config) -> None:
    num_images = len(load_images(config))
    batch_size = 48 if num_images % 48 else 50
    config = dataclasses.replace(config, batch_size=batch_size, epochs=3)
    trainer = _trainer(config, dataclasses.replace(QUIET, steps_per_execution=7))

    trainer.fit(load_datasets(config)[0])

    assert trainer.train_step.experimental_get_tracing_count() == 1
    assert trainer.train_runner.tracing_count() == 1


def test_metrics_are_reset_every_epoch(config: Config) -> None:
    trainer = _trainer(config)
    d_loss, g_loss, d_acc_real, _ = trainer.task.train_metrics
    images = load_images(config)
    big = tf.data.Dataset.from_tensor_slices(images[:100]).batch(16)  # 7 batches, the last of 4
    small = tf.data.Dataset.from_tensor_slices(images[:24]).batch(16)

    _, steps = trainer.train_epoch(big)
    assert steps == 7
    # The losses are weighted by batch size, so their count is the images seen since the reset.
    assert float(d_loss.count) == 100.0
    trainer.train_epoch(small)
    assert float(d_loss.count) == 24.0
    assert float(g_loss.count) == 24.0
    assert float(d_acc_real.count) == 24.0


def test_fit_returns_a_history_and_writes_samples_every_epoch(
    config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = build_model(config)
    history = fit(
        PROJECT, config, model, options=dataclasses.replace(QUIET, logdir=tmp_path, verbose=2)
    )

    assert history.model is model
    assert set(history.history) == KEYS
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line.pop("epoch") for line in lines] == [1, 2]
    assert {k: [line[k] for line in lines] for k in KEYS} == history.history
    printed = capsys.readouterr().out.splitlines()
    assert [LINE.fullmatch(line).groups() for line in printed] == [("1", "2"), ("2", "2")]
    rows = int(np.sqrt(config.num_samples))
    height, width, channels = config.image_shape
    for epoch in (1, 2):
        png = tf.io.read_file(str(tmp_path / f"samples_epoch_{epoch:03d}.png"))
        grid = tf.io.decode_png(png)
        assert tuple(grid.shape) == (
            rows * height * SAMPLE_SCALE,
            rows * width * SAMPLE_SCALE,
            channels,
        )
        assert int(tf.reduce_max(grid)) > int(tf.reduce_min(grid))  # not a blank image


def test_only_the_chief_of_a_run_with_a_logdir_writes_sample_grids(
    config: Config, tmp_path: Path
) -> None:
    options = dataclasses.replace(QUIET, logdir=tmp_path)
    task = build_task(build_model(config), config, options)
    no_logdir = build_task(build_model(config), config, QUIET)

    assert [type(callback) for callback in task.callbacks(chief=True)] == [SampleGrid]
    assert task.callbacks(chief=False) == []  # A worker other than the chief writes no file.
    assert no_logdir.callbacks(chief=True) == []


def test_steps_per_execution_changes_no_figure(config: Config) -> None:
    config = dataclasses.replace(config, epochs=1)
    runs = [
        _figures(fit(PROJECT, config, options=dataclasses.replace(QUIET, steps_per_execution=k)))
        for k in (1, QUIET.steps_per_execution)
    ]
    for key, values in runs[0].items():
        np.testing.assert_allclose(runs[1][key], values, rtol=1e-6, err_msg=key)


def test_xla_traces_the_step_once_and_trains(config: Config) -> None:
    config = dataclasses.replace(config, epochs=1)
    trainer = _trainer(config, dataclasses.replace(QUIET, jit_compile=True))

    history = trainer.fit(load_datasets(config)[0])

    assert trainer.train_step.experimental_get_tracing_count() == 1
    assert np.isfinite([values[-1] for values in history.history.values()]).all()


def test_fit_repeats_exactly_with_the_same_seed(config: Config) -> None:
    config = dataclasses.replace(config, epochs=1)
    assert _figures(fit(PROJECT, config, options=QUIET)) == _figures(
        fit(PROJECT, config, options=QUIET)
    )


def test_eager_steps_give_the_same_result(config: Config) -> None:
    dataset = tf.data.Dataset.from_tensor_slices(load_images(config)[:96]).batch(32)
    graph = _trainer(config).train_epoch(dataset)[0]
    eager = _trainer(config, dataclasses.replace(QUIET, run_eagerly=True)).train_epoch(dataset)[0]
    for key, value in graph.items():
        assert eager[key] == pytest.approx(value, rel=1e-5), key


def test_a_nan_image_is_skipped_and_too_many_stop_the_run(config: Config) -> None:
    images = load_images(config)[:64]
    bad = images.copy()
    bad[40, 0, 0, 0] = np.nan  # In the second batch of 32.
    trainer = _trainer(config)
    before = _weights(trainer.model)
    trainer.train_epoch(tf.data.Dataset.from_tensor_slices(bad[32:]).batch(32))
    assert not _moved(before, _weights(trainer.model))

    # The skipped step's figures stay out of the epoch's: those of the batch before it alone.
    logs, _ = _trainer(config).train_epoch(tf.data.Dataset.from_tensor_slices(bad).batch(32))
    clean, _ = _trainer(config).train_epoch(tf.data.Dataset.from_tensor_slices(bad[:32]).batch(32))
    assert (logs.pop("skipped_steps"), clean.pop("skipped_steps")) == (1.0, 0.0)
    assert logs == clean

    trainer = _trainer(config, dataclasses.replace(QUIET, max_bad_steps=2))
    nan_batches = tf.data.Dataset.from_tensor_slices(bad[32:]).batch(32).repeat(3)
    with pytest.raises(NonFiniteError, match=r"^stopped at step 2: 2 steps in a row"):
        trainer.train_epoch(nan_batches)


def test_none_gradients_are_named_by_network(config: Config) -> None:
    class Orphan(keras.layers.Layer):
        def build(self, input_shape: tuple[int, ...]) -> None:
            self.orphan = self.add_weight(name="orphan", shape=(1,), initializer="ones")

        def call(self, inputs: tf.Tensor) -> tf.Tensor:
            return inputs

    discriminator = keras.Sequential(
        [keras.Input(shape=config.image_shape), Orphan(), build_discriminator(config)]
    )
    trainer = Trainer(PROJECT, config, GAN(build_generator(config), discriminator), QUIET)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train_step(_real(config))
    messages = [str(w.message) for w in caught if issubclass(w.category, NoneGradientWarning)]
    assert len(messages) == 1, messages
    assert messages[0].startswith("discriminator: 1 trainable variable(s) got no gradient")
    assert "orphan" in messages[0]


def test_the_model_saves_every_weight_without_a_warning(config: Config, tmp_path: Path) -> None:
    """Every run ends by saving `model.keras`: no Keras warning that it may hold no weights."""
    model = build_model(config)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        path = save_model(model, tmp_path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, GAN)
    for ours, theirs in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_a_labelled_dataset_fails_before_training(config: Config) -> None:
    images = load_images(config)[:16]
    labelled = tf.data.Dataset.from_tensor_slices((images, np.zeros(16))).batch(8)
    with pytest.raises(ValueError, match=r"map it to images only in data\.py"):
        fit(PROJECT, config, train_ds=labelled, options=QUIET)


@pytest.mark.parametrize(("option", "value"), [("accumulation_steps", 2), ("validation_steps", 1)])
def test_options_a_gan_has_no_use_for_are_refused(config: Config, option: str, value: int) -> None:
    options = dataclasses.replace(QUIET, **{option: value})
    with pytest.raises(ValueError, match=f"RunOptions.{option} does not apply to a GAN"):
        Trainer(PROJECT, config, build_model(config), options)


def test_validation_data_and_class_weights_are_refused_before_training(config: Config) -> None:
    images = tf.data.Dataset.from_tensor_slices(load_images(config)[:16]).batch(8)
    trainer = _trainer(config)
    with pytest.raises(ValueError, match=r"val_ds is given, but .* no evaluation step"):
        trainer.fit(images, images)
    with pytest.raises(ValueError, match="class_weight does not apply to a GAN"):
        trainer.fit(images, class_weight={0: 1.0})
    with pytest.raises(ValueError, match="no evaluation step"):
        trainer.evaluate(images)
    assert int(trainer.global_step) == 0


def test_float64_images_are_cast_once_in_the_pipeline(config: Config) -> None:
    images = load_images(config)[:16]
    task = Trainer(PROJECT, config, build_model(config), QUIET).task
    given = tf.data.Dataset.from_tensor_slices(images.astype(np.float64)).batch(8)
    prepared = task.prepare_dataset(given, "train_ds")
    assert prepared.element_spec == tf.TensorSpec((None, *config.image_shape), tf.float32)
    got = np.concatenate([batch.numpy() for batch in prepared])
    np.testing.assert_array_equal(got, images.astype(np.float64).astype(np.float32))


def test_a_discriminator_with_a_sigmoid_is_refused(config: Config) -> None:
    inputs = keras.Input(shape=config.image_shape)
    outputs = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Flatten()(inputs))
    with pytest.raises(ValueError, match="remove the activation from the last layer"):
        Trainer(PROJECT, config, GAN(build_generator(config), keras.Model(inputs, outputs)), QUIET)


def test_command_line_trains_into_the_run_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    argv = ["train", "--epochs", "1", "--batch-size", "64", "--logdir", str(run)]
    assert main(argv) == 0
    assert LINE.fullmatch(capsys.readouterr().out.splitlines()[1])
    assert set(json.loads((run / "metrics.jsonl").read_text())) == KEYS | {"epoch"}
    assert (run / "samples_epoch_001.png").is_file()
    assert main(argv) == 2


@pytest.mark.parametrize(
    ("field", "value"), [("latent_dim", 0), ("batch_size", -1), ("num_samples", 10)]
)
def test_config_names_the_bad_field(field: str, value: int) -> None:
    with pytest.raises(ValueError, match=f"Config.{field}={value} is invalid"):
        Config(**{field: value})


def test_keras_is_version_3() -> None:
    assert keras.__version__.startswith("3.")
