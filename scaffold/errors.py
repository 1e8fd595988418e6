"""The one exception family of scaffold: messages a user can act on."""

from __future__ import annotations


class ScaffoldError(Exception):
    """A problem the user can fix, worded as one line: "<problem>; <fix>".

    The CLI prints it as `Error: <message>` and exits with `exit_code`.

    Args:
        message: What went wrong and how to fix it, on one line, without a leading "Error:".
        question: The Copier question the problem is about, when there is one, so the CLI can
            name the flag that sets it.
    """

    exit_code = 2  # as Click's usage errors: the command line needs changing

    def __init__(self, message: str, *, question: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.question = question

    def __str__(self) -> str:
        return self.message


class Interrupted(ScaffoldError):
    """The user pressed Ctrl-C; the message says what was left behind."""

    exit_code = 130  # 128 + SIGINT, as a shell reports a process that Ctrl-C ended


def os_problem(error: OSError, fix: str, path: object = None) -> ScaffoldError:
    """An OSError (a path under a file, no permission, a name too long) as one line.

    Args:
        error: The error; its `filename` names the path when the OS gave one.
        fix: What the user can do, e.g. "choose another DEST".
        path: The path to name instead of the error's own.
    """
    path = path or error.filename2 or error.filename
    reason = error.strerror or str(error)
    where = f"'{path}'" if path is not None else "a file"
    return ScaffoldError(f"cannot write {where}: {reason}; {fix}")
