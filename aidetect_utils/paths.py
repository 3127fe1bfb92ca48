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


def local_or_hub(name: str) -> str:
    """A checkpoint or dataset name as given, or the absolute path of a local folder it names:
    an absolute path, or one relative to the working directory or to the project root (so a
    profile can say ``data/rehearsal/...`` while notebooks run from ``notebooks/``). Anything
    else (``google/vit-base-patch16-224``) is returned unchanged, for the hub."""
    p = Path(name).expanduser()
    for cand in ((p,) if p.is_absolute() else (p, project_root() / p)):
        if cand.exists():
            return str(cand.resolve())
    return name
