"""`scaffold new`: render a project that can be updated later, and make its first commit.

The template and ref come from `scaffold.source`; the rendering from `scaffold.render`. The
first commit is made here, in Python, not by a Copier task, so no `--trust` is ever needed.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from . import gitrepo, source
from .questions import check_answers
from .render import render_project


@dataclass(frozen=True)
class NewProject:
    """What `create_project` made.

    Attributes:
        answers: The answers Copier recorded (the asked questions).
        src: The template recorded as `_src_path`.
        commit: The template version recorded as `_commit` (a tag, or `git describe` of a
            commit); None when none could be recorded (git missing).
        notes: What the user should know, one line each (a dirty template, no git).
    """

    answers: dict[str, object]
    src: str
    commit: str | None
    notes: tuple[str, ...]


def _recorded_commit(dest: Path) -> str | None:
    import yaml

    recorded = yaml.safe_load((dest / ".copier-answers.yml").read_text(encoding="utf-8"))
    commit = recorded.get("_commit")
    return None if commit is None else str(commit)


def _first_commit(dest: Path, message: str) -> str | None:
    """Make `dest` a git repository with one commit; returns a note when it did not."""
    if not gitrepo.available():
        return "git not found: the project is not a git repository; install git, then commit it"
    top = gitrepo.toplevel(dest)
    if top is not None:
        return (
            f"{dest} is inside the git repository {top}, so no repository was made for it; "
            "commit the new files there before running scaffold update"
        )
    try:
        gitrepo.init_and_commit(dest, message)
    except subprocess.CalledProcessError as error:
        last = (error.stderr or "").strip().splitlines()[-1:] or [f"exit code {error.returncode}"]
        return f"git could not make the first commit ({last[0]}); commit the project yourself"
    return None


def create_project(
    dest: Path,
    answers: Mapping[str, object],
    *,
    template: str | None = None,
    vcs_ref: str | None = None,
    git: bool = True,
    defaults: bool = True,
    force: bool = False,
    pretend: bool = False,
    quiet: bool = False,
) -> NewProject:
    """Render a project into `dest` that records where to update it from, and commit it.

    Args:
        dest: The directory to create; it must be missing or empty unless `force`.
        answers: Answers by question name.
        template: A template path or URL; default: see `scaffold.source`.
        vcs_ref: A tag, branch or commit of the template; default: see `scaffold.source`.
        git: Make `dest` a git repository with one commit of everything rendered, so that
            `scaffold update` can run on it at once.
        defaults: Take the default of every question not in `answers`; False asks.
        force: Render into a non-empty `dest`.
        pretend: Write nothing.
        quiet: Copier prints nothing.

    Raises:
        ScaffoldError: For a bad answer, a template or ref that cannot be found, or a
            destination that is not empty.
    """
    chosen = source.for_new(template, vcs_ref)
    if chosen.builtin:
        check_answers(answers)  # before a clone: a typo in --data is reported at once
    recorded = render_project(
        dest,
        answers,
        src=chosen.src,
        vcs_ref=chosen.ref,
        defaults=defaults,
        force=force,
        pretend=pretend,
        quiet=quiet,
    )
    notes = list(chosen.notes)
    commit = None if pretend else _recorded_commit(dest)
    if git and not pretend:
        message = f"Generate {recorded['project_name']} from {chosen.src} at {commit}"
        if note := _first_commit(dest, message):
            notes.append(note)
    return NewProject(answers=recorded, src=chosen.src, commit=commit, notes=tuple(notes))
