"""Applying gradients without silently swallowing the ones that are `None`.

Template-owned: `copier update` replaces this file.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import keras
import tensorflow as tf


class NoneGradientWarning(UserWarning):
    """Some trainable variables got no gradient and were left unchanged."""


class NoneGradientError(ValueError):
    """Some trainable variables got no gradient and `Config.strict_gradients` is set."""


def apply_gradients(
    optimizer: keras.optimizers.Optimizer,
    gradients: Sequence[tf.Tensor | None],
    variables: Sequence[tf.Variable],
    *,
    strict: bool,
    owner: str | None = None,
) -> None:
    """Apply gradients, naming every variable that got none instead of silently skipping it.

    A `None` gradient is known while tracing, so the warning (or error) fires once per trace,
    not once per step. Must be `tf.function`-compatible.

    Args:
        optimizer: An optimizer built on `variables` (or a superset of them).
        gradients: One gradient, or `None`, per variable.
        variables: The variables to update.
        strict: Raise instead of warn.
        owner: What the variables belong to, e.g. `backbone`, to start the message with.

    Raises:
        NoneGradientError: If a variable got no gradient and `strict` is set.
    """
    pairs = [(g, v) for g, v in zip(gradients, variables, strict=True) if g is not None]
    missing = [v.path for g, v in zip(gradients, variables, strict=True) if g is None]
    if missing:
        message = (
            f"{owner + ': ' if owner else ''}{len(missing)} trainable variable(s) got no "
            f"gradient and are not updated: {', '.join(missing)}. The loss does not depend on "
            "them: check that they are used in the forward pass inside the tape, that no "
            "tf.stop_gradient or non-differentiable op cuts them off, and that the variable "
            "list belongs to this model. Freeze them with `layer.trainable = False` if that is "
            "intended."
        )
        if strict:
            raise NoneGradientError(message)
        warnings.warn(message, NoneGradientWarning, stacklevel=2)
    if pairs:  # Keras 3 optimizers reject an empty list.
        optimizer.apply_gradients(pairs)
