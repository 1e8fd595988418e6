"""The engine's tests that need a whole project: they run inside rendered projects, not in them.

A project's own tests (`template/tests/`) test what its answers and its user decide: its step's
parity with `model.fit`, its exactness on replicas and on resume, its data, model and outputs.
What the engine does whatever the project (the loop and its callbacks, signals and resume, the
run directory, the command line's refusals, the data contract's conversions, accumulation and
mixed precision, several workers) is tested here, once per kind of project that takes another
branch of it: `tests/engine/in_projects/` holds those tests, rendered with a project's answers
into its `tests/` (beside its `conftest.py` and `helpers.py`) by `add_engine_tests`, and
`tests/test_render.py` says which renders run which.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import jinja2
import yaml

IN_PROJECTS = Path(__file__).resolve().parent / "engine" / "in_projects"


def engine_test_files(*, modules: bool = False) -> dict[str, str]:
    """`tests/test_x.py` -> the text of its template, for each of the engine's tests; with
    `modules`, the modules they share (`tests/x.py`) instead."""
    return {
        f"tests/{path.name.removesuffix('.jinja')}": path.read_text()
        for path in sorted(IN_PROJECTS.glob("*.py.jinja"))
        if path.name.startswith("test_") != modules
    }


def add_engine_tests(project: Path, paths: Iterable[str]) -> list[Path]:
    """Render the engine's tests `paths` (`tests/test_x.py`) into `project`, with its answers.

    The answers are those Copier recorded in the project, rendered as Copier renders (strict
    undefined variables, trailing newlines kept), with the modules they share (those that
    render to nothing for these answers are left out). Returns the files written.
    """
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    context = {key: value for key, value in answers.items() if not key.startswith("_")}
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    templates = engine_test_files()
    paths = sorted(set(paths))
    if paths:
        templates = {**templates, **engine_test_files(modules=True)}
        paths += sorted(engine_test_files(modules=True))
    written = []
    for path in paths:
        target = project / path
        assert not target.exists(), f"{path} is the project's own file"
        text = env.from_string(templates[path]).render(context)
        if text.strip():
            target.write_text(text)
            written.append(target)
    return written
