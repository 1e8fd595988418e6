"""The git commands scaffold runs itself, around Copier's own.

Copier clones templates and merges updates with its own git calls. This module answers what
scaffold must know before it calls Copier (is the template checkout dirty, which tags does it
have, is the project committed) and makes a new project's first commit. Every function but
`available()` needs git on PATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

# The identity of a project's first commit where git knows none (a fresh CI machine); used for
# exactly the keys that `git config` leaves empty, so a configured identity always wins.
FALLBACK_IDENTITY = {"user.name": "scaffold", "user.email": "scaffold@invalid"}

# Copier marks each conflict of an inline update with this line (`git merge-file -L`).
CONFLICT_MARKER = b"<<<<<<< before updating"


def available() -> bool:
    """Whether git is on PATH."""
    return shutil.which("git") is not None


def _git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    # Never let git wait for a password or an editor: scaffold runs in CI as often as by hand.
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_EDITOR": "true"}
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=check, env=env
    )


def toplevel(path: Path) -> Path | None:
    """The root of the git work tree that holds `path`, or None when there is none."""
    done = _git(path, "rev-parse", "--show-toplevel", check=False)
    return Path(done.stdout.strip()).resolve() if done.returncode == 0 else None


def is_dirty(path: Path) -> bool:
    """Whether anything under `path` differs from its last commit, untracked files included."""
    return bool(_git(path, "status", "--porcelain", "--", ".").stdout.strip())


def commit_of(repo: Path, ref: str) -> str | None:
    """The full hash of the commit `ref` names in `repo`, or None when it names none."""
    if ref.startswith("-"):  # never let a ref be read as an option
        return None
    done = _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def tags(repo: Path) -> list[str]:
    """Every tag of `repo`."""
    return _git(repo, "tag", "--list").stdout.split()


def changed_files(path: Path) -> list[str]:
    """Files under `path` that are modified or untracked, relative to `path`."""
    out = _git(path, "ls-files", "-z", "--modified", "--others", "--exclude-standard", "--", ".")
    return sorted(set(filter(None, out.stdout.split("\0"))))


def conflicted_files(path: Path) -> list[str]:
    """Files under `path` changed since the last commit that hold Copier's conflict markers."""
    conflicted = []
    for name in changed_files(path):
        file = path / name
        if file.is_file() and any(
            line.rstrip() == CONFLICT_MARKER for line in file.read_bytes().splitlines()
        ):
            conflicted.append(name)
    return conflicted


def _identity_options(repo: Path) -> list[str]:
    options = []
    for key, fallback in FALLBACK_IDENTITY.items():
        if not _git(repo, "config", key, check=False).stdout.strip():
            options += ["-c", f"{key}={fallback}"]
    return options


def init_and_commit(path: Path, message: str) -> None:
    """Make `path` a git repository whose first commit holds every file not ignored.

    Raises:
        subprocess.CalledProcessError: When git fails (its stderr says why).
    """
    _git(path, "init", "--quiet")
    _git(path, "add", "--all")
    _git(path, *_identity_options(path), "commit", "--quiet", "--no-verify", "-m", message)


def restore(path: Path) -> None:
    """Put every file under `path` back as its last commit has it, removing untracked files
    (ignored ones stay): for undoing an interrupted update of a project that was clean."""
    _git(path, "reset", "--quiet", "--", ".")
    _git(path, "checkout", "--quiet", "HEAD", "--", ".")
    _git(path, "clean", "-d", "--force", "--quiet", "--", ".")
