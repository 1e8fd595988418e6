"""The engine's own tests run here, once, on the template's `engine/` itself.

`engine/` is copied into every project as it is (no Jinja), so what holds for these files holds
in every project; the template's copy is imported as the package `engine`.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ENGINE = Path(__file__).resolve().parents[2] / "template" / "src" / "{{package_name}}" / "engine"


def _import_engine() -> None:
    """Import the template's engine/ as the package `engine`, once per process."""
    if "engine" in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(
        "engine", ENGINE / "__init__.py", submodule_search_locations=[str(ENGINE)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["engine"] = module
    spec.loader.exec_module(module)


_import_engine()
