"""Render every combination of the matrix, then run the generated project's own checks.

The matrix is built from `copier.yml`: for the single optimizer, every label encoding x logits
or not x two fixed input shapes (the default, which picks the offline dataset, and an image shape
that picks the CNN), plus variable shapes (token-id sequences) x every label encoding, cycling
logits; for backbone-head, every label encoding, cycling logits and the three shapes; and one
GAN, which asks none of those questions.
"""

from __future__ import annotations

import compileall
import itertools
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from scaffold.questions import load_questions
from scaffold.render import render_project

QUESTIONS = load_questions()
# Shape ids: two fixed input shapes, and variable-length token-id sequences.
SHAPES = {"default": "", "image": "8,8,1", "variable": ""}


def _case(
    labels: str, logits: bool, shape_id: str, optimizers: str = "single"
) -> tuple[str, dict[str, object]]:
    prefix = "" if optimizers == "single" else f"{optimizers}-"
    name = f"{prefix}{labels}-{'logits' if logits else 'probs'}-{shape_id}"
    # Short project names: the package name fills the first line of two generated docstrings.
    project_name = name.replace("backbone-head", "bh")
    answers: dict[str, object] = {"project_name": project_name, "labels": labels, "logits": logits}
    if optimizers != "single":
        answers["optimizers"] = optimizers
    if SHAPES[shape_id]:
        answers["input_shape"] = SHAPES[shape_id]
    if shape_id == "variable":
        answers["shapes"] = "variable"
    return name, answers


def _matrix() -> list[tuple[str, dict[str, object]]]:
    assert set(QUESTIONS["optimizers"].choices) == {"single", "backbone-head", "gan"}
    assert set(QUESTIONS["shapes"].choices) == {"fixed", "variable"}
    logits_choices = QUESTIONS["logits"].choices or (True, False)
    cases = [
        _case(labels, logits, shape_id)
        for labels, logits, shape_id in itertools.product(
            QUESTIONS["labels"].choices, logits_choices, ("default", "image")
        )
    ]
    # Variable shapes and backbone-head interact with the labels little: each encoding once,
    # the rest cycled.
    for labels, logits in zip(
        QUESTIONS["labels"].choices, itertools.cycle(logits_choices), strict=False
    ):
        cases.append(_case(str(labels), bool(logits), "variable"))
    cycled = zip(itertools.cycle(logits_choices), itertools.cycle(SHAPES), strict=False)
    for labels, (logits, shape_id) in zip(QUESTIONS["labels"].choices, cycled, strict=False):
        cases.append(_case(str(labels), bool(logits), shape_id, "backbone-head"))
    cases.append(("gan", {"project_name": "gan", "optimizers": "gan"}))
    # The run options a project can default to: one classifier trains mirrored in bfloat16.
    name, answers = next(case for case in cases if case[0] == "sparse-logits-image")
    index = cases.index((name, answers))
    answers = {**answers, "strategy": "mirrored", "precision": "mixed_bfloat16"}
    cases[index] = (f"{name}-mirrored-bf16", answers)
    return cases


MATRIX = _matrix()


def expected_files(package: str, optimizers: str = "single", shapes: str = "fixed") -> set[str]:
    """The exact set of files a project renders to, by the `optimizers` and `shapes` answers."""
    if optimizers == "gan":
        return {
            ".copier-answers.yml",
            ".gitignore",
            "README.md",
            "pyproject.toml",
            *(
                f"src/{package}/{module}.py"
                for module in (
                    "__init__",
                    "__main__",
                    "batches",
                    "callbacks",
                    "checkpoints",
                    "cluster",
                    "config",
                    "contract",
                    "data",
                    "gan",
                    "gradients",
                    "interrupts",
                    "distribution",
                    "precision",
                    "loop",
                    "model",
                    "optimizers",
                    "options",
                    "train",
                    "trained",
                )
            ),
            *(
                f"tests/{module}.py"
                for module in (
                    "conftest",
                    "test_batches",
                    "test_callbacks",
                    "test_checkpoints",
                    "test_distribute",
                    "test_gan",
                    "test_multi_worker",
                    "test_signals",
                    "test_step_runner",
                    "test_trained",
                )
            ),
        }
    extra = set()
    if optimizers == "backbone-head":
        extra |= {"tests/test_backbone_head.py"}
    if shapes == "variable":
        extra |= {f"src/{package}/sequences.py", "tests/test_sequences.py"}
    else:
        extra |= {f"src/{package}/batches.py", "tests/test_batches.py"}
    return extra | {
        ".copier-answers.yml",
        ".gitignore",
        "README.md",
        "pyproject.toml",
        *(
            f"src/{package}/{module}.py"
            for module in (
                "__init__",
                "__main__",
                "callbacks",
                "checkpoints",
                "cluster",
                "config",
                "contract",
                "data",
                "gradients",
                "inputs",
                "interrupts",
                "accumulation",
                "distribution",
                "precision",
                "loop",
                "losses",
                "model",
                "optimizers",
                "options",
                "preflight",
                "steps",
                "task",
                "train",
                "trained",
            )
        ),
        *(
            f"tests/{module}.py"
            for module in (
                "conftest",
                "helpers",
                "test_callbacks",
                "test_checkpoints",
                "test_distribute",
                "test_contract",
                "test_guards",
                "test_learns",
                "test_loop",
                "test_multi_worker",
                "test_parity",
                "test_preflight",
                "test_signals",
                "test_step_runner",
                "test_steps",
                "test_task",
                "test_trained",
            )
        ),
    }


@pytest.fixture(scope="session")
def generated_test_runs(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Future[subprocess.CompletedProcess[str]]]]:
    """Each combination's own tests, started at once in a copy of its render, two at a time.

    A project's suite spends most of its minute on one core (tracing, Python), so two suites
    run side by side on CI's two cores take about half the time of one after the other.
    """
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = {}
        for name, answers in MATRIX:
            dest = tmp_path_factory.mktemp("run") / str(answers["project_name"])
            render_project(dest, answers, quiet=True)
            runs[name] = pool.submit(_run, _generated_test_args(name), dest)
        yield runs
        for run in runs.values():
            run.cancel()


@pytest.fixture(scope="module", params=MATRIX, ids=[name for name, _ in MATRIX])
def project(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, answers = request.param
    dest = tmp_path_factory.mktemp("render") / str(answers["project_name"])
    render_project(dest, answers, quiet=True)
    return dest


def _package(project: Path) -> str:
    return project.name.replace("-", "_")


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)


def test_exact_file_set(project: Path) -> None:
    files = {str(p.relative_to(project)) for p in project.rglob("*") if p.is_file()}
    answers = (project / ".copier-answers.yml").read_text()
    optimizers = re.search(r"^optimizers: (\S+)$", answers, flags=re.M)
    assert optimizers is not None, answers
    shapes = re.search(r"^shapes: (\S+)$", answers, flags=re.M)
    expected = expected_files(
        _package(project), optimizers.group(1), shapes.group(1) if shapes else "fixed"
    )
    assert files == expected


def test_no_jinja_left(project: Path) -> None:
    leftovers = [
        f"{path.relative_to(project)}: {line.strip()}"
        for path in project.rglob("*")
        if path.is_file()
        for line in path.read_text().splitlines()
        if re.search(r"\{\{|\{%|%\}|\}\}", line)
    ]
    assert leftovers == []


def test_answers_recorded(project: Path) -> None:
    answers = (project / ".copier-answers.yml").read_text()
    assert f"project_name: {project.name}" in answers
    assert "_src_path:" in answers


def test_compiles(project: Path) -> None:
    assert compileall.compile_dir(project, quiet=1, force=True, legacy=False)
    for cache in project.rglob("__pycache__"):
        for pyc in cache.iterdir():
            pyc.unlink()
        cache.rmdir()


def test_ruff_clean(project: Path) -> None:
    for args in (["check", "--no-cache", "."], ["format", "--check", "--no-cache", "."]):
        result = _run([sys.executable, "-m", "ruff", *args], project)
        assert result.returncode == 0, result.stdout + result.stderr


# Every project runs its fast tests; these few run the slow ones too (subprocesses).
# Chosen combinations also run their slow tests; the signal tests (processes stopped and
# resumed), the preempted multi-worker run and the resume under load are the same code for
# every kind of project, so the default project runs them. Backbone-head trains two workers
# too: its frozen first epoch changes which variables every worker updates.
WITH_SLOW_TESTS = {
    "sparse-logits-default": [],
    "backbone-head-one-hot-probs-image": [
        "--ignore",
        "tests/test_signals.py",
        "--deselect",
        "tests/test_multi_worker.py::test_a_preempted_multi_worker_run_resumes",
        "--deselect",
        "tests/test_checkpoints.py::"
        "test_runs_stopped_in_the_last_steps_of_an_epoch_resume_bit_for_bit_under_load",
    ],
}


def _generated_test_args(name: str) -> list[str]:
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    if name in WITH_SLOW_TESTS:
        return args + WITH_SLOW_TESTS[name]
    return [*args, "-m", "not slow"]


@pytest.mark.parametrize("name", [name for name, _ in MATRIX])
def test_generated_tests_pass(
    name: str, generated_test_runs: dict[str, Future[subprocess.CompletedProcess[str]]]
) -> None:
    result = generated_test_runs[name].result()
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-4000:]
    assert re.search(r"\b\d+ passed\b", result.stdout), result.stdout
    assert "skipped" not in result.stdout, result.stdout


def test_readme_cites_only_tests_that_exist(project: Path) -> None:
    readme = (project / "README.md").read_text()
    cited = set(re.findall(r"`(test_\w+)`", readme))
    defined = {
        name
        for path in (project / "tests").glob("test_*.py")
        for name in re.findall(r"^def (test_\w+)", path.read_text(), flags=re.M)
    }
    assert cited, "the README cites no test"
    assert cited <= defined, sorted(cited - defined)


def test_readme_offers_the_fast_tests(project: Path) -> None:
    # The whole suite takes minutes; the README gives the subset without the slow tests too.
    readme = (project / "README.md").read_text()
    assert re.search(r'^pytest -m "not slow" +# .*\npytest +# all', readme, flags=re.M), readme
    marker = re.search(r'^markers = \["slow: ', (project / "pyproject.toml").read_text(), re.M)
    assert marker, "the slow marker must be declared"
    tests = (project / "tests").glob("test_*.py")
    assert any("@pytest.mark.slow" in path.read_text() for path in tests), "no test is slow"


def test_readme_lists_every_source_file(project: Path) -> None:
    readme = (project / "README.md").read_text()
    package = project / "src" / _package(project)
    listed = set(re.findall(rf"`src/{_package(project)}/(\w+\.py)`", readme))
    assert listed == {path.name for path in package.glob("*.py")}
