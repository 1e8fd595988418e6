"""`scaffold new`: render a project that can be updated later, and make its first commit.

The template and ref come from `scaffold.source`; the rendering from `scaffold.render`. The
first commit is made here, in Python, not by a Copier task, so no `--trust` is ever needed.

A project appears whole or not at all: it is rendered and committed in a hidden sibling of
DEST, then renamed to DEST in one step, so that an error or a Ctrl-C at any moment leaves
either nothing or a complete, committed project (`--force` into a non-empty DEST aside, which
renders in place).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from . import gitrepo, source
from .errors import Interrupted, ScaffoldError, os_problem
from .interrupts import held, watched
from .questions import check_answers
from .render import render_project

# Where a project is rendered before it is renamed to DEST; hidden, and short, so that a DEST
# name near the file system's limit still fails on DEST itself, with DEST's name in the error.
STAGE_PREFIX = ".scaffold-new-"


@dataclass(frozen=True)
class NewProject:
    """What `create_project` made.

    Attributes:
        answers: The answers Copier recorded (the asked questions).
        src: The template recorded as `_src_path`.
        commit: The template version recorded as `_commit` (a tag, or `git describe` of a
            commit); None when none could be recorded (git missing).
        notes: What the user should know, one line each (a dirty template, no git).
        files: The files of the project (or, pretending, that it would have), relative to it,
            `.git` aside.
    """

    answers: dict[str, object]
    src: str
    commit: str | None
    notes: tuple[str, ...]
    files: tuple[str, ...] = ()


def _files(root: Path) -> tuple[str, ...]:
    return tuple(
        sorted(
            path.relative_to(root).as_posix()
            for path in root.rglob("*")
            if path.is_file() and ".git" not in path.relative_to(root).parts
        )
    )


def _recorded_commit(dest: Path) -> str | None:
    import yaml

    recorded = yaml.safe_load((dest / ".copier-answers.yml").read_text(encoding="utf-8"))
    commit = recorded.get("_commit")
    return None if commit is None else str(commit)


def _first_commit(where: Path, dest: Path, message: str) -> str | None:
    """Make `where` (to become `dest`) a git repository with one commit; returns a note when it
    did not."""
    if not gitrepo.available():
        return "git not found: the project is not a git repository; install git, then commit it"
    top = gitrepo.toplevel(where)
    if top is not None:
        return (
            f"{dest} is inside the git repository {top}, so no repository was made for it; "
            "commit the new files there before running scaffold update"
        )
    try:
        gitrepo.init_and_commit(where, message)
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
        answers: Answers by question name; `project_name` defaults to `dest`'s name.
        template: A template path or URL; default: see `scaffold.source`.
        vcs_ref: A tag, branch or commit of the template; default: see `scaffold.source`.
        git: Make `dest` a git repository with one commit of everything rendered, so that
            `scaffold update` can run on it at once.
        defaults: Take the default of every question not in `answers`; False asks.
        force: Render into a non-empty `dest`.
        pretend: Write nothing; render into a temporary directory to list the files.
        quiet: Kept for callers; Copier never prints.

    Raises:
        ScaffoldError: For a bad answer, a template or ref that cannot be found, a
            destination that is not empty or cannot be written (an OSError, on one line).
        Interrupted: On Ctrl-C; `dest` is then as it was, or (interrupted after the rename)
            complete.
    """
    dest = Path(dest)
    # Like `cargo new`: the directory names the project unless told otherwise.
    derived = "project_name" not in answers
    if derived:
        answers = {**answers, "project_name": dest.resolve().name}
    staged = False  # rendered beside DEST, then renamed: Ctrl-C leaves nothing or everything
    try:
        with watched() as pressed:
            chosen = source.for_new(template, vcs_ref)
            if chosen.builtin:
                check_answers(answers)  # before a clone: a typo in --data is reported at once
            if pretend:  # render where nothing of the user's is, to say what would be written
                _check_dest(dest, force=force)
                with tempfile.TemporaryDirectory(prefix="scaffold-pretend-") as tmp:
                    where = Path(tmp) / "p"
                    made = _make(where, dest, answers, chosen, False, defaults, False, quiet)
                return replace(made, commit=None)
            if force and dest.is_dir() and any(dest.iterdir()):
                return _make(dest, dest, answers, chosen, git, defaults, force, quiet)
            staged = True
            with _staged(dest, pressed) as stage:
                made = _make(stage, dest, answers, chosen, git, defaults, force, quiet)
            if pressed():  # a Ctrl-C that was swallowed where it was raised (a finalizer)
                raise KeyboardInterrupt
            return made
    except ScaffoldError as error:
        if derived and error.question == "project_name":
            raise ScaffoldError(
                f"{error} (it is DEST's name; pass --project-name to set another)",
                question="project_name",
            ) from None
        raise
    except OSError as error:
        # The staging directory is ours, not the user's: name DEST instead.
        staged = STAGE_PREFIX in str(error.filename2 or error.filename or "")
        fix = "choose a DEST in a directory you can write to"
        raise os_problem(error, fix, dest if staged else None) from None
    except KeyboardInterrupt:  # outside _staged, which says what it left
        # DEST was missing or empty, so its answers file means the rename made it whole.
        if staged and (dest / ".copier-answers.yml").is_file():
            raise Interrupted(
                f"interrupted, but after '{dest}' was complete; it is ready to use"
            ) from None
        raise Interrupted(
            f"interrupted; nothing was written to '{dest}'; run scaffold new again"
        ) from None


def _make(
    where: Path,
    dest: Path,
    answers: Mapping[str, object],
    chosen: source.Source,
    git: bool,
    defaults: bool,
    force: bool,
    quiet: bool,
) -> NewProject:
    """Render and commit the project in `where`, which becomes `dest`."""
    notes = list(chosen.notes)
    recorded = render_project(
        where,
        answers,
        src=chosen.src,
        vcs_ref=chosen.ref,
        defaults=defaults,
        force=force,
        quiet=quiet,
        notes=notes,
    )
    commit = _recorded_commit(where)
    files = _files(where)
    if git:
        message = f"Generate {recorded['project_name']} from {chosen.src} at {commit}"
        if note := _first_commit(where, dest, message):
            notes.append(note)
    return NewProject(
        answers=recorded, src=chosen.src, commit=commit, notes=tuple(notes), files=files
    )


def _outermost_missing(path: Path) -> Path | None:
    """The outermost directory that making `path` creates, or None if it exists."""
    missing = None
    for candidate in [path, *path.parents]:
        if candidate.exists():
            break
        missing = candidate
    return missing


def _check_dest(dest: Path, *, force: bool) -> None:
    if dest.is_file():
        raise ScaffoldError(f"destination '{dest}' is a file; choose a directory path")
    if not force and dest.is_dir() and any(dest.iterdir()):
        raise ScaffoldError(
            f"destination '{dest}' exists and is not empty; "
            "choose a new directory or pass --force to render into it"
        )


@contextmanager
def _staged(dest: Path, pressed: Callable[[], bool]) -> Iterator[Path]:
    """A new, empty directory beside `dest` that becomes `dest` when the block succeeds.

    On any error or interrupt, the directory and any parents made for it are removed, so
    `dest` stays as it was: absent, or the empty directory it was. So too when `pressed()`
    says Ctrl-C came during the block although no KeyboardInterrupt reached here.

    Raises:
        ScaffoldError: For a `dest` that is a file or a non-empty directory.
        Interrupted: On Ctrl-C, saying what was left.
    """
    _check_dest(dest, force=False)
    given, dest = dest, dest.absolute()
    above = next(parent for parent in dest.parents if parent.exists())
    if not above.is_dir():
        raise ScaffoldError(
            f"cannot create '{given}': '{above}' is a file, not a directory; "
            "choose a DEST outside it"
        )
    created = _outermost_missing(dest.parent)
    stage = None
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        while stage is None:
            candidate = dest.parent / f"{STAGE_PREFIX}{secrets.token_hex(4)}"
            with held():  # made and named together, so the cleanup below finds it
                try:
                    candidate.mkdir()  # not mkdtemp: its mode 0700 would become the project's
                except FileExistsError:
                    continue
                stage = candidate
        yield stage
        if pressed():
            raise KeyboardInterrupt
        # One rename: DEST is absent (or an empty directory) until it is the whole project.
        os.replace(stage, dest)
    except BaseException as error:
        with held():
            complete = stage is not None and not stage.exists() and dest.is_dir()
            if stage is not None and stage.exists():
                shutil.rmtree(stage, ignore_errors=True)
            if created is not None and not complete:
                shutil.rmtree(created, ignore_errors=True)
        if isinstance(error, KeyboardInterrupt):
            if complete:
                raise Interrupted(
                    f"interrupted, but after '{given}' was complete; it is ready to use"
                ) from None
            raise Interrupted(
                f"interrupted; nothing was written to '{given}'; run scaffold new again"
            ) from None
        raise
