"""Where things live: the project root, ``data/`` and ``results/``, wherever a notebook runs from.

Notebooks run with ``notebooks/`` as the working directory (Jupyter, papermill, nbval) while
the CLI runs from the root; both must read and write the same folders, so every path is built
from :func:`project_root`. ``AIDETECT_ROOT`` overrides it (the code and ``profiles.yaml``).

``AIDETECT_HOME`` moves only what runs produce, ``data/`` and ``results/``, somewhere that
outlives the machine: Colab gives every notebook opened from a badge a fresh runtime whose
disk is wiped, so a learner points ``AIDETECT_HOME`` at a Google Drive folder and notebook 00's
prepared data and each method's model are there for the next notebook.
"""
from __future__ import annotations

import os
from pathlib import Path

HOME_VAR = "AIDETECT_HOME"


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


def home() -> Path:
    """Where ``data/`` and ``results/`` live: ``AIDETECT_HOME`` if set (e.g. a Drive folder in
    Colab), else the project root."""
    env = os.environ.get(HOME_VAR)
    return Path(env).expanduser().resolve() if env else project_root()


def data_dir() -> Path:
    return home() / "data"


def results_dir() -> Path:
    return home() / "results"


def method_dir(method: str) -> Path:
    """``results/<method>/``: metrics.json, predictions.csv, model/, checkpoints/, figures."""
    d = results_dir() / method
    d.mkdir(parents=True, exist_ok=True)
    return d


def local_or_hub(name: str) -> str:
    """A checkpoint or dataset name as given, or the absolute path of a local folder it names:
    an absolute path, or one relative to the working directory, the project root or
    :func:`home` (so a profile can say ``data/rehearsal/...`` while notebooks run from
    ``notebooks/``). Anything else (``google/vit-base-patch16-224``) is returned unchanged, for
    the hub."""
    p = Path(name).expanduser()
    for cand in ((p,) if p.is_absolute() else (p, project_root() / p, home() / p)):
        if cand.exists():
            return str(cand.resolve())
    return name
