"""A project as the engine runs it: its types and its parts, handed over by the project.

The engine never imports a project's modules on its own. The project's package hands it a
`Project` (its `PROJECT`): the `Config` and `RunOptions` dataclasses, and where its dataset,
model and task builders are, as `"module:name"` references inside the package, imported on
first use so that `--help` and `run.json` need no TensorFlow. The defaults are the generated
layout (`data.py`, `model.py`, `task.py`); point one elsewhere to move it.

Template-owned: `copier update` replaces it with the template's later versions.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class Project:
    """A generated project's package, its run types and its builders.

    Attributes:
        package: The package's import name, e.g. `digits`: `python -m {package}` runs it.
        config: Its `Config` dataclass, the run's hyperparameters.
        options: Its `RunOptions` dataclass (a subclass of `engine.options.RunOptions`).
        datasets: `"module:name"` of `load_datasets(config) -> (train_ds, val_ds)`.
        model: `"module:name"` of `build_model(config) -> keras.Model`.
        task: `"module:name"` of `build_task(model, config, options) -> engine.task.Task`.
        space: `"module:name"` of `search_space(trial) -> dict`, the `Config` fields a sweep
            searches (see `sweep.py`); `None` for a project without sweeps (a GAN's, which
            has no validation figure to compare its trials by).
        tags: What tells this project apart, by name (the answers it was generated with):
            the MLflow tags of its tracked runs (see `tracking.py`).
    """

    package: str
    config: type
    options: type
    datasets: str = "data:load_datasets"
    model: str = "model:build_model"
    task: str = "task:build_task"
    space: str | None = "config:search_space"
    tags: Mapping[str, str] = dataclasses.field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        for field in ("datasets", "model", "task", "space"):
            reference = getattr(self, field)
            if reference is None and field == "space":
                continue
            module, _, name = reference.partition(":")
            if not (module and name):
                raise ValueError(
                    f"Project.{field} is {reference!r}, not a 'module:name' reference inside "
                    f"{self.package}; write it as e.g. {getattr(Project, field)!r}"
                )

    def load(self, reference: str) -> Any:
        """The object `reference` (`"module:name"`) names in the package; imported now."""
        module, _, name = reference.partition(":")
        return getattr(importlib.import_module(f".{module}", self.package), name)

    @property
    def load_datasets(self) -> Callable[..., Any]:
        """The project's `load_datasets(config)`."""
        return self.load(self.datasets)

    @property
    def build_model(self) -> Callable[..., Any]:
        """The project's `build_model(config)`."""
        return self.load(self.model)

    @property
    def build_task(self) -> Callable[..., Any]:
        """The project's `build_task(model, config, options)`."""
        return self.load(self.task)

    @property
    def search_space(self) -> Callable[..., Any]:
        """The project's `search_space(trial)`.

        Raises:
            ValueError: If the project declares none (`space` is `None`).
        """
        if self.space is None:
            raise ValueError(f"{self.package} declares no search space (Project.space is None)")
        return self.load(self.space)
