"""The questions of `copier.yml`, read as data.

`copier.yml` is the one source of truth for what scaffold asks. This module reads it for the
drift test, the examples and the checks on answers; `scaffold --help` never imports it, so the
CLI starts without parsing YAML.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from .errors import ScaffoldError

# Copier's boolean words (`copier._tools.cast_to_bool`); anything else given for a bool question
# is a mistake we report instead of letting Copier read it as true.
_TRUE_WORDS = frozenset({"y", "yes", "t", "true", "on", "1"})
_FALSE_WORDS = frozenset({"n", "no", "f", "false", "off", "0"})


@dataclass(frozen=True)
class Question:
    """One question of `copier.yml`.

    Attributes:
        name: The answer's key, e.g. `num_classes`.
        type: Copier's type name: `str`, `int`, `float`, `bool`, `yaml` or `json`.
        help: The one-line help shown when Copier asks.
        default: The default as written in `copier.yml`; a string with Jinja when templated.
        choices: The allowed values (not their labels), empty when the answer is free.
        asked: False for derived values (`when: false`), which a person never answers.
    """

    name: str
    type: str
    help: str
    default: object
    choices: tuple[object, ...]
    asked: bool

    @property
    def flag(self) -> str:
        """The `scaffold new` option that answers this question, e.g. `--num-classes`."""
        return "--" + self.name.replace("_", "-")

    @property
    def templated_default(self) -> bool:
        """Whether the default is computed from other answers by Jinja."""
        return isinstance(self.default, str) and ("{{" in self.default or "{%" in self.default)


def template_root() -> Path:
    """The directory holding `copier.yml`: the repository root, one level above the package."""
    return Path(__file__).resolve().parent.parent


def config_path() -> Path:
    """`copier.yml`: the checkout's, else the copy an installed wheel carries in the package."""
    checkout = template_root() / "copier.yml"
    return checkout if checkout.is_file() else Path(__file__).resolve().parent / "copier.yml"


def _choice_values(raw: object) -> tuple[object, ...]:
    if raw is None:
        return ()
    if isinstance(raw, Mapping):
        return tuple(raw.values())
    # A list of plain values, or of `[label, value]` pairs.
    return tuple(
        item[1] if isinstance(item, (list, tuple)) and len(item) == 2 else item for item in raw
    )


@cache
def _load(path: Path) -> dict[str, Question]:
    import yaml  # not needed by `scaffold --help`

    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScaffoldError(
            f"template configuration '{path}' not found; "
            "run scaffold from a checkout of its repository (pip install -e .)"
        ) from None
    questions: dict[str, Question] = {}
    for name, spec in config.items():
        if name.startswith("_"):
            continue  # a Copier setting, not a question
        if not isinstance(spec, Mapping):
            spec = {"default": spec}  # Copier's short form `name: default`
        questions[name] = Question(
            name=name,
            type=str(spec.get("type", "yaml")),
            help=str(spec.get("help", "")).strip(),
            default=spec.get("default"),
            choices=_choice_values(spec.get("choices")),
            asked=spec.get("when", True) is not False,
        )
    return questions


def load_questions(path: Path | None = None) -> dict[str, Question]:
    """All questions of `copier.yml`, asked and derived, in file order, keyed by name."""
    return dict(_load((path or config_path()).resolve()))


def asked_questions(path: Path | None = None) -> dict[str, Question]:
    """The questions a person answers: every question except the `when: false` ones."""
    return {name: q for name, q in load_questions(path).items() if q.asked}


def _type_problem(question: Question, value: object) -> str | None:
    """Why `value` cannot be an answer of the question's type, or None when it can."""
    if question.type == "int":
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            return "a whole number"
        if isinstance(value, str):
            try:
                int(value)
            except ValueError:
                return "a whole number"
    elif question.type == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            return "a number"
        if isinstance(value, str):
            try:
                float(value)
            except ValueError:
                return "a number"
    elif question.type == "bool":
        if isinstance(value, str):
            if value.strip().lower() not in _TRUE_WORDS | _FALSE_WORDS:
                return "true or false"
        elif not isinstance(value, bool):
            return "true or false"
    elif question.type == "str" and value is None:
        return "a value"
    return None


def _example(question: Question) -> str:
    default = question.default
    if question.type == "bool":
        return "false" if default is False else "true"
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        return str(default)
    return "1"


def check_answers(answers: Mapping[str, object], path: Path | None = None) -> None:
    """Reject answers Copier would silently ignore or misread.

    Copier accepts any key as extra data and casts values loosely (`logits=maybe` is true), so
    a typo in `--data` would render a project that quietly ignores it. Validators of the values
    themselves stay in `copier.yml`; Copier runs them.

    Raises:
        ScaffoldError: For a key that is not a question, a derived (`when: false`) question, or a
            value that is not of the question's type.
    """
    questions = load_questions(path)
    for name, value in answers.items():
        question = questions.get(name)
        if question is None:
            asked = [q for q, spec in questions.items() if spec.asked]
            close = difflib.get_close_matches(name, asked, n=1)
            hint = f"did you mean '{close[0]}'?" if close else "use one of " + ", ".join(asked)
            raise ScaffoldError(f"there is no question '{name}'; {hint}", question=name)
        if not question.asked:
            raise ScaffoldError(
                f"'{name}' is derived from the other answers and cannot be set; drop it",
                question=name,
            )
        expected = _type_problem(question, value)
        if expected:
            raise ScaffoldError(
                f"{name} must be {expected}, got {value!r}; "
                f"pass {expected}, e.g. --data {name}={_example(question)}",
                question=name,
            )


def check_choices(answers: Mapping[str, object], path: Path | None = None) -> None:
    """Reject an answer that is not one of its question's choices, worded for `--data`.

    `scaffold update` checks this before Copier starts, so a refused update prints one line.

    Raises:
        ScaffoldError: For an answer outside its question's choices.
    """
    questions = load_questions(path)
    for name, value in answers.items():
        question = questions.get(name)
        if question is None or not question.choices:
            continue
        valid = [str(choice) for choice in question.choices]
        if str(value) not in valid:
            raise ScaffoldError(
                f"{name} {str(value)!r} is not one of {', '.join(valid)}; "
                f"pass --data {name}=<one of them>",
                question=name,
            )
