"""Render every combination of the matrix, then run the generated project's own checks.

The matrix is built from `copier.yml`: every label encoding x logits or not x two fixed input
shapes (the default, which picks the offline dataset, and an image shape that picks the CNN),
plus variable shapes (token-id sequences) x every label encoding, cycling logits.
"""

from __future__ import annotations

import compileall
import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from scaffold.questions import load_questions
from scaffold.render import render_project

QUESTIONS = load_questions()
SHAPES = {"default": None, "image": "8,8,1"}


def _matrix() -> list[tuple[str, dict[str, object]]]:
    cases = []
    for labels, logits, (shape_id, shape) in itertools.product(
        QUESTIONS["labels"].choices, QUESTIONS["logits"].choices or (True, False), SHAPES.items()
    ):
        name = f"{labels}-{'logits' if logits else 'probs'}-{shape_id}"
        answers: dict[str, object] = {"project_name": name, "labels": labels, "logits": logits}
        if shape is not None:
            answers["input_shape"] = shape
        cases.append((name, answers))
    logits_cycle = itertools.cycle(QUESTIONS["logits"].choices or (True, False))
    for labels in QUESTIONS["labels"].choices:
        logits = next(logits_cycle)
        name = f"{labels}-{'logits' if logits else 'probs'}-variable"
        cases.append(
            (name, {"project_name": name, "labels": labels, "logits": logits, "shapes": "variable"})
        )
    return cases


MATRIX = _matrix()


def expected_files(package: str, *, variable: bool = False) -> set[str]:
    """The exact set of files a project renders to; variable shapes add the sequence files."""
    sequence_files = {f"src/{package}/sequences.py", "tests/test_sequences.py"}
    return (sequence_files if variable else set()) | {
        ".copier-answers.yml",
        ".gitignore",
        "README.md",
        "pyproject.toml",
        *(
            f"src/{package}/{module}.py"
            for module in (
                "__init__",
                "__main__",
                "config",
                "data",
                "inputs",
                "losses",
                "model",
                "steps",
                "train",
            )
        ),
        *(
            f"tests/{module}.py"
            for module in (
                "conftest",
                "helpers",
                "test_contract",
                "test_learns",
                "test_loop",
                "test_parity",
                "test_steps",
            )
        ),
    }


@pytest.fixture(scope="module", params=MATRIX, ids=[name for name, _ in MATRIX])
def project(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    name, answers = request.param
    dest = tmp_path_factory.mktemp("render") / name
    render_project(dest, answers, quiet=True)
    return dest


def _package(project: Path) -> str:
    return project.name.replace("-", "_")


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)


def test_exact_file_set(project: Path) -> None:
    files = {str(p.relative_to(project)) for p in project.rglob("*") if p.is_file()}
    variable = "shapes: variable" in (project / ".copier-answers.yml").read_text()
    assert files == expected_files(_package(project), variable=variable)


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


def test_generated_tests_pass(project: Path) -> None:
    result = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], project)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-4000:]
    assert re.search(r"\b\d+ passed\b", result.stdout), result.stdout
    assert "skipped" not in result.stdout, result.stdout
