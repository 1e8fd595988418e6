"""Variable-length sequences: padding never counts, and no length retraces or recompiles."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import features, labels_for

from sequences_sparse import losses
from sequences_sparse.config import Config
from sequences_sparse.data import load_datasets
from sequences_sparse.inputs import InputSignatureError
from sequences_sparse.model import build_model
from sequences_sparse.sequences import bucket_lengths
from sequences_sparse.train import Trainer, fit


def _shapes(dataset: tf.data.Dataset) -> set[tuple[int, ...]]:
    return {tuple(x.shape) for x, _ in dataset}


def test_padding_changes_neither_outputs_nor_loss(config: Config) -> None:
    keras.utils.set_random_seed(config.seed)
    model = build_model(config)
    x = features(config, 16)
    y = labels_for(model, x, config, agree=False)
    length = x.shape[1]
    padded_twice = np.pad(x, ((0, 0), (0, length)))  # The same examples, padded to 2L.
    trainer = Trainer(config, model)

    outputs = model(x, training=False)
    np.testing.assert_allclose(model(padded_twice, training=False), outputs, atol=1e-6)
    loss = float(trainer.eval_step(tf.constant(x), tf.constant(y)))
    padded_loss = float(trainer.eval_step(tf.constant(padded_twice), tf.constant(y)))
    assert padded_loss == pytest.approx(loss, rel=1e-6)
    accuracy = losses.make_accuracy("acc")
    accuracy.update_state(y, model(padded_twice, training=False))
    assert float(accuracy.result()) == 0.0  # Every label disagrees, padded or not.


def test_a_run_over_many_lengths_traces_each_step_once(config: Config) -> None:
    config = dataclasses.replace(config, batch_size=5)  # Small batches: many padded lengths.
    train_ds, val_ds = load_datasets(config)
    assert len(_shapes(train_ds)) >= 50, "the run must see many distinct batch shapes"
    trainer = Trainer(config, build_model(config))

    trainer.fit(train_ds, val_ds, verbose=False)

    for step in (trainer.train_step, trainer.eval_step):
        assert step.experimental_get_tracing_count() == 1
    # Bucketed batches have no length known in advance: each epoch runs until the data ends.
    assert trainer.train_runner.open_loop.experimental_get_tracing_count() == 1
    assert trainer.eval_runner.tracing_count() == 1


def test_xla_pads_to_bucket_lengths_so_compiles_are_bounded(config: Config) -> None:
    config = dataclasses.replace(config, jit_compile=True, epochs=1)
    lengths = bucket_lengths(config)
    train_ds, val_ds = load_datasets(config)
    # Training: full batches padded to a bucket's length, so one compile per bucket at most.
    assert _shapes(train_ds) <= {(config.batch_size, length) for length in lengths}
    # Evaluation keeps every example: a full and a last batch per bucket at most.
    val_shapes = _shapes(val_ds)
    assert {length for _, length in val_shapes} <= set(lengths)
    assert len(val_shapes) <= 2 * len(lengths)
    trainer = Trainer(config, build_model(config))

    (logs,) = trainer.fit(train_ds, val_ds, verbose=False)

    assert trainer.train_step.experimental_get_tracing_count() == 1
    assert np.isfinite(list(logs.values())).all()


def test_sequences_longer_than_max_length_are_cut(config: Config) -> None:
    config = dataclasses.replace(config, max_length=16, num_buckets=2)
    train_ds, val_ds = load_datasets(config)
    assert max(length for _, length in _shapes(train_ds) | _shapes(val_ds)) <= 16


def test_unbatched_sequences_are_refused_with_the_fix(config: Config) -> None:
    train_ds, _ = load_datasets(config)
    with pytest.raises(InputSignatureError, match=r"int32 batches of shape \(batch,\).*batch_seq"):
        fit(config, train_ds=train_ds.unbatch(), verbose=False)


def test_config_rejects_too_few_tokens() -> None:
    with pytest.raises(ValueError, match=r"Config\.vocab_size=2 is invalid"):
        Config(vocab_size=2)
