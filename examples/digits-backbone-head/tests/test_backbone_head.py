"""Backbone and head: each optimizer updates only its own group, freezing, None gradients."""

from __future__ import annotations

import dataclasses
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import encoder, features, input_layer, labels_for, linear_model

from digits_backbone_head.config import Config
from digits_backbone_head.data import load_datasets
from digits_backbone_head.gradients import NoneGradientWarning
from digits_backbone_head.model import build_model
from digits_backbone_head.train import Trainer

GROUPS = ("backbone", "head")


class Orphan(keras.layers.Layer):
    """Owns a trainable variable that never reaches the output."""

    def build(self, input_shape: tuple[int, ...]) -> None:
        self.orphan = self.add_weight(name="orphan", shape=(1,), initializer="ones")

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return inputs


def _weights(model: keras.Model) -> dict[str, list[np.ndarray]]:
    return {
        group: [v.numpy() for v in model.get_layer(group).trainable_variables] for group in GROUPS
    }


def _moved(before: list[np.ndarray], after: list[np.ndarray]) -> bool:
    return any(not np.array_equal(b, a) for b, a in zip(before, after, strict=True))


def _batch(config: Config, model: keras.Model) -> tuple[tf.Tensor, tf.Tensor]:
    x = features(config, 32)
    return tf.constant(x), tf.constant(labels_for(model, x, config, agree=False))


def test_the_model_is_a_backbone_and_a_head_that_share_nothing(config: Config) -> None:
    model = build_model(config)
    backbone = model.get_layer("backbone").trainable_variables
    head = model.get_layer("head").trainable_variables
    assert backbone
    assert head
    assert {id(v) for v in backbone} | {id(v) for v in head} == {
        id(v) for v in model.trainable_variables
    }
    assert len(backbone) + len(head) == len(model.trainable_variables)


@pytest.mark.parametrize("group", GROUPS)
def test_each_optimizer_changes_only_its_own_group(config: Config, group: str) -> None:
    model = build_model(config)
    trainer = Trainer(config, model)
    (other,) = set(GROUPS) - {group}
    # A zero learning rate silences the other optimizer: whatever moves, this one moved.
    getattr(trainer.optimizers, f"{other}_optimizer").learning_rate = 0.0
    before = _weights(model)

    trainer.train_step(*_batch(config, model))

    after = _weights(model)
    assert _moved(before[group], after[group])
    assert not _moved(before[other], after[other])


def test_frozen_backbone_does_not_move_and_nothing_retraces(config: Config) -> None:
    train_ds = load_datasets(config)[0].take(8)
    model = build_model(config)
    trainer = Trainer(config, model)
    groups = trainer.optimizers
    initial = _weights(model)

    groups.freeze_backbone(True)
    assert groups.backbone_frozen
    _, steps = trainer.train_epoch(train_ds)
    frozen = _weights(model)
    assert not _moved(initial["backbone"], frozen["backbone"])
    assert _moved(initial["head"], frozen["head"])

    groups.freeze_backbone(False)
    assert not groups.backbone_frozen
    trainer.train_epoch(train_ds)
    assert _moved(frozen["backbone"], _weights(model)["backbone"])
    assert int(trainer.global_step) == 2 * steps
    assert trainer.train_step.experimental_get_tracing_count() == 1
    assert trainer.train_runner.tracing_count() == 1


def test_fit_freezes_the_backbone_for_the_first_epochs(config: Config) -> None:
    config = dataclasses.replace(config, epochs=3, freeze_backbone_epochs=2)
    train_ds, val_ds = load_datasets(config)
    train_ds, val_ds = train_ds.take(4), val_ds.take(1)
    model = build_model(config)
    trainer = Trainer(config, model)
    starts: list[tuple[bool, list[np.ndarray]]] = []

    def train_epoch(dataset: tf.data.Dataset) -> tuple[dict[str, float], int]:
        starts.append((trainer.optimizers.backbone_frozen, _weights(model)["backbone"]))
        return Trainer.train_epoch(trainer, dataset)

    trainer.train_epoch = train_epoch  # type: ignore[method-assign]
    trainer.fit(train_ds, val_ds, verbose=False)

    assert [frozen for frozen, _ in starts] == [True, True, False]
    # The backbone stood still through the frozen epochs and moved once thawed.
    assert not _moved(starts[0][1], starts[2][1])
    assert _moved(starts[2][1], _weights(model)["backbone"])
    assert int(trainer.global_step) == 3 * 4
    assert trainer.train_step.experimental_get_tracing_count() == 1


def _model_with_orphan_in(config: Config, group: str) -> keras.Model:
    base = linear_model(config)
    parts = {name: base.get_layer(name) for name in GROUPS}
    part = parts[group]
    parts[group] = keras.Sequential(
        [keras.Input(shape=part.input.shape[1:], dtype=part.input.dtype), Orphan(), part],
        name=group,
    )
    inputs = input_layer(config)
    return keras.Model(inputs, parts["head"](parts["backbone"](inputs)))


@pytest.mark.parametrize("group", GROUPS)
def test_none_gradients_are_reported_per_group_by_name(config: Config, group: str) -> None:
    model = _model_with_orphan_in(config, group)
    trainer = Trainer(config, model)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train_step(*_batch(config, model))

    messages = [str(w.message) for w in caught if issubclass(w.category, NoneGradientWarning)]
    assert len(messages) == 1, messages
    assert messages[0].startswith(f"{group}: 1 trainable variable(s) got no gradient")
    assert "orphan" in messages[0]


def test_a_model_without_a_backbone_is_refused(config: Config) -> None:
    inputs, representation = encoder(config)
    outputs = linear_model(config).get_layer("head")(representation)
    with pytest.raises(ValueError, match="the model has no layer named 'backbone'"):
        Trainer(config, keras.Model(inputs, outputs))


def test_a_variable_outside_both_parts_is_refused(config: Config) -> None:
    base = linear_model(config)
    inputs = input_layer(config)
    outside = Orphan(name="outside")(inputs)
    model = keras.Model(inputs, base.get_layer("head")(base.get_layer("backbone")(outside)))
    with pytest.raises(ValueError, match=r"outside/orphan belong to neither the backbone nor"):
        Trainer(config, model)
