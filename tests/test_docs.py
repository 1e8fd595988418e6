"""The README documents every question as `copier.yml` asks it, gives the two commands and
quotes the last benchmark run."""

from __future__ import annotations

from pathlib import Path

from scaffold.docs import readme_path, render_readme

ROOT = Path(__file__).resolve().parent.parent
TEST_COMMAND = "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[test]' && pytest"


def test_questions_table_is_current() -> None:
    text = readme_path().read_text()
    assert render_readme(text) == text, "README is stale: run `python -m scaffold.docs`"


def test_ci_runs_the_readme_test_command() -> None:
    assert TEST_COMMAND in readme_path().read_text()
    assert (ROOT / ".ci" / "run").read_text().strip().endswith(TEST_COMMAND)


def test_readme_quotes_the_last_benchmark_run() -> None:
    results = (ROOT / "benchmarks" / "results.md").read_text()
    assert results.strip() in readme_path().read_text(), (
        "README's Speed section must quote benchmarks/results.md as the benchmark wrote it"
    )
