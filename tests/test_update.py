"""Template updates: a project made by `scaffold new` takes later template versions, keeping the
user's work, through `scaffold update` and plain `copier update` alike.

Every test works on a temporary clone of this repository that holds the working tree (so
uncommitted template changes are tested too), tagged `v0.1.0`; a second commit, tagged `v0.2.0`,
changes a template-owned module. The real repository and its tags are never touched.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from scaffold import __version__, source
from scaffold.cli import app
from scaffold.questions import config_path, template_root

runner = CliRunner()

V1, V2 = "v0.1.0", "v0.2.0"
PACKAGE = "demo"
USER_OWNED = {f"src/{PACKAGE}/{name}" for name in ("config.py", "data.py", "model.py")}
TRAIN = f"src/{PACKAGE}/engine/train.py"
MODEL = f"src/{PACKAGE}/model.py"
TRAIN_TEMPLATE = "template/src/{{package_name}}/engine/train.py"
# What v0.2.0 of the template adds to a template-owned module.
TEMPLATE_FIX = (
    '\n\ndef template_fix() -> str:\n    """Added by v0.2.0 of the template."""\n'
    '    return "v0.2.0"\n'
)
# What a user adds to a user-owned module.
USER_EDIT = '\n\ndef my_model_note() -> str:\n    """Added by the user."""\n    return "mine"\n'
# Git without the machine's identity, so the tests run where none is configured.
GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@invalid", "-c", "commit.gpgsign=false"]


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run([*GIT, *args], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


def invoke(*args: object):
    return runner.invoke(app, [str(arg) for arg in args])


def files(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its bytes, `.git` and tool caches aside."""
    skip = {".git", "__pycache__", ".pytest_cache", ".ruff_cache", "runs"}
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not skip & set(path.relative_to(root).parts)
    }


def answers(project: Path) -> dict[str, object]:
    return yaml.safe_load((project / ".copier-answers.yml").read_text(encoding="utf-8"))


def state(project: Path) -> tuple[dict[str, bytes], str, str]:
    """Files, HEAD and `git status` of a project: what a refused update must leave alone."""
    head = git(project, "rev-parse", "HEAD") if (project / ".git").exists() else ""
    status = git(project, "status", "--porcelain") if head else ""
    return files(project), head, status


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clone of this repository holding its working tree at v0.1.0 and a fix at v0.2.0."""
    repo = tmp_path_factory.mktemp("template") / "scaffold"
    root = template_root()
    git(root.parent, "clone", "--quiet", "--no-tags", str(root), str(repo))
    git(repo, "rm", "-r", "--quiet", "--", ".")
    listed = git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    for name in filter(None, listed.split("\0")):
        if (root / name).is_file():  # a tracked file deleted in the working tree stays deleted
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, repo / name)
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "--allow-empty", "-m", "the working tree")
    git(repo, "tag", V1)
    with (repo / TRAIN_TEMPLATE).open("a", encoding="utf-8") as file:
        file.write(TEMPLATE_FIX)
    git(repo, "commit", "--quiet", "-am", "fix: a template-owned module changes")
    git(repo, "tag", V2)
    return repo


@pytest.fixture(autouse=True)
def _copier_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Copier caches remote templates per user; keep the file:// ones of these tests apart.
    monkeypatch.setenv("COPIER_CACHE_DIR", str(tmp_path / "copier-cache"))
    monkeypatch.delenv(source.TEMPLATE_ENV, raising=False)


def new(dest: Path, template: Path | str, *args: object) -> Path:
    result = invoke("new", dest, "--yes", "--project-name", PACKAGE, "--template", template, *args)
    assert result.exit_code == 0, result.output
    return dest


def commit_all(project: Path, message: str) -> None:
    git(project, "add", "--all")
    git(project, "commit", "--quiet", "-m", message)


def edit_user_files(project: Path) -> None:
    with (project / MODEL).open("a", encoding="utf-8") as file:
        file.write(USER_EDIT)
    (project / "NOTES.md").write_text("my notes\n", encoding="utf-8")
    commit_all(project, "my work")


# --- scaffold new records what an update needs -----------------------------------------------


def test_version_matches_the_release_tags() -> None:
    assert source.release_tag() == f"v{__version__}" == V1


def test_new_records_the_tag_and_makes_the_first_commit(tmp_path: Path, template: Path) -> None:
    result = invoke("new", tmp_path / "demo", "--yes", "--template", template)
    assert result.exit_code == 0, result.output
    project = tmp_path / "demo"
    recorded = answers(project)
    assert recorded["_src_path"] == str(template)
    assert recorded["_commit"] == V1
    assert f"Recorded template {template} at {V1}, for scaffold update." in result.output
    assert git(project, "status", "--porcelain") == ""
    assert git(project, "log", "--format=%s") == f"Generate demo from {template} at {V1}"
    assert TEMPLATE_FIX not in (project / TRAIN).read_text()


def test_new_with_relative_template_records_an_absolute_path(
    tmp_path: Path, template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(template.parent)
    new(tmp_path / "demo", template.name, "--no-git")
    assert answers(tmp_path / "demo")["_src_path"] == str(template)
    assert not (tmp_path / "demo" / ".git").exists()


def test_without_tags_a_project_records_the_commit_and_updates(
    tmp_path: Path, template: Path
) -> None:
    repo = tmp_path / "untagged"
    git(tmp_path, "clone", "--quiet", "--no-tags", str(template), str(repo))
    v1, v2 = git(repo, "rev-parse", "HEAD~1"), git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "--quiet", "-b", "old", "HEAD~1")
    # Uncommitted template work must never reach a project, nor a throwaway ref its record.
    (repo / "template" / "UNCOMMITTED.md").write_text("draft\n", encoding="utf-8")

    result = invoke(
        "new", tmp_path / "demo", "--yes", "--project-name", PACKAGE, "--template", repo
    )
    assert result.exit_code == 0, result.output
    project = tmp_path / "demo"
    assert f"note: the template checkout {repo} has uncommitted changes" in result.output
    assert git(repo, "rev-parse", f"{answers(project)['_commit']}^{{commit}}") == v1
    assert not (project / "UNCOMMITTED.md").exists()

    git(repo, "checkout", "--quiet", "-")  # the template's branch moves on to the fix
    result = invoke("update", project)
    assert result.exit_code == 0, result.output
    assert "has uncommitted changes" in result.output
    assert git(repo, "rev-parse", f"{answers(project)['_commit']}^{{commit}}") == v2
    assert (project / TRAIN).read_text().endswith(TEMPLATE_FIX)
    assert not (project / "UNCOMMITTED.md").exists()


def test_new_from_a_wheel_records_the_public_url(
    tmp_path: Path, template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An installed wheel has no checkout; a local bare repository stands in for the remote.
    bare = tmp_path / "remote.git"
    git(tmp_path, "clone", "--quiet", "--bare", str(template), str(bare))
    url = bare.as_uri()
    monkeypatch.setattr(source, "checkout", lambda: None)
    monkeypatch.setattr(source, "PUBLIC_TEMPLATE", url)
    result = invoke("new", tmp_path / "demo", "--yes", "--project-name", PACKAGE)
    assert result.exit_code == 0, result.output
    project = tmp_path / "demo"
    assert answers(project)["_src_path"] == url
    assert answers(project)["_commit"] == V1

    edit_user_files(project)
    result = invoke("update", project)
    assert result.exit_code == 0, result.output
    assert answers(project)["_commit"] == V2
    assert (project / TRAIN).read_text().endswith(TEMPLATE_FIX)
    assert (project / MODEL).read_text().endswith(USER_EDIT)


def test_scaffold_template_variable_overrides_the_checkout(
    tmp_path: Path, template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bare = tmp_path / "mirror.git"
    git(tmp_path, "clone", "--quiet", "--bare", str(template), str(bare))
    monkeypatch.setenv(source.TEMPLATE_ENV, bare.as_uri())
    result = invoke("new", tmp_path / "demo", "--yes", "--no-git", "--vcs-ref", V2)
    assert result.exit_code == 0, result.output
    assert answers(tmp_path / "demo")["_src_path"] == bare.as_uri()
    assert answers(tmp_path / "demo")["_commit"] == V2


def test_the_wheel_carries_copier_yml_where_scaffold_looks() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pyproject = tomllib.loads((template_root() / "pyproject.toml").read_text(encoding="utf-8"))
    wheel = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert wheel["force-include"] == {"copier.yml": "scaffold/copier.yml"}
    assert config_path() == template_root() / "copier.yml"  # a checkout reads its own


def test_new_commits_without_a_git_identity(
    tmp_path: Path, template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name in ("AUTHOR", "COMMITTER"):
        for part in ("NAME", "EMAIL"):
            monkeypatch.delenv(f"GIT_{name}_{part}", raising=False)
    monkeypatch.delenv("EMAIL", raising=False)
    project = new(tmp_path / "demo", template)
    assert git(project, "log", "--format=%an <%ae>") == "scaffold <scaffold@invalid>"
    assert git(project, "status", "--porcelain") == ""


def test_new_without_git_says_so_and_skips(tmp_path: Path, template: Path) -> None:
    bin_dir = tmp_path / "bin"  # a PATH without git
    bin_dir.mkdir()
    code = "import sys\nfrom scaffold.cli import app\napp(sys.argv[1:], prog_name='scaffold')\n"
    env = {**os.environ, "PATH": str(bin_dir)}
    project = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-c", code, "new", str(project), "--yes", "--template", str(template)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"note: git not found: rendering {template} as it is;" in done.stderr
    assert "note: git not found: the project is not a git repository" in done.stderr
    assert not (project / ".git").exists()
    assert "_commit" not in answers(project)
    assert (project / TRAIN).is_file()

    done = subprocess.run(
        [sys.executable, "-c", code, "update", str(project)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr == "Error: git not found; scaffold update merges with git: install git\n"


def test_new_inside_a_git_repository_makes_no_nested_one(tmp_path: Path, template: Path) -> None:
    git(tmp_path, "init", "--quiet")
    result = invoke("new", tmp_path / "demo", "--yes", "--template", template)
    assert result.exit_code == 0, result.output
    assert f"is inside the git repository {tmp_path.resolve()}" in result.output
    assert not (tmp_path / "demo" / ".git").exists()


@pytest.mark.parametrize("remote", [False, True], ids=["path", "url"])
def test_new_with_an_unknown_ref_fails_cleanly(
    tmp_path: Path, template: Path, remote: bool
) -> None:
    src = str(template)
    if remote:
        git(tmp_path, "clone", "--quiet", "--bare", src, str(tmp_path / "remote.git"))
        src = (tmp_path / "remote.git").as_uri()
    dest = tmp_path / "demo"
    result = invoke("new", dest, "--yes", "--template", src, "--vcs-ref", "v9.9.9")
    assert result.exit_code == 2, result.output
    assert result.output == (
        f"Error: template ref 'v9.9.9' not found in {src}; "
        "pass --vcs-ref with one of its tags, branches or commits\n"
    )
    assert not dest.exists()


def _run_scaffold(*args: object, cwd: Path | None = None, **env: str):
    """scaffold in a subprocess, its output redirected to files as a user's script would."""
    code = "import sys\nfrom scaffold.cli import app\napp(sys.argv[1:], prog_name='scaffold')\n"
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **env},
    )


@pytest.mark.parametrize("no_color", [False, True], ids=["plain", "NO_COLOR"])
def test_one_version_each_message_once_no_colour(
    tmp_path: Path, template: Path, no_color: bool
) -> None:
    # A template without tags: Copier alone says "No git tags found" three times per update.
    repo = tmp_path / "untagged"
    git(tmp_path, "clone", "--quiet", "--no-tags", str(template), str(repo))
    git(repo, "checkout", "--quiet", "-b", "old", "HEAD~1")
    env = {"NO_COLOR": "1"} if no_color else {}
    project = tmp_path / "demo"
    done = _run_scaffold("new", project, "--yes", "--template", repo, **env)
    assert done.returncode == 0, done.stdout + done.stderr
    commit = str(answers(project)["_commit"])
    output = done.stdout + done.stderr
    assert "\x1b[" not in output, "no colour codes in output that is not a terminal"
    assert "template version" not in output, "Copier's own version string"
    assert output.count(commit) == 1, output
    assert f"Recorded template {repo} at {commit}, for scaffold update." in done.stdout

    git(repo, "checkout", "--quiet", "-")
    done = _run_scaffold("update", project, **env)
    assert done.returncode == 0, done.stdout + done.stderr
    output = done.stdout + done.stderr
    assert "\x1b[" not in output
    assert "template version" not in output and "No git tags" not in output, output
    assert output.count("the template has no version tags") == 1, output
    new_commit = str(answers(project)["_commit"])
    assert f"from template {commit} to {new_commit}" in done.stdout


def test_ctrl_c_during_an_update_undoes_it(
    tmp_path: Path, template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import copier._main

    render_file = copier._main.Worker._render_file
    calls = {"count": 0, "at": None}

    def tripwire(*args, **kwargs):
        calls["count"] += 1
        if calls["count"] == calls["at"]:
            raise KeyboardInterrupt
        return render_file(*args, **kwargs)

    monkeypatch.setattr(copier._main.Worker, "_render_file", tripwire)
    clean = new(tmp_path / "clean" / "demo", template)
    calls["count"] = 0
    assert invoke("update", clean).exit_code == 0
    total = calls["count"]
    assert total > 10, "an update renders the old and the new version, then the project"

    edited = new(tmp_path / "edited" / "demo", template)
    edit_user_files(edited)
    for at in (1, total // 2, total):
        project = tmp_path / str(at) / "demo"
        shutil.copytree(edited, project, symlinks=True)  # its history too
        before = state(project)
        calls.update(count=0, at=at)
        result = invoke("update", project)
        assert result.exit_code == 130, result.output
        assert result.output == (
            f"Error: interrupted; the update was undone and '{project}' is as it was; "
            "run scaffold update again\n"
        )
        assert state(project) == before


# --- scaffold update ---------------------------------------------------------------------------


def test_v1_to_v2_brings_the_fix_and_keeps_the_users_work(tmp_path: Path, template: Path) -> None:
    project = new(tmp_path / "demo", template)
    edit_user_files(project)

    result = invoke("update", project)
    assert result.exit_code == 0, result.output
    assert f"Updated {project} from template {V1} to {V2}" in result.output
    assert (project / TRAIN).read_text().endswith(TEMPLATE_FIX)
    assert (project / MODEL).read_text().endswith(USER_EDIT)
    assert (project / "NOTES.md").read_text() == "my notes\n"
    assert answers(project)["_commit"] == V2
    assert git(project, "diff", "--name-only").splitlines() == [".copier-answers.yml", TRAIN]
    assert git(project, "ls-files", "--others", "--exclude-standard") == ""

    # The updated project still trains and matches model.fit with the user's model.py; the
    # matrix runs every project's whole suite, so these three files are enough here.
    modules = ["tests/test_learns.py", "tests/test_parity.py", "tests/test_steps.py"]
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *modules],
        cwd=project,
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert tests.returncode == 0, tests.stdout[-6000:] + tests.stderr[-3000:]


@pytest.mark.parametrize("conflict", [False, True], ids=["clean", "conflict"])
def test_plain_copier_update_gives_the_same_result(
    tmp_path: Path, template: Path, conflict: bool
) -> None:
    by_scaffold = new(tmp_path / "by-scaffold" / "demo", template)
    if conflict:
        with (by_scaffold / TRAIN).open("a", encoding="utf-8") as file:
            file.write(USER_EDIT)
    edit_user_files(by_scaffold)
    by_copier = tmp_path / "by-copier" / "demo"
    shutil.copytree(by_scaffold, by_copier)

    result = invoke("update", by_scaffold)
    assert result.exit_code == (1 if conflict else 0), result.output
    done = subprocess.run(
        [sys.executable, "-m", "copier", "update", "--defaults", "--conflict", "inline"],
        cwd=by_copier,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert files(by_copier) == files(by_scaffold)
    assert git(by_copier, "status", "--porcelain") == git(by_scaffold, "status", "--porcelain")


def test_conflicts_are_inline_listed_and_exit_1(tmp_path: Path, template: Path) -> None:
    project = new(tmp_path / "demo", template)
    with (project / TRAIN).open("a", encoding="utf-8") as file:
        file.write(USER_EDIT)  # the user and v0.2.0 change the same lines
    edit_user_files(project)

    result = invoke("update", project)
    assert result.exit_code == 1, result.output
    assert result.output.endswith(
        f"Error: 1 file(s) of {project} conflict with the template; resolve the <<<<<<< before "
        "updating ... >>>>>>> after updating blocks, then commit:\n"
        f"  {TRAIN}\n"
    )
    train = (project / TRAIN).read_text()
    assert "<<<<<<< before updating" in train and ">>>>>>> after updating" in train
    assert USER_EDIT.strip() in train and TEMPLATE_FIX.strip() in train
    assert not list(project.rglob("*.rej"))

    # Nothing else is lost: the user's other work stays and every other file is v0.2.0's.
    assert (project / MODEL).read_text().endswith(USER_EDIT)
    assert (project / "NOTES.md").read_text() == "my notes\n"
    fresh = new(tmp_path / "fresh" / "demo", template, "--vcs-ref", V2, "--no-git")
    updated, expected = files(project), files(fresh)
    for name in (TRAIN, MODEL, "NOTES.md"):
        updated.pop(name)
        expected.pop(name, None)
    assert updated == expected


def test_update_equals_a_fresh_render_apart_from_user_files(tmp_path: Path, template: Path) -> None:
    project = new(tmp_path / "demo", template)
    for name in USER_OWNED:
        with (project / name).open("a", encoding="utf-8") as file:
            file.write("\n# mine\n")
    commit_all(project, "my work")
    result = invoke("update", project)
    assert result.exit_code == 0, result.output

    fresh = new(tmp_path / "fresh" / "demo", template, "--vcs-ref", V2, "--no-git")
    updated, expected = files(project), files(fresh)
    assert updated.keys() == expected.keys()
    differ = {name for name in expected if updated[name] != expected[name]}
    assert differ == USER_OWNED
    for name in USER_OWNED:
        assert updated[name] == expected[name] + b"\n# mine\n"


def test_changing_an_answer_rerenders_the_affected_files(tmp_path: Path, template: Path) -> None:
    project = new(tmp_path / "demo", template, "--labels", "sparse")
    result = invoke("update", project, "--vcs-ref", ":current:", "--data", "labels=one-hot")
    assert result.exit_code == 0, result.output
    assert answers(project)["labels"] == "one-hot"
    assert answers(project)["_commit"] == V1
    fresh = new(tmp_path / "fresh" / "demo", template, "--labels", "one-hot", "--no-git")
    assert files(project) == files(fresh)
    assert "OneHotLabels(" in (project / f"src/{PACKAGE}/config.py").read_text()


@pytest.mark.parametrize("ref", [V1, ":current:"])
def test_update_to_the_same_version_changes_nothing(
    tmp_path: Path, template: Path, ref: str
) -> None:
    project = new(tmp_path / "demo", template)
    before = state(project)
    result = invoke("update", project, "--vcs-ref", ref)
    assert result.exit_code == 0, result.output
    assert f"{project} is already at template {V1}; nothing to merge." in result.output
    assert state(project) == before


def _template_of(project: Path) -> Path:
    """The template a project records, the copy `t` its bad update's messages name."""
    return Path(str(answers(project)["_src_path"]))


def _not_a_repo(project: Path) -> str:
    shutil.rmtree(project / ".git")
    return (
        f"'{project}' is not a git repository, so an update could not be reviewed or undone; "
        "commit the project first: git init && git add --all && git commit -m 'Project'"
    )


def _dirty(project: Path) -> str:
    with (project / MODEL).open("a", encoding="utf-8") as file:
        file.write("# not committed\n")
    return (
        f"'{project}' has uncommitted changes; commit or stash them (git stash), "
        "then run scaffold update again"
    )


def _no_answers_file(project: Path) -> str:
    git(project, "rm", "--quiet", ".copier-answers.yml")
    git(project, "commit", "--quiet", "-m", "drop the answers")
    return (
        f"no .copier-answers.yml in '{project}', so there is nothing to update it from; "
        "run scaffold update in (or pass) the directory of a project made by scaffold new"
    )


def _no_commit_recorded(project: Path) -> str:
    path = project / ".copier-answers.yml"
    path.write_text(
        "".join(line for line in path.open() if not line.startswith("_commit:")), encoding="utf-8"
    )
    commit_all(project, "drop _commit")
    return (
        f"{path} records no template version (_commit), so Copier cannot tell what the template "
        "changed; add _commit: <the tag the project was made from>, commit, and retry"
    )


def _relative_source(project: Path) -> str:
    path = project / ".copier-answers.yml"
    path.write_text(
        path.read_text(encoding="utf-8").replace(str(_template_of(project)), "t"),
        encoding="utf-8",
    )
    commit_all(project, "relative _src_path")
    return (
        "the template recorded in .copier-answers.yml, 't', is a relative path, which Copier "
        "cannot update from (copier issue #335); set _src_path there to the template's git "
        "repository (an absolute path or a URL), commit, and retry"
    )


def _unknown_ref(project: Path) -> str:
    return (
        f"template ref 'v9.9.9' not found in {_template_of(project)}; "
        "pass --vcs-ref with one of its tags, branches or commits"
    )


def _unknown_question(project: Path) -> str:
    return "there is no question 'label'; did you mean 'labels'?"


def _bad_choice(project: Path) -> str:
    return "labels 'multi' is not one of sparse, one-hot, binary; pass --data labels=<one of them>"


def _failing_validator(project: Path) -> str:
    return "num_classes must be 2 or more, got 1; for one yes/no output use binary labels"


def _learning_rate(project: Path) -> str:
    return "learning_rate must be between 1e-12 and 10, got {}; e.g. 0.001"


BAD_CASES = {
    "not-a-git-repo": (_not_a_repo, []),
    "dirty": (_dirty, []),
    "no-answers-file": (_no_answers_file, []),
    "no-commit-recorded": (_no_commit_recorded, []),
    "relative-source": (_relative_source, []),
    "unknown-ref": (_unknown_ref, ["--vcs-ref", "v9.9.9"]),
    "unknown-question": (_unknown_question, ["--data", "label=binary"]),
    "bad-choice": (_bad_choice, ["--data", "labels=multi"]),
    "failing-validator": (_failing_validator, ["--data", "num_classes=1"]),
    **{
        f"learning-rate-{rate}": (_learning_rate, ["--data", f"learning_rate={rate}"])
        for rate in ("nan", "inf", "1e309", "-0.0")
    },
}


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory, template: Path) -> Path:
    """A project made from `t`, a copy of the template that the messages can name; the bad
    updates spoil copies of it, each with the same committed history."""
    root = tmp_path_factory.mktemp("made")
    shutil.copytree(template, root / "t", symlinks=True)
    with pytest.MonkeyPatch.context() as patch:  # as _copier_cache does for each test
        patch.setenv("COPIER_CACHE_DIR", str(root / "copier-cache"))
        patch.delenv(source.TEMPLATE_ENV, raising=False)
        return new(root / "demo", root / "t")


@pytest.mark.parametrize(("spoil", "args"), BAD_CASES.values(), ids=BAD_CASES.keys())
def test_bad_updates_fail_cleanly_and_change_nothing(
    tmp_path: Path, made: Path, spoil, args: list[str]
) -> None:
    project = tmp_path / "demo"
    shutil.copytree(made, project, symlinks=True)
    message = spoil(project)
    before = state(project)
    result = invoke("update", project, *args)
    assert result.exit_code == 2, result.output
    if spoil is _learning_rate:
        message = message.format(float(args[-1].partition("=")[2]))
    assert result.output == f"Error: {message}\n"  # one line, Copier's own words aside
    assert state(project) == before


# --- from a project made before the step moved into task.py ---------------------------------

TASK_TEMPLATE = "template/src/{{package_name}}/{% if optimizers != 'gan' %}task.py{% endif %}.jinja"
# What a user adds to config.py, data.py and model.py in a project made before task.py.
CONFIG_EDIT = ("    seed: int = 42\n", "    seed: int = 42\n    dropout_rate: float = 0.1\n")
DATA_EDIT = '\n\ndef my_data_note() -> str:\n    """Added by the user."""\n    return "mine"\n'


@pytest.fixture(scope="module")
def pre_task_template(tmp_path_factory: pytest.TempPathFactory, template: Path) -> Path:
    """A clone whose v0.1.0 is the last commit before task.py, and v0.2.0 the working tree."""
    repo = tmp_path_factory.mktemp("pre-task") / "scaffold"
    git(template.parent, "clone", "--quiet", "--no-tags", str(template), str(repo))
    added = git(repo, "log", "--diff-filter=A", "--format=%H", "--", TASK_TEMPLATE).split()
    assert added, "no commit adds task.py"
    before = subprocess.run([*GIT, "rev-parse", "--verify", "-q", f"{added[-1]}^"], cwd=repo)
    if before.returncode != 0:
        pytest.skip("a shallow clone: the commit before task.py is not in its history")
    git(repo, "tag", V1, f"{added[-1]}^")
    git(repo, "tag", V2, "HEAD~1")  # The working tree, without the `template` fixture's fix.
    return repo


def test_a_project_made_before_task_py_updates_keeping_the_users_files(
    tmp_path: Path, pre_task_template: Path
) -> None:
    project = new(tmp_path / "demo", pre_task_template)
    assert not (project / f"src/{PACKAGE}/task.py").exists()
    config = project / f"src/{PACKAGE}/config.py"
    config.write_text(config.read_text().replace(*CONFIG_EDIT, 1))
    with (project / f"src/{PACKAGE}/data.py").open("a", encoding="utf-8") as file:
        file.write(DATA_EDIT)
    edit_user_files(project)

    result = invoke("update", project)
    # The user's function and the template's `standardize` both end model.py: the one
    # conflict, resolved as the README says, by keeping both.
    assert result.exit_code == 1, result.output
    assert git(project, "diff", "--name-only", "--diff-filter=U") == MODEL
    model = (project / MODEL).read_text()
    assert model.count("<<<<<<< before updating") == 1, model
    model = re.sub(
        r"^(<<<<<<< before updating|=======|>>>>>>> after updating)\n", "", model, flags=re.M
    )
    (project / MODEL).write_text(model)
    commit_all(project, "update: keep my note and the template's standardize")

    assert (project / f"src/{PACKAGE}/task.py").exists()
    # The modules that moved into engine/ are there, and not left behind at the top.
    for module in ("loop", "train", "steps"):
        moved = "classifier" if module == "steps" else module
        assert (project / f"src/{PACKAGE}/engine/{moved}.py").exists(), module
        assert not (project / f"src/{PACKAGE}/{module}.py").exists(), module
    # The engine's tests left with it: scaffold's suite runs them.
    for moved in (
        "test_loop",
        "test_callbacks",
        "test_guards",
        "test_signals",
        "test_multi_worker",
    ):
        assert not (project / f"tests/{moved}.py").exists(), moved
    assert "class RunOptions(options.RunOptions):" in config.read_text()
    assert CONFIG_EDIT[1] in config.read_text()
    assert (project / f"src/{PACKAGE}/data.py").read_text().endswith(DATA_EDIT)
    assert USER_EDIT.strip() in model and "def standardize(" in model
    assert (project / "NOTES.md").read_text() == "my notes\n"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    help_text = subprocess.run(
        [sys.executable, "-m", PACKAGE, "train", "--help"],
        cwd=project / "src",
        capture_output=True,
        text=True,
        env=env,
    )
    assert "--dropout-rate" in help_text.stdout, help_text.stdout + help_text.stderr
    modules = ["tests/test_task.py", "tests/test_parity.py", "tests/test_steps.py"]
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *modules],
        cwd=project,
        capture_output=True,
        text=True,
        env=env,
    )
    assert tests.returncode == 0, tests.stdout[-6000:] + tests.stderr[-3000:]


def test_an_engine_fix_merges_into_a_project_whose_step_follows_the_recipes(
    tmp_path: Path, template: Path
) -> None:
    # A user changes the step as the README's recipes do; the template then fixes the engine.
    project = new(tmp_path / "demo", template)
    readme = (project / "README.md").read_text()
    patches = re.findall(r"^#### Recipe \d+: .+?\n.*?```diff\n(.*?)```", readme, flags=re.M | re.S)
    assert patches, "the README prints no recipe"
    applied = 0
    for number, patch in enumerate(patches, 1):
        path = tmp_path / f"recipe-{number}.diff"
        path.write_text(patch)
        check = subprocess.run(["git", "apply", "--check", str(path)], cwd=project, check=False)
        if check.returncode == 0:  # A recipe for other answers, or on lines one before changed.
            git(project, "apply", str(path))
            commit_all(project, f"my step: recipe {number}")
            applied += 1
    assert applied, "no recipe applies to a fresh project"
    mine = {name: data for name, data in files(project).items() if not name.startswith("src/")}
    task = (project / f"src/{PACKAGE}/task.py").read_bytes()

    result = invoke("update", project)
    assert result.exit_code == 0, result.output  # 1, listing them, for any conflict.
    assert (project / TRAIN).read_text().endswith(TEMPLATE_FIX)
    assert (project / f"src/{PACKAGE}/task.py").read_bytes() == task
    after = files(project)
    assert {name: after[name] for name in mine if name != ".copier-answers.yml"} == {
        name: data for name, data in mine.items() if name != ".copier-answers.yml"
    }
