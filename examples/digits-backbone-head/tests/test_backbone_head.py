"""Backbone and head: each optimizer updates only its own part, freezing, None gradients."""

from __future__ import annotations

import dataclasses
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import QUIET, encoder, features, input_layer, labels_for, linear_model

from digits_backbone_head import PROJECT
from digits_backbone_head.config import Config
from digits_backbone_head.data import load_datasets
from digits_backbone_head.engine import distribution
from digits_backbone_head.engine.gradients import NoneGradientWarning
from digits_backbone_head.engine.train import Trainer
from digits_backbone_head.model import build_model

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
    trainer = Trainer(PROJECT, config, model, QUIET)
    (other,) = set(GROUPS) - {group}
    # A zero learning rate silences the other optimizer: whatever moves, this one moved.
    trainer.task.optimizers.by_part[other].learning_rate = 0.0
    before = _weights(model)

    trainer.train_step(*_batch(config, model))

    after = _weights(model)
    assert _moved(before[group], after[group])
    assert not _moved(before[other], after[other])


def _model_with_batch_norm(config: Config) -> keras.Model:
    """A backbone whose BatchNormalization keeps moving statistics, and a head."""
    inputs, x = encoder(config)
    x = keras.layers.BatchNormalization()(keras.layers.Dense(8)(x))
    backbone = keras.Model(inputs, x, name="backbone")
    embedding = keras.Input(shape=(8,))
    head = keras.Model(embedding, config.labels.output_layer()(embedding), name="head")
    return keras.Model(inputs, head(backbone(inputs)))


def _backbone_state(model: keras.Model) -> list[np.ndarray]:
    """Every backbone weight, the BatchNormalization statistics included."""
    return [v.numpy() for v in model.get_layer("backbone").weights]


def test_a_frozen_backbone_moves_no_weight_and_no_statistic(config: Config) -> None:
    train_ds = load_datasets(config)[0].take(8)
    model = _model_with_batch_norm(config)
    trainer = Trainer(PROJECT, config, model, QUIET)
    initial_backbone, initial_head = _backbone_state(model), _weights(model)["head"]

    model.get_layer("backbone").trainable = False
    trainer.train_epoch(train_ds)
    assert not _moved(initial_backbone, _backbone_state(model))
    assert _moved(initial_head, _weights(model)["head"])

    model.get_layer("backbone").trainable = True
    _, steps = trainer.train_epoch(train_ds)
    assert _moved(initial_backbone, _backbone_state(model))
    model.get_layer("backbone").trainable = False
    trainer.train_epoch(train_ds)

    assert int(trainer.global_step) == 3 * steps
    # One trace per set of trainable variables; freezing again reuses the first trace.
    assert len(trainer.train_steps) == 2
    assert all(s.experimental_get_tracing_count() == 1 for s in trainer.train_steps.values())
    assert trainer.train_runner.tracing_count() == 2


def test_fit_freezes_the_backbone_for_the_first_epochs(config: Config) -> None:
    config = dataclasses.replace(config, epochs=3, freeze_backbone_epochs=2)
    train_ds, val_ds = load_datasets(config)
    train_ds, val_ds = train_ds.take(4), val_ds.take(1)
    model = _model_with_batch_norm(config)
    backbone = model.get_layer("backbone")
    seen: list[tuple[bool, list[np.ndarray]]] = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: seen.append((backbone.trainable, _backbone_state(model)))
    )
    initial = _backbone_state(model)
    trainer = Trainer(PROJECT, config, model, QUIET)

    trainer.fit(train_ds, val_ds, callbacks=[record])

    assert [trainable for trainable, _ in seen] == [False, False, True]
    # Weights and moving statistics stood still through the frozen epochs, then moved.
    assert not _moved(initial, seen[1][1])
    assert _moved(seen[1][1], seen[2][1])
    assert backbone.trainable  # As it was before the run.
    assert int(trainer.global_step) == 3 * 4
    assert len(trainer.train_steps) == 2


def test_a_worker_other_than_the_chief_freezes_the_backbone_too(
    config: Config, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every worker of a multi-worker run freezes the backbone in the same epochs.

    Frozen on the chief alone, the backbone would make the workers update different
    variables, and each would wait for the others' all-reduces forever (the first step of
    `launch --workers 2 -- train` never ended). A worker other than the chief prints nothing.
    """
    monkeypatch.setattr(distribution, "is_chief", lambda strategy: False)
    config = dataclasses.replace(config, epochs=2, freeze_backbone_epochs=1)
    train_ds, _ = load_datasets(config)
    model = build_model(config)
    backbone = model.get_layer("backbone")
    seen: list[bool] = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: seen.append(backbone.trainable)
    )
    trainer = Trainer(PROJECT, config, model, dataclasses.replace(QUIET, verbose=1))

    trainer.fit(train_ds.take(2), callbacks=[record])

    assert seen == [False, True]
    assert capsys.readouterr().out == ""


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
    trainer = Trainer(PROJECT, config, model, QUIET)

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
        Trainer(PROJECT, config, keras.Model(inputs, outputs))


def test_a_variable_outside_both_parts_is_refused(config: Config) -> None:
    base = linear_model(config)
    inputs = input_layer(config)
    outside = Orphan(name="outside")(inputs)
    model = keras.Model(inputs, base.get_layer("head")(base.get_layer("backbone")(outside)))
    with pytest.raises(ValueError, match=r"outside/orphan belong to neither the backbone nor"):
        Trainer(PROJECT, config, model, QUIET)
