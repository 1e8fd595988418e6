"""Helpers for the tests: small datasets, probe models, labels that agree with a model."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable

import keras
import numpy as np
import tensorflow as tf

from digits_sparse import PROJECT
from digits_sparse.config import Config, RunOptions
from digits_sparse.data import load_datasets
from digits_sparse.engine.train import Trainer
from digits_sparse.model import build_model

# Tests print no progress, and train on one device in float32 whatever the project's defaults:
# test_distribute.py covers strategies and mixed precision.
QUIET = RunOptions(verbose=0, strategy="none", precision="float32")


@dataclasses.dataclass(frozen=True)
class Figures:
    """The names of the figures a run logs every epoch, as the project's task names them.

    Each in the order of the progress line: by name, those of a loss first.

    Attributes:
        train: The task's training metrics.
        val: Its validation metrics.
        rates: Each optimizer's learning rate, which the loop adds.
    """

    train: tuple[str, ...]
    val: tuple[str, ...]
    rates: tuple[str, ...]

    @property
    def metrics(self) -> tuple[str, ...]:
        """The task's metrics, training's then validation's."""
        return self.train + self.val

    @property
    def keys(self) -> set[str]:
        """The keys of an epoch's logs, of the `History` and of a `metrics.jsonl` line."""
        return {*self.metrics, *self.rates, "skipped_steps", "steps_per_second"}

    def progress_line(self) -> re.Pattern[str]:
        """An epoch's line of progress, `epoch 1/2 | loss 0.1234 | ... | 812 steps/s`."""
        metrics = [re.escape(name) + r" -?\d+\.\d{4}" for name in self.metrics]
        rates = [re.escape(name) + r" [\d.e-]+" for name in self.rates]
        return re.compile(r" \| ".join([r"epoch (\d+)/(\d+)", *metrics, *rates, r"\d+ steps/s"]))


def figure_names(config: Config) -> Figures:
    """The figures a run of `config` logs, named by the task of `task.py` as it is now.

    A metric added to `build_metrics` is one more name here, so tests that read the names
    from this keep passing when the task changes on purpose.
    """
    task = PROJECT.build_task(build_model(config), config, QUIET)

    def in_order(names: Iterable[str]) -> tuple[str, ...]:
        # As the progress line shows them: by name, those of a loss first.
        return tuple(sorted(sorted(names), key=lambda name: "loss" not in name))

    return Figures(
        in_order(metric.name for metric in task.train_metrics),
        in_order(metric.name for metric in task.val_metrics),
        in_order(task.optimizers.learning_rates()),
    )


def features(config: Config, num_examples: int, seed: int = 0) -> np.ndarray:
    """Random float32 inputs of the configured shape."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(num_examples, *config.input_shape)).astype(np.float32)


def raw_features(config: Config, num_examples: int, seed: int = 0) -> np.ndarray:
    """Random float32 features spread as `load_datasets`' training features, feature by feature.

    The default model standardizes them to `features(config, num_examples, seed)` (to rounding;
    a constant feature stays constant): noise of the scale it trains on.
    """
    train = np.concatenate([x for x, *_ in load_datasets(config)[0]])
    noise = features(config, num_examples, seed)
    return (train.mean(axis=0) + train.std(axis=0) * noise).astype(np.float32)


def input_layer(config: Config) -> keras.KerasTensor:
    """A Keras input that takes batches of `config.features.spec`."""
    spec = config.features.spec
    return keras.Input(shape=tuple(spec.shape[1:]), dtype=spec.dtype.name)


def encoder(
    config: Config, front: keras.layers.Layer | None = None
) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """An input and a deterministic flat representation of it, with no dropout.

    Args:
        config: The run's configuration.
        front: A layer applied to the inputs first, e.g. a probe.
    """
    inputs = input_layer(config)
    x = inputs if front is None else front(inputs)
    return inputs, keras.layers.Flatten()(x)


def dataset(x: np.ndarray, labels: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """Batches of `(x, labels)` in order."""
    return tf.data.Dataset.from_tensor_slices((x, labels)).batch(batch_size)


def predicted_classes(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """The class each example is predicted as, as the accuracy metric reads the outputs."""
    outputs = keras.ops.convert_to_numpy(model(x, training=False))
    return outputs.argmax(axis=-1)


def labels_for(model: keras.Model, x: np.ndarray, config: Config, *, agree: bool) -> np.ndarray:
    """Encoded labels that all agree (or all disagree) with the model's predictions."""
    classes = predicted_classes(model, x)
    if not agree:
        classes = (classes + 1) % config.labels.class_count
    return config.labels.encode(classes)


def traced_once_per_phase(trainer: Trainer) -> bool:
    """Whether each step, one per set of trainable variables, was traced just once.

    A backbone frozen for the first epochs makes a second set, and so a second trace of the
    training step and of the evaluation step (whose loss adds the trainable weights'
    regularization).
    """
    runners = [(trainer.train_steps, trainer.train_runner)]
    if trainer.eval_runner is not None and trainer.eval_steps:
        runners.append((trainer.eval_steps, trainer.eval_runner))
    for steps, runner in runners:
        counts = [step.experimental_get_tracing_count() for step in steps.values()]
        if counts != [1] * len(counts) or runner.tracing_count() != len(counts):
            return False
    return True


def linear_model(
    config: Config,
    *,
    front: keras.layers.Layer | None = None,
    regularizer: keras.regularizers.Regularizer | None = None,
    output_dtype: str | None = None,
) -> keras.Model:
    """A deterministic model (no dropout) whose output fits the loss.

    Args:
        config: The run's configuration.
        front: A layer applied to the inputs first, e.g. a probe.
        regularizer: The output layer's kernel regularizer.
        output_dtype: The output layer's dtype policy; the global policy's by default.
    """
    inputs, x = encoder(config, front=front)
    outputs = keras.layers.Dense(
        config.labels.output_units,
        kernel_regularizer=regularizer,
        dtype=output_dtype,
        name="last",
    )(x)
    return keras.Model(inputs, outputs)
