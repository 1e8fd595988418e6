"""The README documents every question as `copier.yml` asks it, gives the two commands, shows
the tree of a rendered project and quotes the last benchmark run."""

from __future__ import annotations

import re
from pathlib import Path

from scaffold.docs import readme_path, render_readme
from scaffold.render import render_project

ROOT = Path(__file__).resolve().parent.parent
TEST_COMMAND = "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[test]' && pytest"


def test_questions_table_is_current() -> None:
    text = readme_path().read_text()
    assert render_readme(text) == text, "README is stale: run `python -m scaffold.docs`"


def test_ci_runs_the_readme_test_command() -> None:
    assert TEST_COMMAND in readme_path().read_text()
    assert (ROOT / ".ci" / "run").read_text().strip().endswith(TEST_COMMAND)


def test_readme_says_how_long_the_project_tests_take() -> None:
    readme = readme_path().read_text()
    train = next(line for line in readme.splitlines() if "python -m my_project train &&" in line)
    assert train.endswith('&& pytest -m "not slow"'), "offer the fast tests after training"
    assert re.search(r'`pytest -m "not slow"` runs .* \(minutes on two\s+CPUs\)', readme, re.S)
    assert re.search(r"`pytest` runs them all: the slow ones .* several minutes more", readme, re.S)


def test_readme_quotes_the_last_benchmark_run() -> None:
    results = (ROOT / "benchmarks" / "results.md").read_text()
    assert results.strip() in readme_path().read_text(), (
        "README's Speed section must quote benchmarks/results.md as the benchmark wrote it"
    )


def _tree_entries(text: str) -> tuple[set[str], set[str]]:
    """The README tree's top-level entries and those under `src/my_project/` (and its engine/)."""
    block = text.split("## What you get", 1)[1].split("```", 2)[1]
    top, package = set(), set()
    for line in block.splitlines():
        match = re.match(r"^(│   (?:│   |    )?|    )?[├└]── (\S+)", line)
        if match:
            prefix = "engine/" if match[1] in ("│   │   ", "│       ") else ""
            (package if match[1] else top).add(prefix + match[2])
    return top, package


def test_readme_tree_matches_a_render(tmp_path: Path) -> None:
    # The tree describes a classifier: its files with fixed shapes and with variable ones.
    top, package = set(), set()
    for shapes in ("fixed", "variable"):
        project = tmp_path / shapes
        render_project(
            project, {"project_name": "my-project", "shapes": shapes}, defaults=True, quiet=True
        )
        for path in project.iterdir():
            if path.name not in ("src", "tests"):
                top.add(path.name)
        src = project / "src" / "my_project"
        package |= {
            str(path.relative_to(src)) + ("/" if path.is_dir() else "")
            for path in (*src.iterdir(), *(src / "engine").iterdir())
        }
    top |= {"src/my_project/", "tests/"}
    readme_top, readme_package = _tree_entries(readme_path().read_text())
    assert readme_top == top, "update the tree in README.md's 'What you get' to match a render"
    assert readme_package == package, (
        "update the tree in README.md's 'What you get' to match a render"
    )
