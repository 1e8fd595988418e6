"""The questions of `copier.yml`, read as data.

`copier.yml` is the one source of truth for what scaffold asks. This module reads it for the
CLI's flags, the docs and the checks on answers. `scaffold --help` must start fast, so the parsed
questions are cached as JSON (keyed by the file's content) and YAML is parsed only when
`copier.yml` changed.
"""

from __future__ import annotations

import difflib
import json
import os
import zlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

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
        when: Copier's `when` as written: a bool, or Jinja deciding from the other answers.
    """

    name: str
    type: str
    help: str
    default: object
    choices: tuple[object, ...]
    asked: bool
    when: object = True

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


# Bumped when the cached form of a question changes.
_CACHE_FORMAT = 1


def _cache_file(text: bytes) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    key = f"{_CACHE_FORMAT}-{zlib.crc32(text):08x}-{len(text)}"
    return Path(base) / "scaffold" / f"questions-{key}.json"


def _parse(text: bytes) -> dict[str, Question]:
    import yaml  # slow to import and to parse; only when copier.yml is new to the cache

    questions: dict[str, Question] = {}
    for name, spec in yaml.safe_load(text).items():
        if name.startswith("_"):
            continue  # a Copier setting, not a question
        if not isinstance(spec, Mapping):
            spec = {"default": spec}  # Copier's short form `name: default`
        when = spec.get("when", True)
        questions[name] = Question(
            name=name,
            type=str(spec.get("type", "yaml")),
            help=str(spec.get("help", "")).strip(),
            default=spec.get("default"),
            choices=_choice_values(spec.get("choices")),
            asked=when is not False,
            when=when,
        )
    return questions


@cache
def _load(path: Path) -> dict[str, Question]:
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise ScaffoldError(
            f"template configuration '{path}' not found; "
            "run scaffold from a checkout of its repository (pip install -e .)"
        ) from None
    cached = _cache_file(text)
    try:
        rows = json.loads(cached.read_text(encoding="utf-8"))
        return {row["name"]: Question(**{**row, "choices": tuple(row["choices"])}) for row in rows}
    except (OSError, ValueError, TypeError, KeyError):
        pass  # not cached yet, or unreadable: parse the YAML
    questions = _parse(text)
    try:
        partial = cached.with_suffix(f".{os.getpid()}.tmp")
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps([asdict(q) for q in questions.values()]), encoding="utf-8")
        os.replace(partial, cached)
    except (OSError, TypeError, ValueError):
        partial.unlink(missing_ok=True)  # a read-only home only costs the parse next time
    return questions


def load_questions(path: Path | None = None) -> dict[str, Question]:
    """All questions of `copier.yml`, asked and derived, in file order, keyed by name."""
    return dict(_load((path or config_path()).resolve()))


def asked_questions(path: Path | None = None) -> dict[str, Question]:
    """The questions a person answers: every question except the `when: false` ones."""
    return {name: q for name, q in load_questions(path).items() if q.asked}


@dataclass(frozen=True)
class Blocker:
    """Why a question is not asked: the answer that rules it out, and the values that would not.

    Attributes:
        question: The question whose answer rules it out; None when no single answer does.
        value: That question's answer.
        fixes: The other values of that question under which the question would be asked.
    """

    question: Question | None
    value: object = None
    fixes: tuple[object, ...] = ()


def _cast(question: Question, value: object) -> object:
    """A `--data` text as Copier reads it for its type, so `when`s compare like Copier's."""
    if not isinstance(value, str):
        return value
    word = value.strip().lower()
    if question.type == "bool" and word in _TRUE_WORDS | _FALSE_WORDS:
        return word in _TRUE_WORDS
    caster = {"int": int, "float": float}.get(question.type)
    try:
        return caster(value) if caster else value
    except ValueError:
        return value


class _When:
    """Copier's `when`s and templated defaults, evaluated on some answers."""

    def __init__(self, questions: Mapping[str, Question], answers: Mapping[str, object]) -> None:
        import jinja2  # not needed by `scaffold --help`

        self.questions = questions
        self.env = jinja2.Environment(undefined=jinja2.StrictUndefined)
        self.context: dict[str, object] = {}
        for name, question in questions.items():
            if name in answers:
                self.context[name] = _cast(question, answers[name])
            elif isinstance(question.default, str) and question.templated_default:
                self.context[name] = self._render(question.default, self.context, question.default)
            else:
                self.context[name] = question.default

    def _render(self, text: str, context: Mapping[str, object], fallback: Any) -> Any:
        try:
            return self.env.from_string(text).render(context)
        except Exception:  # a template Copier itself will report on
            return fallback

    def asked(self, name: str, context: Mapping[str, object] | None = None) -> bool:
        when = self.questions[name].when
        if not isinstance(when, str):
            return bool(when)
        shown = self._render(when, self.context if context is None else context, "true")
        return shown.strip().lower() not in _FALSE_WORDS | {"", "none"}

    def referenced(self, name: str) -> list[str]:
        """The questions a `when` reads, in copier.yml's order."""
        from jinja2 import meta

        when = self.questions[name].when
        if not isinstance(when, str):
            return []
        names = meta.find_undeclared_variables(self.env.parse(when))
        return [other for other in self.questions if other in names and other != name]

    def blocker(self, name: str) -> Blocker:
        referenced = self.referenced(name)
        for other in referenced:  # a question ruled out by one that is itself ruled out
            if not self.asked(other):
                found = self.blocker(other)
                if found.question is not None:
                    return found
        for other in referenced:
            question = self.questions[other]
            values = (True, False) if question.type == "bool" else question.choices
            value = self.context[other]
            fixes = tuple(
                fix
                for fix in values
                if fix != value and self.asked(name, {**self.context, other: fix})
            )
            if fixes and self.asked(other):
                return Blocker(question, value, fixes)
        return Blocker(None)


def not_asked(
    names: list[str], answers: Mapping[str, object], path: Path | None = None
) -> tuple[str, Blocker] | None:
    """The first of `names` (in copier.yml's order) that Copier would not ask given `answers`
    (the others taking their defaults), with why; None when all are asked."""
    questions = load_questions(path)
    when = _When(questions, answers)
    for name in questions:
        if name in names and not when.asked(name):
            return name, when.blocker(name)
    return None


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
