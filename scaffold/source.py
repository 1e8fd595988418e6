"""Where a project's template comes from, as a source and ref that `copier update` can reach later.

A project records its template in `.copier-answers.yml`: `_src_path` (an absolute path or a URL;
Copier cannot update from a relative path, copier issue #335) and `_commit` (a tag, or a commit
where the template has no tag). `scaffold new` picks them here:

1. `--template SRC` and `--vcs-ref REF`, when given;
2. else the `SCAFFOLD_TEMPLATE` environment variable (a path or URL), at the tag of scaffold's
   version;
3. else, run from a git checkout of scaffold (`pip install -e .`), that checkout, at the tag
   `v<version>` where the checkout has it, else at its HEAD commit;
4. else (an installed wheel) the public repository `PUBLIC_TEMPLATE` at the tag `v<version>`.

Uncommitted changes in a local template are never rendered: Copier would record a throwaway
commit of them that no later update can find. The committed ref is rendered instead and a note
says so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from . import gitrepo
from .errors import ScaffoldError
from .questions import template_root

# Where the template is published; a project made from an installed wheel records it.
PUBLIC_TEMPLATE = "https://github.com/scaffold-tf/scaffold.git"

# Overrides where `scaffold new` takes the template from (a mirror, a fork, a local clone).
TEMPLATE_ENV = "SCAFFOLD_TEMPLATE"

_URL_PREFIXES = ("git@", "git+", "gh:", "gl:")


@dataclass(frozen=True)
class Source:
    """A template to render, as Copier will record it.

    Attributes:
        src: An absolute path or a URL; recorded as `_src_path`.
        ref: The tag or full commit hash to render; None for a plain directory (git missing),
            which Copier renders as it is and records without a `_commit`.
        builtin: Whether this is scaffold's own template (not `--template`), so the answers
            can be checked against scaffold's `copier.yml` first.
        notes: What the user should know about the choice, one line each.
    """

    src: str
    ref: str | None
    builtin: bool = False
    notes: tuple[str, ...] = ()


def release_tag() -> str:
    """The tag of the template that matches this scaffold: `v<version>`."""
    from . import __version__

    return f"v{__version__}"


def checkout() -> Path | None:
    """The git checkout of scaffold this code runs from, or None (an installed wheel)."""
    root = template_root()
    if (root / ".git").exists() and (root / "copier.yml").is_file():
        return root
    return None


def is_url(src: str) -> bool:
    """Whether `src` is a URL Copier clones (not a local path)."""
    return "://" in src or src.startswith(_URL_PREFIXES)


def local_repo(src: str) -> Path:
    """`src` as the absolute root of a git repository.

    Raises:
        ScaffoldError: When `src` does not exist or is not the root of a git repository.
    """
    path = Path(src).expanduser()
    if not path.is_dir():
        raise ScaffoldError(
            f"template '{src}' not found; pass the path of a git repository or a URL"
        )
    path = path.resolve()
    if gitrepo.toplevel(path) != path:
        raise ScaffoldError(
            f"template '{src}' is not the root of a git repository, so no project made from it "
            "could be updated; pass a git repository (with copier.yml at its root) or a URL"
        )
    return path


def _short(commit: str) -> str:
    return commit[:12]


def pin_local(repo: Path, ref: str) -> tuple[str, tuple[str, ...]]:
    """Check that `ref` exists in `repo`; `HEAD` becomes its commit, so dirt is never rendered.

    Returns:
        The ref to pass to Copier and the notes to show.

    Raises:
        ScaffoldError: When `repo` has no such ref.
    """
    commit = gitrepo.commit_of(repo, ref)
    if commit is None:
        raise ScaffoldError(
            f"template ref '{ref}' not found in {repo}; "
            "pass --vcs-ref with one of its tags, branches or commits"
        )
    if ref != "HEAD":
        return ref, ()
    notes = ()
    if gitrepo.is_dirty(repo):
        notes = (
            f"the template checkout {repo} has uncommitted changes; they are not rendered: "
            f"rendering its last commit {_short(commit)}, which the project records "
            "(commit the changes to render them)",
        )
    return commit, notes


def _default_local(repo: Path, builtin: bool) -> Source:
    tag = release_tag()
    if tag in gitrepo.tags(repo):
        return Source(str(repo), tag, builtin=builtin)
    ref, notes = pin_local(repo, "HEAD")
    return Source(str(repo), ref, builtin=builtin, notes=notes)


def _without_git(src: str, builtin: bool) -> Source:
    if is_url(src):
        raise ScaffoldError(
            f"git not found; it is needed to fetch the template from {src}; install git"
        )
    path = Path(src).expanduser()
    if not (path / "copier.yml").is_file():
        raise ScaffoldError(f"template '{src}' not found; pass a directory with a copier.yml")
    return Source(
        str(path.resolve()),
        None,
        builtin=builtin,
        notes=(
            f"git not found: rendering {path.resolve()} as it is; the project records no "
            "template version, so it cannot be updated (install git and run scaffold new again "
            "to get one that can)",
        ),
    )


def for_new(template: str | None = None, vcs_ref: str | None = None) -> Source:
    """The template `scaffold new` renders and records; see the module's docstring.

    Args:
        template: `--template`: a path or URL; default: `SCAFFOLD_TEMPLATE`, this checkout, or
            `PUBLIC_TEMPLATE`.
        vcs_ref: `--vcs-ref`: a tag, branch or commit of the template; default: `v<version>`,
            or the HEAD commit of a local template without that tag.

    Raises:
        ScaffoldError: For a template that is missing or not a git repository, a ref it does
            not have, or a URL while git is missing.
    """
    builtin = template is None
    src = template or os.environ.get(TEMPLATE_ENV) or None
    if src is None:
        root = checkout()
        src = str(root) if root is not None else PUBLIC_TEMPLATE
    if not gitrepo.available():
        return _without_git(src, builtin)
    if is_url(src):
        return Source(src, vcs_ref or release_tag(), builtin=builtin)
    repo = local_repo(src)
    if vcs_ref is None:
        return _default_local(repo, builtin)
    ref, notes = pin_local(repo, vcs_ref)
    return Source(str(repo), ref, builtin=builtin, notes=notes)


def latest_version_tag(repo: Path) -> str | None:
    """The tag Copier updates to by default: the highest PEP 440 version, prereleases aside."""
    from packaging.version import InvalidVersion, Version

    versions = {}
    for tag in gitrepo.tags(repo):
        try:
            version = Version(tag)
        except InvalidVersion:
            continue
        if not version.is_prerelease:
            versions[tag] = version
    return max(versions, key=versions.__getitem__) if versions else None


def for_update(src: str, vcs_ref: str | None) -> tuple[str | None, tuple[str, ...]]:
    """The ref `scaffold update` passes to Copier for a project whose template is `src`.

    The same ref plain `copier update` takes: `vcs_ref` when given, else the latest version
    tag, else HEAD. Only a local template with uncommitted changes differs: Copier would render
    them and record a throwaway commit, so its HEAD commit is named instead, with a note.

    Returns:
        The ref (None leaves the choice to Copier) and the notes to show.

    Raises:
        ScaffoldError: When a local template does not exist or lacks `vcs_ref`.
    """
    if is_url(src) or vcs_ref == ":current:":
        return vcs_ref, ()
    repo = Path(src)
    if not repo.is_absolute():
        problem = "is a relative path, which Copier cannot update from (copier issue #335)"
    elif not repo.is_dir():
        problem = "does not exist"
    elif gitrepo.toplevel(repo) != repo.resolve():
        problem = "is not the root of a git repository"
    else:
        problem = None
    if problem:
        raise ScaffoldError(
            f"the template recorded in .copier-answers.yml, '{src}', {problem}; set _src_path "
            "there to the template's git repository (an absolute path or a URL), commit, and retry"
        )
    if vcs_ref is not None:
        return pin_local(repo, vcs_ref)
    if not gitrepo.is_dirty(repo) or latest_version_tag(repo) is not None:
        return None, ()
    return pin_local(repo, "HEAD")
