"""The engine subpackage: no Jinja, relative imports only, never the project's own modules.

Every project gets `src/PKG/engine/` copied from the template as it is (Copier renders only
`.jinja` files), so its bytes are the same whatever the answers; `test_render.py` checks each
render against these files.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from test_render import ENGINE_MODULES, TEMPLATE_ENGINE

ROOT = Path(__file__).resolve().parent.parent
# The modules a project owns or renders for its answers, which the engine is handed, never imports.
PROJECT_MODULES = {"config", "data", "model", "task", "train", "trained", "steps", "losses"}


def test_the_engine_is_a_plain_copy_with_no_jinja() -> None:
    files = sorted(TEMPLATE_ENGINE.iterdir())
    assert {path.name for path in files} == {f"{module}.py" for module in ENGINE_MODULES}
    for path in files:
        assert path.suffix == ".py", f"{path.name}: Copier would render it per answer"
        text = path.read_text()
        assert not re.search(r"\{\{|\{%|%\}|\}\}", text), f"{path.name} holds Jinja"


def test_the_engine_imports_only_itself_by_relative_imports() -> None:
    for path in sorted(TEMPLATE_ENGINE.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.level == 1, f"{path.name}:{node.lineno} imports from outside engine/"
                module = (node.module or "").split(".")[0]
                names = {alias.name for alias in node.names} if not module else {module}
                assert names <= set(ENGINE_MODULES) | {"PROJECT"}, (
                    f"{path.name}:{node.lineno} imports {names - set(ENGINE_MODULES)}"
                )
            elif isinstance(node, ast.Import | ast.ImportFrom):
                module = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                top = (module or "").split(".")[0]
                assert top not in PROJECT_MODULES, f"{path.name}:{node.lineno} imports {module}"


def test_every_example_has_the_same_engine() -> None:
    examples = sorted(path for path in (ROOT / "examples").iterdir() if path.is_dir())
    assert examples
    for example in examples:
        (engine,) = (example / "src").glob("*/engine")
        for module in ENGINE_MODULES:
            copy = engine / f"{module}.py"
            assert copy.read_bytes() == (TEMPLATE_ENGINE / f"{module}.py").read_bytes(), copy
