"""A classifier's task, the engine's side: what `train.Trainer` needs around your step.

`ClassifierTask` is the base of the task in the project's `task.py`, where the optimizers,
the loss, the metrics and the steps are yours. Here are what those steps call
(`compute_loss`, the metrics' `update`) and what the loop calls: the steps wrapped for it
(`make_train_step`, `make_eval_step`), their input signature, and the datasets checked and
converted. It knows the project's `Config` only as `ClassifierConfig` says.

Template-owned: `copier update` replaces it with the template's later versions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

import keras
import numpy as np
import tensorflow as tf

from . import contract, precision
from .distribution import BatchMean, global_batch_size
from .features import Features, with_packed_features
from .labels import Labels
from .optimizers import OptimizerSet
from .options import RunOptions
from .task import StepFn, Task


class ClassifierConfig(Protocol):
    """What `ClassifierTask` reads of the project's `Config`: its labels and its features."""

    @property
    def labels(self) -> Labels:
        """The labels' encoding: the loss, the accuracy, the checks."""
        ...

    @property
    def features(self) -> Features:
        """What a batch of features is: its spec and its checks."""
        ...


@dataclasses.dataclass(frozen=True)
class StepMetrics:
    """The running loss and accuracy of one phase, e.g. training or validation, and any more.

    Iterating gives the metrics, which the loop resets every epoch and reads, and which go to
    the progress line, `metrics.jsonl`, TensorBoard and the `History` by their names.

    Attributes:
        loss: The running loss.
        accuracy: The running accuracy.
        extra: Metrics of yours, each updated with `(y, y_pred)` as `accuracy` is.
        figures: The means of the figures `train_step` returns (`ClassifierTask.figures`).
        output: What `update` reads of the model's outputs: `ClassifierTask` sets it to its
            `primary_output` (`reading`); all of them by default.
    """

    loss: BatchMean
    accuracy: keras.metrics.Metric
    extra: tuple[keras.metrics.Metric, ...] = ()
    figures: tuple[keras.metrics.Mean, ...] = ()
    output: Callable[[Any], tf.Tensor] = dataclasses.field(
        default=lambda outputs: outputs, compare=False, repr=False
    )

    @classmethod
    def create(
        cls, labels: Labels, prefix: str = "", extra: Iterable[keras.metrics.Metric] = ()
    ) -> StepMetrics:
        """Metrics named `{prefix}loss` and `{prefix}accuracy` (for `labels`), as `model.fit`.

        Args:
            labels: The labels' encoding, which picks the accuracy.
            prefix: The start of every name: `""` for training, `"val_"` for validation.
            extra: More Keras metrics, each updated with `update_state(y, y_pred)` by
                `update`; name them with `prefix` too (e.g. `f"{prefix}top3"`).

        Raises:
            ValueError: If two metrics have the same name.
        """
        metrics = cls(
            BatchMean(name=f"{prefix}loss"), labels.make_accuracy(f"{prefix}accuracy"), tuple(extra)
        )
        names = [metric.name for metric in metrics]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(
                f"metric name(s) {', '.join(repeated)} appear more than once in "
                "build_metrics; give each metric its own name, starting with the prefix"
            )
        return metrics

    @tf.autograph.experimental.do_not_convert
    def update(self, loss: tf.Tensor, y: tf.Tensor, y_pred: tf.Tensor) -> None:
        """Record one batch (this replica's share of it). Must be `tf.function`-compatible.

        The loss is weighted by the batch size, as `model.fit` does, so a smaller last batch
        counts for what it holds. Sample weights are in the loss already; the accuracy and
        the extra metrics count every example once, as `model.fit` counts its `metrics`
        (Keras weights only its `weighted_metrics`). A Keras metric's variables sync on read,
        summed over the replicas, so one of totals and counts is exact on several.

        Args:
            loss: This replica's part of the batch's loss, from `ClassifierTask.compute_loss`.
            y: This replica's labels.
            y_pred: This replica's outputs, all of them: the accuracy reads `output(y_pred)`.
        """
        self.loss.add(loss, global_batch_size(y), tf.shape(y)[0])
        for metric in (self.accuracy, *self.extra):
            metric.update_state(y, self.output(y_pred))

    def reading(self, output: Callable[[Any], tf.Tensor]) -> StepMetrics:
        """These metrics, with `update` reading `output(y_pred)` of the model's outputs."""
        return dataclasses.replace(self, output=output)

    @tf.autograph.experimental.do_not_convert
    def record(self, figures: Mapping[str, tf.Tensor]) -> None:
        """Add each figure a step returned to its mean. Must be `tf.function`-compatible.

        Each replica adds its own value, so a figure's epoch mean is over its batches and
        its replicas: return a figure that is the whole batch's (the same on every replica),
        or one whose mean over the replicas is what you want.

        Raises:
            ValueError: If `figures` and the means (`ClassifierTask.figures`) differ in names.
        """
        means = {metric.name: metric for metric in self.figures}
        if set(figures) != set(means):
            raise ValueError(
                f"train_step returned the figures {sorted(figures)}, but Task.figures names "
                f"{sorted(means)}; name each figure the step returns in Task.figures, e.g. "
                'figures = ("grad_norm",)'
            )
        for name, value in figures.items():
            means[name].update_state(value)

    def __iter__(self) -> Iterator[keras.metrics.Metric]:
        return iter((self.loss, self.accuracy, *self.extra, *self.figures))


@tf.autograph.experimental.do_not_convert
def total_loss(
    model: keras.Model,
    loss_fn: keras.losses.Loss,
    y: tf.Tensor,
    y_pred: tf.Tensor,
    batch_size: tf.Tensor,
    sample_weight: tf.Tensor | None = None,
) -> tf.Tensor:
    """The data loss plus the model's regularization losses, as `model.fit` optimizes it.

    The data loss is the mean over the batch: `loss_fn` sums over this replica's examples
    (`labels.make_loss("sum")`), each times its `sample_weight` if given, and the sum is
    divided by `batch_size`, the examples of the whole batch (not the sum of the weights,
    as `model.fit` does not either), so that the replicas' losses add up to the mean over
    the batch however it was split (Keras's own mean reduction divides by the number of
    replicas instead, which is exact only for equal shares). Regularization losses are
    scaled with `tf.nn.scale_regularization_loss`, which divides by the number of replicas
    under `tf.distribute` and by 1 otherwise. They are added up in float32: under a mixed
    precision policy an activity regularizer's loss is float16 or bfloat16, a weight
    regularizer's float32. Outside `tf.distribute` this is exactly `model.fit`'s loss.
    """
    loss = loss_fn(y, y_pred, sample_weight=sample_weight) / batch_size
    if model.losses:
        regularization = tf.add_n([tf.cast(part, tf.float32) for part in model.losses])
        loss += tf.nn.scale_regularization_loss(regularization)
    return loss


class ClassifierTask(Task):
    """A classifier's `engine.task.Task`: the model, its optimizers, loss, metrics and steps.

    Subclass it (as `task.py` does) and give it `build_optimizers`, `build_loss`,
    `build_metrics`, `train_step` and `test_step` (and `callbacks`, for its own callbacks);
    the loop runs the steps through `make_train_step` and `make_eval_step`. A `train_step`
    that returns a dict of scalars, e.g. `{"grad_norm": norm}`, names them in `figures`,
    the class attribute: each gets a `keras.metrics.Mean` among `train_metrics`, so its
    epoch mean is logged as a metric is, reset every epoch, checkpointed and undone with a
    skipped step. The means are made before the loop is traced, hence the names up front.

    Args:
        model: A built or unbuilt Keras model whose output fits the loss.
        config: The run's hyperparameters.
        options: How the run executes.

    Attributes:
        model: The model.
        config: The run's hyperparameters.
        options: How the run executes.
        labels: The labels' encoding, `config.labels`: the loss, the accuracy, the checks.
        inputs: What a batch of features is, `config.features`: its spec and its checks.
        optimizers: Its optimizers, from `build_optimizers`, built on its trainable variables.
        loss_fn: The data loss, from `build_loss`.
        figures: The names of the figures `train_step` returns, if it returns a dict; none
            by default.
        train_metrics: `loss`, `accuracy` and any extra ones, from `build_metrics("")`,
            recorded by `train_step`, and the means of its `figures`; `StepMetrics` read the
            `primary_output` of the outputs they get.
        val_metrics: `val_loss`, `val_accuracy` and any extra ones, from
            `build_metrics("val_")`, recorded by `test_step`, likewise.
        features: What the model takes (`inputs.model_spec(model)`): one tensor, or a dict
            of them for a model built on a dict of named inputs.
        input_signature: `(features, labels)` of one batch, flat as the loop passes them (a
            dict's values in sorted key order): `features` and `labels.spec`; `signature`
            adds the sample weights' spec where a dataset has them.
    """

    figures: tuple[str, ...] = ()

    def __init__(self, model: keras.Model, config: ClassifierConfig, options: RunOptions) -> None:
        self.labels = config.labels
        self.inputs = config.features
        self.model = model
        self.config = config
        self.options = options
        outputs = self.labels.check_model_output(model, self.inputs, self.primary_output)
        precision.check_output(outputs, model)
        precision.check_model(model, options.precision)
        self.optimizers = self.build_optimizers()
        self.loss_fn = self.build_loss()
        self.train_metrics = self._reading_primary_output(self.build_metrics(""))
        if self.figures:
            means = tuple(keras.metrics.Mean(name=name) for name in self.figures)
            self.train_metrics = dataclasses.replace(self.train_metrics, figures=means)
            names = [metric.name for metric in self.train_metrics]
            if len(set(names)) < len(names):
                raise ValueError(
                    f"Task.figures {list(self.figures)} repeat a name among the metrics "
                    f"{names}; give each figure a name of its own"
                )
        self.val_metrics = self._reading_primary_output(self.build_metrics("val_"))
        self.features = self.inputs.model_spec(model)
        self.input_signature = tuple(tf.nest.flatten((self.features, self.labels.spec)))

    def build_optimizers(self) -> OptimizerSet:
        """The optimizers, each on the trainable variables of its part of `model`."""
        raise NotImplementedError("give the task a build_optimizers method")

    def build_loss(self) -> keras.losses.Loss:
        """The data loss, summed over the examples (`compute_loss` takes the mean)."""
        return self.labels.make_loss("sum")

    def build_metrics(self, prefix: str) -> StepMetrics:
        """The metrics of one phase, their names starting with `prefix`."""
        return StepMetrics.create(self.labels, prefix)

    def train_step(
        self, x: tf.Tensor, y: tf.Tensor, sample_weight: tf.Tensor | None = None
    ) -> None:
        """Train on one batch (this replica's share of it); see `task.py`."""
        raise NotImplementedError("give the task a train_step method")

    def test_step(self, x: tf.Tensor, y: tf.Tensor, sample_weight: tf.Tensor | None = None) -> None:
        """Evaluate one batch (this replica's share of it); see `task.py`."""
        raise NotImplementedError("give the task a test_step method")

    def compute_loss(
        self, y: tf.Tensor, y_pred: tf.Tensor, sample_weight: tf.Tensor | None = None
    ) -> tf.Tensor:
        """This replica's part of the batch's loss, regularization losses included.

        The parts add up, over the replicas, to the data loss's mean over the whole batch plus
        the model's regularization losses, exactly as one device computes it (see
        `total_loss`). The data loss reads `primary_output(y_pred)`: pass the model's outputs,
        all of them. Must be `tf.function`-compatible.
        """
        y_pred = self.primary_output(y_pred)
        return total_loss(self.model, self.loss_fn, y, y_pred, global_batch_size(y), sample_weight)

    def batch_mean(self, values: tf.Tensor) -> tf.Tensor:
        """This replica's part of the mean of `values` over the whole batch: a loss term's.

        `values` holds one value per example of this replica's share (e.g. a penalty on an
        intermediate tensor, summed over its other axes); their sum is divided by the examples
        of the whole batch, so that the replicas' parts add up to one device's mean however the
        batch is split (`tf.reduce_mean` would average each share on its own). Float32 under any
        dtype policy. Must be `tf.function`-compatible.
        """
        values = tf.cast(values, tf.float32)
        return tf.reduce_sum(values) / global_batch_size(values)

    def prediction_input(self, inputs: np.ndarray) -> np.ndarray:
        """`inputs` checked and cast as the features `config.features` describes.

        Raises:
            ValueError: One line, starting "the input ", naming what does not fit.
        """
        return self.inputs.check_array(inputs)

    def prediction(self, outputs: np.ndarray, *, class_ids: bool = False) -> np.ndarray:
        """Each class's probability (`labels.probabilities`), or each example's class id.

        Float32 `(n, num_classes)` (`(n, 1)` for binary labels), or with `class_ids`, int32
        `(n,)` (`labels.class_ids`).
        """
        if class_ids:
            return np.asarray(self.labels.class_ids(outputs))
        return np.asarray(self.labels.probabilities(outputs))

    def _reading_primary_output(self, metrics: Any) -> Any:
        """`metrics` reading the primary output, if they are `StepMetrics`; else as they are."""
        return metrics.reading(self.primary_output) if isinstance(metrics, StepMetrics) else metrics

    def make_train_step(self) -> StepFn:
        """`train_step` as the loop runs it, for the model's trainable variables now.

        The labels (and token ids) are checked first; around the step, the optimizers
        learn the batch size and reset their `status`, which the returned function returns
        for the loop's guard. A dict of figures `train_step` returns goes to their means
        (`StepMetrics.record`), which the loop logs with the metrics.
        """

        def step(x: tf.Tensor, y: tf.Tensor, sample_weight: tf.Tensor | None = None) -> tf.Tensor:
            x = self.inputs.checked_values(x)
            y = self.labels.checked_values(y)
            self.optimizers.begin_step(global_batch_size(y))
            figures = self.train_step(x, y, sample_weight)
            self.train_metrics.record({} if figures is None else figures)
            return self.optimizers.end_step()

        return with_packed_features(step, self.features)

    def make_eval_step(self) -> StepFn:
        """`test_step` as the loop runs it, on checked labels (and token ids)."""

        def step(x: tf.Tensor, y: tf.Tensor, sample_weight: tf.Tensor | None = None) -> None:
            x = self.inputs.checked_values(x)
            y = self.labels.checked_values(y)
            self.test_step(x, y, sample_weight)

        return with_packed_features(step, self.features)

    def signature(self, spec: object) -> tuple[tf.TensorSpec, ...]:
        """The steps' input signature for a prepared dataset of element spec `spec`.

        `input_signature` for `(features, labels)` pairs; with `contract.WEIGHTS_SPEC` added
        for `(features, labels, sample_weights)`, which `prepare_dataset` makes of weighted
        datasets and of `class_weight`.
        """
        if isinstance(spec, tuple) and len(spec) == 3:
            return (*self.input_signature, contract.WEIGHTS_SPEC)
        return self.input_signature

    def prepare_dataset(
        self,
        dataset: tf.data.Dataset,
        name: str,
        class_weight: Mapping[int, float] | None = None,
    ) -> tf.data.Dataset:
        """`dataset` as the steps take it: checked, and converted where that is unambiguous.

        Called on every dataset before it is read, so that a problem fails before tracing and
        the conversions (`inputs.check`, `labels.check`,
        `contract.check_sample_weights`) run once, in the pipeline, never in the step. The
        result has the same cardinality and order.

        Args:
            dataset: `(features, labels)` or `(features, labels, sample_weights)` batches.
            name: What the dataset is called in errors, e.g. `train_ds`.
            class_weight: The weight of each class id, as for `model.fit`: each example
                gets its label's weight as its sample weight (1.0 for a class the mapping
                omits). Not with sample weights in `dataset`, which `model.fit` refuses too.

        Raises:
            contract.DatasetError: Listing every problem of the features, the labels and the
                sample weights, each with its fix.
            ValueError: If `class_weight` maps something other than class ids to finite
                weights >= 0.
        """
        spec = dataset.element_spec
        if not (isinstance(spec, tuple) and len(spec) in (2, 3)):
            found = f"{len(spec)}-tuples" if isinstance(spec, tuple) else contract.describe(spec)
            raise contract.DatasetError(
                name,
                [
                    f"{name} yields {found}, but the steps take (features, labels) pairs or "
                    "(features, labels, sample_weights) triples; make data.py yield those"
                ],
            )
        checks = [
            self.inputs.check(spec[0], f"{name} features", self.features),
            self.labels.check(spec[1], f"{name} labels"),
        ]
        if len(spec) == 3:
            checks.append(contract.check_sample_weights(spec[2], f"{name} sample weights"))
            if class_weight is not None:
                checks.append(
                    contract.SpecCheck(
                        problem=(
                            f"{name} yields sample weights and class_weight is given too, "
                            "which model.fit refuses as well; drop class_weight, or multiply "
                            "each sample weight by its class's weight in data.py"
                        )
                    )
                )
        conformed = contract.conform(dataset, name, checks)
        if class_weight is None:
            return conformed
        table = contract.class_weight_table(class_weight, self.labels.class_count)
        last = self.labels.class_count - 1

        def with_class_weights(x: object, y: tf.Tensor) -> tuple[object, tf.Tensor, tf.Tensor]:
            # Clipped: a label out of range still reaches the step, whose check reports it.
            ids = tf.clip_by_value(self.labels.label_class_ids(y), 0, last)
            return x, y, tf.gather(table, ids)

        return conformed.map(with_class_weights).prefetch(2)


class KerasReference(keras.Model):
    """A task's model as `model.fit` trains it, on the task's own loss: the loop's reference.

    Keras's `train_step` and `test_step` (the tape, `optimizer.apply`, the loss tracker, the
    compiled metrics) with the task's `compute_loss`, and the metrics reading its
    `primary_output`. So a loss of yours, a term on an intermediate tensor included, is the
    reference's too, and what a comparison with it finds is the loop's doing. Compile it with
    an optimizer and the metrics, and no loss. Its weights are the model's.

    Args:
        task: A task built on the model to train (`compute_loss` reads its regularization
            losses).
    """

    def __init__(self, task: ClassifierTask) -> None:
        super().__init__(name=f"{task.model.name}_reference")
        self.inner = task.model
        self.task = task

    def call(self, inputs: Any, training: bool = False) -> Any:
        """The model's outputs, all of them."""
        return self.inner(inputs, training=training)

    def compute_loss(
        self,
        x: Any = None,
        y: Any = None,
        y_pred: Any = None,
        sample_weight: Any = None,
        training: bool = True,
    ) -> tf.Tensor:
        """The task's loss for the batch (one device: the whole batch's)."""
        del x, training
        return self.task.compute_loss(y, y_pred, sample_weight)

    def compute_metrics(self, x: Any, y: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        """The compiled metrics, on the primary output."""
        return super().compute_metrics(x, y, self.task.primary_output(y_pred), sample_weight)
