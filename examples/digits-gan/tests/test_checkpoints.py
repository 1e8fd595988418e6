"""Checkpoints: a stopped run resumes bit for bit; bad checkpoints fail in one line."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator

from digits_gan import PROJECT, data
from digits_gan.__main__ import main
from digits_gan.config import Config, RunOptions
from digits_gan.data import load_datasets
from digits_gan.engine import distribution, interrupts, precision
from digits_gan.engine import train as training
from digits_gan.engine.checkpoints import CheckpointError, RunCheckpoint, read_run
from digits_gan.engine.cli import hold_run_dir
from digits_gan.engine.train import fit
from digits_gan.gan import GAN
from digits_gan.model import build_generator

PROG = "python -m digits_gan"


class StopAfter(keras.callbacks.Callback):
    """Stops the run after its `calls`-th call of steps in epoch 2: as Ctrl-C, or as a crash."""

    def __init__(self, calls: int, *, crash: bool = False) -> None:
        super().__init__()
        self.calls, self.crash, self.epoch, self.seen = calls, crash, 0, 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch, self.seen = epoch, 0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.seen += 1
        if self.epoch == 1 and self.seen == self.calls:
            if self.crash:
                raise RuntimeError("the machine went away")
            interrupts.request()


def run(logdir: Path, **changes: object) -> RunOptions:
    """Quiet options of a run in `logdir`, with the project's defaults, as `finished_run`."""
    return RunOptions(verbose=0, logdir=logdir, **changes)


def figures(logdir: Path) -> list[dict[str, float]]:
    """Every epoch's line of metrics.jsonl, without the speed (which no two runs share)."""
    lines = (logdir / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    return [{k: v for k, v in row.items() if k != "steps_per_second"} for row in rows]


@pytest.fixture
def uninterrupted(finished_run: Path) -> tuple:
    """Figures and weights of a two-epoch run that nothing stopped."""
    model = keras.saving.load_model(finished_run / "model.keras")
    return figures(finished_run), model.get_weights()


@pytest.mark.parametrize(
    "stop",
    [
        "interrupt",
        # Slow, for the matrix: two more runs each. `pytest -m slow` runs them.
        pytest.param("epoch-end", marks=pytest.mark.slow),
        pytest.param("crash", marks=pytest.mark.slow),
    ],
)
def test_a_stopped_run_resumes_bit_for_bit(
    config: Config, tmp_path: Path, uninterrupted: tuple, stop: str
) -> None:
    if stop == "epoch-end":  # The first epoch's run, then the rest: the epoch's checkpoint.
        fit(PROJECT, dataclasses.replace(config, epochs=1), options=run(tmp_path))
    elif stop == "interrupt":  # Ctrl-C in the middle of epoch 2: a checkpoint there.
        with pytest.raises(interrupts.Interrupted) as stopped:
            fit(
                PROJECT,
                config,
                options=run(tmp_path, steps_per_execution=2),
                callbacks=[StopAfter(2)],
            )
        interrupts.clear()
        assert (stopped.value.epoch, stopped.value.step) == (1, 4)
        assert stopped.value.checkpoint is not None and stopped.value.checkpoint.parent.is_dir()
    else:  # Killed in epoch 2, the last checkpoint a few steps before: data position too.
        with pytest.raises(RuntimeError, match="went away"):
            fit(
                PROJECT,
                config,
                options=run(tmp_path, steps_per_execution=3, checkpoint_every_steps=7),
                callbacks=[StopAfter(3, crash=True)],
            )
    resumed = fit(PROJECT, config, options=run(tmp_path, resume=True))

    expected_figures, expected_weights = uninterrupted
    assert figures(tmp_path) == expected_figures
    for ours, theirs in zip(resumed.model.get_weights(), expected_weights, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert (tmp_path / "model.keras").is_file()


@contextlib.contextmanager
def busy_processors(count: int) -> Iterator[None]:
    """`count` processes that spin on the CPU while the block runs: a loaded machine."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


@pytest.mark.slow
def test_runs_stopped_in_the_last_steps_of_an_epoch_resume_bit_for_bit_under_load(
    config: Config, tmp_path: Path
) -> None:
    # A data iterator that reads ahead on its own thread may have crossed into the next pass
    # when saved; busy processes vary how far it got, and the third epoch's order shows it.
    config = dataclasses.replace(config, epochs=3)
    num_batches = int(load_datasets(config)[0].cardinality())
    expected = fit(PROJECT, config, options=run(tmp_path / "whole")).model.get_weights()
    saved_sizes = set()
    with busy_processors(3):
        for trial, left in enumerate([1, 2, 1, 2]):
            logdir = tmp_path / f"stopped-{trial}"
            with pytest.raises(interrupts.Interrupted) as stopped:  # Ctrl-C `left` steps early.
                stop = StopAfter(num_batches - left)
                fit(PROJECT, config, options=run(logdir, steps_per_execution=1), callbacks=[stop])
            interrupts.clear()
            assert (stopped.value.epoch, stopped.value.step) == (1, num_batches - left)
            checkpoint = stopped.value.checkpoint
            assert checkpoint is not None
            saved_sizes.add(sum(f.stat().st_size for f in logdir.glob(f"**/{checkpoint.name}.*")))
            resumed = fit(PROJECT, config, options=run(logdir, resume=True))
            for ours, theirs in zip(resumed.model.get_weights(), expected, strict=True):
                np.testing.assert_array_equal(ours, theirs, err_msg=f"stopped {left} before")
    # A few bytes may differ between saves; a data position saved after reading ahead into the
    # next pass differed by over 90 %.
    spread = max(saved_sizes) - min(saved_sizes)
    assert spread <= 0.01 * max(saved_sizes), (
        f"the saved data position depends on timing: {saved_sizes}"
    )


def test_step_checkpoints_land_on_their_steps(config: Config, tmp_path: Path) -> None:
    config = dataclasses.replace(config, epochs=1)
    fit(PROJECT, config, options=run(tmp_path, checkpoint_every_steps=4, max_checkpoints=3))
    kept = tf.train.get_checkpoint_state(str(tmp_path / "checkpoints"))
    steps = [
        int(tf.train.load_checkpoint(path).get_tensor("global_step/.ATTRIBUTES/VARIABLE_VALUE"))
        for path in kept.all_model_checkpoint_paths
    ]
    assert len(steps) == 3 and steps == sorted(steps)
    assert all(step % 4 == 0 for step in steps[:-1]), steps  # The last is the epoch's end.


@pytest.mark.parametrize(
    "start",
    [
        "epoch-end",
        # Slow, for the matrix: the same engine code as epoch-end. `pytest -m slow` runs them.
        pytest.param("inside-epoch", marks=pytest.mark.slow),
        pytest.param("torn-line", marks=pytest.mark.slow),
    ],
)
def test_a_resumed_run_repeats_no_epoch_in_its_logs(
    config: Config, tmp_path: Path, start: str
) -> None:
    short = {"steps_per_epoch": 4}
    fit(
        PROJECT,
        config,
        options=run(tmp_path, **short, checkpoint_every_steps=2, max_checkpoints=100),
    )
    state = tmp_path / "checkpoints" / "checkpoint"
    kept = tf.train.get_checkpoint_state(str(state.parent)).all_model_checkpoint_paths
    position = "position/.ATTRIBUTES/VARIABLE_VALUE"
    at = {tuple(tf.train.load_variable(path, position)): path for path in kept}
    # As if killed after epoch 2 was logged but before its checkpoint was written; or after
    # epoch 1 was logged, its last step checkpoint being the latest; or while writing the
    # line of epoch 2, which is left torn.
    latest = at[(1, 0)] if start != "inside-epoch" else at[(0, 2)]
    state.write_text(f'model_checkpoint_path: "{Path(latest).name}"\n')
    if start == "torn-line":
        metrics = tmp_path / "metrics.jsonl"
        first, second = metrics.read_text().splitlines(keepends=True)
        metrics.write_text(first + second[: len(second) // 2])
    fit(PROJECT, config, options=run(tmp_path, **short, resume=True))

    assert [line["epoch"] for line in figures(tmp_path)] == [1, 2]
    events = EventAccumulator(str(tmp_path / "train"))
    events.Reload()
    tag = events.Tags()["tensors"][0]
    assert [event.step for event in events.Tensors(tag)] == [1, 2]


def test_resuming_without_a_checkpoint_fails_in_one_line(
    config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--logdir", str(tmp_path / "none"), "--resume"]) == 2
    assert capsys.readouterr().err == (
        f"{PROG} train: error: --logdir {tmp_path / 'none'} does not exist: no run to resume\n"
    )
    defaults: dict[str, object] = {}  # A run of the default Config and RunOptions.
    (tmp_path / "run.json").write_text(json.dumps({"config": defaults, "options": defaults}))
    with pytest.raises(CheckpointError, match=r"holds no checkpoint: .* nothing to resume") as e:
        fit(PROJECT, config, options=run(tmp_path, resume=True))
    assert str(e.value).endswith("start a new run without --resume, into another --logdir")


@pytest.mark.slow
def test_the_fix_for_a_run_without_a_checkpoint_works(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text("{}")  # A run stopped before its first checkpoint.
    argv = ["--epochs", "1", "--steps-per-epoch", "1", "--quiet"]
    assert main(["train", "--logdir", str(tmp_path), *argv]) == 2  # This one holds a run.
    assert main(["train", "--logdir", str(tmp_path / "new"), *argv]) == 0


def from_generator(monkeypatch: pytest.MonkeyPatch, each_batch: Callable[[int, int], None]) -> None:
    """Make the command line train on 4 batches of `from_generator`.

    `each_batch(call, number)` runs before the generator yields batch `number` of its
    `call`-th pass (the first pass tells whether the dataset is empty, the next is epoch 1).
    """
    load = data.load_datasets
    calls = [0]

    def generated(config: Config) -> tuple[tf.data.Dataset, tf.data.Dataset | None]:
        train_ds, val_ds = load(config)
        train_ds = train_ds.take(4)

        def batches() -> Iterator[object]:
            calls[0] += 1
            for number, batch in enumerate(train_ds):
                each_batch(calls[0], number)
                yield batch

        spec = train_ds.element_spec
        return tf.data.Dataset.from_generator(batches, output_signature=spec), val_ds

    monkeypatch.setattr(data, "load_datasets", generated)


@pytest.mark.slow
def test_a_generator_dataset_resumes_at_its_epoch_and_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def stop_in_epoch_2(call: int, number: int) -> None:
        if call == 3 and number == 1:
            interrupts.request()  # As Ctrl-C while epoch 2 reads its second batch.

    from_generator(monkeypatch, stop_in_epoch_2)
    logdir = tmp_path / "run"
    argv = ["train", "--quiet", "--steps-per-execution", "1", "--logdir", str(logdir)]
    assert main([*argv, "--epochs", "3"]) == 130
    assert capsys.readouterr().err.startswith(
        f"{PROG} train: stopped by Ctrl-C (SIGINT) in epoch 2 after 2 steps; checkpoint: "
    )

    assert main(["train", "--quiet", "--logdir", str(logdir), "--resume"]) == 0
    assert capsys.readouterr().err == training.NOT_EXACT.format(step=2) + "\n"
    assert [line["epoch"] for line in figures(logdir)] == [1, 2, 3]
    latest = tf.train.latest_checkpoint(str(logdir / "checkpoints"))
    assert tf.train.load_variable(latest, "global_step/.ATTRIBUTES/VARIABLE_VALUE") == 3 * 4


@pytest.mark.slow
def test_a_new_run_that_fails_before_its_first_checkpoint_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    failing = [True]

    def fail_in_epoch_1(call: int, number: int) -> None:
        if failing[0] and number == 2:  # In epoch 1: the first pass reads one batch.
            raise OSError("the disk went away")

    from_generator(monkeypatch, fail_in_epoch_1)
    given = tmp_path / "given"
    given.mkdir()  # An empty --logdir of yours stays, empty.
    for logdir in (tmp_path / "new", given):
        argv = ["train", "--epochs", "1", "--quiet", "--logdir", str(logdir)]
        assert main(argv) == 2
        assert capsys.readouterr().err.endswith("raised OSError: the disk went away\n")
        left = list(logdir.iterdir()) if logdir.exists() else None
        assert left == ([] if logdir == given else None)

    failing[0] = False  # The data is fixed: the same command trains into the same --logdir.
    assert main(argv) == 0
    assert [line["epoch"] for line in figures(given)] == [1]


def test_a_truncated_checkpoint_fails_in_one_line(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logdir = tmp_path / "run"
    shutil.copytree(finished_run, logdir)
    latest = Path(tf.train.latest_checkpoint(str(logdir / "checkpoints")))
    for shard in latest.parent.glob(f"{latest.name}.data-*"):
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])

    assert main(["train", "--epochs", "3", "--quiet", "--logdir", str(logdir), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{PROG} train: error: checkpoint {latest} cannot be read")
    assert len(err.splitlines()) == 1
    assert len(figures(logdir)) == 2  # Nothing was trained or logged.


@pytest.mark.slow
def test_resuming_on_data_of_another_size_fails_in_one_line(
    finished_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    logdir = tmp_path / "run"
    shutil.copytree(finished_run, logdir)
    before = {path: path.read_bytes() for path in logdir.rglob("*") if path.is_file()}
    load_datasets = data.load_datasets
    num_batches = int(load_datasets(Config())[0].cardinality())

    def shrunk(config: Config) -> tuple[tf.data.Dataset, object]:
        train_ds, val_ds = load_datasets(config)
        return train_ds.take(num_batches - 1), val_ds

    monkeypatch.setattr(data, "load_datasets", shrunk)
    assert main(["train", "--epochs", "3", "--quiet", "--logdir", str(logdir), "--resume"]) == 2
    assert capsys.readouterr().err == (
        f"{PROG} train: error: cannot resume {logdir}: its training data had {num_batches} "
        f"batches per pass, and now has {num_batches - 1}; resume with the data the run "
        "started with (data.py), or start a new run in another directory\n"
    )
    after = {path: path.read_bytes() for path in logdir.rglob("*") if path.is_file()}
    assert after == before  # Nothing was trained or written.

    monkeypatch.setattr(data, "load_datasets", load_datasets)  # The run's data again.
    assert main(["train", "--epochs", "3", "--quiet", "--logdir", str(logdir), "--resume"]) == 0
    assert len(figures(logdir)) == 3


def test_a_checkpoint_of_another_model_is_refused(config: Config, finished_run: Path) -> None:
    options = run(finished_run, resume=True)
    strategy = distribution.make_strategy(options.strategy)
    scope = contextlib.nullcontext() if strategy is None else strategy.scope()
    with precision.dtype_policy(options.precision), scope:  # Built as the run's model was.
        critic = keras.Sequential(
            [keras.Input(config.image_shape), keras.layers.Flatten(), keras.layers.Dense(1)]
        )
        other = GAN(build_generator(config), critic)
    with pytest.raises(CheckpointError, match="does not match this model and run"):
        fit(PROJECT, config, model=other, options=options, strategy=strategy)
    assert len(figures(finished_run)) == 2  # Nothing was trained or logged.


def test_resuming_with_another_config_is_refused(config: Config, finished_run: Path) -> None:
    other = dataclasses.replace(config, batch_size=config.batch_size + 1)
    with pytest.raises(CheckpointError, match=r"another config: batch_size=\d+ \(the run has"):
        fit(PROJECT, other, options=run(finished_run, resume=True))


def test_a_run_directory_in_use_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logdir = tmp_path / "run"
    with hold_run_dir(logdir, new=True):  # As a train command into it that started first.
        assert main(["train", "--epochs", "1", "--quiet", "--logdir", str(logdir)]) == 2
        assert list(logdir.iterdir()) == []  # Nothing was written.
    assert capsys.readouterr().err == (
        f"{PROG} train: error: --logdir {logdir} is in use by another train command; wait for "
        "it to end, or choose another directory\n"
    )


@pytest.mark.parametrize("where", ["under-a-file", "read-only"])
def test_a_logdir_that_cannot_be_written_is_refused_in_one_line(
    finished_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    where: str,
) -> None:
    if where == "under-a-file":
        (tmp_path / "file").write_text("")
        logdir = tmp_path / "file" / "run"
        argv = ["--epochs", "1"]
        problem = f"--logdir {logdir} is under {logdir.parent}, which is a file; give a directory"
    else:  # Made read-only where the test cannot be (as root): the check is what is tested.
        logdir = tmp_path / "run"
        shutil.copytree(finished_run, logdir)
        access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode: path != logdir and access(path, mode))
        argv = ["--epochs", "3", "--resume"]
        problem = f"--logdir {logdir} is read-only; make it writable"
    before = sorted(tmp_path.rglob("*"))
    assert main(["train", "--quiet", "--logdir", str(logdir), *argv]) == 2
    assert capsys.readouterr().err == f"{PROG} train: error: {problem}\n"
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("command", ["resume", "export"])
def test_a_run_of_another_project_is_refused_in_one_line(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    logdir = tmp_path / "run"
    shutil.copytree(finished_run, logdir)
    run_file = logdir / "run.json"
    run = json.loads(run_file.read_text())
    package = PROG.split()[-1]
    assert run.pop("project") == package
    run_file.write_text(json.dumps(run))  # As written before run.json named its project.
    assert read_run(logdir, Config, RunOptions) == read_run(finished_run, Config, RunOptions)
    run_file.write_text(json.dumps({**run, "project": "other_project"}))

    argv = {"resume": ["train", "--logdir", str(logdir), "--resume"]}
    argv["export"] = ["export", str(logdir), str(tmp_path / "out")]
    assert main(argv[command]) == 2
    name = argv[command][0]
    assert capsys.readouterr().err == (
        f"{PROG} {name}: error: {logdir} holds a run of the project other_project, not of "
        f"{package}; use it with python -m other_project\n"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_resuming_a_finished_run_says_there_is_nothing_to_do(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logdir = tmp_path / "run"
    shutil.copytree(finished_run, logdir)
    (logdir / "model.keras").unlink()
    assert main(["train", "--logdir", str(logdir), "--resume"]) == 0
    assert capsys.readouterr().out == (
        f"nothing to train: {logdir} has run all 2 epochs (its model.keras is written again "
        "from its last checkpoint); give --epochs above 2 to train on\n"
    )
    assert figures(logdir) == figures(finished_run)
    keras.saving.load_model(logdir / "model.keras")


@pytest.mark.slow
@pytest.mark.parametrize("write", ["checkpoint", "model"])
def test_a_full_disk_fails_in_one_line_and_the_run_resumes(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    write: str,
) -> None:
    if write == "checkpoint":  # What TensorFlow raises: the second checkpoint's files fail.
        write_checkpoint = RunCheckpoint._write_quietly

        def full(self: RunCheckpoint, data: tf.data.Iterator | None, path: Path) -> None:
            write_checkpoint(self, data, path)
            if path.name == "ckpt-2":
                message = f"{path}_temp/part-00000; No space left on device"
                raise tf.errors.ResourceExhaustedError(None, None, message)

        monkeypatch.setattr(RunCheckpoint, "_write_quietly", full)
    else:  # What Python raises, saving the model.

        def full(self: keras.Model, path: Path) -> None:
            Path(path).write_bytes(b"PK")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(keras.Model, "save", full)
    logdir = tmp_path / "run"
    argv = ["train", "--quiet", "--logdir", str(logdir)]
    assert main([*argv, "--epochs", "2", "--steps-per-epoch", "2"]) == 2
    resume = f"{PROG} train --logdir {logdir} --resume"
    assert capsys.readouterr().err == (
        f"{PROG} train: error: cannot write to {logdir}: no space left on the device; free "
        f"some, then resume with: {resume}\n"
    )
    assert not list(logdir.glob("checkpoints/ckpt-2*" if write == "checkpoint" else "model*"))

    monkeypatch.undo()  # Space was freed: the fix it gives works.
    assert main([*argv, "--resume"]) == 0
    assert [line["epoch"] for line in figures(logdir)] == [1, 2]
    keras.saving.load_model(logdir / "model.keras")
