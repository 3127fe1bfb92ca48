"""The cells of a notebook tagged ``mechanism``: the method's core as the learner reads it. The
tests in this folder run them against the package function each one mirrors."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from aidetect_utils.images import decode_image

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


def cifake_tensors(members: dict[str, bytes], per_label: int, keep=lambda name, taken: True):
    """``per_label`` REAL then ``per_label`` FAKE images of the real archive (in name order) as uint8
    CHW tensors, with their labels; ``keep(name, how many of its label are taken)`` picks which."""
    picked: dict[int, list] = {0: [], 1: []}
    for name, data in sorted(members.items()):
        label = 1 if "/FAKE/" in name else 0
        if len(picked[label]) < per_label and keep(name, len(picked[label])):
            picked[label].append(torch.from_numpy(decode_image(data, name=name).array).permute(2, 0, 1).contiguous())
    return picked[0] + picked[1], [0] * per_label + [1] * per_label
