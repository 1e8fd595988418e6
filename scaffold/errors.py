"""The one exception family of scaffold: messages a user can act on."""

from __future__ import annotations


class ScaffoldError(Exception):
    """A problem the user can fix, worded as one line: "<problem>; <fix>".

    Args:
        message: What went wrong and how to fix it, on one line, without a leading "Error:".
        question: The Copier question the problem is about, when there is one, so the CLI can
            name the flag that sets it.
    """

    def __init__(self, message: str, *, question: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.question = question

    def __str__(self) -> str:
        return self.message
