"""The cells of a notebook tagged ``mechanism``: the method's core as the learner reads it. The
tests in this folder run them against the package function each one mirrors."""
from __future__ import annotations

import json
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def mechanism_sources(notebook_stem: str) -> list[str]:
    nb = json.loads((NOTEBOOKS / f"{notebook_stem}.ipynb").read_text())
    cells = ["".join(c["source"]) for c in nb["cells"]
             if c["cell_type"] == "code" and "mechanism" in c.get("metadata", {}).get("tags", [])]
    if not cells:
        raise AssertionError(f"{notebook_stem} has no cell tagged 'mechanism'")
    return cells


def mechanism_namespace(notebook_stem: str, **given) -> dict:
    """Execute every mechanism cell of the notebook, in order, in a namespace holding ``given``."""
    ns = dict(given)
    for src in mechanism_sources(notebook_stem):
        exec(compile(src, f"<{notebook_stem} mechanism cell>", "exec"), ns)
    return ns
