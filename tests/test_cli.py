"""The `scaffold` command line: flags come from copier.yml, bad input fails cleanly, nothing leaks.

These tests render projects but never run TensorFlow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
import yaml
from typer.testing import CliRunner

import scaffold.questions
from scaffold import __version__
from scaffold.cli import app
from scaffold.questions import config_path, load_questions

runner = CliRunner()

# Flags of `scaffold new` that answer no question.
CLI_FLAGS = {"data", "template", "vcs_ref", "git", "yes", "force", "pretend", "quiet"}


def invoke(*args: object):
    return runner.invoke(app, [str(arg) for arg in args])


def new_options() -> dict[str, object]:
    command = typer.main.get_command(app).commands["new"]
    return {param.name: param for param in command.params if param.param_type_name == "option"}


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` with its bytes (None for a directory), `.git` aside."""
    return {
        str(path.relative_to(root)): None if path.is_dir() else path.read_bytes()
        for path in sorted(root.rglob("*"))
        if ".git" not in path.relative_to(root).parts
    }


def recorded_answers(project: Path) -> dict[str, object]:
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text(encoding="utf-8"))
    answers.pop("_commit", None)
    return answers


# --- the flags are read from copier.yml ------------------------------------------------------

# Questions added to a copy of copier.yml: a float a GAN is not asked, a choice, and a bool that
# only fixed shapes ask.
NEW_QUESTIONS = """
dropout:
  type: float
  help: Dropout rate of the head
  default: 0.1
  when: "{{ optimizers != 'gan' }}"

activation:
  type: str
  help: The hidden layers' activation
  default: relu
  choices:
    "ReLU: max(x, 0)": relu
    "GELU: smooth": gelu

augment:
  type: bool
  help: Augment inputs
  default: false
  when: "{{ shapes == 'fixed' }}"
"""

# Loads the CLI over the copy, with create_project printing the answers it would render.
RUN_WITH_COPY = """
import json, sys
from pathlib import Path
import scaffold.new, scaffold.questions
from typer.testing import CliRunner

scaffold.questions.config_path = lambda: Path(sys.argv[1])

def create_project(dest, answers, **options):
    print(json.dumps(answers))
    raise SystemExit(0)

scaffold.new.create_project = create_project
from scaffold.cli import app

for args in json.loads(sys.argv[2]):
    result = CliRunner().invoke(app, args, prog_name="scaffold")
    print(json.dumps([result.exit_code, result.output]))
"""


def test_a_new_question_gets_its_flag_from_copier_yml(tmp_path: Path) -> None:
    config = tmp_path / "copier.yml"
    config.write_text(config_path().read_text(encoding="utf-8") + NEW_QUESTIONS, encoding="utf-8")
    runs = [
        ["new", "--help"],
        ["new", "p", "--yes", "--dropout", "0.5", "--activation", "gelu", "--augment"],
        ["new", "p", "--yes", "--activation", "gelo"],
        ["new", "p", "--yes", "--dropout", "high"],
        ["new", "p", "--yes", "--optimizers", "gan", "--dropout", "0.5"],
        ["new", "p", "--yes", "--shapes", "variable", "--no-augment"],
    ]
    done = subprocess.run(
        [sys.executable, "-c", RUN_WITH_COPY, str(config), json.dumps(runs)],
        capture_output=True,
        text=True,
        env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")},
    )
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    (code, shown), (code_ok, rendered), *errors = results
    assert code == 0, shown
    shown = " ".join(shown.split())
    assert "--dropout <float> Dropout rate of the head [default: 0.1]" in shown
    assert "--activation <relu|gelu> The hidden layers' activation [default: relu]" in shown
    assert "--augment / --no-augment Augment inputs [default: no-augment]" in shown
    assert code_ok == 0, rendered
    answers = json.loads(rendered)
    assert (answers["dropout"], answers["activation"], answers["augment"]) == (0.5, "gelu", True)
    assert errors == [
        [
            2,
            "Error: --activation 'gelo' is not one of relu, gelu; "
            "did you mean --activation gelu?\n",
        ],
        [2, "Error: --dropout must be a number, got 'high'; e.g. --dropout 0.1\n"],
        [
            2,
            "Error: --dropout does not apply to --optimizers gan; "
            "drop --dropout or choose --optimizers single or backbone-head\n",
        ],
        [
            2,
            "Error: --augment does not apply to --shapes variable; "
            "drop --augment or choose --shapes fixed\n",
        ],
    ]


def test_cached_questions_follow_copier_yml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    config = tmp_path / "copier.yml"
    config.write_text(config_path().read_text(encoding="utf-8"), encoding="utf-8")
    parsed = load_questions(config)
    (cached,) = (tmp_path / "cache" / "scaffold").iterdir()
    cached.write_text("[{", encoding="utf-8")  # a cache cut short: parsed again
    scaffold.questions._load.cache_clear()
    assert load_questions(config) == parsed
    config.write_text(config.read_text(encoding="utf-8") + NEW_QUESTIONS, encoding="utf-8")
    scaffold.questions._load.cache_clear()
    assert list(load_questions(config)) == [*parsed, "dropout", "activation", "augment"]


def test_every_flag_answers_a_question() -> None:
    questions = load_questions()
    for name in new_options().keys() - CLI_FLAGS:
        assert name in questions, f"--{name.replace('_', '-')} answers no question of copier.yml"
        assert questions[name].asked, f"'{name}' is derived (when: false) and must have no flag"


# --- bad input: exit 2, one exact line, nothing written --------------------------------------

BAD_INPUT = {
    "project-name-space": (
        ["--project-name", "my proj"],
        "project name 'my proj' is invalid; use a letter, then letters, digits, - or _",
    ),
    "package-name-digit": (
        ["--package-name", "1pkg"],
        "package name '1pkg' is invalid; use a lowercase letter, then a-z, 0-9 or _",
    ),
    "package-name-keyword": (
        ["--package-name", "class"],
        "package name 'class' is a Python keyword; choose another name",
    ),
    **{
        f"package-name-{module}": (
            ["--package-name", module],
            f"package name '{module}' would shadow the module {module} of the project's "
            "dependencies; choose another name",
        )
        # What TensorFlow imports: a package so named breaks `import tensorflow`, or (h5py)
        # `model.save` after training.
        for module in ("h5py", "absl", "google", "six", "ml_dtypes")
    },
    "num-classes-1": (
        ["--num-classes", "1"],
        "num_classes must be 2 or more, got 1; for one yes/no output use binary labels",
    ),
    "num-classes-too-many": (
        ["--num-classes", "100000"],
        "num_classes 100000 is more than synthetic data can teach; use 200 or fewer",
    ),
    "epochs-huge": (
        ["--epochs", str(2**70)],
        f"epochs must be 100000 or fewer, got {2**70}; e.g. 10",
    ),
    "batch-size-huge": (
        ["--batch-size", "1000000"],
        "batch_size must be 65536 or fewer, got 1000000; e.g. 32",
    ),
    "vocab-size-huge": (
        ["--shapes", "variable", "--vocab-size", "10000000"],
        "vocab_size must be 100000 or fewer, got 10000000; e.g. 1000",
    ),
    "num-classes-binary": (
        ["--num-classes", "3", "--labels", "binary"],
        "--num-classes does not apply to --labels binary; "
        "drop --num-classes or choose --labels sparse or one-hot",
    ),
    "data-num-classes-binary": (
        ["--data", "num_classes=3", "--data", "labels=binary"],
        "num_classes does not apply to binary labels; drop it or choose labels sparse or one-hot",
    ),
    "input-shape-variable": (
        ["--input-shape", "64", "--shapes", "variable"],
        "--input-shape does not apply to --shapes variable; "
        "drop --input-shape or choose --shapes fixed",
    ),
    "vocab-size-fixed": (
        ["--vocab-size", "500"],
        "--vocab-size does not apply to --shapes fixed; "
        "drop --vocab-size or choose --shapes variable",
    ),
    "data-input-shape-variable": (
        ["--data", "input_shape=64", "--shapes", "variable"],
        "input_shape does not apply to variable shapes; drop it or choose shapes fixed",
    ),
    "vocab-size-2": (
        ["--shapes", "variable", "--vocab-size", "2"],
        "vocab_size must be 3 or more (padding and 2 tokens), got 2; e.g. 1000",
    ),
    "labels-gan": (
        ["--optimizers", "gan", "--labels", "binary"],
        "--labels does not apply to --optimizers gan; "
        "drop --labels or choose --optimizers single or backbone-head",
    ),
    "num-classes-gan": (
        ["--num-classes", "3", "--optimizers", "gan"],
        "--num-classes does not apply to --optimizers gan; "
        "drop --num-classes or choose --optimizers single or backbone-head",
    ),
    "data-logits-gan": (
        ["--data", "optimizers=gan", "--data", "logits=false"],
        "logits does not apply to a GAN, whose discriminator always outputs logits; "
        "drop it or choose optimizers single or backbone-head",
    ),
    "data-input-shape-gan": (
        ["--optimizers", "gan", "--data", "input_shape=64"],
        "input_shape does not apply to a GAN, which makes 8x8x1 digit images; "
        "drop it or choose optimizers single or backbone-head",
    ),
    "shapes-gan": (
        ["--optimizers", "gan", "--shapes", "variable"],
        "--shapes does not apply to --optimizers gan; "
        "drop --shapes or choose --optimizers single or backbone-head",
    ),
    "input-shape-letter": (
        ["--input-shape", "28,x"],
        "input shape '28,x' is invalid; use 1-3 positive integers, e.g. 64 or 28,28,1",
    ),
    "input-shape-zero": (
        ["--input-shape", "0"],
        "input shape '0' is invalid; use 1-3 positive integers, e.g. 64 or 28,28,1",
    ),
    "data-labels-multi": (
        ["--data", "labels=multi"],
        "labels 'multi' is not one of sparse, one-hot, binary; pass --labels with one of them",
    ),
    "data-malformed": (
        ["--data", "novalue"],
        "--data 'novalue' is not KEY=VALUE; write it as --data KEY=VALUE, "
        "e.g. --data labels=one-hot",
    ),
    "data-unknown-question": (
        ["--data", "label=binary"],
        "there is no question 'label'; did you mean 'labels'?",
    ),
    "data-derived-question": (
        ["--data", "dataset=digits"],
        "'dataset' is derived from the other answers and cannot be set; drop it",
    ),
    "data-not-a-number": (
        ["--data", "num_classes=ten"],
        "num_classes must be a whole number, got 'ten'; pass a whole number, "
        "e.g. --data num_classes=10",
    ),
    "data-not-a-bool": (
        ["--data", "logits=maybe"],
        "logits must be true or false, got 'maybe'; pass true or false, e.g. --data logits=true",
    ),
    "given-twice": (
        ["--labels", "sparse", "--data", "labels=binary"],
        "labels is given twice, as --labels and as --data labels; give it once",
    ),
}


def test_synthetic_data_is_named_at_render_time(tmp_path: Path) -> None:
    result = invoke("new", tmp_path / "proj", "--yes", "--num-classes", "50", "--no-git")
    assert result.exit_code == 0, result.output
    assert (
        "note: no offline dataset has input shape 64 and 50 classes; data.py generates "
        "synthetic data (Gaussian blobs): replace it with yours\n"
    ) in result.stderr
    result = invoke("new", tmp_path / "digits", "--yes", "--no-git")
    assert "no offline dataset" not in result.output


# Learning rates that would write `learning_rate: float = nan` (or inf) into config.py.
BAD_LEARNING_RATES = ["nan", "inf", "1e309", "-0.0"]
for _rate in BAD_LEARNING_RATES:
    _message = f"learning_rate must be between 1e-12 and 10, got {float(_rate)}; e.g. 0.001"
    BAD_INPUT[f"learning-rate-{_rate}"] = (["--learning-rate", _rate], _message)
    BAD_INPUT[f"data-learning-rate-{_rate}"] = (["--data", f"learning_rate={_rate}"], _message)


@pytest.mark.parametrize(("args", "message"), BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_fails_cleanly(tmp_path: Path, args: list[str], message: str) -> None:
    dest = tmp_path / "new" / "proj"
    result = invoke("new", dest, "--yes", *args)
    assert result.exit_code == 2, result.output
    assert result.output == f"Error: {message}\n"
    assert not (tmp_path / "new").exists(), "a failed render must leave nothing behind"


def test_invalid_default_names_its_flag(tmp_path: Path) -> None:
    # package_name defaults to the project name, here DEST's name, a keyword.
    result = invoke("new", tmp_path / "class", "--yes")
    assert result.exit_code == 2, result.output
    assert result.output == (
        "Error: package name 'class' is a Python keyword; choose another name "
        "(pass --package-name to set it)\n"
    )
    assert not (tmp_path / "class").exists()


def test_invalid_project_name_from_dest_says_so(tmp_path: Path) -> None:
    result = invoke("new", tmp_path / "my proj", "--yes")
    assert result.exit_code == 2, result.output
    assert result.output == (
        "Error: project name 'my proj' is invalid; use a letter, then letters, digits, - or _ "
        "(it is DEST's name; pass --project-name to set another)\n"
    )
    assert not (tmp_path / "my proj").exists()


# Mistakes in the command line itself, which Typer catches before scaffold runs: our one line.
USAGE_ERRORS = {
    "choice-close": (
        ["new", "p", "--labels", "onehot"],
        "--labels 'onehot' is not one of sparse, one-hot, binary; did you mean --labels one-hot?",
    ),
    "choice-far": (
        ["new", "p", "--labels", "multi"],
        "--labels 'multi' is not one of sparse, one-hot, binary; e.g. --labels sparse",
    ),
    "choice-equals": (
        ["new", "p", "--optimizers=gans"],
        "--optimizers 'gans' is not one of single, backbone-head, gan; "
        "did you mean --optimizers gan?",
    ),
    "not-an-int": (
        ["new", "p", "--num-classes", "ten"],
        "--num-classes must be a whole number, got 'ten'; e.g. --num-classes 10",
    ),
    "not-a-float": (
        ["new", "p", "--learning-rate", "fast"],
        "--learning-rate must be a number, got 'fast'; e.g. --learning-rate 0.001",
    ),
    "unknown-option": (
        ["new", "p", "--lables", "sparse"],
        "scaffold new has no option --lables; did you mean --labels?",
    ),
    "no-value": (["new", "p", "--labels"], "--labels needs a value; see 'scaffold new --help'"),
    "no-dest": (["new"], "scaffold new needs DEST; see 'scaffold new --help'"),
    "unknown-command": (["nw", "p"], "scaffold has no command 'nw'; did you mean scaffold new?"),
    "update-unknown-option": (
        ["update", "--dat", "x=1"],
        "scaffold update has no option --dat; did you mean --data?",
    ),
}


@pytest.mark.parametrize(("args", "message"), USAGE_ERRORS.values(), ids=USAGE_ERRORS.keys())
def test_usage_errors_are_our_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args, prog_name="scaffold")
    assert result.exit_code == 2, result.output
    assert result.output == f"Error: {message}\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["new", "update", "examples"])
def test_help_reads_plainly(command: str) -> None:
    result = runner.invoke(app, [command, "--help"], prog_name="scaffold")
    assert result.exit_code == 0, result.output
    usage = result.output.splitlines()[0]
    assert "{" not in usage and "}" not in usage, usage
    assert "[default: (" not in " ".join(result.output.split()), result.output
    if command == "new":
        assert usage == "Usage: scaffold new [OPTIONS] DEST"
        assert "[default: 10]" in " ".join(result.output.split())


def test_shell_completion_is_offered() -> None:
    result = runner.invoke(app, ["--help"], prog_name="scaffold")
    assert result.exit_code == 0, result.output
    assert "--install-completion" in result.output
    assert "--show-completion" in result.output
    result = runner.invoke(app, ["--show-completion", "bash"], prog_name="scaffold")
    assert result.exit_code == 0, result.output
    assert "complete" in result.output and "scaffold" in result.output


def test_no_terminal_without_yes(tmp_path: Path) -> None:
    dest = tmp_path / "proj"
    result = invoke("new", dest)  # CliRunner's stdin is not a TTY
    assert result.exit_code == 2, result.output
    assert result.output == (
        "Error: no terminal to ask questions on; "
        "pass --yes to take the defaults for questions not given as flags\n"
    )
    assert not dest.exists()


def test_non_empty_dest_without_force(tmp_path: Path) -> None:
    dest = tmp_path / "proj"
    dest.mkdir()
    (dest / "notes.txt").write_bytes(b"mine\n")
    before = tree(dest)
    result = invoke("new", dest, "--yes")
    assert result.exit_code == 2, result.output
    assert result.output == (
        f"Error: destination '{dest}' exists and is not empty; "
        "choose a new directory or pass --force to render into it\n"
    )
    assert tree(dest) == before


def test_dest_under_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("mine\n")
    result = invoke("new", tmp_path / "afile" / "sub" / "proj", "--yes")
    assert result.exit_code == 2, result.output
    assert result.output == (
        f"Error: cannot create '{tmp_path / 'afile' / 'sub' / 'proj'}': "
        f"'{tmp_path / 'afile'}' is a file, not a directory; choose a DEST outside it\n"
    )
    assert (tmp_path / "afile").read_text() == "mine\n"


def test_dest_name_too_long_is_one_line(tmp_path: Path) -> None:
    dest = tmp_path / ("x" * 300)
    result = invoke("new", dest, "--yes", "--project-name", "demo")
    assert result.exit_code == 2, result.output
    assert result.output == (
        f"Error: cannot write '{dest}': File name too long; "
        "choose a DEST in a directory you can write to\n"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_dest_in_proc_is_one_line() -> None:
    result = invoke("new", "/proc/scaffold-test", "--yes")
    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: cannot write '/proc/scaffold-test': "), result.output
    assert lines[0].endswith("; choose a DEST in a directory you can write to")


# --- what works --------------------------------------------------------------------------------


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0, result.output
    assert result.output == f"scaffold {__version__}\n"
    assert __version__ == "0.1.0"


def test_pretend_writes_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "proj"
    result = invoke("new", dest, "--yes", "--pretend")
    assert result.exit_code == 0, result.output
    assert "pyproject.toml" in result.output, "pretend should list what it would write"
    assert f"Pretend: nothing was written to {dest}." in result.output
    assert not dest.exists()


def test_force_renders_into_non_empty_dest(tmp_path: Path) -> None:
    dest = tmp_path / "proj"
    dest.mkdir()
    (dest / "notes.txt").write_bytes(b"mine\n")
    result = invoke("new", dest, "--yes", "--force", "--quiet")
    assert result.exit_code == 0, result.output
    assert (dest / "notes.txt").read_bytes() == b"mine\n"
    assert recorded_answers(dest)["project_name"] == "proj"
    assert (dest / "pyproject.toml").is_file()


def test_data_answers_like_flags(tmp_path: Path) -> None:
    by_flag, by_data = tmp_path / "by-flag", tmp_path / "by-data"
    common = ["--yes", "--quiet", "--project-name", "demo"]
    result = invoke("new", by_flag, *common, "--labels", "one-hot")
    assert result.exit_code == 0, result.output
    result = invoke("new", by_data, *common, "--data", "labels=one-hot")
    assert result.exit_code == 0, result.output
    assert recorded_answers(by_data)["labels"] == "one-hot"
    assert recorded_answers(by_data) == recorded_answers(by_flag)
    flag_tree, data_tree = tree(by_flag), tree(by_data)
    for files in (flag_tree, data_tree):
        del files[".copier-answers.yml"]  # differs only in Copier's throwaway _commit
    assert data_tree == flag_tree


def test_project_name_defaults_to_dest_name(tmp_path: Path) -> None:
    dest = tmp_path / "my-net"
    result = invoke("new", dest, "--yes")
    assert result.exit_code == 0, result.output
    answers = recorded_answers(dest)
    assert answers["project_name"] == "my-net"
    assert answers["package_name"] == "my_net"
    assert "python -m my_net train" in result.stdout


# --- start-up ----------------------------------------------------------------------------------

HEAVY = ("tensorflow", "copier", "yaml")


@pytest.mark.parametrize(
    "args", [["--help"], ["new", "--help"], ["update", "--help"]], ids=" ".join
)
def test_help_imports_nothing_heavy(args: list[str]) -> None:
    code = (
        "import json, sys\n"
        "from scaffold.cli import app\n"
        "try:\n"
        f"    app({args!r}, prog_name='scaffold')\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0, exit.code\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_console_script_help() -> None:
    script = Path(sys.executable).parent / "scaffold"
    if not script.exists():
        pytest.skip("scaffold is not installed; pip install -e .")
    done = subprocess.run([script, "--help"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "new" in done.stdout
    assert "examples" in done.stdout


# --- golden examples ---------------------------------------------------------------------------


def test_examples_check_reports_drift(tmp_path: Path) -> None:
    copy = tmp_path / "examples"
    result = invoke("examples", "--dir", copy)
    assert result.exit_code == 0, result.output
    result = invoke("examples", "--check", "--dir", copy)
    assert result.exit_code == 0, result.output

    answers_file = copy / "digits-sparse" / ".copier-answers.yml"
    answers_file.write_text(answers_file.read_text(encoding="utf-8") + "edited: true\n")
    (copy / "digits-sparse" / "pyproject.toml").unlink()
    result = invoke("examples", "--check", "--dir", copy)
    assert result.exit_code == 1, result.output
    assert "--- examples/digits-sparse/.copier-answers.yml (committed)" in result.stdout
    assert "-edited: true" in result.stdout
    assert "Only in rendered: examples/digits-sparse/pyproject.toml" in result.stdout
    assert "Error: the examples drifted from the template" in result.stderr
