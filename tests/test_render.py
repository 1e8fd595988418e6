"""Render every combination of the matrix, then run the generated project's own checks.

The matrix is built from `copier.yml`: for the single optimizer, every label encoding x logits
or not x two fixed input shapes (the default, which picks the offline dataset, and an image shape
that picks the CNN), plus variable shapes (token-id sequences) x every label encoding, cycling
logits; for backbone-head, every label encoding, cycling logits and the three shapes; and one
GAN, which asks none of those questions.
"""

from __future__ import annotations

import compileall
import itertools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from engine_tests import add_engine_tests, engine_test_files

from scaffold.questions import load_questions
from scaffold.render import render_project

QUESTIONS = load_questions()
# Shape ids: two fixed input shapes, and variable-length token-id sequences.
SHAPES = {"default": "", "image": "8,8,1", "variable": ""}


def _case(
    labels: str, logits: bool, shape_id: str, optimizers: str = "single"
) -> tuple[str, dict[str, object]]:
    prefix = "" if optimizers == "single" else f"{optimizers}-"
    name = f"{prefix}{labels}-{'logits' if logits else 'probs'}-{shape_id}"
    # Short project names: the package name fills the first line of two generated docstrings.
    project_name = name.replace("backbone-head", "bh")
    answers: dict[str, object] = {"project_name": project_name, "labels": labels, "logits": logits}
    if optimizers != "single":
        answers["optimizers"] = optimizers
    if SHAPES[shape_id]:
        answers["input_shape"] = SHAPES[shape_id]
    if shape_id == "variable":
        answers["shapes"] = "variable"
    return name, answers


def _matrix() -> list[tuple[str, dict[str, object]]]:
    assert set(QUESTIONS["optimizers"].choices) == {"single", "backbone-head", "gan"}
    assert set(QUESTIONS["shapes"].choices) == {"fixed", "variable"}
    logits_choices = QUESTIONS["logits"].choices or (True, False)
    cases = [
        _case(labels, logits, shape_id)
        for labels, logits, shape_id in itertools.product(
            QUESTIONS["labels"].choices, logits_choices, ("default", "image")
        )
    ]
    # Variable shapes and backbone-head interact with the labels little: each encoding once,
    # the rest cycled.
    for labels, logits in zip(
        QUESTIONS["labels"].choices, itertools.cycle(logits_choices), strict=False
    ):
        cases.append(_case(str(labels), bool(logits), "variable"))
    cycled = zip(itertools.cycle(logits_choices), itertools.cycle(SHAPES), strict=False)
    for labels, (logits, shape_id) in zip(QUESTIONS["labels"].choices, cycled, strict=False):
        cases.append(_case(str(labels), bool(logits), shape_id, "backbone-head"))
    cases.append(("gan", {"project_name": "gan", "optimizers": "gan"}))
    # The run options a project can default to: one classifier trains mirrored in bfloat16.
    name, answers = next(case for case in cases if case[0] == "sparse-logits-image")
    index = cases.index((name, answers))
    answers = {**answers, "strategy": "mirrored", "precision": "mixed_bfloat16"}
    cases[index] = (f"{name}-mirrored-bf16", answers)
    return cases


MATRIX = _matrix()
# A render's name by its project's name.
RENDER_OF = {str(answers["project_name"]): name for name, answers in MATRIX}


# The engine's modules: the same files, byte for byte, in every project.
TEMPLATE_ENGINE = (
    Path(__file__).resolve().parent.parent / "template" / "src" / "{{package_name}}" / "engine"
)
ENGINE_MODULES = (
    "__init__",
    "accumulation",
    "batches",
    "callbacks",
    "checkpoints",
    "classifier",
    "cli",
    "cluster",
    "contract",
    "distribution",
    "features",
    "gradients",
    "interrupts",
    "labels",
    "loop",
    "optimizers",
    "options",
    "precision",
    "preflight",
    "profiling",
    "project",
    "sequences",
    "sweep",
    "task",
    "tracking",
    "train",
    "trained",
)


def expected_files(package: str, optimizers: str = "single", shapes: str = "fixed") -> set[str]:
    """The exact set of files a project renders to, by the `optimizers` and `shapes` answers."""
    engine = {f"src/{package}/engine/{module}.py" for module in ENGINE_MODULES}
    if optimizers == "gan":
        return engine | {
            ".copier-answers.yml",
            ".gitignore",
            "README.md",
            "pyproject.toml",
            *(
                f"src/{package}/{module}.py"
                for module in (
                    "__init__",
                    "__main__",
                    "config",
                    "data",
                    "gan",
                    "model",
                    "task",
                )
            ),
            *(
                f"tests/{module}.py"
                for module in (
                    "conftest",
                    "test_checkpoints",
                    "test_distribute",
                    "test_gan",
                    "test_trained",
                )
            ),
        }
    extra = set()
    if optimizers == "backbone-head":
        extra |= {"tests/test_backbone_head.py"}
    if shapes == "variable":
        extra |= {"tests/test_sequences.py"}
    return {
        *engine,
        *extra,
        ".copier-answers.yml",
        ".gitignore",
        "README.md",
        "pyproject.toml",
        *(
            f"src/{package}/{module}.py"
            for module in (
                "__init__",
                "__main__",
                "config",
                "data",
                "model",
                "task",
            )
        ),
        *(
            f"tests/{module}.py"
            for module in (
                "conftest",
                "helpers",
                "test_checkpoints",
                "test_distribute",
                "test_contract",
                "test_learns",
                "test_outputs",
                "test_parity",
                "test_preflight",
                "test_search_space",
                "test_steps",
                "test_task",
                "test_trained",
            )
        ),
    }


# Under pytest-xdist (`-n 2 --dist loadgroup`, the suite's default), a render's tests stay on one
# worker, which renders it once.
@pytest.fixture(
    scope="module",
    params=[pytest.param(case, marks=pytest.mark.xdist_group(case[0])) for case in MATRIX],
    ids=[name for name, _ in MATRIX],
)
def project(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, answers = request.param
    dest = tmp_path_factory.mktemp("render") / str(answers["project_name"])
    render_project(dest, answers, quiet=True)
    return dest


def _package(project: Path) -> str:
    return project.name.replace("-", "_")


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)


def test_exact_file_set(project: Path) -> None:
    files = {str(p.relative_to(project)) for p in project.rglob("*") if p.is_file()}
    answers = (project / ".copier-answers.yml").read_text()
    optimizers = re.search(r"^optimizers: (\S+)$", answers, flags=re.M)
    assert optimizers is not None, answers
    shapes = re.search(r"^shapes: (\S+)$", answers, flags=re.M)
    expected = expected_files(
        _package(project), optimizers.group(1), shapes.group(1) if shapes else "fixed"
    )
    assert files == expected


def test_the_engine_is_the_template_s_bytes(project: Path) -> None:
    # The engine is copied, never rendered: every answer gets the same files, byte for byte.
    engine = project / "src" / _package(project) / "engine"
    for module in ENGINE_MODULES:
        source = TEMPLATE_ENGINE / f"{module}.py"
        assert (engine / f"{module}.py").read_bytes() == source.read_bytes(), module


def test_no_jinja_left(project: Path) -> None:
    leftovers = [
        f"{path.relative_to(project)}: {line.strip()}"
        for path in project.rglob("*")
        if path.is_file()
        for line in path.read_text().splitlines()
        if re.search(r"\{\{|\{%|%\}|\}\}", line)
    ]
    assert leftovers == []


def test_answers_recorded(project: Path) -> None:
    answers = (project / ".copier-answers.yml").read_text()
    assert f"project_name: {project.name}" in answers
    assert "_src_path:" in answers


def test_compiles(project: Path) -> None:
    assert compileall.compile_dir(project, quiet=1, force=True, legacy=False)
    for cache in project.rglob("__pycache__"):
        for pyc in cache.iterdir():
            pyc.unlink()
        cache.rmdir()


def test_ruff_clean(project: Path) -> None:
    for args in (["check", "--no-cache", "."], ["format", "--check", "--no-cache", "."]):
        result = _run([sys.executable, "-m", "ruff", *args], project)
        assert result.returncode == 0, result.stdout + result.stderr


# Every render runs its own tests' fast ones (those of ANSWERS_ONLY, below, a share of them);
# these run the slow ones too (subprocesses). The slow engine tests (processes stopped and
# resumed, a preempted multi-worker run, a resume under load) are the same code for every kind of
# project, so the default project runs them. The other backbone-head project trains two workers
# (its frozen first epoch changes which variables every worker updates).
WITH_SLOW_TESTS = {
    "sparse-logits-default": [],
    "backbone-head-one-hot-probs-image": [
        "--deselect",
        "tests/test_contract.py::"
        "test_labels_with_impossible_values_fail_in_one_line_on_the_command_line",
    ],
}

# A project's own tests (template/tests/) test what its answers decide, and run in every render
# that has them: parity with model.fit, learning, its step's one trace, the label contract and
# its guard, check and the trained model's outputs on its model, its step's exactness on replicas
# and on resume, sequences, backbone-head, the GAN. The engine's tests that need a whole project
# (tests/engine/in_projects/, rendered into a project by engine_tests.add_engine_tests) test code
# that is the same whatever the answers: each runs in the renders ENGINE_WIDE lists for it, which
# between them take every branch of the test on the answers and every kind of task, pipeline,
# label encoding and run defaults that the engine treats apart. The covering renders:
DEFAULT = "sparse-logits-default"  # sparse labels, logits, the offline dataset's shape
ONE_HOT_PROBS = "one-hot-probs-default"  # the other encoding, probabilities
BINARY = "binary-probs-default"  # one sigmoid unit: its own losses, metrics and outputs
VARIABLE = "sparse-logits-variable"  # token-id sequences: sequences.py instead of batches.py
BACKBONE_HEAD = "backbone-head-sparse-logits-default"  # two optimizers, a frozen first epoch
MIRRORED_BF16 = "sparse-logits-image-mirrored-bf16"  # a run's defaults: 3 replicas, bfloat16
GAN = "gan"  # its own task, models, checkpoints and optimizers
ENGINE_WIDE: dict[str, tuple[str, ...]] = {
    # Processes stopped and resumed (all slow): the same interrupts.py in every project.
    "tests/test_signals.py": (DEFAULT,),
    # The tests branch on `optimizers` alone (the task's callbacks) and train on one device in
    # float32 whatever the project's defaults.
    "tests/test_callbacks.py": (DEFAULT, BACKBONE_HEAD, GAN),
    # Two workers: the tests branch on `optimizers` alone. Two workers train the other
    # backbone-head project too (ANSWERS_ONLY).
    "tests/test_multi_worker.py": (DEFAULT, BACKBONE_HEAD, GAN),
    # The loop: the tests branch on `optimizers` and `shapes`, and the command-line runs train
    # with the project's defaults.
    "tests/test_loop.py": (DEFAULT, VARIABLE, BACKBONE_HEAD, MIRRORED_BF16),
    # The non-finite guards: the tests branch on `optimizers` and `shapes`.
    "tests/test_guards.py": (DEFAULT, VARIABLE, BACKBONE_HEAD),
    # What a checkpoint saves differs by task and by input pipeline (sequences); the runs train
    # with the project's defaults (the tests branch on a mirrored strategy).
    "tests/test_resume.py": (DEFAULT, VARIABLE, BACKBONE_HEAD, MIRRORED_BF16, GAN),
    # Datasets that repeat forever, read by steps_per_epoch, and a dict of named inputs, on the
    # tests' own two-input model; the tests branch on `optimizers` and `shapes`.
    "tests/test_parity_inputs.py": (DEFAULT, VARIABLE, BACKBONE_HEAD),
    # Micro-batches on replicas, in float16 with clipping, resumed inside a group; mixed
    # precision and the checks of a model's scope and output dtype.
    "tests/test_replicas.py": (DEFAULT, VARIABLE, BACKBONE_HEAD, GAN),
    # The data contract's conversions and refusals: each label encoding (the other two in
    # ANSWERS_ONLY) and token-id sequences.
    "tests/test_data_forms.py": (DEFAULT, VARIABLE),
    # `check` on bad, weighted and dict datasets: each label encoding (ANSWERS_ONLY too).
    "tests/test_check.py": (DEFAULT, VARIABLE, BACKBONE_HEAD),
    # None gradients, named or refused (engine/gradients.py): the tests do not branch.
    "tests/test_gradients.py": (DEFAULT,),
    # The command line's refusals around a finished run: the tests branch on the task (the
    # input's shape only leaves out a flag).
    "tests/test_commands.py": (DEFAULT, GAN),
    # Sweeps: the same engine/sweep.py for every project with a search space (the GAN has none).
    "tests/test_sweep.py": (DEFAULT,),
    # MLflow tracking, resumed and nested: the tests branch on the task (a GAN's figures and
    # answers differ).
    "tests/test_tracking.py": (DEFAULT, GAN),
    # `profile` and its verdicts: the engine's loop on the project's own data, model and task
    # (the tests do not branch; a GAN's task and single-tensor batches too).
    "tests/test_profile.py": (DEFAULT, GAN),
}


# What the answers decide, for the renders below, which differ from the full renders (DEFAULT,
# VARIABLE, BACKBONE_HEAD, MIRRORED_BF16, GAN) only in the label encoding, logits or the
# input's shape: these renders run the tests of their own config, data, model and task: parity
# with model.fit, that the model learns its data, its step on replicas and on resume, the label
# contract and the model's outputs. The other backbone-head render adds its own file and two
# workers training it (its frozen first epoch changes which variables every worker updates).
ANSWER_TESTS = (
    "tests/test_parity.py::test_custom_loop_matches_model_fit",
    "tests/test_distribute.py::test_replicas_train_exactly_as_one_device",
    "tests/test_checkpoints.py::test_a_stopped_run_resumes_bit_for_bit",
    "tests/test_learns.py",
    "tests/test_task.py",
    "tests/test_contract.py",
    "tests/test_outputs.py",
)
# What else a label encoding decides: the outputs `predict` writes, the loss `check` expects at
# initialisation, the loss against Keras's for the encoding; and the engine's conversions of
# labels in that encoding, and `check` on them.
ENCODING_TESTS = (
    "tests/test_trained.py",
    "tests/test_preflight.py",
    "tests/test_steps.py",
    "tests/test_data_forms.py",
    "tests/test_check.py",
)
ANSWERS_ONLY = {
    ONE_HOT_PROBS: (*ANSWER_TESTS, *ENCODING_TESTS),
    BINARY: (*ANSWER_TESTS, *ENCODING_TESTS),
    "sparse-probs-default": ANSWER_TESTS,
    "one-hot-logits-default": ANSWER_TESTS,
    "binary-logits-default": ANSWER_TESTS,
    "one-hot-probs-image": ANSWER_TESTS,
    "binary-logits-image": ANSWER_TESTS,
    "one-hot-probs-variable": ANSWER_TESTS,
    "binary-logits-variable": ANSWER_TESTS,
    "backbone-head-binary-logits-variable": (*ANSWER_TESTS, "tests/test_backbone_head.py"),
    "backbone-head-one-hot-probs-image": (
        *ANSWER_TESTS,
        "tests/test_backbone_head.py",
        "tests/test_multi_worker.py::test_two_workers_train_exactly_as_one_process",
    ),
}
ENGINE_TESTS = engine_test_files()


def _engine_tests_in(name: str) -> set[str]:
    """The engine's test files that render `name` runs, added to it before its tests run."""
    listed = [test for test, renders in ENGINE_WIDE.items() if name in renders]
    listed += ANSWERS_ONLY.get(name, ())
    return {test.partition("::")[0] for test in listed} & set(ENGINE_TESTS)


def _generated_test_args(name: str) -> list[str]:
    """The pytest command that runs render `name`'s share of its tests and the engine's."""
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    args += WITH_SLOW_TESTS.get(name, ["-m", "not slow"])
    if name in ANSWERS_ONLY:
        return [*args, *ANSWERS_ONLY[name]]
    return args


# Image renders that are rendered and checked (file set, Jinja, compileall, ruff, README) but
# whose own tests do not run: each label encoding runs its tests with the CNN in another image
# render (sparse logits in MIRRORED_BF16, one-hot probabilities, binary logits, and one-hot
# probabilities with two optimizers), and with the dense model both with logits and with
# probabilities; the CNN is the same for logits and probabilities but for its last layer.
RENDERED_ONLY = frozenset({"sparse-probs-image", "one-hot-logits-image", "binary-probs-image"})
# Render name -> the pytest command its generated tests run with.
GENERATED_TEST_ARGS = {
    name: _generated_test_args(name) for name, _ in MATRIX if name not in RENDERED_ONLY
}


def _expected_cost(name: str) -> tuple[bool, bool, bool]:
    """Slow tests take longest, then a full render's suite, then the CNN of an image shape or
    the GAN's two models (each twice a dense classifier's time or more)."""
    answers = dict(MATRIX)[name]
    heavy = (
        str(answers.get("input_shape", "")).count(",") == 2 or answers.get("optimizers") == "gan"
    )
    full = name not in ANSWERS_ONLY
    return full and name in WITH_SLOW_TESTS, full, heavy


# The longest first, so that none starts last and runs on alone: pytest-xdist's two workers
# (the suite's default) take them in this order, two projects' suites side by side.
@pytest.mark.parametrize("name", sorted(GENERATED_TEST_ARGS, key=_expected_cost, reverse=True))
def test_generated_tests_pass(name: str, tmp_path: Path) -> None:
    dest = tmp_path / str(dict(MATRIX)[name]["project_name"])
    render_project(dest, dict(MATRIX)[name], quiet=True)
    add_engine_tests(dest, _engine_tests_in(name))
    result = _run(GENERATED_TEST_ARGS[name], dest)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-4000:]
    assert re.search(r"\b\d+ passed\b", result.stdout), result.stdout
    assert "skipped" not in result.stdout, result.stdout


TEMPLATE_TESTS = Path(__file__).resolve().parent.parent / "template" / "tests"


def _generated_test_files() -> dict[str, str]:
    """Each test file the template can render (`tests/test_x.py`) -> its template's text."""
    files = {
        "tests/" + re.sub(r"\{%.*?%\}", "", path.name).removesuffix(".jinja"): path
        for path in TEMPLATE_TESTS.glob("*.jinja")
    }
    return {
        name: path.read_text() for name, path in files.items() if name.startswith("tests/test_")
    }


def _renders_with(path: str) -> set[str]:
    """The renders of the matrix that have generated test file `path`."""
    return {
        name
        for name, answers in MATRIX
        if path
        in expected_files(
            str(answers["project_name"]).replace("-", "_"),
            str(answers.get("optimizers", "single")),
            str(answers.get("shapes", "fixed")),
        )
    }


def _option_values(args: list[str], option: str) -> set[str]:
    return {value for flag, value in itertools.pairwise(args) if flag == option}


def test_every_generated_test_file_runs_in_some_render() -> None:
    files = _generated_test_files()
    assert "tests/test_parity.py" in files and "tests/test_gan.py" in files, sorted(files)
    unrun = []
    for path, text in files.items():
        runs_in = {
            name
            for name in _renders_with(path) & set(GENERATED_TEST_ARGS)
            if (name not in ANSWERS_ONLY or path in ANSWERS_ONLY[name])
            # A file whose every test is slow runs only where slow tests run.
            and (name in WITH_SLOW_TESTS or "pytestmark = pytest.mark.slow" not in text)
        }
        if not runs_in:
            unrun.append(path)
    assert unrun == []


def test_every_engine_test_file_runs_in_some_render() -> None:
    assert "tests/test_loop.py" in ENGINE_TESTS and "tests/test_signals.py" in ENGINE_TESTS
    unrun = []
    for path, text in ENGINE_TESTS.items():
        runs_in = {
            name
            for name in GENERATED_TEST_ARGS
            if path in _engine_tests_in(name)
            and (name in WITH_SLOW_TESTS or "pytestmark = pytest.mark.slow" not in text)
        }
        if not runs_in:
            unrun.append(path)
    assert unrun == []
    # Moved out of the projects: no project renders a file of the same name.
    assert not set(ENGINE_TESTS) & set(_generated_test_files())


def test_the_selection_names_renders_files_and_tests_that_exist() -> None:
    # A renamed render, file or test would otherwise drop out of the selection unnoticed.
    files = {**_generated_test_files(), **ENGINE_TESTS}
    names = {name for name, _ in MATRIX}
    assert set(WITH_SLOW_TESTS) | RENDERED_ONLY | set(ANSWERS_ONLY) <= names
    assert not RENDERED_ONLY & set(ANSWERS_ONLY)
    # An engine-wide test runs in full renders, never in one that runs only its answers' tests.
    partial = RENDERED_ONLY | set(ANSWERS_ONLY)
    assert not partial & {r for renders in ENGINE_WIDE.values() for r in renders}
    for name, tests in ANSWERS_ONLY.items():
        for test in tests:
            path, _, function = test.partition("::")
            assert path in ENGINE_TESTS or name in _renders_with(path), (name, test)
            assert not function or re.search(rf"^def {function}\(", files[path], flags=re.M), test
    # ENGINE_WIDE names whole files of the engine's tests.
    assert set(ENGINE_WIDE) <= set(ENGINE_TESTS), set(ENGINE_WIDE) - set(ENGINE_TESTS)
    for args in WITH_SLOW_TESTS.values():
        for test in _option_values(args, "--deselect"):
            path, _, function = test.partition("::")
            assert re.search(rf"^def {function}\(", files.get(path, ""), flags=re.M), test


def test_the_engine_s_tests_render_clean_where_they_run(project: Path, tmp_path: Path) -> None:
    # Rendered into a copy of the project as test_generated_tests_pass renders them: no Jinja
    # left, ruff-clean with the project's settings.
    name = RENDER_OF[project.name]
    if not _engine_tests_in(name):
        return
    copy = tmp_path / project.name
    shutil.copytree(project, copy)
    added = add_engine_tests(copy, _engine_tests_in(name))
    leftovers = [
        f"{path.name}: {line.strip()}"
        for path in added
        for line in path.read_text().splitlines()
        if re.search(r"\{\{|\{%|%\}|\}\}", line)
    ]
    assert leftovers == []
    for args in (["check", "--no-cache"], ["format", "--check", "--no-cache"]):
        result = _run([sys.executable, "-m", "ruff", *args, *map(str, added)], copy)
        assert result.returncode == 0, result.stdout + result.stderr


def test_readme_cites_only_tests_that_exist(project: Path) -> None:
    readme = (project / "README.md").read_text()
    cited = set(re.findall(r"`(test_\w+)`", readme))
    defined = {
        name
        for path in (project / "tests").glob("test_*.py")
        for name in re.findall(r"^def (test_\w+)", path.read_text(), flags=re.M)
    }
    assert cited, "the README cites no test"
    assert cited <= defined, sorted(cited - defined)


def test_readme_s_step_code_is_the_tested_code(project: Path) -> None:
    # Each line of the README's code for a step on the whole batch is in the step that
    # tests/test_task.py runs on one device and on two replicas.
    readme = (project / "README.md").read_text()
    if "only_if=" not in readme:
        return  # The GAN's README: its steps are gan.py's.
    block = re.search(r"```python\n(# No update for a batch.*?)```", readme, flags=re.S)
    assert block, "the README's conditional update is gone"
    tested = (project / "tests" / "test_task.py").read_text()
    code = [line for line in block.group(1).splitlines() if not line.startswith("#")]
    assert code and all(f"        {line}\n" in tested for line in code), code


def test_readme_offers_the_fast_tests(project: Path) -> None:
    # The whole suite takes minutes; the README gives the subset without the slow tests too.
    readme = (project / "README.md").read_text()
    assert re.search(r'^pytest -m "not slow" +# .*\npytest +# all', readme, flags=re.M), readme
    marker = re.search(r'^markers = \["slow: ', (project / "pyproject.toml").read_text(), re.M)
    assert marker, "the slow marker must be declared"
    tests = (project / "tests").glob("test_*.py")
    assert any("pytest.mark.slow" in path.read_text() for path in tests), "no test is slow"


def test_readme_lists_every_source_file(project: Path) -> None:
    readme = (project / "README.md").read_text()
    package = project / "src" / _package(project)
    listed = set(re.findall(rf"`src/{_package(project)}/((?:engine/)?\w+\.py)`", readme))
    assert listed == {str(path.relative_to(package)) for path in package.rglob("*.py")}
