"""The terminal prompts of `scaffold new`: a bad answer is told what is expected, in a line that
fits 80 columns (a longer one is cut at the terminal's width).

Copier's prompt is replaced by one that feeds each question bad answers through the prompt's
own validation, records what it would show, and then takes the default.
"""

from __future__ import annotations

from pathlib import Path

import copier._main
import pytest

from scaffold.render import PROMPT_WIDTH, render_project

# Answers each free-text or numeric question refuses, as a person might type them.
BAD_ANSWERS = {
    "project_name": ["my proj", "1st", "a" * 40 + " b"],
    "package_name": ["1pkg", "class", "json", "my-pkg"],
    "num_classes": ["ten", "1", "2.5"],
    "input_shape": ["28,x", "0", "1,2,3,4"],
    "epochs": ["many", "0"],
    "batch_size": ["big", "0"],
    "learning_rate": ["fast", "nan", "inf", "0"],
    "steps_per_execution": ["x", "0"],
}


@pytest.fixture
def shown(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, dict[str, object]]:
    """What each prompt shows for each bad answer, by question and answer."""
    shown: dict[str, dict[str, object]] = {}

    def prompt(questions, answers=None):
        (question,) = questions
        name = question["name"]
        validate = question.get("validate")
        if validate is not None:
            shown[name] = {answer: validate(answer) for answer in BAD_ANSWERS.get(name, [])}
        answer = question.get("default", (answers or {}).get(name))
        answer = getattr(answer, "value", answer)  # a select's default is a Choice
        cast = question.get("filter")
        return {name: cast(answer) if cast is not None else answer}

    monkeypatch.setattr(copier._main, "unsafe_prompt", prompt)
    render_project(tmp_path / "proj", {"project_name": "proj"}, defaults=False, quiet=True)
    # project_name was given; ask it too, through a second render.
    render_project(tmp_path / "other", {"package_name": "other"}, defaults=False, quiet=True)
    return shown


def test_a_bad_number_says_what_is_expected(shown: dict[str, dict[str, object]]) -> None:
    assert shown["num_classes"]["ten"] == "num_classes must be a whole number, got 'ten'; e.g. 10"
    assert shown["epochs"]["many"] == "epochs must be a whole number, got 'many'; e.g. 10"
    assert shown["learning_rate"]["fast"] == (
        "learning_rate must be a number, got 'fast'; e.g. 0.001"
    )


def test_every_prompt_message_fits_80_columns(shown: dict[str, dict[str, object]]) -> None:
    assert shown.keys() >= BAD_ANSWERS.keys() - {"package_name"} | {"project_name"}
    for name, messages in shown.items():
        for answer, message in messages.items():
            assert message is not True, f"{name}={answer!r} was accepted"
            assert isinstance(message, str) and message, (name, answer)
            assert "Invalid input" not in message, (name, answer)
            assert len(message) <= PROMPT_WIDTH, f"{name}={answer!r}: {message!r}"
            assert "\n" not in message
