"""The generated README's recipes for changing the step, applied exactly as printed.

Each recipe is a patch to the user's own files. Applied with `git apply` to a fresh render, it
must apply at the lines it names, leave the project `ruff`-clean, and keep the project's own
tests of what a step must keep passing: the step's tests, parity with `model.fit`, replicas
exact to one device, a stopped run resuming bit for bit, the figures it logs, `check`, predict
and export.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from engine_tests import add_engine_tests

from scaffold.render import render_project

RECIPE = re.compile(r"^#### Recipe (\d+): (.+?)\n.*?```diff\n(.*?)```", flags=re.M | re.S)

# What a step must keep, in the project's own tests and two of the engine's (added to the project
# as test_render.py adds them): run after each recipe. The engine's show a recipe's metric in
# the progress line, metrics.jsonl, TensorBoard and the History.
ENGINE_KEPT = [
    "tests/test_loop.py::test_fit_returns_a_history_like_model_fit_and_writes_the_run",
    "tests/test_callbacks.py::test_tensorboard_events_hold_every_epoch_figure",
]
KEPT = [
    "tests/test_task.py",
    "tests/test_parity.py::test_custom_loop_matches_model_fit",
    "tests/test_distribute.py::test_replicas_train_exactly_as_one_device",
    "tests/test_checkpoints.py::test_a_stopped_run_resumes_bit_for_bit",
    *ENGINE_KEPT,
    "tests/test_preflight.py::test_check_passes_on_the_default_data_and_model",
    "tests/test_trained.py::test_evaluate_prints_the_figures_the_run_logged",
    "tests/test_trained.py::test_predict_writes_probabilities_or_class_ids",
    "tests/test_trained.py::test_export_writes_a_saved_model_that_serves_the_same_outputs",
]
# The answers a recipe is printed for, by name: one optimizer, or a backbone and a head; and,
# for the recipes whose code depends on them, the other label encodings and variable shapes.
VARIANTS = {
    "single": {},
    "backbone-head": {"optimizers": "backbone-head"},
    "one-hot": {"labels": "one-hot"},
    "binary": {"labels": "binary"},
    "backbone-head-variable": {"optimizers": "backbone-head", "shapes": "variable"},
}
# Which variants' READMEs print each recipe. Each is applied (and linted) on all of them, and
# the project's tests run after it where `TESTED` says.
RECIPES = {
    "1": tuple(VARIANTS),
    "2": tuple(VARIANTS),
    "3": tuple(VARIANTS),
    "4": ("backbone-head", "backbone-head-variable"),
    "5": ("single", "backbone-head", "one-hot", "binary", "backbone-head-variable"),
}
# The step's code is the same in both kinds of task.py: each recipe runs the project's tests
# once, on one optimizer, and those for a backbone and a head (4) on two; 5, whose model
# differs by the optimizers and the shapes, on those models too, where it runs the tests of
# what a model with a second output touches (MODEL_KEPT): its step ran all of KEPT on one.
TESTED = {"1": "single", "2": "single", "3": "single", "4": "backbone-head", "5": "single"}
TESTED_TOO = {"5": ("backbone-head", "backbone-head-variable")}
MODEL_KEPT = [
    "tests/test_parity.py::test_custom_loop_matches_model_fit",
    "tests/test_distribute.py::test_replicas_train_exactly_as_one_device",
    "tests/test_preflight.py::test_check_passes_on_the_default_data_and_model",
    "tests/test_trained.py::test_evaluate_prints_the_figures_the_run_logged",
    "tests/test_trained.py::test_predict_writes_probabilities_or_class_ids",
    "tests/test_trained.py::test_export_writes_a_saved_model_that_serves_the_same_outputs",
]
# What a recipe must do besides keeping the tests above passing: Python run in the project.
CHECKS = {
    # The term is in the loss: the generated loss plus 1e-5 times the batch mean of the hidden
    # activations' squares (on one device, the batch's mean).
    "5": """
import numpy as np
import tensorflow as tf
from demo import PROJECT
from demo.config import Config, RunOptions
from demo.data import load_datasets
from demo.model import build_model

config = Config()
model = build_model(config)
task = PROJECT.build_task(model, config, RunOptions(verbose=0, strategy="none"))
x, y = next(iter(load_datasets(config)[0]))[:2]
outputs = model(x, training=False)
assert set(outputs) == {"output", "hidden"}, set(outputs)
# The hidden activations scaled up, so that the term stands out of the float32 loss.
outputs = {"output": outputs["output"], "hidden": 1000.0 * outputs["hidden"]}
generated = float(super(type(task), task).compute_loss(y, outputs))
squares = tf.reduce_sum(tf.square(outputs["hidden"]), axis=-1)
penalty = 1e-5 * float(tf.reduce_mean(squares))
assert penalty > 1e-3, penalty
np.testing.assert_allclose(float(task.compute_loss(y, outputs)), generated + penalty, rtol=1e-5)
""",
    # A norm this small leaves the backbone's Adam steps under 1e-4 of its learning rate, so it
    # barely moves; unclipped, it moves by about the learning rate a step.
    "4": """
import keras
import numpy as np
from demo import PROJECT
from demo.config import Config, RunOptions
from demo.engine.train import fit
from demo.model import build_model


def backbone_moved(**fields):
    config = Config(epochs=1, freeze_backbone_epochs=0, **fields)
    keras.utils.set_random_seed(config.seed)
    model = build_model(config)
    before = [w.numpy() for w in model.get_layer("backbone").trainable_weights]
    fit(PROJECT, config, model, options=RunOptions(verbose=0, strategy="none"))
    after = [w.numpy() for w in model.get_layer("backbone").trainable_weights]
    return max(float(np.abs(a - b).max()) for a, b in zip(after, before))


clipped, unclipped = backbone_moved(backbone_clip_norm=1e-11), backbone_moved()
assert clipped < 0.01 * unclipped, (clipped, unclipped)
""",
}


@pytest.fixture(scope="module")
def render(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """A fresh render of a variant, made once per module."""
    made: dict[str, Path] = {}

    def make(variant: str) -> Path:
        if variant not in made:
            dest = tmp_path_factory.mktemp(f"recipes-{variant}") / "demo"
            answers = {"project_name": "demo", **VARIANTS[variant]}
            render_project(dest, answers, defaults=True, quiet=True)
            made[variant] = dest
        return made[variant]

    return make


def recipes(readme: str) -> dict[str, str]:
    """The README's recipes: their patch by number."""
    return {number: patch for number, _, patch in RECIPE.findall(readme)}


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env["PYTHONPATH"] = str(cwd / "src")
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)


def _applied(render: Path, number: str, tmp_path: Path) -> Path:
    """A copy of `render` with recipe `number` applied as its README prints it, ruff-clean."""
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
    return project


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_readme_prints_the_recipes_for_its_answers(
    render: Callable[[str], Path], variant: str
) -> None:
    printed = recipes((render(variant) / "README.md").read_text())
    assert sorted(printed) == sorted(n for n, variants in RECIPES.items() if variant in variants)


@pytest.mark.parametrize(
    ("variant", "number"),
    [(variant, number) for number, variants in RECIPES.items() for variant in variants],
)
def test_a_recipe_applies_as_printed(
    render: Callable[[str], Path], variant: str, number: str, tmp_path: Path
) -> None:
    project = _applied(render(variant), number, tmp_path)
    compiled = _run([sys.executable, "-m", "compileall", "-q", "src"], project)
    assert compiled.returncode == 0, compiled.stdout


@pytest.mark.parametrize(
    ("variant", "number"),
    [
        (variant, number)
        for number, variants in RECIPES.items()
        for variant in variants
        if variant in (TESTED[number], *TESTED_TOO.get(number, ()))
    ],
)
def test_after_a_recipe_the_project_keeps_its_guarantees(
    render: Callable[[str], Path], variant: str, number: str, tmp_path: Path
) -> None:
    project = _applied(render(variant), number, tmp_path)
    kept = KEPT if variant == TESTED[number] else MODEL_KEPT
    add_engine_tests(project, [test.partition("::")[0] for test in ENGINE_KEPT if test in kept])
    pytest_args = ["-q", "-p", "no:cacheprovider", f"--basetemp={tmp_path / 'pytest'}", *kept]
    tests = _run([sys.executable, "-m", "pytest", *pytest_args], project)
    assert tests.returncode == 0, tests.stdout[-6000:] + tests.stderr[-2000:]
    if number in CHECKS:
        check = _run([sys.executable, "-c", CHECKS[number]], project)
        assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-3000:]
