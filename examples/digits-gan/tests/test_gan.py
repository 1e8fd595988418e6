"""The GAN: each update touches only its own model, the loop, its logs and its samples.

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

from digits_gan.__main__ import main
from digits_gan.config import Config
from digits_gan.data import load_dataset, load_images
from digits_gan.gradients import NoneGradientWarning
from digits_gan.model import build_discriminator, build_generator
from digits_gan.train import SAMPLE_SCALE, Trainer, fit

LINE = re.compile(
    r"epoch (\d+)/(\d+) \| d_loss \d+\.\d{4} \| g_loss \d+\.\d{4} "
    r"\| d_acc_real \d\.\d{4} \| d_acc_fake \d\.\d{4} \| \d+ steps/s"
)
KEYS = {"epoch", "d_loss", "g_loss", "d_acc_real", "d_acc_fake"}


def _trainer(config: Config) -> Trainer:
    keras.utils.set_random_seed(config.seed)
    return Trainer(config, build_generator(config), build_discriminator(config))


def _weights(model: keras.Model) -> list[np.ndarray]:
    return [v.numpy() for v in model.trainable_variables]


def _moved(before: list[np.ndarray], after: list[np.ndarray]) -> bool:
    return any(not np.array_equal(b, a) for b, a in zip(before, after, strict=True))


def _real(config: Config, count: int = 32) -> tf.Tensor:
    return tf.constant(load_images(config)[:count])


def test_images_are_in_the_generators_range(config: Config) -> None:
    images = load_images(config)
    assert images.shape[1:] == config.image_shape
    assert images.min() == -1.0
    assert images.max() == 1.0


def test_discriminator_step_touches_only_discriminator_variables(config: Config) -> None:
    trainer = _trainer(config)
    generator, discriminator = _weights(trainer.generator), _weights(trainer.discriminator)

    trainer.discriminator_step(_real(config))

    assert _moved(discriminator, _weights(trainer.discriminator))
    assert not _moved(generator, _weights(trainer.generator))
    assert int(trainer.generator_optimizer.iterations) == 0


def test_generator_step_touches_only_generator_variables(config: Config) -> None:
    trainer = _trainer(config)
    generator, discriminator = _weights(trainer.generator), _weights(trainer.discriminator)

    trainer.generator_step(tf.constant(32))

    assert _moved(generator, _weights(trainer.generator))
    assert not _moved(discriminator, _weights(trainer.discriminator))
    assert int(trainer.discriminator_optimizer.iterations) == 0


def test_training_stays_finite_and_the_discriminator_is_not_perfect() -> None:
    config = Config(epochs=5)
    history = fit(config, verbose=False)

    assert np.isfinite([list(logs.values()) for logs in history]).all()
    last = history[-1]
    # A discriminator that tells every fake apart has won: the generator learns nothing more.
    # Both fooled sometimes is the sign of a real game; the bound is loose on purpose.
    assert (last["d_acc_real"] + last["d_acc_fake"]) / 2 < 0.95, last
    assert last["d_acc_fake"] < 0.99, last


def test_a_whole_run_traces_the_step_once(config: Config) -> None:
    num_images = len(load_images(config))
    batch_size = 48 if num_images % 48 else 50
    config = dataclasses.replace(config, batch_size=batch_size, epochs=3, steps_per_execution=7)
    trainer = _trainer(config)

    trainer.fit(load_dataset(config), verbose=False)

    assert trainer.train_step.experimental_get_tracing_count() == 1
    assert trainer.train_runner.tracing_count() == 1


def test_metrics_are_reset_every_epoch(config: Config) -> None:
    trainer = _trainer(config)
    images = load_images(config)
    big = tf.data.Dataset.from_tensor_slices(images[:100]).batch(16)  # 7 batches, the last of 4
    small = tf.data.Dataset.from_tensor_slices(images[:24]).batch(16)

    _, steps = trainer.train_epoch(big)
    assert steps == 7
    # The losses are weighted by batch size, so their count is the images seen since the reset.
    assert float(trainer.metrics.d_loss.count) == 100.0
    trainer.train_epoch(small)
    assert float(trainer.metrics.d_loss.count) == 24.0
    assert float(trainer.metrics.g_loss.count) == 24.0
    assert float(trainer.metrics.d_acc_real.count) == 24.0


def test_fit_logs_and_writes_a_sample_grid_every_epoch(
    config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    history = fit(config, logdir=tmp_path)

    assert [logs["epoch"] for logs in history] == [1, 2]
    assert all(set(logs) == KEYS for logs in history)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == history
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


def test_steps_per_execution_changes_no_figure(config: Config) -> None:
    config = dataclasses.replace(config, epochs=1)
    runs = [
        fit(dataclasses.replace(config, steps_per_execution=k), verbose=False)
        for k in (1, config.steps_per_execution)
    ]
    np.testing.assert_allclose(
        [list(logs.values()) for logs in runs[0]], [list(logs.values()) for logs in runs[1]]
    )


def test_xla_compiles_the_step_once(config: Config) -> None:
    config = dataclasses.replace(config, jit_compile=True, epochs=1)
    dataset = load_dataset(config)
    assert {int(images.shape[0]) for images in dataset} == {config.batch_size}
    trainer = _trainer(config)

    (logs,) = trainer.fit(dataset, verbose=False)

    assert trainer.train_step.experimental_get_tracing_count() == 1
    assert np.isfinite(list(logs.values())).all()


def test_fit_repeats_exactly_with_the_same_seed(config: Config) -> None:
    config = dataclasses.replace(config, epochs=1)
    assert fit(config, verbose=False) == fit(config, verbose=False)


def test_eager_steps_give_the_same_result(config: Config) -> None:
    dataset = tf.data.Dataset.from_tensor_slices(load_images(config)[:96]).batch(32)
    runs = [_trainer(config), _trainer(config)]
    runs[1] = Trainer(config, runs[1].generator, runs[1].discriminator, run_eagerly=True)
    graph, eager = ([list(t.train_epoch(dataset)[0].values())] for t in runs)
    np.testing.assert_allclose(graph, eager, rtol=1e-5)


def test_none_gradients_are_named_by_model(config: Config) -> None:
    class Orphan(keras.layers.Layer):
        def build(self, input_shape: tuple[int, ...]) -> None:
            self.orphan = self.add_weight(name="orphan", shape=(1,), initializer="ones")

        def call(self, inputs: tf.Tensor) -> tf.Tensor:
            return inputs

    discriminator = keras.Sequential(
        [keras.Input(shape=config.image_shape), Orphan(), build_discriminator(config)]
    )
    trainer = Trainer(config, build_generator(config), discriminator)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train_step(_real(config))
    messages = [str(w.message) for w in caught if issubclass(w.category, NoneGradientWarning)]
    assert len(messages) == 1, messages
    assert messages[0].startswith("discriminator: 1 trainable variable(s) got no gradient")
    assert "orphan" in messages[0]


def test_a_labelled_dataset_fails_before_training(config: Config) -> None:
    images = load_images(config)[:16]
    labelled = tf.data.Dataset.from_tensor_slices((images, np.zeros(16))).batch(8)
    with pytest.raises(ValueError, match=r"map it to images only in data\.py"):
        fit(config, dataset=labelled, verbose=False)


def test_a_discriminator_with_a_sigmoid_is_refused(config: Config) -> None:
    inputs = keras.Input(shape=config.image_shape)
    outputs = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Flatten()(inputs))
    with pytest.raises(ValueError, match="remove the activation from the last layer"):
        Trainer(config, build_generator(config), keras.Model(inputs, outputs))


def test_command_line_trains_and_appends_metrics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--epochs", "1", "--batch-size", "64", "--logdir", str(tmp_path)]
    assert main(argv) == 0
    assert LINE.fullmatch(capsys.readouterr().out.splitlines()[0])
    assert set(json.loads((tmp_path / "metrics.jsonl").read_text())) == KEYS
    assert (tmp_path / "samples_epoch_001.png").is_file()


@pytest.mark.parametrize(
    ("field", "value"), [("latent_dim", 0), ("batch_size", -1), ("num_samples", 10)]
)
def test_config_names_the_bad_field(field: str, value: int) -> None:
    with pytest.raises(ValueError, match=f"Config.{field}={value} is invalid"):
        Config(**{field: value})


def test_keras_is_version_3() -> None:
    assert keras.__version__.startswith("3.")
