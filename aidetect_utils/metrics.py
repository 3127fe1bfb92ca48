"""Classification and calibration metrics, computed the same way for every method.

scikit-learn computes everything it has: accuracy, balanced accuracy, precision/recall/F1 per
class and macro, ROC AUC, PR AUC (average precision), the confusion matrix and the ROC curve.
Expected calibration error is not in scikit-learn, so :func:`expected_calibration_error` is
written here (equal-width bins, as in Guo et al. 2017). FAKE (label 1) is the positive class.

One decision rule everywhere: an image is judged FAKE when P(FAKE) >= :data:`THRESHOLD`
(:func:`judged_fake`); every model folder records the threshold it was scored with.
"""
from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

#: The decision threshold: P(FAKE) >= THRESHOLD is judged FAKE, below it REAL (the boundary
#: itself is FAKE). Training accuracy, test metrics, notebook 07 and the model folders use it.
THRESHOLD = 0.5


def judged_fake(prob_fake, threshold: float = THRESHOLD) -> np.ndarray:
    """1 (FAKE) where P(FAKE) reaches ``threshold``, 0 (REAL) below it: the one boundary rule."""
    return (np.asarray(prob_fake) >= threshold).astype(int)


def accuracy(y_true, prob_fake, threshold: float = THRESHOLD) -> float:
    """Share of images whose :func:`judged_fake` verdict is their label (no input checks: the
    bootstrap calls it a thousand times)."""
    return float((judged_fake(prob_fake, threshold) == np.asarray(y_true)).mean())


def roc_auc(y_true, prob_fake) -> float:
    """ROC AUC of P(FAKE), or NaN when only one class is present (a resample may lack one)."""
    return float(skm.roc_auc_score(y_true, prob_fake)) if len(np.unique(y_true)) == 2 else float("nan")


def _check(y_true, prob_fake) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(int).reshape(-1)
    p = np.asarray(prob_fake, dtype=np.float64).reshape(-1)
    if len(y) != len(p):
        raise ValueError(f"{len(y)} labels but {len(p)} probabilities")
    if len(y) == 0:
        raise ValueError("no predictions to score")
    if not set(np.unique(y)) <= {0, 1}:
        raise ValueError("labels must be 0 (REAL) or 1 (FAKE)")
    if np.any((p < 0) | (p > 1)) or not np.all(np.isfinite(p)):
        raise ValueError("prob_fake must be finite and in [0, 1]")
    return y, p


def confidence_bins(y: np.ndarray, p: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Confidence of the predicted class, whether it is right (0/1), and the index of its
    equal-width bin (lo, hi] among ``edges``: what ECE and reliability diagrams are made of."""
    pred = judged_fake(p)
    conf = np.where(pred == 1, p, 1 - p)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, len(edges) - 2)
    return conf, (pred == y).astype(float), idx


def expected_calibration_error(y_true, prob_fake, n_bins: int = 15) -> float:
    """ECE of the predicted class's confidence: over ``n_bins`` equal-width bins (lo, hi] of
    [0, 1], the sum of |accuracy - mean confidence| weighted by the bin's share of images.
    A binary prediction's confidence is at least 0.5, so the lower bins stay empty."""
    y, p = _check(y_true, prob_fake)
    conf, correct, idx = confidence_bins(y, p, np.linspace(0.0, 1.0, n_bins + 1))
    ece = 0.0
    for b in range(n_bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def tpr_at_fpr(y_true, prob_fake, fpr_target: float = 0.05) -> float:
    """Highest true-positive rate whose false-positive rate stays at or below ``fpr_target``."""
    y, p = _check(y_true, prob_fake)
    if len(np.unique(y)) < 2:
        return float("nan")
    fpr, tpr, _ = skm.roc_curve(y, p)
    ok = fpr <= fpr_target
    return float(tpr[ok].max()) if ok.any() else 0.0


def classification_metrics(y_true, prob_fake, threshold: float = THRESHOLD) -> dict:
    """Every number the metrics.json schema holds, as plain floats/ints."""
    y, p = _check(y_true, prob_fake)
    pred = judged_fake(p, threshold)
    prec, rec, f1, support = skm.precision_recall_fscore_support(y, pred, labels=[0, 1], zero_division=0)
    both = len(np.unique(y)) == 2
    cm = skm.confusion_matrix(y, pred, labels=[0, 1])
    return {
        "accuracy": float(skm.accuracy_score(y, pred)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y, pred)) if both else float("nan"),
        "precision_real": float(prec[0]), "recall_real": float(rec[0]), "f1_real": float(f1[0]),
        "precision_fake": float(prec[1]), "recall_fake": float(rec[1]), "f1_fake": float(f1[1]),
        "f1_macro": float(f1.mean()),
        "roc_auc": float(skm.roc_auc_score(y, p)) if both else float("nan"),
        "pr_auc": float(skm.average_precision_score(y, p)) if both else float("nan"),
        "tpr_at_5pct_fpr": tpr_at_fpr(y, p, 0.05),
        "ece": expected_calibration_error(y, p),
        "log_loss": float(skm.log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1])),
        "confusion_matrix": cm.tolist(),  # rows: true REAL, FAKE; columns: predicted REAL, FAKE
        "support": {"REAL": int(support[0]), "FAKE": int(support[1])},
        "threshold": float(threshold),
    }


def summary_line(m: dict) -> str:
    return (f"accuracy {m['accuracy']:.4f} | F1(FAKE) {m['f1_fake']:.4f} | ROC AUC {m['roc_auc']:.4f} "
            f"| PR AUC {m['pr_auc']:.4f} | ECE {m['ece']:.4f}")
