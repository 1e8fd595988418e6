"""`scaffold update`: bring a project to a newer template version, keeping the user's work.

Copier does the three-way merge (the project as first rendered, as the user left it, as the new
template renders it). This module makes it safe: it refuses, with a one-line reason and before
anything is touched, what Copier would refuse with a traceback or get wrong (no git, a dirty
project, no recorded version, a ref the template lacks), and afterwards names the files where
the user's and the template's changes collide. `copier update --defaults --conflict inline`
does the same update.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from . import gitrepo, source
from .errors import Interrupted, ScaffoldError
from .questions import check_answers, check_choices
from .render import update_project as run_update

ANSWERS_FILE = ".copier-answers.yml"


@dataclass(frozen=True)
class Updated:
    """What `update_project` did.

    Attributes:
        old: The template version recorded before (`_commit`).
        new: The template version recorded now.
        conflicts: Files, relative to the project, left with inline conflict markers.
        notes: What the user should know, one line each.
    """

    old: str
    new: str
    conflicts: list[str]
    notes: tuple[str, ...]


def _recorded(project: Path) -> dict[str, object]:
    import yaml

    path = project / ANSWERS_FILE
    if not path.is_file():
        raise ScaffoldError(
            f"no {ANSWERS_FILE} in '{project}', so there is nothing to update it from; "
            "run scaffold update in (or pass) the directory of a project made by scaffold new"
        )
    try:
        recorded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ScaffoldError(
            f"{path} is not valid YAML{where}; restore it with git checkout -- {ANSWERS_FILE}"
        ) from None
    if not isinstance(recorded, dict) or not recorded.get("_src_path"):
        raise ScaffoldError(
            f"{path} records no template (_src_path); set _src_path to the template's git "
            "repository (an absolute path or a URL), commit, and retry"
        )
    if not recorded.get("_commit"):
        raise ScaffoldError(
            f"{path} records no template version (_commit), so Copier cannot tell what the "
            "template changed; add _commit: <the tag the project was made from>, commit, and retry"
        )
    return recorded


def _check_project(project: Path) -> None:
    if not project.is_dir():
        raise ScaffoldError(
            f"project directory '{project}' not found; pass the directory of a project made by "
            "scaffold new"
        )
    if not gitrepo.available():
        raise ScaffoldError("git not found; scaffold update merges with git: install git")
    if gitrepo.toplevel(project) is None:
        raise ScaffoldError(
            f"'{project}' is not a git repository, so an update could not be reviewed or undone; "
            "commit the project first: git init && git add --all && git commit -m 'Project'"
        )
    if gitrepo.is_dirty(project):
        raise ScaffoldError(
            f"'{project}' has uncommitted changes; commit or stash them (git stash), "
            "then run scaffold update again"
        )


def update_project(
    project: Path,
    data: Mapping[str, object] | None = None,
    *,
    vcs_ref: str | None = None,
    quiet: bool = False,
) -> Updated:
    """Update `project` from the template and version its `.copier-answers.yml` records.

    Args:
        project: The project's directory (a committed git work tree, or a directory in one).
        data: Answers to change, by question name (e.g. `{"labels": "one-hot"}`); the others
            keep their recorded values.
        vcs_ref: The template ref to update to: a tag, branch or commit, or `:current:` for the
            recorded one (to change an answer only). Default: as `copier update`, the latest
            version tag, else HEAD.
        quiet: Copier prints nothing.

    Returns:
        The versions before and after, and the files left with conflict markers (a non-empty
        list means the user must resolve them before committing).

    Raises:
        ScaffoldError: Before anything is changed: for a directory that is not a committed git
            project with a complete `.copier-answers.yml`, a bad answer, or an unknown ref.
        Interrupted: On Ctrl-C during the update, which is then undone.
    """
    project = Path(project)
    _check_project(project)
    recorded = _recorded(project)
    data = dict(data or {})
    if data:
        check_answers(data)
        check_choices(data)
    ref, notes = source.for_update(str(recorded["_src_path"]), vcs_ref)
    try:
        said = run_update(project, data, vcs_ref=ref, quiet=quiet)
    except KeyboardInterrupt:
        # The project was committed and clean (_check_project), so its last commit is exactly
        # what it was: put it back rather than leave half an update.
        gitrepo.restore(project)
        raise Interrupted(
            f"interrupted; the update was undone and '{project}' is as it was; "
            "run scaffold update again"
        ) from None
    new = _recorded(project)["_commit"]
    return Updated(
        old=str(recorded["_commit"]),
        new=str(new),
        conflicts=gitrepo.conflicted_files(project),
        notes=(*notes, *(note for note in said if note not in notes)),
    )
