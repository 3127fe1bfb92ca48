"""How well does each model's domain check work? Notebook 07's measurement of ``domain``.

A model folder's ``domain.DomainCheck`` flags inputs unlike its training images. Here it is run
on named sets of images (:func:`domain_scores`: the CIFAKE test split, realworld100, the same
files re-encoded like CIFAKE...) and summarised against an in-domain reference set
(:func:`domain_summary`): the share of each set flagged, and how well each part of the score
(input statistics, features) tells the set from the reference (ROC AUC).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import images as _images
from .metrics import roc_auc

SCORE_COLUMNS = ["method", "set", "image", "domain_score", "input_z", "features_z", "score_in_domain",
                 "in_domain", "threshold"]


def decode_files(files: list, size: int) -> tuple[np.ndarray, list[tuple[int, int]], list[str]]:
    """Image files decoded at ``size`` x ``size`` as the predict command decodes them: the
    (N, size, size, 3) uint8 array, each file's original (width, height), and the names of the
    files that decoded (unreadable ones are left out; :func:`images.decode_files` also says why)."""
    return _images.decode_files(files, size)[:3]


def _set_images(set_name: str, src, size: int, decoded: dict, method: str) -> tuple[np.ndarray, list]:
    """(images, original sizes) of one named set at a model's source ``size``: an array already at
    that size is used as it is (its images count as size x size files), a list of files is decoded
    once per size (``decoded`` caches it across models)."""
    if isinstance(src, np.ndarray):
        if src.shape[1:3] != (size, size):
            raise ValueError(f"{set_name}: images are {src.shape[2]}x{src.shape[1]}, {method} expects {size}x{size}")
        return src, [(size, size)] * len(src)
    if (set_name, size) not in decoded:
        decoded[set_name, size] = decode_files(list(src), size)
    images, sizes, _ = decoded[set_name, size]
    return images, sizes


def domain_scores(predictors: dict, sets: dict) -> pd.DataFrame:
    """The domain check of every predictor that has a fitted score (``Predictor.domain.has_score``)
    on every named set of images, one row per (method, set, image).

    ``sets``: name -> an (N, S, S, 3) uint8 array already at the models' source size S (its
    images count as S x S files), or a list of files, decoded once per source size by
    :func:`decode_files`, whose original sizes feed the resolution check. Columns:
    ``domain_score``, ``input_z``, ``features_z`` (NaN for a check without a feature part),
    ``score_in_domain`` (the score alone under the threshold), ``in_domain`` (score and
    resolution), ``threshold``."""
    decoded: dict = {}
    frames = []
    for name, pred in predictors.items():
        check = pred.domain
        if check is None or not check.has_score:
            continue
        size = int(pred.prep["source_size"])
        for set_name, src in sets.items():
            images, sizes = _set_images(set_name, src, size, decoded, name)
            if not len(images):
                continue
            f = pred.in_domain(images, sizes)
            if not check.layer:
                f["features_z"] = np.nan
            frames.append(f.assign(method=name, set=set_name, image=np.arange(len(f)), threshold=check.threshold))
    return pd.concat(frames, ignore_index=True)[SCORE_COLUMNS] if frames else pd.DataFrame(columns=SCORE_COLUMNS)


def _auc_or_nan(y: np.ndarray, s: np.ndarray) -> float:
    """ROC AUC of score ``s``, NaN when any score is missing (a check without that part)."""
    ok = np.isfinite(s)
    return roc_auc(y[ok], s[ok]) if ok.all() and len(s) else float("nan")


def domain_summary(scores: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Per method and per set other than ``reference`` (the in-domain images, e.g. the CIFAKE test
    split): the number of images of each, the share of each flagged out of domain (the set with
    and without the resolution check), and how well each score separates the set (positive) from
    the reference: ROC AUC of ``domain_score``, ``input_z`` and ``features_z``."""
    rows = []
    for method, g in scores.groupby("method", sort=False):
        ref = g[g["set"] == reference]
        for set_name, o in g[g["set"] != reference].groupby("set", sort=False):
            y = np.r_[np.zeros(len(ref), int), np.ones(len(o), int)]
            row = {"method": method, "set": set_name, "n_reference": len(ref), "n_set": len(o),
                   "threshold": float(g["threshold"].iloc[0]),
                   "flagged_reference": float((~ref["in_domain"].astype(bool)).mean()) if len(ref) else float("nan"),
                   "flagged_set": float((~o["in_domain"].astype(bool)).mean()),
                   "flagged_set_score_only": float((~o["score_in_domain"].astype(bool)).mean())}
            for col, key in (("domain_score", "auc_score"), ("input_z", "auc_input"), ("features_z", "auc_features")):
                s = np.r_[ref[col].to_numpy(float), o[col].to_numpy(float)]
                row[key] = _auc_or_nan(y, s) if len(ref) else float("nan")
            rows.append(row)
    return pd.DataFrame(rows)
