"""A generated project installs into a fresh virtual environment and trains from there."""

from __future__ import annotations

import json
import os
import subprocess
import venv
from pathlib import Path

from scaffold.render import render_project


def test_installed_project_trains(tmp_path: Path) -> None:
    project = tmp_path / "e2e-demo"
    render_project(project, {"project_name": "e2e-demo"}, quiet=True)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("PYTHONPATH", None)

    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", f"{project}[cpu]"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert install.returncode == 0, install.stdout[-4000:] + install.stderr[-4000:]

    logdir = tmp_path / "runs"
    # Run outside the project, so the installed package is what gets imported.
    train = subprocess.run(
        [str(python), "-m", "e2e_demo", "train", "--epochs", "1", "--logdir", str(logdir)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert train.returncode == 0, train.stdout + train.stderr[-4000:]
    first, second = train.stdout.splitlines()[:2]
    assert first.startswith(f"run directory: {logdir}"), train.stdout
    assert second.startswith("epoch 1/1 | loss "), train.stdout
    (line,) = (logdir / "metrics.jsonl").read_text().splitlines()
    assert json.loads(line)["val_accuracy"] > 0.5
    assert sorted(p.name for p in logdir.iterdir()) == [
        "checkpoints",
        "metrics.jsonl",
        "model.keras",
        "run.json",
        "train",
        "validation",
    ]
