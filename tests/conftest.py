"""Scaffold's test session: the generated projects' suites first, the longest first.

`pytest` runs on two pytest-xdist workers (`pyproject.toml`). Each generated project's suite
(`test_render.py::test_generated_tests_pass`) takes from half a minute to five; started
early (pytest-xdist hands out the renders' groups of static checks first, then tests in this
order), they run side by side while the many short tests fill the gaps, instead of running
last and alone.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the generated projects' suites to the front, keeping their order (longest first)."""
    suites = [item for item in items if item.originalname == "test_generated_tests_pass"]
    rest = [item for item in items if item.originalname != "test_generated_tests_pass"]
    items[:] = suites + rest
