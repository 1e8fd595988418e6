"""Ctrl-C at any moment of `scaffold new` leaves either nothing or a complete, committed
project, no temporary directory, and ends with one line and exit code 130.

A clean run is traced first: every call of the steps that write (the render, each file Copier
writes, each git command, the final rename). Then `scaffold new` runs again once per point
just before and just after each of those calls, with a KeyboardInterrupt raised there; of
Copier's files, where the points differ only in how many files are written, the first two, a
middle one and the last two. Copier's
clone of the template is traced likewise, and a Ctrl-C that is swallowed where it lands (as in
a finalizer) is made at chosen points. Last, real SIGINTs at a spread of moments.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import copier._main
import copier._template
import pytest
from typer.testing import CliRunner

from scaffold import gitrepo, new
from scaffold.cli import app

runner = CliRunner()


class Tripwire:
    """Counts the moments before and after each wrapped call; raises Ctrl-C at one of them, or
    with `swallow`, makes one that something swallows: SIGINT's handler runs, its
    KeyboardInterrupt goes no further."""

    def __init__(self, at: int | None, *, swallow: bool = False) -> None:
        self.at = at
        self.swallow = swallow
        self.moments = 0
        self.calls: list[str] = []  # the wrapped function of each moment

    def _tick(self, name: str) -> None:
        self.moments += 1
        self.calls.append(name)
        if self.moments != self.at:
            return
        if not self.swallow:
            raise KeyboardInterrupt
        with contextlib.suppress(KeyboardInterrupt):
            signal.getsignal(signal.SIGINT)(signal.SIGINT, None)

    def wrap(self, function: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            self._tick(function.__name__)
            result = function(*args, **kwargs)
            self._tick(function.__name__)
            return result

        return wrapper


def _arm(monkeypatch: pytest.MonkeyPatch, tripwire: Tripwire) -> None:
    monkeypatch.setattr(new, "render_project", tripwire.wrap(new.render_project))
    monkeypatch.setattr(gitrepo, "_git", tripwire.wrap(gitrepo._git))
    monkeypatch.setattr(os, "replace", tripwire.wrap(os.replace))
    worker = copier._main.Worker
    monkeypatch.setattr(worker, "_render_file", tripwire.wrap(worker._render_file))


def _arm_clone(monkeypatch: pytest.MonkeyPatch, tripwire: Tripwire) -> None:
    """Copier's clone of the template: made, filled by git, removed."""
    for name in ("mkdtemp", "clone", "rmtree"):
        monkeypatch.setattr(copier._template, name, tripwire.wrap(getattr(copier._template, name)))


def _run(
    tmp_path: Path, at: int | None, *, swallow: bool = False, arm: Callable = _arm
) -> tuple[object, Path, Tripwire]:
    dest = tmp_path / "new" / "proj"
    tripwire = Tripwire(at, swallow=swallow)
    temp = tmp_path / "tmp"  # where Copier clones the template: it must end empty
    temp.mkdir(parents=True)
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(tempfile, "tempdir", str(temp))
        arm(monkeypatch, tripwire)
        result = runner.invoke(app, ["new", str(dest), "--yes", "--quiet"])
    left = sorted(path.name for path in temp.iterdir())
    assert not left, f"Ctrl-C at moment {at} left {left} in the temporary directory"
    return result, dest, tripwire


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


def _spread(calls: list[str]) -> list[int]:
    """The moments to interrupt: each one but those between Copier's files, where only the
    number of files written differs (the first two files', a middle one's and the last two's
    are kept)."""
    files = [at for at, name in enumerate(calls, 1) if name == "_render_file"]
    middle = len(files) // 2 & ~1  # the moment before a file
    kept = {*files[:4], *files[middle : middle + 2], *files[-4:]}
    return [at for at in range(1, len(calls) + 1) if at not in files or at in kept]


def test_ctrl_c_anywhere_leaves_nothing_or_a_complete_project(tmp_path: Path) -> None:
    result, dest, trace = _run(tmp_path / "clean", None)
    assert result.exit_code == 0, result.output
    _assert_nothing_or_complete(dest)
    assert trace.moments > 20, "the trace should see the render, each file, git and the rename"
    assert trace.calls.count("_render_file") > 20, trace.calls

    outcomes = {"nothing": 0, "complete": 0}
    for at in _spread(trace.calls):
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


def _assert_interrupted(result, dest: Path, at: int) -> None:
    assert result.exit_code == 130, f"Ctrl-C at moment {at}: {result.output}"
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: interrupted"), result.output
    _assert_nothing_or_complete(dest)
    assert ("was complete" in lines[0]) == dest.exists(), lines[0]


def test_ctrl_c_while_copier_clones_leaves_no_clone(tmp_path: Path) -> None:
    result, dest, trace = _run(tmp_path / "clean", None, arm=_arm_clone)
    assert result.exit_code == 0, result.output
    moments = trace.moments
    assert moments == 6, "the trace should see the clone made, filled and removed"
    for at in range(1, moments + 1):
        result, dest, _ = _run(tmp_path / str(at), at, arm=_arm_clone)
        _assert_interrupted(result, dest, at)


def test_a_swallowed_ctrl_c_still_ends_with_130(tmp_path: Path) -> None:
    # Moments of _arm: 1 before the render, 2 before Copier writes its first file, the last
    # just after the rename that makes DEST whole.
    _, _, trace = _run(tmp_path / "clean", None)
    moments = trace.moments
    for at in (1, 2, moments - 1, moments):
        result, dest, _ = _run(tmp_path / str(at), at, swallow=True)
        _assert_interrupted(result, dest, at)


def test_sigint_at_a_spread_of_moments(tmp_path: Path) -> None:
    """Real SIGINTs, one per `scaffold new` process, spread over a clean run's length; the
    processes run side by side, so the test takes about as long as two runs."""
    root = Path(new.__file__).resolve().parent.parent
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    # SIGINT handled as in a terminal's foreground, even if this test runs where it is ignored
    # (a background job), which its processes would inherit.
    started = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler)"
    command = [sys.executable, "-c", f"{started}; from scaffold.cli import app; app()", "new"]

    def start(name: str) -> tuple[subprocess.Popen, Path, Path]:
        temp = tmp_path / name / "tmp"
        temp.mkdir(parents=True)
        dest = tmp_path / name / "new" / "proj"
        process = subprocess.Popen(
            [*command, str(dest), "--yes", "--quiet"],
            env={**env, "TMPDIR": str(temp)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        return process, dest, temp

    began = time.monotonic()
    process, dest, temp = start("clean")
    assert process.wait(timeout=120) == 0, process.stdout.read()
    length = time.monotonic() - began
    assert not list(temp.iterdir())

    # From a fifth of a run on: earlier, SIGINT can land while Python itself starts up.
    runs = [((index + 1) * length / 5, *start(str(index))) for index in range(8)]
    began = time.monotonic()
    interrupted = 0
    for delay, process, _, _ in runs:
        time.sleep(max(0.0, began + delay - time.monotonic()))
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            interrupted += 1
    for delay, process, dest, temp in runs:
        code = process.wait(timeout=120)
        output = process.stdout.read()
        left = sorted(path.name for path in temp.iterdir())
        assert not left, f"SIGINT after {delay:.2f} s left {left} in TMPDIR"
        _assert_nothing_or_complete(dest)
        if dest.exists() and code == 0:
            continue  # finished before the signal came
        # 130 from scaffold; -SIGINT if Python had not yet reached scaffold (a shell says 130)
        assert code in (130, -signal.SIGINT), f"SIGINT after {delay:.2f} s: {code}, {output}"
    # Eight runs side by side take longer than one alone: the first ones are caught running.
    assert interrupted >= 2, f"only {interrupted} of 8 processes were running when signalled"
