"""The golden examples: canonical renders of the template, kept under `examples/`.

They show what a generated project looks like and, re-rendered and compared, prove that the
committed examples still match the template.
"""

from __future__ import annotations

import difflib
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .questions import template_root
from .render import render_project
from .source import PUBLIC_TEMPLATE

ANSWERS_FILE = ".copier-answers.yml"

# Name -> answers; the name is also the project name.
EXAMPLES: dict[str, dict[str, object]] = {
    "digits-sparse": {"labels": "sparse", "logits": True, "input_shape": "64"},
    "digits-onehot-probs": {"labels": "one-hot", "logits": False, "input_shape": "8,8,1"},
    "breast-cancer-binary": {"labels": "binary", "logits": True},
    "sequences-sparse": {"labels": "sparse", "logits": True, "shapes": "variable"},
    "digits-backbone-head": {"optimizers": "backbone-head", "labels": "sparse", "logits": True},
    "digits-gan": {"optimizers": "gan"},
    "digits-mirrored-bf16": {
        "labels": "sparse",
        "logits": True,
        "input_shape": "8,8,1",
        "strategy": "mirrored",
        "precision": "mixed_bfloat16",
    },
}

# What running an example's own tools leaves behind; never part of an example.
_IGNORED_DIRS = frozenset({"__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache"})
_IGNORED_SUFFIXES = (".pyc",)


def examples_dir() -> Path:
    """The `examples/` directory of the repository."""
    return template_root() / "examples"


def example_answers(name: str) -> dict[str, object]:
    """The full answers of one example: its project name plus its entry in `EXAMPLES`."""
    return {"project_name": name, **EXAMPLES[name]}


def normalise_answers_file(project: Path) -> None:
    """Strip machine-specific values from a project's `.copier-answers.yml`.

    `_src_path` becomes `PUBLIC_TEMPLATE`, where the template is published, instead of the path
    of whichever checkout rendered the examples, so they are the same on every machine; and
    `_commit` (a throwaway commit Copier makes of a dirty working tree) goes.
    """
    path = project / ANSWERS_FILE
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"^_commit:.*\n", "", text, flags=re.M)
    text = re.sub(r"^_src_path:.*$", f"_src_path: {PUBLIC_TEMPLATE}", text, flags=re.M)
    path.write_text(text, encoding="utf-8")


def render_examples(into: Path) -> list[Path]:
    """Render every example from the working tree's template into `into/NAME`, normalised."""
    projects = []
    for name in EXAMPLES:
        project = into / name
        render_project(project, example_answers(name), defaults=True, quiet=True)
        normalise_answers_file(project)
        projects.append(project)
    return projects


def write_examples(dest: Path | None = None) -> list[Path]:
    """Re-render the examples and replace each `dest/NAME` wholly (default dest: `examples/`).

    Everything renders before anything is replaced, so a failing render keeps the old examples.
    Directories of `dest` that are not examples are left alone.
    """
    dest = dest or examples_dir()
    written = []
    with tempfile.TemporaryDirectory(prefix="scaffold-examples-") as tmp:
        for project in render_examples(Path(tmp)):
            target = dest / project.name
            if target.exists():
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(project, target)
            written.append(target)
    return written


def _files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if set(relative.parts) & _IGNORED_DIRS or path.name.endswith(_IGNORED_SUFFIXES):
            continue
        if path.is_file():
            yield relative


def _text(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)


def diff_trees(expected: Path, actual: Path, label: str) -> str:
    """A unified diff from `expected` (committed) to `actual` (rendered); "" when equal.

    Files only in one tree are listed as `Only in committed: ...` / `Only in rendered: ...`.
    """
    committed = set(_files(expected)) if expected.is_dir() else set()
    rendered = set(_files(actual))
    out = [f"Only in rendered: {label}/{path}\n" for path in sorted(rendered - committed)]
    out += [f"Only in committed: {label}/{path}\n" for path in sorted(committed - rendered)]
    for path in sorted(committed & rendered):
        old, new = expected / path, actual / path
        if old.read_bytes() == new.read_bytes():
            continue
        diff = difflib.unified_diff(
            _text(old),
            _text(new),
            fromfile=f"{label}/{path} (committed)",
            tofile=f"{label}/{path} (rendered)",
        )
        out.extend(line if line.endswith("\n") else line + "\n" for line in diff)
    return "".join(out)


def check_examples(dest: Path | None = None) -> str:
    """Re-render the examples into a temporary directory and diff them against `dest`.

    Returns:
        The unified diff of every drifted, missing or extra file ("" when the examples match).
    """
    dest = dest or examples_dir()
    with tempfile.TemporaryDirectory(prefix="scaffold-examples-") as tmp:
        return "".join(
            diff_trees(dest / project.name, project, f"{dest.name}/{project.name}")
            for project in render_examples(Path(tmp))
        )
