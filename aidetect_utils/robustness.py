"""Does a detector survive what happens to images online? Notebook 07's (and 04's) robustness test.

:func:`corrupt` degrades uint8 images by JPEG re-compression, down-and-up resizing, Gaussian blur
or Gaussian noise at a fixed strength, before each model's own preprocessing. It calls
``transforms.DEGRADATIONS``, the functions whose strength the robust-training augmentation draws
at random (for blur and JPEG through torchvision's random ops, which call the same kernels), so
"trained against blur" and "tested under blur" mean the same blur. :func:`robustness` scores
every model on clean and corrupted copies; :func:`robustness_table` and
:func:`robustness_verdicts` read those numbers off: a few named settings, and whether each model
holds, drops, or falls to what guessing would score (:func:`chance_ceiling`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .metrics import accuracy, roc_auc
from .progress import progress
from .transforms import DEGRADATIONS, gaussian_noise

#: the strengths tested by default: corruption -> levels
CORRUPTIONS = {"jpeg": [95, 75, 50, 30],          # JPEG quality
               "resize": [0.75, 0.5, 0.25],       # downscale factor, then back up (bicubic)
               "blur": [0.5, 1.0, 2.0],           # Gaussian blur sigma in pixels
               "noise": [4.0, 8.0, 16.0]}         # Gaussian noise std in 0-255 units

#: the settings notebook 07's compact robustness table shows: name -> (corruption, strength)
KEY_SETTINGS = {"clean": ("clean", 0.0), "JPEG q30": ("jpeg", 30.0), "resize x0.5": ("resize", 0.5),
                "blur σ=1": ("blur", 1.0), "noise 16": ("noise", 16.0)}


def corrupt(images: np.ndarray, kind: str, strength: float, seed: int = 0) -> np.ndarray:
    """(N, H, W, 3) uint8 -> the same shape and type, degraded by ``kind`` at ``strength``
    (the noise drawn from a generator seeded with ``seed``, so a test is repeatable)."""
    if kind not in DEGRADATIONS:
        raise ValueError(f"unknown corruption {kind!r}; choose from {sorted(CORRUPTIONS)}")
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    if kind == "noise":
        out = gaussian_noise(x, strength, generator=torch.Generator().manual_seed(seed))
    else:
        out = DEGRADATIONS[kind](x, strength)
    return out.permute(0, 2, 3, 1).contiguous().numpy()


def robustness(predictors: dict, images: np.ndarray, labels: np.ndarray, corruptions: dict | None = None,
               seed: int = 0, progress_desc: str = "robustness") -> pd.DataFrame:
    """Accuracy and ROC AUC of every predictor (name -> ``predict.Predictor``) on clean and
    corrupted copies of ``images``: one row per (method, corruption, strength)."""
    corruptions = CORRUPTIONS if corruptions is None else corruptions
    settings = [("clean", 0.0)] + [(k, s) for k, levels in corruptions.items() for s in levels]
    rows = []
    for kind, strength in progress(settings, desc=progress_desc):
        x = images if kind == "clean" else corrupt(images, kind, strength, seed)
        for name, pred in predictors.items():
            p = pred.prob_fake(x)
            rows.append({"method": name, "corruption": kind, "strength": strength,
                         "accuracy": accuracy(labels, p), "roc_auc": roc_auc(labels, p)})
    return pd.DataFrame(rows)


def robustness_table(rob: pd.DataFrame, settings: dict | None = None, metric: str = "accuracy") -> pd.DataFrame:
    """``metric`` of every method (rows, in :func:`robustness`'s order) at a few named settings
    (columns, :data:`KEY_SETTINGS` by default); NaN where a setting was not run."""
    settings = KEY_SETTINGS if settings is None else settings
    methods = list(dict.fromkeys(rob["method"]))
    cols = {}
    for name, (kind, strength) in settings.items():
        sel = rob[(rob["corruption"] == kind) & np.isclose(rob["strength"].astype(float), float(strength))]
        cols[name] = sel.drop_duplicates("method").set_index("method")[metric].reindex(methods)
    return pd.DataFrame(cols, index=pd.Index(methods, name="method"))


def chance_ceiling(n: int, chance: float = 0.5, z: float = 1.96) -> float:
    """The highest accuracy on ``n`` images still consistent with guessing at rate ``chance``:
    ``chance + z * sqrt(chance * (1 - chance) / n)`` (the upper end of a normal 95% interval)."""
    return float(chance + z * np.sqrt(chance * (1 - chance) / max(1, n)))


def robustness_verdicts(rob: pd.DataFrame, n_images: int, chance: float = 0.5, tolerance: float = 0.05) -> pd.DataFrame:
    """One verdict per (method, corruption), read off :func:`robustness`'s numbers: the clean
    accuracy, the worst accuracy over the corruption's strengths (and at which), the drop, and

    - "at chance already" when even the clean accuracy is within :func:`chance_ceiling`,
    - "falls to chance" when the worst accuracy is,
    - "drops N points" when the drop exceeds ``tolerance``,
    - "holds" otherwise (a drop of at most ``tolerance``).

    ``chance``: the accuracy of guessing (the share of the more common label on these images)."""
    ceiling = chance_ceiling(n_images, chance)
    clean = rob[rob["corruption"] == "clean"].drop_duplicates("method").set_index("method")["accuracy"]
    rows = []
    for (name, kind), g in rob[rob["corruption"] != "clean"].groupby(["method", "corruption"], sort=False):
        at = g.loc[g["accuracy"].idxmin()]
        c, worst = float(clean[name]), float(at["accuracy"])
        drop = c - worst
        if c <= ceiling:
            verdict = "at chance already"
        elif worst <= ceiling:
            verdict = "falls to chance"
        elif drop > tolerance:
            verdict = f"drops {100 * drop:.0f} points"
        else:
            verdict = "holds"
        rows.append({"method": name, "corruption": kind, "clean": c, "worst": worst,
                     "worst_at": float(at["strength"]), "drop": drop, "chance_ceiling": ceiling, "verdict": verdict})
    return pd.DataFrame(rows)
