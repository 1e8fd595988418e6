"""Ctrl-C at any moment of `scaffold new` leaves either nothing or a complete, committed
project, and ends with one line and exit code 130.

A clean run is traced first: every call of the steps that write (the render, each file Copier
writes, each git command, the final rename). Then `scaffold new` runs again once per point
just before and just after each of those calls, with a KeyboardInterrupt raised there.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import copier._main
import pytest
from typer.testing import CliRunner

from scaffold import gitrepo, new
from scaffold.cli import app

runner = CliRunner()


class Tripwire:
    """Counts the moments before and after each wrapped call; raises Ctrl-C at one of them."""

    def __init__(self, at: int | None) -> None:
        self.at = at
        self.moments = 0

    def _tick(self) -> None:
        self.moments += 1
        if self.moments == self.at:
            raise KeyboardInterrupt

    def wrap(self, function: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            self._tick()
            result = function(*args, **kwargs)
            self._tick()
            return result

        return wrapper


def _arm(monkeypatch: pytest.MonkeyPatch, tripwire: Tripwire) -> None:
    monkeypatch.setattr(new, "render_project", tripwire.wrap(new.render_project))
    monkeypatch.setattr(gitrepo, "_git", tripwire.wrap(gitrepo._git))
    monkeypatch.setattr(os, "replace", tripwire.wrap(os.replace))
    worker = copier._main.Worker
    monkeypatch.setattr(worker, "_render_file", tripwire.wrap(worker._render_file))


def _run(tmp_path: Path, at: int | None) -> tuple[object, Path, int]:
    dest = tmp_path / "new" / "proj"
    tripwire = Tripwire(at)
    with pytest.MonkeyPatch.context() as monkeypatch:
        _arm(monkeypatch, tripwire)
        result = runner.invoke(app, ["new", str(dest), "--yes", "--quiet"])
    return result, dest, tripwire.moments


def _assert_nothing_or_complete(dest: Path) -> None:
    if not (dest.parent).exists():
        return  # nothing: not even the parent directory made for DEST
    leftovers = [p.name for p in dest.parent.iterdir() if p.name.startswith(new.STAGE_PREFIX)]
    assert not leftovers, f"staging directories left behind: {leftovers}"
    assert dest.is_dir(), f"{dest.parent} was left without DEST in it"
    assert (dest / ".copier-answers.yml").is_file()
    assert (dest / "pyproject.toml").is_file()
    log = subprocess.run(
        ["git", "log", "--format=%s"], cwd=dest, capture_output=True, text=True, check=True
    )
    assert len(log.stdout.splitlines()) == 1
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=dest, capture_output=True, text=True, check=True
    )
    assert status.stdout == "", "a complete project has every file committed"


def test_ctrl_c_anywhere_leaves_nothing_or_a_complete_project(tmp_path: Path) -> None:
    result, dest, moments = _run(tmp_path / "clean", None)
    assert result.exit_code == 0, result.output
    _assert_nothing_or_complete(dest)
    assert moments > 20, "the trace should see the render, each file, git and the rename"

    outcomes = {"nothing": 0, "complete": 0}
    for at in range(1, moments + 1):
        result, dest, _ = _run(tmp_path / str(at), at)
        assert result.exit_code == 130, f"Ctrl-C at moment {at}: {result.output}"
        lines = result.output.splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: interrupted"), result.output
        _assert_nothing_or_complete(dest)
        outcomes["complete" if dest.exists() else "nothing"] += 1
        if dest.exists():
            assert "was complete" in lines[0], lines[0]
        else:
            assert lines[0] == (
                f"Error: interrupted; nothing was written to '{dest}'; run scaffold new again"
            )
    assert outcomes["nothing"] > 0 and outcomes["complete"] > 0, outcomes
