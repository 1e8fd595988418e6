"""The engine: everything around your step, the same for every project scaffold makes.

Nothing here is rendered for your answers or imports your modules: the project's own modules
(`config.py`, `data.py`, `model.py`, `task.py`) are handed to it. Template-owned: `copier update`
replaces it with the template's later versions, so keep your changes in your own modules.
"""

from __future__ import annotations

# The package the engine lives in: it names the project's runs and its commands in messages.
PACKAGE = __name__.rpartition(".")[0] or __name__
