"""The `scaffold` command line: a thin skin over `scaffold.new`, `scaffold.update` and
`scaffold.examples`.

Each question of `copier.yml` is a flag of `scaffold new`, built from the question at start-up
(name, type, choices, help, default); a flag for a question that Copier would not ask (its
`when`) is refused, and Copier validates the answers. Only this module imports Typer, and it
imports neither Copier nor YAML at start-up (`scaffold.questions` caches the parsed
questions), so `scaffold --help` stays fast.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import re
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from .errors import ScaffoldError, os_problem
from .questions import Question, asked_questions, not_asked

try:  # Typer 0.29+ carries its own Click
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - older Typer on Click
    from click import exceptions as click_errors  # type: ignore[no-redef]

EXIT_USAGE = 2  # the exit code of a mistake in the command line, as for Click's usage errors
EXIT_CONFLICTS = 1  # scaffold update merged, but left conflicts for the user to resolve
EXIT_INTERRUPTED = 130  # 128 + SIGINT: Ctrl-C

# How `--help` shows a default that the CLI sets (project_name: DEST's name) or that Jinja computes
# from other answers; any other templated default shows as "computed from the other answers".
_DEFAULT_IN_WORDS = {
    "project_name": "DEST's directory name",
    "package_name": "from the project name, lowercase, '-' as '_'",
    "input_shape": "64, or 30 for binary labels",
}


def _question_option(question: Question) -> inspect.Parameter:
    """The option of `scaffold new` that answers `question`: `--num-classes <int>`,
    `--labels <sparse|one-hot|binary>`, `--logits/--no-logits`; unset, it leaves the answer
    to Copier."""
    kind: Any = {"int": int, "float": float, "bool": bool}.get(question.type, str)
    if question.choices:
        kind = Literal[tuple(str(choice) for choice in question.choices)]
    decls = [f"{question.flag}/--no-{question.flag[2:]}"] if question.type == "bool" else []
    shown: str | bool
    if question.name in _DEFAULT_IN_WORDS:
        shown = _DEFAULT_IN_WORDS[question.name]
    elif question.type == "bool":
        shown = ("" if question.default else "no-") + question.flag[2:]
    elif question.templated_default:
        shown = "computed from the other answers"
    else:
        shown = False if question.default is None else str(question.default)
    option = typer.Option(*decls, help=question.help, show_default=shown)
    return inspect.Parameter(
        question.name,
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[kind | None, option],
    )


def _asking(questions: Mapping[str, Question]) -> Callable[[Callable[..., Any]], Any]:
    """Give a command a flag for each question, after its first parameter; the command takes
    the flags' values as `**flags`, keyed by question name (None for a flag not given)."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        own = [
            param.replace(kind=inspect.Parameter.KEYWORD_ONLY)
            for param in inspect.signature(func, eval_str=True).parameters.values()
            if param.kind is not inspect.Parameter.VAR_KEYWORD
        ]
        params = [*own[:1], *(_question_option(q) for q in questions.values()), *own[1:]]

        @functools.wraps(func)
        def command(**kwargs: Any) -> Any:
            return func(**kwargs)

        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {param.name: param.annotation for param in params}
        return command

    return decorate


def _given_value(args: Sequence[str], opts: Sequence[str]) -> str | None:
    """The value the command line gave an option (`--opt VALUE` or `--opt=VALUE`)."""
    for index, arg in enumerate(args):
        for opt in opts:
            if arg == opt and index + 1 < len(args):
                return args[index + 1]
            if arg.startswith(opt + "="):
                return arg[len(opt) + 1 :]
    return None


def _usage_problem(error: Any, args: Sequence[str]) -> str:
    """A usage error of the command line as one line of ours: the problem, then the fix."""
    ctx = error.ctx
    command = ctx.command_path if ctx is not None else "scaffold"
    if command == "scaffold" and args and args[0] in app_commands():
        command = f"scaffold {args[0]}"
    see = f"see '{command} --help'"
    if match := re.match(r"No such command '(.*?)'", error.format_message()):
        close = difflib.get_close_matches(match[1], app_commands(), n=1)
        fix = f"did you mean scaffold {close[0]}?" if close else see
        return f"scaffold has no command '{match[1]}'; {fix}"
    if isinstance(error, click_errors.NoSuchOption):
        known = [opt for param in ctx.command.params for opt in param.opts + param.secondary_opts]
        close = difflib.get_close_matches(error.option_name, known, n=1)
        fix = f"did you mean {close[0]}?" if close else see
        return f"{command} has no option {error.option_name}; {fix}"
    param = getattr(error, "param", None)
    if isinstance(error, click_errors.MissingParameter) and param is not None:
        name = (param.metavar or param.name or "").upper()
        return f"{command} needs {name}; {see}"
    if isinstance(error, click_errors.BadParameter) and isinstance(param, TyperOption):
        flag = param.opts[0]
        value = _given_value(args, param.opts)
        choices = [str(c) for c in getattr(param.type_descriptor, "choices", None) or ()]
        if choices and value is not None:
            close = difflib.get_close_matches(value, choices, n=1, cutoff=0.5)
            fix = f"did you mean {flag} {close[0]}?" if close else f"e.g. {flag} {choices[0]}"
            return f"{flag} {value!r} is not one of {', '.join(choices)}; {fix}"
        kind = {"int": "a whole number", "float": "a number"}.get(_type_name(param))
        if kind and value is not None:
            example = param.show_default if isinstance(param.show_default, str) else "1"
            return f"{flag} must be {kind}, got {value!r}; e.g. {flag} {example}"
    if isinstance(error, click_errors.BadOptionUsage) and "requires an argument" in str(error):
        return f"{error.option_name} needs a value; {see}"
    message = " ".join(error.format_message().split()).rstrip(".")
    return f"{message[:1].lower()}{message[1:]}; {see}"


def _type_name(param: Any) -> str:
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    text = str(annotation)
    return next((name for name in ("int", "float") if re.search(rf"\b{name}\b", text)), "")


# Raised for `scaffold` without a command (Click 8.2+); a class nothing raises on older ones.
_NO_ARGS_IS_HELP = getattr(click_errors, "NoArgsIsHelpError", type("_Never", (Exception,), {}))


def app_commands() -> list[str]:
    """The names of scaffold's commands."""
    return [info.name or info.callback.__name__ for info in app.registered_commands]


def _plain_default(self: Any, *, ctx: Any, show_default_is_str: bool, **kwargs: Any) -> str:
    """Help that shows `[default: 10]`, not Typer's `[default: (10)]`."""
    if show_default_is_str:
        return str(self.show_default)
    return (
        type(self)
        .__mro__[1]
        ._get_default_string(self, ctx=ctx, show_default_is_str=show_default_is_str, **kwargs)
    )


class _Option(TyperOption):
    _get_default_string = _plain_default


class _Argument(TyperArgument):
    _get_default_string = _plain_default


class _Command(TyperCommand):
    """A command whose usage line reads `scaffold new [OPTIONS] DEST`, without Typer's
    `{DEST}` braces, and whose options show their defaults plainly."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        plain = {TyperOption: _Option, TyperArgument: _Argument}
        for param in self.params:
            param.__class__ = plain.get(type(param), type(param))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [re.sub(r"^\{(.*)\}$", r"\1", piece) for piece in super().collect_usage_pieces(ctx)]


class _ScaffoldGroup(TyperGroup):
    """Turns a ScaffoldError from any command into one line on stderr and its exit code (2, or
    130 for Ctrl-C); an OSError or a Ctrl-C that no command caught likewise, and a mistake in
    the command line too (Click's usage errors, reworded as ours)."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        args = list(sys.argv[1:] if args is None else args)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _NO_ARGS_IS_HELP as error:
            error.show()  # `scaffold` alone: the help, as before
            code = EXIT_USAGE
        except click_errors.UsageError as error:
            typer.echo(f"Error: {_usage_problem(error, args)}", err=True)
            code = EXIT_USAGE
        except typer.Exit as done:  # --install-completion ends so
            code = done.exit_code
        except typer.Abort:  # Ctrl-D at a prompt
            typer.echo("Error: interrupted; run the command again to finish", err=True)
            code = EXIT_INTERRUPTED
        code = code if isinstance(code, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except ScaffoldError as error:
            typer.echo(f"Error: {error}", err=True)
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("Error: interrupted; run the command again to finish", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except OSError as error:
            typer.echo(
                f"Error: {os_problem(error, 'check the path and its permissions')}", err=True
            )
            raise typer.Exit(EXIT_USAGE) from None


app = typer.Typer(
    name="scaffold",
    cls=_ScaffoldGroup,
    help="Start a TensorFlow custom-training-loop project from the scaffold template.",
    no_args_is_help=True,
    # Plain Click help and errors: Rich would add ~60 ms to every start and box one-line errors.
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


def _show_version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"scaffold {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Start a TensorFlow custom-training-loop project from the scaffold template."""


def _parse_data(items: list[str]) -> dict[str, str]:
    """`KEY=VALUE` pairs to a dict; the values stay text and Copier casts them by the question's
    type (`3` for an int, `no` for a bool), exactly as `copier copy --data` does."""
    data: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ScaffoldError(
                f"--data {item!r} is not KEY=VALUE; write it as --data KEY=VALUE, "
                "e.g. --data labels=one-hot"
            )
        data[key.strip()] = value
    return data


def _collect_answers(flags: dict[str, object], data: dict[str, str]) -> dict[str, Any]:
    given = {name: value for name, value in flags.items() if value is not None}
    for name in sorted(given.keys() & data.keys()):
        flag = "--" + name.replace("_", "-")
        raise ScaffoldError(f"{name} is given twice, as {flag} and as --data {name}; give it once")
    answers: dict[str, Any] = {**data, **given}
    found = not_asked(list(given), answers)
    if found is not None:
        name, blocker = found
        flag = "--" + name.replace("_", "-")
        if blocker.question is None:
            raise ScaffoldError(f"{flag} does not apply to the other answers; drop {flag}")
        by = blocker.question
        raise ScaffoldError(
            f"{flag} does not apply to {_as_flag(by, blocker.value)}; "
            f"drop {flag} or choose {_as_flag(by, *blocker.fixes)}"
        )
    return answers


def _as_flag(question: Question, *values: object) -> str:
    """Values of `question` as a command line says them: `--labels sparse or one-hot`,
    `--no-logits`."""
    if question.type == "bool":
        return ("--" if values[0] else "--no-") + question.name.replace("_", "-")
    words = [str(value) for value in values]
    listed = ", ".join(words[:-1]) + " or " + words[-1] if len(words) > 1 else words[0]
    return f"{question.flag} {listed}"


def _next_steps(dest: Path, package: str) -> str:
    lines = [
        f"cd {shlex.quote(str(dest))}",
        "pip install -e '.[cpu,test]'",
        f"python -m {package} train",
        "pytest",
    ]
    width = max(len(line) for line in lines) + 2
    title = " Next steps "
    top = "╭─" + title + "─" * (width - len(title) - 1) + "╮"
    body = [f"│ {line.ljust(width - 2)} │" for line in lines]
    return "\n".join([top, *body, "╰" + "─" * width + "╯"])


@app.command(cls=_Command)
@_asking(asked_questions())
def new(
    dest: Annotated[
        Path,
        typer.Argument(
            metavar="DEST", help="Directory to create; its name is the default project name."
        ),
    ],
    data: Annotated[
        list[str] | None,
        typer.Option(
            "--data",
            "-d",
            metavar="KEY=VALUE",
            help="Answer any question by its copier.yml name, e.g. -d labels=one-hot; repeatable",
            show_default=False,
        ),
    ] = None,
    template: Annotated[
        str | None,
        typer.Option(
            "--template",
            metavar="SRC",
            help="The template to render and record for updates: a git repository's path or URL",
            show_default="$SCAFFOLD_TEMPLATE, else this checkout of scaffold, else "
            "the public repository",
        ),
    ] = None,
    vcs_ref: Annotated[
        str | None,
        typer.Option(
            "--vcs-ref",
            metavar="REF",
            help="The template's tag, branch or commit to render",
            show_default="v<scaffold's version>, or the HEAD commit of a checkout without that tag",
        ),
    ] = None,
    git: Annotated[
        bool,
        typer.Option(
            "--git/--no-git",
            help="Make DEST a git repository with a first commit, ready for scaffold update",
        ),
    ] = True,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes", "-y", help="Take the defaults for all questions not given; ask nothing"
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Render into DEST even if it is not empty, overwriting its files"
        ),
    ] = False,
    pretend: Annotated[
        bool, typer.Option("--pretend", help="Show what would be written; write nothing")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="Print nothing but errors")] = False,
    **flags: object,
) -> None:
    """Render a new project into DEST. Questions not given as flags are asked (or, with --yes,
    take their defaults)."""
    from .new import create_project

    answers = _collect_answers(flags, _parse_data(data or []))
    if not yes and not sys.stdin.isatty():
        raise ScaffoldError(
            "no terminal to ask questions on; "
            "pass --yes to take the defaults for questions not given as flags"
        )
    made = create_project(
        dest,
        answers,
        template=template,
        vcs_ref=vcs_ref,
        git=git,
        defaults=yes,
        force=force,
        pretend=pretend,
        quiet=quiet,
    )
    if quiet:
        return
    for note in made.notes:
        typer.echo(f"note: {note}", err=True)
    if pretend:
        for name in made.files:
            typer.echo(f"would create {name}")
        typer.echo(f"Pretend: nothing was written to {dest}.")
        return
    typer.echo(f"Created {dest}: {len(made.files)} files.")
    if made.commit is not None:
        typer.echo(f"Recorded template {made.src} at {made.commit}, for scaffold update.")
    typer.echo(_next_steps(dest, str(made.answers["package_name"])))


@app.command(cls=_Command)
def update(
    path: Annotated[
        Path,
        typer.Argument(metavar="PATH", help="The project to update.", show_default="."),
    ] = Path("."),
    vcs_ref: Annotated[
        str | None,
        typer.Option(
            "--vcs-ref",
            metavar="REF",
            help="The template's tag, branch or commit to update to; :current: keeps the "
            "recorded one (to change an answer only)",
            show_default="the latest version tag, as copier update",
        ),
    ] = None,
    data: Annotated[
        list[str] | None,
        typer.Option(
            "--data",
            "-d",
            metavar="KEY=VALUE",
            help="Change an answer, e.g. -d labels=one-hot; the others keep their recorded "
            "values; repeatable",
            show_default=False,
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="Print nothing but errors")] = False,
) -> None:
    """Update the project at PATH to a newer template version, merging the template's changes
    with yours (as copier update --defaults --conflict inline does). Exit code 1: conflicts
    are left inline to resolve; 2: nothing was changed (the error says why)."""
    from .update import update_project

    done = update_project(path, _parse_data(data or []), vcs_ref=vcs_ref, quiet=quiet)
    for note in () if quiet else done.notes:
        typer.echo(f"note: {note}", err=True)
    if done.conflicts:
        typer.echo(
            f"Error: {len(done.conflicts)} file(s) of {path} conflict with the template; "
            "resolve the <<<<<<< before updating ... >>>>>>> after updating blocks, "
            "then commit:",
            err=True,
        )
        for name in done.conflicts:
            typer.echo(f"  {name}", err=True)
        raise typer.Exit(EXIT_CONFLICTS)
    if quiet:
        return
    if done.old == done.new and not data:
        typer.echo(f"{path} is already at template {done.new}; nothing to merge.")
    else:
        typer.echo(
            f"Updated {path} from template {done.old} to {done.new}; review with git diff, "
            "then commit."
        )


@app.command(cls=_Command)
def examples(
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Compare instead of writing: print the diff and exit 1 if they drifted",
        ),
    ] = False,
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            metavar="DIR",
            help="Where the examples live",
            show_default="examples/ of this repository",
        ),
    ] = None,
) -> None:
    """Re-render the golden examples (examples/NAME) from the working tree's template."""
    from .examples import check_examples, write_examples

    if not check:
        for path in write_examples(directory):
            typer.echo(f"wrote {path}")
        return
    diff = check_examples(directory)
    if diff:
        typer.echo(diff, nl=False)
        typer.echo(
            "Error: the examples drifted from the template; run 'scaffold examples' to "
            "re-render them",
            err=True,
        )
        raise typer.Exit(1)
    typer.echo("examples match the template")
