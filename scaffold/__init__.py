"""scaffold: render a TensorFlow custom-training-loop project from the Copier template."""

from __future__ import annotations

__all__ = ["__version__"]


def __getattr__(name: str) -> str:
    # `__version__` is looked up on first use: importing importlib.metadata costs ~35 ms, a
    # quarter of `scaffold --help`, which never shows the version.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("scaffold")
        except PackageNotFoundError:  # a checkout on sys.path that was never installed
            return "0.1.0"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
