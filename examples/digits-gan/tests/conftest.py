"""Shared fixtures."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from digits_gan.__main__ import main
from digits_gan.config import Config
from digits_gan.engine.distribution import use_cpu_devices

# Three logical CPU devices, for the tests of runs on several replicas (test_distribute.py);
# TensorFlow fixes its devices when it runs its first op, so this comes first.
use_cpu_devices(3)


@pytest.fixture
def config() -> Config:
    """The default configuration, shortened to two epochs."""
    return dataclasses.replace(Config(), epochs=2)


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-epoch run, trained through the command line; copy it to change it."""
    logdir = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", "--epochs", "2", "--quiet", "--logdir", str(logdir)]) == 0
    return logdir
