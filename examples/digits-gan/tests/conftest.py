"""Shared fixtures."""

from __future__ import annotations

import dataclasses

import pytest

from digits_gan.config import Config


@pytest.fixture
def config() -> Config:
    """The default configuration, shortened to two epochs."""
    return dataclasses.replace(Config(), epochs=2)
