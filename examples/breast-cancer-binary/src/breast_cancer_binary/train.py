"""The training loop: epochs, evaluation, metric resets and logging.

`fit` is the entry point; `Trainer` holds what one run builds exactly once (optimizer, loss,
metrics, traced step functions) so that tests and later extensions can reach them.

Template-owned: `copier update` replaces this file.
"""

from __future__ import annotations

import time
from pathlib import Path

import keras
import tensorflow as tf

from . import inputs, losses
from .config import Config
from .data import load_datasets
from .loop import EpochLogs, StepRunner, append_logs, format_logs
from .model import build_model
from .steps import StepFn, StepMetrics, make_eval_step, make_train_step


def input_signature(config: Config) -> tuple[tf.TensorSpec, tf.TensorSpec]:
    """The `(features, labels)` of one batch: `inputs.features_spec`, `losses.label_spec`."""
    return inputs.features_spec(config), losses.label_spec(config)


def check_dataset(dataset: tf.data.Dataset, config: Config, name: str) -> None:
    """Fail fast, before tracing, when a dataset does not yield what the steps declare.

    Raises:
        ValueError: If the elements are not `(features, labels)` pairs.
        inputs.InputSignatureError: If the features do not fit `inputs.features_spec`.
        losses.LabelEncodingError: If the labels are not in this project's encoding.
    """
    spec = dataset.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2):
        raise ValueError(f"{name} must yield (features, labels) pairs, but yields {spec}")
    inputs.check_features_spec(spec[0], config, f"{name} features")
    try:
        losses.check_label_spec(spec[1], config)
    except losses.LabelEncodingError as error:
        raise losses.LabelEncodingError(f"{name}: {error}") from None


class Trainer:
    """Runs epochs of training and evaluation with step functions traced once per run.

    Args:
        config: The run's hyperparameters.
        model: A built or unbuilt Keras model whose output fits the loss.
        run_eagerly: Run the steps as plain Python for readable stack traces.

    Attributes:
        optimizer: The Adam optimizer, built on the model's trainable variables.
        train_step: The training step for one batch, a `tf.function` unless `run_eagerly`.
        eval_step: The evaluation step for one batch, likewise.
        train_runner: Runs `train_step` over an epoch, `config.steps_per_execution` steps
            per call, keeping one iterator per dataset for the whole run.
        eval_runner: Runs `eval_step` likewise.
    """

    def __init__(self, config: Config, model: keras.Model, *, run_eagerly: bool = False) -> None:
        losses.check_model_output(model, config)
        self.config = config
        self.model = model
        self.optimizer = keras.optimizers.Adam(learning_rate=config.learning_rate)
        # Built up front: a step that creates the optimizer's slots while tracing traces twice,
        # and under MirroredStrategy fails outright.
        self.optimizer.build(model.trainable_variables)
        loss_fn = losses.make_loss()
        self.train_metrics = StepMetrics.create("train")
        self.val_metrics = StepMetrics.create("val")
        train_step = make_train_step(model, self.optimizer, loss_fn, self.train_metrics, config)
        eval_step = make_eval_step(model, loss_fn, self.val_metrics, config)
        self.run_eagerly = run_eagerly
        self.train_step: StepFn = self._compile(train_step)
        self.eval_step: StepFn = self._compile(eval_step)
        per_call = config.steps_per_execution
        self.train_runner = StepRunner(
            self.train_step, per_call, self.train_metrics.all(), run_eagerly=run_eagerly
        )
        self.eval_runner = StepRunner(
            self.eval_step, per_call, self.val_metrics.all(), run_eagerly=run_eagerly
        )

    def _compile(self, step: StepFn) -> StepFn:
        if self.run_eagerly:
            return step
        # The steps branch on Python values only, so AutoGraph has nothing to convert; without
        # it, errors raised while tracing (such as NoneGradientError) reach the caller as is.
        return tf.function(
            step,
            input_signature=input_signature(self.config),
            autograph=False,
            jit_compile=self.config.jit_compile,
        )

    def train_epoch(self, dataset: tf.data.Dataset) -> tuple[EpochLogs, int]:
        """Train on every batch once; return this epoch's figures and its number of steps."""
        return self.train_runner.run_epoch(dataset)

    def evaluate(self, dataset: tf.data.Dataset) -> EpochLogs:
        """Evaluate on every batch once; figures cover this call only."""
        logs, _ = self.eval_runner.run_epoch(dataset)
        return logs

    def fit(
        self,
        train_ds: tf.data.Dataset,
        val_ds: tf.data.Dataset,
        *,
        logdir: str | Path | None = None,
        verbose: bool = True,
    ) -> list[EpochLogs]:
        """Train for `config.epochs` epochs, evaluating after each.

        Args:
            train_ds: Batches of `(features, labels)` to train on.
            val_ds: Batches of `(features, labels)` to evaluate on.
            logdir: If given, each epoch's figures are appended to `logdir/metrics.jsonl`.
            verbose: Print one line per epoch.

        Returns:
            One dict per epoch with `epoch`, `train_loss`, `train_acc`, `val_loss`, `val_acc`.
        """
        check_dataset(train_ds, self.config, "train_ds")
        check_dataset(val_ds, self.config, "val_ds")
        history: list[EpochLogs] = []
        try:
            for epoch in range(1, self.config.epochs + 1):
                start = time.perf_counter()
                train_logs, steps = self.train_epoch(train_ds)
                steps_per_second = steps / (time.perf_counter() - start)
                logs: EpochLogs = {"epoch": epoch, **train_logs, **self.evaluate(val_ds)}
                history.append(logs)
                if verbose:
                    print(format_logs(logs, self.config.epochs, steps_per_second), flush=True)
                if logdir is not None:
                    append_logs(logdir, logs)
        finally:
            # The iterators hold read-ahead batches and shuffle buffers: free them with the run.
            self.train_runner.close()
            self.eval_runner.close()
        return history


def fit(
    config: Config,
    model: keras.Model | None = None,
    train_ds: tf.data.Dataset | None = None,
    val_ds: tf.data.Dataset | None = None,
    *,
    logdir: str | Path | None = None,
    run_eagerly: bool = False,
    verbose: bool = True,
) -> list[EpochLogs]:
    """Train a model with the custom loop.

    Seeds Keras, TensorFlow, NumPy and Python from `config.seed` first, so a run repeats.

    Args:
        config: The run's hyperparameters.
        model: Defaults to `build_model(config)`.
        train_ds: Defaults to the training half of `load_datasets(config)`.
        val_ds: Defaults to the validation half of `load_datasets(config)`.
        logdir: If given, each epoch's figures are appended to `logdir/metrics.jsonl`.
        run_eagerly: Run the steps as plain Python for readable stack traces.
        verbose: Print one line per epoch.

    Returns:
        One dict per epoch with `epoch`, `train_loss`, `train_acc`, `val_loss`, `val_acc`.
    """
    keras.utils.set_random_seed(config.seed)
    if model is None:
        model = build_model(config)
    if train_ds is None or val_ds is None:
        default_train, default_val = load_datasets(config)
        train_ds = default_train if train_ds is None else train_ds
        val_ds = default_val if val_ds is None else val_ds
    trainer = Trainer(config, model, run_eagerly=run_eagerly)
    return trainer.fit(train_ds, val_ds, logdir=logdir, verbose=verbose)
