"""Every answer scaffold accepts renders a project whose code compiles and whose `Config`
constructs; every answer it refuses is refused with one line and leaves nothing behind.

Property-based over the whole answer space: each question of `copier.yml` draws values of its
own type (edge cases included: nan, infinities, huge integers, keywords, module names, stray
whitespace) and of every other type. Renders are text only, so this never imports TensorFlow;
the config module is imported in a subprocess where TensorFlow cannot be imported at all.
"""

from __future__ import annotations

import keyword
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from scaffold.errors import ScaffoldError
from scaffold.questions import Question, asked_questions
from scaffold.render import render_project

# Imports the package's config module without its `__init__` (which imports TensorFlow), with
# TensorFlow, Keras and NumPy made unimportable: config.py must need only the standard library.
CONFIG_CHECK = """
import importlib, sys, types
for heavy in ("tensorflow", "keras", "numpy", "sklearn"):
    sys.modules[heavy] = None
src, name = sys.argv[1:]
package = types.ModuleType(name)
package.__path__ = [f"{src}/{name}"]
sys.modules[name] = package
config = importlib.import_module(f"{name}.config").Config()
print(type(config).__name__)
"""


def _names() -> st.SearchStrategy[str]:
    """Names that look valid, and the ones that only look valid."""
    modules = [*sorted(sys.stdlib_module_names), "keras", "tensorflow", "numpy", "helpers"]
    valid = st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True)
    return st.one_of(
        valid,
        valid,
        valid,
        st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,15}", fullmatch=True),
        st.sampled_from(sorted(keyword.kwlist + keyword.softkwlist) + modules),
        st.sampled_from(["a\n", "my proj", "x" * 65, "x" * 300, "A-b", "a-", "_a", "\u00df"]),
    )


def _plausible(question: Question) -> st.SearchStrategy[object]:
    """Values of the question's own type, edge cases included."""
    if question.type == "bool":
        return st.one_of(st.booleans(), st.sampled_from(["true", "no", "1", "off"]))
    if question.type == "int":
        return st.one_of(
            st.integers(min_value=-1, max_value=300),
            st.integers(min_value=0, max_value=2**70),
            st.integers(min_value=-1, max_value=10**6).map(str),
        )
    if question.type == "float":
        return st.one_of(
            st.floats(min_value=1e-6, max_value=1.0),
            st.floats(),  # nan, infinities, -0.0 and subnormals included
            st.sampled_from(["nan", "inf", "-inf", "1e309", "-0.0", "0.001", "1e-320"]),
        )
    if question.choices:
        return st.sampled_from(question.choices)
    if question.name == "input_shape":
        return st.one_of(
            st.from_regex(r"[1-9][0-9]{0,2}(,[1-9][0-9]{0,2}){0,2}", fullmatch=True),
            st.from_regex(r"[0-9]{1,3}(,[0-9]{1,3}){0,3}", fullmatch=True),
            st.sampled_from(["64", "8,8,1", "28,28,1", "64\n", " 64", "1,1,1", "100000"]),
        )
    return _names()


# Anything at all, for one answer at a time.
_WILD = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", " ", "yes", "maybe", "ten", "1.5", " 3", "nan", "x\n"]),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.none(),
)
_QUESTIONS = asked_questions()
_PLAUSIBLE = {name: _plausible(question) for name, question in _QUESTIONS.items()}


@st.composite
def answers_strategy(draw: st.DrawFn) -> dict[str, object]:
    """A few questions answered with values of their type; perhaps one with anything."""
    names = draw(st.lists(st.sampled_from(sorted(_QUESTIONS)), max_size=5, unique=True))
    answers = {name: draw(_PLAUSIBLE[name]) for name in names}
    if names and draw(st.integers(0, 4)) == 0:
        answers[names[0]] = draw(_WILD)
    return answers


def _check_project(project: Path) -> None:
    for path in project.rglob("*.py"):
        compile(path.read_text(encoding="utf-8"), str(path), "exec")
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    recorded = yaml.safe_load((project / ".copier-answers.yml").read_text(encoding="utf-8"))
    package = recorded["package_name"]
    assert package not in sys.stdlib_module_names, f"package {package!r} shadows the stdlib"
    done = subprocess.run(
        [sys.executable, "-c", CONFIG_CHECK, str(project / "src"), package],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Config"


@settings(
    max_examples=100,  # Hypothesis's default
    deadline=None,
    derandomize=True,  # the same examples on every run: CI must not flake
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(answers=answers_strategy())
def test_every_accepted_answer_renders_a_project_that_imports(answers: dict[str, object]) -> None:
    with tempfile.TemporaryDirectory(prefix="scaffold-answers-") as tmp:
        dest = Path(tmp) / "new" / "proj"
        answers = {"project_name": "proj", **answers}
        try:
            render_project(dest, answers, defaults=True, quiet=True)
        except ScaffoldError as error:
            message = str(error)
            assert message and "\n" not in message, repr(message)
            assert "; " in message, f"no fix in {message!r}"
            assert not (Path(tmp) / "new").exists(), "a refused answer must leave nothing"
            event("refused: " + message.split(",")[0][:50])
            return
        _check_project(dest)
        event("rendered")
