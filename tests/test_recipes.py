"""The generated README's recipes for changing the step, applied exactly as printed.

Each recipe is a patch to the user's own files. Applied with `git apply` to a fresh render, it
must apply at the lines it names, leave the project `ruff`-clean, and keep the project's own
tests of what a step must keep passing: the step's tests, parity with `model.fit`, replicas
exact to one device, a stopped run resuming bit for bit, `check`, predict and export.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scaffold.render import render_project

RECIPE = re.compile(r"^#### Recipe (\d+): (.+?)\n.*?```diff\n(.*?)```", flags=re.M | re.S)

# What a step must keep, in the project's own tests: run after each recipe.
KEPT = [
    "tests/test_task.py",
    "tests/test_parity.py::test_custom_loop_matches_model_fit",
    "tests/test_distribute.py::test_replicas_train_exactly_as_one_device",
    "tests/test_checkpoints.py::test_a_stopped_run_resumes_bit_for_bit",
    "tests/test_preflight.py::test_check_passes_on_the_default_data_and_model",
    "tests/test_trained.py::test_predict_writes_probabilities_or_class_ids",
    "tests/test_trained.py::test_export_writes_a_saved_model_that_serves_the_same_outputs",
]
# The answers whose task.py a recipe is printed for: one optimizer, and a backbone and a head.
VARIANTS = {"single": {}, "backbone-head": {"optimizers": "backbone-head"}}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def render(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("recipes") / "demo"
    answers = {"project_name": "demo", **VARIANTS[request.param]}
    render_project(dest, answers, defaults=True, quiet=True)
    return dest


def recipes(readme: str) -> dict[str, str]:
    """The README's recipes: their patch by number."""
    return {number: patch for number, _, patch in RECIPE.findall(readme)}


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)


def test_the_readme_prints_the_recipes(render: Path) -> None:
    assert "1" in recipes((render / "README.md").read_text())


@pytest.mark.parametrize("number", ["1"])
def test_a_recipe_applies_as_printed_and_the_step_keeps_its_guarantees(
    render: Path, number: str, tmp_path: Path
) -> None:
    project = tmp_path / "demo"
    shutil.copytree(render, project)
    patch = tmp_path / f"recipe-{number}.diff"
    patch.write_text(recipes((project / "README.md").read_text())[number])
    applied = _run(["git", "apply", "-v", str(patch)], project)
    assert applied.returncode == 0, applied.stderr
    assert "offset" not in applied.stderr, f"recipe {number}'s line numbers: {applied.stderr}"
    lint = _run(["ruff", "check", "-q", "."], project)
    assert lint.returncode == 0, lint.stdout
    style = _run(["ruff", "format", "--check", "-q", "."], project)
    assert style.returncode == 0, style.stdout
    tests = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *KEPT], project)
    assert tests.returncode == 0, tests.stdout[-6000:] + tests.stderr[-2000:]
