"""Are the probabilities honest? Temperature scaling and reliability, notebook 07's calibration.

:func:`fit_temperature` fits one temperature T on validation data by minimising the log loss of
``sigmoid(logit(p) / T)`` (scipy); :func:`calibrate` also says when no temperature can help (the
fit runs to a bound, or the scores rank images about as well as chance), so a notebook never
reports a meaningless T; :func:`apply_temperature` rescales scores, which never changes a
verdict (the logit's sign is kept). :func:`reliability` is the table behind a reliability diagram;
the expected calibration error is ``metrics.expected_calibration_error``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import optimize

from .metrics import accuracy, confidence_bins, roc_auc

TEMPERATURE_BOUNDS = (0.05, 50.0)


def to_logit(p) -> np.ndarray:
    """log(p / (1 - p)), with p clipped to [1e-7, 1 - 1e-7] so 0 and 1 stay finite."""
    p = np.clip(np.asarray(p, dtype=float), 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def apply_temperature(prob_fake, temperature: float) -> np.ndarray:
    """``sigmoid(logit(p) / temperature)``: above 1 flattens scores towards 0.5, below sharpens."""
    return 1.0 / (1.0 + np.exp(-to_logit(prob_fake) / temperature))


def _nll(z: np.ndarray, y: np.ndarray, t: float) -> float:
    """Mean log loss of ``sigmoid(z / t)`` against labels ``y``."""
    q = np.clip(1.0 / (1.0 + np.exp(-z / t)), 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


def fit_temperature(prob_fake_val, y_val) -> float:
    """The temperature T in :data:`TEMPERATURE_BOUNDS` minimising validation log loss of
    ``sigmoid(logit(p) / T)``. It can end on a bound; :func:`calibrate` says when that means
    the model cannot be calibrated this way."""
    z, y = to_logit(prob_fake_val), np.asarray(y_val).astype(float)
    res = optimize.minimize_scalar(lambda log_t: _nll(z, y, np.exp(log_t)), bounds=tuple(np.log(TEMPERATURE_BOUNDS)),
                                   method="bounded", options={"xatol": 1e-6})
    return float(np.exp(res.x))


def calibrate(prob_fake_val, y_val) -> dict:
    """Temperature scaling that never silently hits its bound: ``{"temperature", "status",
    "reason"}`` where status is "fitted", or "uncalibratable" (temperature None) when the best
    temperature lies on a bound of the search (moving to the bound changes the validation log
    loss by under 1e-4 nats): at the upper bound flattening every score towards 0.5 keeps
    helping, at the lower bound sharpening does (validation separated perfectly, so no finite
    temperature is best); or when the scores rank validation images about as well as chance
    (ROC AUC < 0.55), so that any temperature only flattens them towards the base rate."""
    p, y = np.asarray(prob_fake_val, dtype=float), np.asarray(y_val).astype(int)
    t = fit_temperature(p, y)
    lo, hi = TEMPERATURE_BOUNDS
    z, best = to_logit(p), _nll(to_logit(p), y, t)
    # "on a bound": moving the temperature all the way to it changes the validation loss by less
    # than 1e-4 nats, so no temperature inside the search range is actually preferred
    at_hi, at_lo = _nll(z, y, hi) - best < 1e-4, _nll(z, y, lo) - best < 1e-4
    auc, acc = roc_auc(y, p), accuracy(y, p)
    if not (at_hi or at_lo or auc < 0.55):
        return {"temperature": t, "status": "fitted", "reason": ""}
    if at_hi:
        why = (f"the fit ran to the upper bound T = {hi:g}: flattening every score towards 0.5 keeps "
               f"improving the validation log loss, because the scores carry almost no information "
               f"(validation ROC AUC {auc:.3f}, accuracy {acc:.3f})")
    elif at_lo:
        why = (f"the fit ran to the lower bound T = {lo:g}: sharpening keeps improving the validation log "
               f"loss because validation images are separated perfectly (accuracy {acc:.3f})")
    else:
        why = (f"its scores rank validation images about as well as chance (ROC AUC {auc:.3f}, accuracy "
               f"{acc:.3f}): a temperature (best: {t:.3g}) could only flatten them towards the base rate")
    return {"temperature": None, "status": "uncalibratable", "reason": why}


def reliability(y_true, prob_fake, n_bins: int = 10) -> pd.DataFrame:
    """Mean confidence and accuracy of the predicted class per equal-width confidence bin."""
    edges = np.linspace(0.5, 1.0, n_bins + 1)
    conf, correct, idx = confidence_bins(np.asarray(y_true).astype(int), np.asarray(prob_fake, dtype=float), edges)
    rows = [{"bin_lo": edges[b], "bin_hi": edges[b + 1], "confidence": conf[idx == b].mean(),
             "accuracy": correct[idx == b].mean(), "count": int((idx == b).sum())}
            for b in range(n_bins) if (idx == b).any()]
    return pd.DataFrame(rows)
