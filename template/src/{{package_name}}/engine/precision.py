"""Mixed precision: float16 or bfloat16 computations on float32 weights (`--precision`).

`fit` builds the model under the Keras dtype policy `RunOptions.precision` names. The layers
then compute in float16 or bfloat16 and keep float32 weights; the output the loss sees stays
float32 (`Labels.output_layer` is float32 under any policy, and `check_output` holds every
model to it). With `mixed_float16`, each optimizer is a `keras.optimizers.LossScaleOptimizer`:
the step's `scaled = self.optimizers.scale_loss(loss)`, inside the tape, multiplies the loss
by its dynamic scale, so that small gradients do not underflow float16, and
`OptimizerSet.apply` divides it out, skipping (and
lowering the scale at) a step whose scaled gradients overflow. `mixed_bfloat16` has float32's
range and needs no scaling.

Template-owned: `copier update` merges template changes into it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras
import tensorflow as tf

from .options import PRECISIONS


class PrecisionError(ValueError):
    """A model that does not follow the run's dtype policy, or outputs less than float32.

    Also a step that applies gradients of an unscaled loss under `mixed_float16`.
    """

    ag_pass_through = True  # Raised while tracing: AutoGraph passes it on as it is.


@contextlib.contextmanager
def dtype_policy(precision: str) -> Iterator[None]:
    """Build layers under the Keras dtype policy `precision` inside this block.

    Raises:
        PrecisionError: If `precision` is not one of `PRECISIONS`.
    """
    if precision not in PRECISIONS:
        raise PrecisionError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def check_model(model: keras.Model, precision: str) -> None:
    """Fail fast when the model was built under another dtype policy than `precision`.

    Raises:
        PrecisionError: Naming the fix: build the model under `dtype_policy(precision)`.
    """
    built_with = model.dtype_policy.name
    if built_with != precision:
        raise PrecisionError(
            f"the model was built under the dtype policy {built_with!r}, but the run's "
            f"precision is {precision!r}; build it inside "
            f"`with precision.dtype_policy({precision!r}):`, or let fit() build it"
        )


def check_output(outputs: tf.Tensor, model: keras.Model) -> None:
    """Fail fast when the output the loss sees is not float32.

    Under a mixed policy every layer computes in float16 or bfloat16 unless told otherwise,
    and a loss on float16 logits loses the small differences training depends on.

    Raises:
        PrecisionError: Naming the last layer and the fix.
    """
    if outputs.dtype == tf.float32:
        return
    last: object = model
    while isinstance(last, keras.Model) and last.layers:
        last = last.layers[-1]  # Descend into nested models to the layer that outputs.
    name = getattr(last, "name", type(last).__name__)
    raise PrecisionError(
        f"the model's output (layer {name!r}) is {outputs.dtype.name}, but the loss needs "
        "float32 under a mixed precision policy; give that layer dtype='float32'"
    )


def loss_scaled(
    optimizer: keras.optimizers.Optimizer, precision: str
) -> keras.optimizers.Optimizer:
    """`optimizer` wrapped in a `LossScaleOptimizer` for `mixed_float16`, else as it is."""
    if precision == "mixed_float16":
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
