"""Variable-length sequences: padding never counts, and no length retraces or recompiles."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import QUIET, features, labels_for, linear_model, traced_once_per_phase

from sequences_sparse import PROJECT, data
from sequences_sparse.__main__ import main
from sequences_sparse.config import Config
from sequences_sparse.data import load_datasets
from sequences_sparse.engine.contract import DatasetError
from sequences_sparse.engine.sequences import batch_sequences, bucket_lengths
from sequences_sparse.engine.train import Trainer, fit
from sequences_sparse.model import build_model


def _shapes(dataset: tf.data.Dataset) -> set[tuple[int, ...]]:
    return {tuple(x.shape) for x, _ in dataset}


def test_padding_changes_neither_outputs_nor_loss(config: Config) -> None:
    keras.utils.set_random_seed(config.seed)
    model = build_model(config)
    x = features(config, 16)
    y = labels_for(model, x, config, agree=False)
    length = x.shape[1]
    padded_twice = np.pad(x, ((0, 0), (0, length)))  # The same examples, padded to 2L.
    trainer = Trainer(PROJECT, config, model, QUIET)
    val_loss, _ = trainer.task.val_metrics

    outputs = model(x, training=False)
    np.testing.assert_allclose(model(padded_twice, training=False), outputs, atol=1e-6)
    losses_seen = []
    for batch in (x, padded_twice):
        val_loss.reset_state()
        trainer.eval_step(tf.constant(batch), tf.constant(y))
        losses_seen.append(float(val_loss.result()))
    assert losses_seen[1] == pytest.approx(losses_seen[0], rel=1e-6)
    accuracy = config.labels.make_accuracy("acc")
    accuracy.update_state(y, model(padded_twice, training=False))
    assert float(accuracy.result()) == 0.0  # Every label disagrees, padded or not.


def _many_lengths(config: Config) -> tf.data.Dataset:
    """Batches of four sequences, one batch for each length from 1 to 60."""
    model = linear_model(config)
    rng = np.random.default_rng(0)
    batches = []
    for length in range(1, 61):
        x = rng.integers(1, config.vocab_size, size=(4, length)).astype(np.int32)
        batches.append((x, labels_for(model, x, config, agree=True)))
    labels = tf.TensorSpec.from_tensor(tf.constant(batches[0][1]))
    spec = (
        tf.TensorSpec((None, None), tf.int32),
        tf.TensorSpec((None, *labels.shape[1:]), labels.dtype),
    )
    return tf.data.Dataset.from_generator(lambda: iter(batches), output_signature=spec)


def test_a_run_over_many_lengths_traces_each_step_once(config: Config) -> None:
    data = _many_lengths(config)
    assert len(_shapes(data)) == 60, "the run must see many distinct batch shapes"
    trainer = Trainer(PROJECT, config, build_model(config), QUIET)

    trainer.fit(data, data)

    assert traced_once_per_phase(trainer)
    # Batches of no length known in advance: each epoch runs until the data ends.
    assert trainer.train_runner.counted_loop.experimental_get_tracing_count() == 0
    assert trainer.eval_runner is not None and trainer.eval_steps


def test_batches_are_padded_to_bucket_lengths_so_xla_compiles_are_bounded(
    config: Config,
) -> None:
    config = dataclasses.replace(config, epochs=1)
    lengths = bucket_lengths(config)
    train_ds, val_ds = load_datasets(config)
    # Every batch is padded to its bucket's length: a full and a last batch per bucket at most,
    # so XLA compiles each step at most twice per bucket.
    for dataset in (train_ds, val_ds):
        shapes = _shapes(dataset)
        assert {length for _, length in shapes} <= set(lengths)
        assert len(shapes) <= 2 * len(lengths)
    trainer = Trainer(
        PROJECT, config, build_model(config), dataclasses.replace(QUIET, jit_compile=True)
    )

    # A few batches are enough to compile and run every step (each shape compiles once).
    history = trainer.fit(train_ds.take(3), val_ds.take(2))

    assert traced_once_per_phase(trainer)
    assert np.isfinite([values[-1] for values in history.history.values()]).all()


def test_sequences_longer_than_max_length_are_cut(config: Config) -> None:
    config = dataclasses.replace(config, max_length=16, num_buckets=2)
    train_ds, val_ds = load_datasets(config)
    assert max(length for _, length in _shapes(train_ds) | _shapes(val_ds)) <= 16


def test_weighted_sequences_keep_their_weight_through_bucketing(config: Config) -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, config.max_length + 1, size=100)
    triples = tf.data.Dataset.from_generator(
        lambda: ((np.ones(n, np.int32), 0, float(n)) for n in lengths),
        output_signature=(
            tf.TensorSpec((None,), tf.int32),
            tf.TensorSpec((), tf.int32),
            tf.TensorSpec((), tf.float32),
        ),
    )
    # Each sequence's weight is its length: it must stay with its sequence.
    weights = [(x.numpy(), w.numpy()) for x, _, w in batch_sequences(triples, config)]
    for x, w in weights:
        np.testing.assert_array_equal(np.count_nonzero(x, axis=1), w)
    assert sum(len(w) for _, w in weights) == len(lengths)


def test_unbatched_sequences_are_refused_with_the_fix(config: Config) -> None:
    train_ds, _ = load_datasets(config)
    with pytest.raises(DatasetError, match=r"int32 batches of shape \(batch,\).*batch_seq"):
        fit(PROJECT, config, train_ds=train_ds.unbatch(), options=QUIET)


def test_token_ids_outside_the_vocabulary_fail_in_the_step(config: Config) -> None:
    trainer = Trainer(PROJECT, config, build_model(config), QUIET)
    x = features(config, 4)
    labels = tf.constant(config.labels.encode(np.zeros(4, dtype=np.int64)))
    message = r"token ids must be in \[0, config\.vocab_size\) = \[0, \d+\)"
    # The model must wait for the check: unordered, the embedding's own error wins some runs.
    for call in range(20):
        bad = x.copy()
        bad[call % 4, 0] = config.vocab_size if call % 2 == 0 else -1
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            trainer.train_step(tf.constant(bad), labels)


@pytest.mark.slow
def test_token_ids_outside_the_vocabulary_fail_in_one_line_on_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    original = data.load_datasets

    def outside(config: Config) -> tuple[tf.data.Dataset, tf.data.Dataset]:
        train_ds, val_ds = original(config)
        return train_ds.map(lambda x, y: (x + config.vocab_size, y)), val_ds

    monkeypatch.setattr(data, "load_datasets", outside)
    assert main(["train", "--epochs", "1", "--quiet", "--logdir", str(tmp_path / "run")]) == 2
    vocab_size = Config().vocab_size
    prog = "python -m sequences_sparse"
    assert capsys.readouterr().err == (
        f"{prog} train: error: train_ds does not fit this project: token "
        f"ids must be in [0, config.vocab_size) = [0, {vocab_size}), 0 being padding; raise "
        "Config.vocab_size, or map the ids into that range in data.py\n"
    )


def test_config_rejects_too_few_tokens() -> None:
    with pytest.raises(ValueError, match=r"Config\.vocab_size=2 is invalid"):
        Config(vocab_size=2)
