"""Where things live: the project root, ``data/`` and ``results/``, wherever a notebook runs from.

Notebooks run with ``notebooks/`` as the working directory (Jupyter, papermill, nbval) while
the CLI runs from the root; both must read and write the same folders, so every path is built
from :func:`project_root`. ``AIDETECT_ROOT`` overrides it (e.g. to keep results elsewhere).
"""
from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The folder holding ``pyproject.toml`` above the working directory (or ``AIDETECT_ROOT``)."""
    env = os.environ.get("AIDETECT_ROOT")
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for cand in (here, *here.parents):
        if (cand / "pyproject.toml").exists() and (cand / "aidetect_utils").is_dir():
            return cand
    return here


def data_dir() -> Path:
    return project_root() / "data"


def results_dir() -> Path:
    return project_root() / "results"


def method_dir(method: str) -> Path:
    """``results/<method>/``: metrics.json, predictions.csv, model/, checkpoints/, figures."""
    d = results_dir() / method
    d.mkdir(parents=True, exist_ok=True)
    return d
