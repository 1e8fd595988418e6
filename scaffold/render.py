"""Every call into Copier: render the template into a destination or update a project from
it, or explain why not.

Copier is imported inside the functions so that `scaffold --help` does not pay for it.

Copier always runs quiet, its stray prints and warnings caught: scaffold reports what was
done itself, so a user sees one version string (the `_commit` recorded), each message once,
and no colour codes in output that is not a terminal.
"""

from __future__ import annotations

import ast
import contextlib
import io
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .errors import ScaffoldError
from .interrupts import held
from .questions import check_answers, template_root

_VALIDATION_ERROR = re.compile(r"Validation error for question '(?P<name>\w+)': (?P<msg>.*)", re.S)
_CHOICE_ERROR = re.compile(
    r"Invalid choice for '(?P<name>\w+)': (?P<value>.*) is not in (?P<valid>\[.*\])", re.S
)
_CAST_ERROR = re.compile(r"invalid literal for int\(\)|could not convert string to float")


def _one_line(text: str) -> str:
    return " ".join(text.split())


# What Copier prints on its own even when quiet, as scaffold says it, once.
_COPIER_NOTICES = {
    "No git tags found in template; using HEAD as ref": (
        "the template has no version tags; using its latest commit"
    ),
}


@contextlib.contextmanager
def _copier_silenced(notes: list[str], *, ignore: tuple[type[Warning], ...] = ()) -> Iterator[None]:
    """Run Copier with its prints (which ignore `quiet`, in colour) and warnings caught; what a
    user should know of them is appended to `notes`, each message once."""
    printed = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(printed):
        warnings.simplefilter("always")
        for category in ignore:
            warnings.simplefilter("ignore", category)
        try:
            yield
        finally:
            found = [str(warning.message) for warning in caught]
            for line in printed.getvalue().splitlines():
                plain = re.sub(r"\x1b\[[0-9;]*m", "", line).strip()
                if plain in _COPIER_NOTICES:
                    found.append(_COPIER_NOTICES[plain])
            for note in found:
                note = _one_line(note)
                if note and note not in notes:
                    notes.append(note)


@contextlib.contextmanager
def _own_tempdir() -> Iterator[None]:
    """Copier's temporary directories (its clone of the template) inside one of ours, which is
    removed whatever happens.

    Copier removes its clone itself, but not when Ctrl-C lands between making the directory and
    recording it, or while it removes it. `tempfile.tempdir` is the whole process's: scaffold
    renders one project at a time.
    """
    previous = tempfile.tempdir
    own = None
    try:
        with held():
            own = tempfile.mkdtemp(prefix="scaffold-copier-")
            tempfile.tempdir = own
        yield
    finally:
        with held():
            tempfile.tempdir = previous
            if own is not None:
                _remove(Path(own))


def _remove(path: Path, patience: float = 10.0) -> None:
    """Remove `path`, again while a git that Ctrl-C left running still writes into it.

    Copier's git commands are not ended when a KeyboardInterrupt stops the wait for them: a
    `git clone` that the signal did not reach itself goes on until it fails on the removed
    directory, and may make a directory there again before it does.
    """
    deadline = time.monotonic() + patience
    shutil.rmtree(path, ignore_errors=True)
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
        shutil.rmtree(path, ignore_errors=True)


def _check_destination(dest: Path, *, force: bool) -> None:
    if dest.is_file():
        raise ScaffoldError(f"destination '{dest}' is a file; choose a directory path")
    if dest.is_dir() and not force and any(dest.iterdir()):
        raise ScaffoldError(
            f"destination '{dest}' exists and is not empty; "
            "choose a new directory or pass --force to render into it"
        )


def _check_working_tree() -> None:
    root = template_root()
    if not (root / "copier.yml").is_file() or not (root / "template").is_dir():
        raise ScaffoldError(
            f"no template next to scaffold in {root} (an installed wheel); rendering the working "
            "tree needs a checkout of the scaffold repository: clone it and pip install -e ."
        )


def _first_missing(path: Path) -> Path | None:
    """The outermost directory that rendering `path` would create, or None if it exists."""
    missing = None
    path = path.absolute()
    for candidate in [path, *path.parents]:
        if candidate.exists():
            break
        missing = candidate
    return missing


# A ref the template lacks: Copier's words for a local template, git's for a cloned one.
_UNKNOWN_REF = re.compile(r"Unknown revision: '(?P<ref>.*)'|fatal: invalid reference: (?P<ref2>.*)")


def _git_problem(error: Exception, src: str) -> ScaffoldError | None:
    """A failed git command of Copier (a ref the template lacks, an unreachable URL)."""
    from plumbum import ProcessExecutionError  # Copier runs git through plumbum

    if isinstance(error, ValueError) and (match := _UNKNOWN_REF.fullmatch(str(error))):
        ref = match["ref"]
    elif isinstance(error, ProcessExecutionError):
        stderr = (error.stderr or "").strip()
        match = _UNKNOWN_REF.search(stderr)
        if not match:
            last = stderr.splitlines()[-1] if stderr else f"exit code {error.retcode}"
            return ScaffoldError(
                f"git failed on the template {src}: {_one_line(last)}; "
                "check the template's path or URL and your network"
            )
        ref = match["ref"] or match["ref2"]
    else:
        return None
    return ScaffoldError(
        f"template ref '{ref.strip()}' not found in {src}; "
        "pass --vcs-ref with one of its tags, branches or commits"
    )


def _translate(error: Exception, flag_style: str = "flag") -> ScaffoldError | None:
    """Copier's error about the answers as a one-line ScaffoldError, or None if it is not one.

    `flag_style` words the fix of a bad choice: "flag" (`pass --labels with one of them`, for
    scaffold new) or "data" (`pass --data labels=one of them`, for scaffold update).
    """
    from copier.errors import InteractiveSessionError, UnsafeTemplateError, UserMessageError

    text = str(error)
    if isinstance(error, InteractiveSessionError):
        return ScaffoldError(
            "no terminal to ask questions on; "
            "pass --yes to take the defaults for questions not given as flags"
        )
    if isinstance(error, (UserMessageError, UnsafeTemplateError)):
        return ScaffoldError(_one_line(text))
    if not isinstance(error, ValueError):
        return None
    if match := _VALIDATION_ERROR.fullmatch(text):
        return ScaffoldError(_one_line(match["msg"]), question=match["name"])
    if match := _CHOICE_ERROR.fullmatch(text):
        name, value = match["name"], match["value"]
        try:
            valid = ", ".join(str(v) for v in ast.literal_eval(match["valid"]))
        except (ValueError, SyntaxError):
            valid = match["valid"]
        fix = (
            f"pass --data {name}=<one of them>"
            if flag_style == "data"
            else f"pass --{name.replace('_', '-')} with one of them"
        )
        return ScaffoldError(f"{name} {value} is not one of {valid}; {fix}", question=name)
    if _CAST_ERROR.match(text):
        # Copier casts answers with int()/float(); check_answers catches this first for our
        # own template, so this is for another `src`.
        return ScaffoldError(f"{_one_line(text)}; check the values given as flags or with --data")
    return None  # any other ValueError is a bug, not the user's mistake: keep its traceback


# Copier's prompt says only "Invalid input" for an answer its type cannot read.
_PROMPT_KINDS = {"int": "a whole number", "float": "a number"}
PROMPT_WIDTH = 80  # a prompt's message is cut at the terminal's width, 80 columns at least


def prompt_message(name: str, type_name: str, answer: str, default: object) -> str:
    """What a prompt says of an answer its question's type cannot read, in 80 columns."""
    shown = answer if len(answer) <= 16 else answer[:15] + "…"
    example = f"; e.g. {default}" if default not in (None, "") else ""
    kind = _PROMPT_KINDS.get(type_name, f"a valid {type_name}")
    return f"{name} must be {kind}, got {shown!r}{example}"[:PROMPT_WIDTH]


def _fit(message: str, answer: str) -> str:
    """`message` in `PROMPT_WIDTH` columns, the answer it quotes shortened if need be."""
    excess = len(message) - PROMPT_WIDTH
    if excess > 0 and answer and answer in message and len(answer) > excess + 1:
        message = message.replace(answer, answer[: len(answer) - excess - 1] + "…", 1)
    return message[:PROMPT_WIDTH]


@contextlib.contextmanager
def _clear_prompts() -> Iterator[None]:
    """Copier's prompts, with "Invalid input" replaced by what is expected, e.g.
    "num_classes must be a whole number, got 'ten'; e.g. 10", and a validator's message shown
    without "Validation error for question 'num_classes': " before it.

    Copier offers no hook for this message, so the question's prompt structure is wrapped
    for the length of one render; should Copier's internals change, its prompts stay as they
    are.
    """
    try:
        from copier._user_data import Question
    except ImportError:  # pragma: no cover - a Copier without this internal
        yield
        return
    original = getattr(Question, "get_questionary_structure", None)
    if original is None:  # pragma: no cover
        yield
        return

    def structure(question: Any) -> dict[str, Any]:
        result = original(question)
        validate = result.get("validate")
        if validate is None:
            return result

        def clearer(answer: str) -> str | bool:
            outcome = validate(answer)
            if outcome == "Invalid input":
                default = result.get("default")
                return prompt_message(
                    question.var_name, question.get_type_name(), str(answer), default
                )
            if isinstance(outcome, str) and (match := _VALIDATION_ERROR.fullmatch(outcome)):
                # The validator's own words, without Copier's 46-column preamble.
                return _fit(_one_line(match["msg"]), str(answer))
            return outcome

        result["validate"] = clearer
        return result

    Question.get_questionary_structure = structure
    try:
        yield
    finally:
        Question.get_questionary_structure = original


def render_project(
    dest: Path,
    answers: Mapping[str, object],
    *,
    src: str | None = None,
    vcs_ref: str | None = None,
    defaults: bool = True,
    force: bool = False,
    pretend: bool = False,
    quiet: bool = False,
    notes: list[str] | None = None,
) -> dict[str, object]:
    """Render the template into `dest` with the given answers.

    Copier parses and validates every answer (given or default) before it writes a file, so a
    bad answer leaves nothing behind; should anything fail later, the directories this call
    created are removed again.

    Args:
        dest: The directory to create. It must be missing or empty unless `force`.
        answers: Answers by question name; values of any type Copier casts (`"3"` for an int).
        src: A Copier template (path or git URL); default: this repository's working tree,
            uncommitted changes included, so the template matches the scaffold that runs it.
        vcs_ref: A git ref of `src`; default for the built-in template: `HEAD` plus local
            changes; for another `src`: Copier's choice (its latest tag).
        defaults: Take the default of every question not in `answers`; False asks on the
            terminal instead.
        force: Render into a non-empty `dest`, overwriting files the template owns.
        pretend: Write nothing.
        quiet: Kept for callers; Copier never prints (scaffold reports what it did).
        notes: Where to append what Copier said that a user should know, each once.

    Returns:
        The answers Copier recorded (the asked questions, as written to `.copier-answers.yml`).

    Raises:
        ScaffoldError: For a bad answer, a non-empty `dest` without `force`, or a question
            that would need a terminal that is not there.
    """
    import copier
    from copier.errors import DirtyLocalWarning

    dest = Path(dest)
    _check_destination(dest, force=force)
    builtin = src is None
    if builtin:
        _check_working_tree()
        check_answers(answers)
    created = None if pretend else _first_missing(dest)
    del quiet
    # Rendering the working tree of our own template is the point, so Copier's "Dirty template
    # changes included automatically" would only puzzle a user who never touched the template.
    # Someone passing their own `src` keeps it.
    ignore = (DirtyLocalWarning,) if builtin else ()
    try:
        with (
            _own_tempdir(),
            _copier_silenced([] if notes is None else notes, ignore=ignore),
            _clear_prompts(),
        ):
            worker = copier.run_copy(
                src or str(template_root()),
                dest,
                data=dict(answers),
                # HEAD (with local changes) rather than Copier's default, the latest tag: the
                # flags of this scaffold match the copier.yml next to it, not an older release.
                # It also spares the user Copier's "No git tags found" notice.
                vcs_ref=vcs_ref or ("HEAD" if builtin else None),
                defaults=defaults,
                overwrite=force,
                pretend=pretend,
                quiet=True,
                unsafe=False,
            )
    except BaseException as error:  # Ctrl-C too: never leave a half-written project behind
        with held():
            if created is not None and created.exists():
                shutil.rmtree(created, ignore_errors=True)
        translated = None
        if isinstance(error, Exception):
            translated = _translate(error) or _git_problem(error, src or str(template_root()))
        if translated is None:
            raise
        if translated.question and translated.question not in answers:
            # A default the user never typed (package_name from project_name): name the flag.
            flag = "--" + translated.question.replace("_", "-")
            translated = ScaffoldError(
                f"{translated} (pass {flag} to set it)", question=translated.question
            )
        raise translated from error
    combined = worker.answers.combined
    if notes is not None and combined.get("dataset") == "synthetic":
        # No offline dataset fits these answers: say so now, not after a puzzling first run.
        notes.append(
            f"no offline dataset has input shape {combined.get('input_shape')} and "
            f"{combined.get('num_classes', 2)} classes; data.py generates synthetic data "
            "(Gaussian blobs): replace it with yours"
        )
    return {
        name: value
        for name, value in worker.answers.user.items()
        if name not in worker.answers.hidden
    }


def update_project(
    project: Path,
    data: Mapping[str, object],
    *,
    vcs_ref: str | None = None,
    quiet: bool = False,
) -> tuple[str, ...]:
    """Update `project` from its recorded template, as `copier update --defaults` does.

    The previous answers stand unless `data` changes them; a conflict between the user's edits
    and the template's is left inline, between `<<<<<<< before updating` and
    `>>>>>>> after updating`, never in a `.rej` file that a later commit would forget.

    Args:
        project: A git-tracked project with `.copier-answers.yml`, committed (Copier refuses a
            dirty one).
        data: New answers by question name.
        vcs_ref: The template ref to update to; `:current:` keeps the recorded one (to change
            an answer only); None: Copier's default, the latest version tag (else HEAD).
        quiet: Kept for callers; Copier never prints (scaffold reports what it did).

    Returns:
        What Copier said that a user should know, one line each, each once.

    Raises:
        ScaffoldError: For a bad answer, a ref the template lacks, or a project Copier cannot
            update (its message, on one line).
    """
    import copier

    del quiet
    src = _recorded_source(project)
    notes: list[str] = []
    try:
        with _own_tempdir(), _copier_silenced(notes):
            copier.run_update(
                project,
                data=dict(data),
                vcs_ref=copier.VcsRef.CURRENT if vcs_ref == ":current:" else vcs_ref,
                defaults=True,  # keep every previous answer; ask nothing
                overwrite=True,  # required by Copier for an update; git holds the previous state
                conflict="inline",
                quiet=True,
                unsafe=False,
            )
    except Exception as error:
        translated = _translate(error, flag_style="data") or _git_problem(error, src)
        if translated is None:
            raise
        raise translated from error
    return tuple(notes)


def _recorded_source(project: Path) -> str:
    import yaml

    path = project / ".copier-answers.yml"
    recorded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return str(recorded.get("_src_path", "the template"))
