"""Monte Carlo dropout: a network with dropout, kept stochastic at test time, as a Bayesian model.

Each forward pass with dropout on samples one sub-network; over ``n_samples`` passes the mean
probability is the prediction and the spread is the model's uncertainty (Gal & Ghahramani,
2016). Reported per image: the mean P(FAKE), its standard deviation, the predictive entropy
(total uncertainty) and the mutual information (the part due to the model's own doubt).

:func:`accuracy_coverage` turns an uncertainty score into the question a user asks: if the most
uncertain images go to a human, how accurate is the model on the ones it keeps?
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from .engine import device_of, prob_fake_from_logits


def _entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return -(p * np.log(p) + (1 - p) * np.log(1 - p))


def mutual_information(samples) -> np.ndarray:
    """The mutual information between the prediction and the model (BALD; Houlsby et al., 2011),
    per input, in nats: the entropy of the mean P(FAKE) minus the mean entropy of the passes.

    ``samples``: (T, N) P(FAKE) of T stochastic passes over N inputs. Near 0 when every pass gives
    the same answer, however unsure; large when confident passes disagree. Unlike the entropy or
    the maximum probability of the mean, it is not a function of the mean alone.
    """
    samples = np.asarray(samples, dtype=np.float64)
    return _entropy(samples.mean(0)) - _entropy(samples).mean(0)


@torch.no_grad()
def mc_dropout_predict(model: nn.Module, x: torch.Tensor, n_samples: int = 50, seed: int = 0,
                       batch_size: int = 4096) -> pd.DataFrame:
    """``n_samples`` stochastic passes of ``model`` over inputs ``x`` with only dropout active.

    Returns one row per input: prob_fake (mean), std, entropy, mutual_info, and prob_fake_det
    (the ordinary deterministic prediction, dropout off).
    """
    model.eval()
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    if not drops:
        raise ValueError("the model has no dropout layer: MC dropout would return identical passes")
    device = device_of(model)

    def run() -> np.ndarray:
        return torch.cat([prob_fake_from_logits(model(x[i:i + batch_size].to(device)))
                          for i in range(0, len(x), batch_size)]).cpu().numpy().astype(np.float64)

    det = run()
    # the caller's random streams (CPU, and the GPU's where dropout draws there) are left as they were
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for m in drops:
            m.train()
        try:
            samples = np.stack([run() for _ in range(n_samples)])  # (T, N)
        finally:
            for m in drops:
                m.eval()
    mean = samples.mean(0)
    return pd.DataFrame({"prob_fake": mean, "std": samples.std(0), "entropy": _entropy(mean),
                         "mutual_info": mutual_information(samples), "prob_fake_det": det})


def accuracy_coverage(y_true, prob_fake, uncertainty, coverages=None) -> pd.DataFrame:
    """Accuracy on the ``coverage`` share of images with the lowest ``uncertainty`` (the rest is
    deferred), for each coverage in ``coverages`` (default 1.0, 0.95, ..., 0.5)."""
    y = np.asarray(y_true).astype(int)
    pred = (np.asarray(prob_fake) >= 0.5).astype(int)
    order = np.argsort(np.asarray(uncertainty), kind="stable")
    coverages = np.round(np.arange(1.0, 0.49, -0.05), 2) if coverages is None else np.asarray(coverages)
    rows = []
    for c in coverages:
        k = max(1, int(round(c * len(y))))
        keep = order[:k]
        rows.append({"coverage": float(c), "n_kept": k, "accuracy": float((pred[keep] == y[keep]).mean())})
    return pd.DataFrame(rows)
