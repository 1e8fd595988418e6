"""Two optimizers for one model: one for its backbone, one for its head.

Template-owned: `copier update` replaces this file.
"""

from __future__ import annotations

import keras

from .config import Config


def model_part(model: keras.Model, name: str) -> keras.Layer:
    """The layer of `model` named `name`, with a fix in the error when there is none.

    Raises:
        ValueError: If `model` has no such layer.
    """
    try:
        return model.get_layer(name)
    except ValueError:
        raise ValueError(
            f"the model has no layer named '{name}', but this project trains a backbone and a "
            f"head with an optimizer each; build the {name} as keras.Model(..., name='{name}') "
            "and compose the two parts, as model.build_model does"
        ) from None


class OptimizerGroups:
    """The backbone and the head of a model, each with its own Adam optimizer.

    Both optimizers are built here, up front, on the full variable list of their part: a
    Keras 3 optimizer updates only the variables it was built with, and one built while a step
    is traced makes the step trace twice.

    Args:
        model: A model with a `backbone` and a `head` layer that own all its trainable
            variables between them.
        config: Gives the learning rates.

    Attributes:
        backbone: The model's layer named `backbone`.
        head: The model's layer named `head`.
        backbone_optimizer: Updates the backbone's trainable variables only.
        head_optimizer: Updates the head's trainable variables only.
        backbone_learning_rate: The backbone's learning rate while it is not frozen.

    Raises:
        ValueError: If a part is missing, or a trainable variable belongs to neither part or
            to both.
    """

    def __init__(self, model: keras.Model, config: Config) -> None:
        self.backbone = model_part(model, "backbone")
        self.head = model_part(model, "head")
        _check_partition(model, self.backbone, self.head)
        self.backbone_optimizer = keras.optimizers.Adam(
            learning_rate=config.backbone_learning_rate, name="backbone_adam"
        )
        self.head_optimizer = keras.optimizers.Adam(
            learning_rate=config.learning_rate, name="head_adam"
        )
        self.backbone_optimizer.build(self.backbone.trainable_variables)
        self.head_optimizer.build(self.head.trainable_variables)
        self.backbone_learning_rate = config.backbone_learning_rate

    def freeze_backbone(self, frozen: bool) -> None:
        """Stop (or resume) the backbone's updates from the next step on; never retraces.

        A frozen backbone's optimizer runs with a learning rate of 0, a variable the step reads:
        its update is exactly zero, the step and the variable lists stay as they are, and the
        optimizer keeps tracking the backbone's gradients, so its moments are warm when it
        thaws. `layer.trainable = False` would change the variable lists and retrace; skipping
        the update with `tf.cond` would put the gradient all-reduce inside control flow, which
        `tf.distribute.Strategy.run` rejects.
        """
        self.backbone_optimizer.learning_rate = 0.0 if frozen else self.backbone_learning_rate

    @property
    def backbone_frozen(self) -> bool:
        """Whether the backbone is frozen now."""
        return float(self.backbone_optimizer.learning_rate) == 0.0


def _check_partition(model: keras.Model, backbone: keras.Layer, head: keras.Layer) -> None:
    backbone_ids = {id(v) for v in backbone.trainable_variables}
    head_ids = {id(v) for v in head.trainable_variables}
    both = [v.path for v in model.trainable_variables if id(v) in backbone_ids & head_ids]
    neither = [v.path for v in model.trainable_variables if id(v) not in backbone_ids | head_ids]
    if both:
        raise ValueError(
            f"trainable variable(s) {', '.join(both)} belong to both the backbone and the head; "
            "each variable must have exactly one optimizer, so share no layer between the parts"
        )
    if neither:
        raise ValueError(
            f"trainable variable(s) {', '.join(neither)} belong to neither the backbone nor the "
            "head, so no optimizer would update them; move their layers into one of the parts"
        )
