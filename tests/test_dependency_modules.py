"""copier.yml refuses every package name that would shadow a top-level module of the generated
project's dependencies (an `h5py` package breaks `model.save` only after training, an `absl` or
`google` one the first `import tensorflow`).

The refused names are data in copier.yml, so that `scaffold new` checks them without TensorFlow
and plain `copier copy` refuses them too. This file computes them from the distributions
installed here: the closure of the dependencies that the template's pyproject.toml declares
(its `gpu` extra aside, the same modules as `cpu` plus CUDA's, see `ELSEWHERE`). After a change of
dependencies, `python tests/test_dependency_modules.py` rewrites the list in copier.yml.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
COPIER_YML = ROOT / "copier.yml"
PYPROJECT = ROOT / "template" / "pyproject.toml.jinja"

# Modules the dependencies install where this environment does not look: other platforms,
# older Pythons, the `gpu` extra.
ELSEWHERE = {
    "colorama": "pytest on Windows",
    "exceptiongroup": "pytest on Python 3.10",
    "tomli": "pytest on Python 3.10",
    "nvidia": "tensorflow[and-cuda], the gpu extra: CUDA's libraries",
}

# A name the validator could otherwise accept (its own pattern for a package name).
PACKAGE_NAME = re.compile(r"[a-z][a-z0-9_]*")

# The refused list in copier.yml: the names between `in '` and `'.split()`, before the message
# that names the dependencies.
LISTED = re.compile(
    r"(?P<head>\{% elif package_name in '\n)(?P<names>[^']*?)(?P<tail>\n *'\.split\(\) %\}\n"
    r" *package name [^\n]* of the project's dependencies;)"
)


def declared_requirements() -> list[Requirement]:
    """What the template's pyproject.toml installs: its dependencies, `cpu` and `test` extras."""
    import tomllib

    text = "\n".join(
        line for line in PYPROJECT.read_text(encoding="utf-8").splitlines() if "{%" not in line
    )
    config = tomllib.loads(re.sub(r"\{\{.*?\}\}", "x", text))["project"]
    extras = config["optional-dependencies"]
    declared = [*config["dependencies"], *extras["cpu"], *extras["test"]]
    return [Requirement(spec) for spec in declared]


def closure() -> dict[str, importlib.metadata.Distribution]:
    """The installed distributions the declared requirements need, by canonical name.

    Raises:
        LookupError: When a needed distribution is not installed here.
    """
    found: dict[str, importlib.metadata.Distribution] = {}
    todo = [(requirement, "pyproject.toml") for requirement in declared_requirements()]
    while todo:
        requirement, needed_by = todo.pop()
        key = canonicalize_name(requirement.name)
        if key in found:
            continue
        try:
            distribution = importlib.metadata.distribution(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            raise LookupError(
                f"{requirement.name} (needed by {needed_by}) is not installed; "
                "pip install -e '.[test]' first"
            ) from None
        found[key] = distribution
        for spec in distribution.requires or []:
            needed = Requirement(spec)
            extras = requirement.extras or {""}
            if needed.marker and not any(needed.marker.evaluate({"extra": e}) for e in extras):
                continue
            todo.append((needed, distribution.metadata["Name"]))
    return found


def top_level_modules(distribution: importlib.metadata.Distribution) -> set[str]:
    """The names `import` finds in what `distribution` installed into site-packages."""
    modules = set((distribution.read_text("top_level.txt") or "").split())
    for file in distribution.files or []:
        first = file.parts[0]
        if first == ".." or first == "__pycache__" or first.endswith((".dist-info", ".data")):
            continue  # scripts, metadata, bytecode
        if len(file.parts) == 1:  # a module file (`six.py`, `_foo.cpython-311-x86_64.so`)
            match = re.fullmatch(r"(\w+)(\.[\w-]+)?\.(py|pyc|so|pyd)", first)
            if match is None:
                continue  # a `.pth` file, a licence
            first = match[1]
        modules.add(first)
    return modules


def dependency_modules() -> dict[str, str]:
    """Every package name that would shadow a dependency's module, with what installs it."""
    modules = dict(ELSEWHERE)
    for key, distribution in sorted(closure().items()):
        for module in top_level_modules(distribution):
            if PACKAGE_NAME.fullmatch(module):
                modules.setdefault(module, key)
    return modules


def listed_names(text: str) -> list[str]:
    match = LISTED.search(text)
    assert match, "copier.yml has no list of the dependencies' modules in package_name's validator"
    return match["names"].split()


def rewrite(text: str, names: list[str]) -> str:
    """`text` (copier.yml) with the dependencies' modules listed as `names`, 96 columns wide."""
    lines = textwrap.wrap(" ".join(sorted(names)), width=96, break_on_hyphens=False)
    block = "\n".join("    " + line for line in lines)
    return LISTED.sub(lambda m: m["head"] + block + m["tail"], text, count=1)


def refusal(package_name: str) -> str:
    """What package_name's validator in copier.yml says of `package_name` ("" accepts it)."""
    validator = yaml.safe_load(COPIER_YML.read_text(encoding="utf-8"))["package_name"]["validator"]
    env = SandboxedEnvironment(
        extensions=["jinja2_ansible_filters.AnsibleCoreFiltersExtension"],
        undefined=StrictUndefined,
    )
    return env.from_string(validator).render(package_name=package_name).strip()


@pytest.mark.skipif(sys.version_info < (3, 11), reason="reads pyproject.toml with tomllib")
def test_every_module_of_the_dependencies_is_refused() -> None:
    modules = dependency_modules()
    for expected in ("tensorflow", "keras", "h5py", "absl", "google", "ml_dtypes", "six"):
        assert expected in modules, f"the closure misses {expected}: {sorted(modules)}"
    missing = sorted(set(modules) - set(listed_names(COPIER_YML.read_text(encoding="utf-8"))))
    assert not missing, (
        f"copier.yml accepts {missing} as package names, modules of "
        f"{sorted({modules[name] for name in missing})}; "
        "run python tests/test_dependency_modules.py to rewrite its list"
    )
    accepted = [name for name in modules if not refusal(name)]
    assert not accepted, f"package_name's validator accepts {accepted}"
    assert refusal("h5py") == (
        "package name 'h5py' would shadow the module h5py of the project's dependencies; "
        "choose another name"
    )
    assert refusal("my_project") == ""


if __name__ == "__main__":
    text = COPIER_YML.read_text(encoding="utf-8")
    names = dependency_modules()
    COPIER_YML.write_text(rewrite(text, list(names)), encoding="utf-8")
    print(f"copier.yml: {len(names)} modules of the dependencies refused as package names")
