"""The features' contract: the one place that declares what a batch of inputs is.

The step functions' input signature, the checks run before training and the probe batch that
checks a model's output all come from `features_spec`, so they cannot disagree.
Template-owned: `copier update` merges template changes into it.
"""

from __future__ import annotations

import tensorflow as tf

from .config import Config


class InputSignatureError(ValueError):
    """Features do not fit the step functions' input signature."""


def features_spec(config: Config) -> tf.TensorSpec:
    """The features of one batch, as the step functions' input signature declares them.

    Token ids padded with 0. The batch and the length dimensions are both `None`, so batches of
    any size and any padded length reuse one trace: a whole run traces each step once.
    """
    del config  # Any batch size, any length.
    return tf.TensorSpec(shape=(None, None), dtype=tf.int32, name="token_ids")


def probe_batch(config: Config) -> tf.Tensor:
    """A batch of two examples that fits `features_spec`, to check a model's output."""
    return tf.ones((2, min(8, config.max_length)), dtype=tf.int32)


def describe(spec: tf.TensorSpec) -> str:
    """A spec in words, e.g. `float32 batches of shape (batch, 64)`."""
    if spec.shape.rank is None:
        return f"{spec.dtype.name} batches of unknown rank"
    dims = [
        "batch" if i == 0 else "length" if d is None else str(d) for i, d in enumerate(spec.shape)
    ]
    return f"{spec.dtype.name} batches of shape ({', '.join(dims)}{',' if len(dims) == 1 else ''})"


def check_features_spec(spec: object, config: Config, name: str = "features") -> None:
    """Fail fast, before tracing, when features do not fit the declared signature.

    Args:
        spec: The features' `tf.TypeSpec`, e.g. `dataset.element_spec[0]`.
        config: The run's configuration.
        name: What the features are called in the message, e.g. `train_ds features`.

    Raises:
        InputSignatureError: Naming what was found, what was expected and the fix.
    """
    expected = features_spec(config)
    if (
        isinstance(spec, tf.TensorSpec)
        and spec.dtype == expected.dtype
        and expected.shape.is_compatible_with(spec.shape)
    ):
        return
    found = describe(spec) if isinstance(spec, tf.TensorSpec) else repr(spec)
    raise InputSignatureError(
        f"{name} are {found}, but the model takes {describe(expected)}; {_fix(spec, expected)}"
    )


def _fix(spec: object, expected: tf.TensorSpec) -> str:
    """How to turn features of `spec` into features of `expected`."""
    if isinstance(spec, tf.RaggedTensorSpec) or (
        isinstance(spec, tf.TensorSpec) and spec.shape.rank == 1
    ):
        return (
            "batch the unbatched sequences with sequences.batch_sequences in data.py, which pads "
            "them with 0 to (batch, length)"
        )
    if isinstance(spec, tf.TensorSpec) and expected.shape.is_compatible_with(spec.shape):
        return (
            "token ids must be integers with 0 as padding: cast them with tf.cast(x, tf.int32) "
            "in data.py, or map strings to ids with keras.layers.StringLookup"
        )
    return (
        "give each example one sequence of token ids, padded to (batch, length); for frames of "
        "float features, generate the project with fixed shapes or change model.py and inputs.py"
    )
