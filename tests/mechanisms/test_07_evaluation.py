"""Notebook 07's written-out mechanisms (the cells tagged ``mechanism``): the percentile bootstrap
interval of accuracy and McNemar's test, against ``evaluation.bootstrap_ci`` and
``evaluation.mcnemar``; ECE and temperature scaling against ``metrics.expected_calibration_error``
and ``calibration.fit_temperature``/``apply_temperature``, all on the predictions of two simple
scorers on real CIFAKE images; the domain score against ``DomainCheck.score`` of checks fitted on
real CIFAKE images; and each against values computed by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from aidetect_utils import evaluation as ev
from aidetect_utils.images import decode_image
from tests.mechanisms._cells import mechanism_namespace


@pytest.fixture(scope="module")
def nb():
    return mechanism_namespace("07_evaluation")


@pytest.fixture(scope="module")
def scored(cifake_members):
    """Labels and two detectors' P(FAKE) on the 120 real CIFAKE images: fine detail (mean
    absolute Laplacian, high = FAKE) and colour saturation (high = FAKE), turned into
    probabilities by rank."""
    items = sorted(cifake_members.items())
    x = np.stack([decode_image(data).array for _, data in items]).astype(float)
    y = np.array([1 if "/FAKE/" in name else 0 for name, _ in items])
    g = x.mean(-1)
    detail = np.abs(4 * g[:, 1:-1, 1:-1] - g[:, :-2, 1:-1] - g[:, 2:, 1:-1] - g[:, 1:-1, :-2] - g[:, 1:-1, 2:]).mean((1, 2))
    saturation = ((x.max(-1) - x.min(-1)) / (x.max(-1) + 1e-6)).mean((1, 2))

    def by_rank(s):
        return (np.argsort(np.argsort(s, kind="stable"), kind="stable") + 0.5) / len(s)

    return y, by_rank(detail), by_rank(saturation)


def test_the_scorers_are_real_detectors_that_disagree(scored):
    y, a, b = scored
    assert len(y) == 120 and y.sum() == 60
    acc_a, acc_b = ev._accuracy(y, a), ev._accuracy(y, b)
    assert 0.5 < acc_a < 1.0 and 0.4 < acc_b < 1.0
    assert ((a >= 0.5) != (b >= 0.5)).sum() >= 25               # enough discordant images for both branches


@pytest.mark.parametrize("seed", [0, 42])
def test_bootstrap_interval_is_the_package_one_exactly(nb, scored, seed):
    y, a, b = scored
    for p in (a, b):
        mine = nb["bootstrap_accuracy_ci"](y, p, n_boot=300, seed=seed)
        assert mine == ev.bootstrap_ci(y, p, "accuracy", n_boot=300, seed=seed)
        assert mine[0] <= ev._accuracy(y, p) <= mine[1]
    assert nb["bootstrap_accuracy_ci"](y, a, n_boot=200, level=0.8, seed=seed) == \
        ev.bootstrap_ci(y, a, "accuracy", n_boot=200, level=0.8, seed=seed)


def test_a_different_seed_changes_the_interval(nb, scored):
    y, a, _ = scored
    first, second = (nb["bootstrap_accuracy_ci"](y, a, n_boot=300, seed=s) for s in (0, 1))
    assert first != second
    assert first == nb["bootstrap_accuracy_ci"](y, a, n_boot=300, seed=0)    # and the same seed repeats
    assert ev.bootstrap_ci(y, a, "accuracy", n_boot=300, seed=1) == second


def test_bootstrap_by_hand(nb):
    y = np.array([0, 1, 0, 1])
    assert nb["bootstrap_accuracy_ci"](y, y.astype(float), n_boot=50) == (1.0, 1.0)       # always right
    assert nb["bootstrap_accuracy_ci"](y, 1.0 - y, n_boot=50) == (0.0, 0.0)               # always wrong
    # two images, one right: a resample holds 0, 1 or 2 right ones, so every accuracy is 0, 0.5 or 1
    lo, hi = nb["bootstrap_accuracy_ci"](np.array([1, 1]), np.array([0.9, 0.1]), n_boot=400, seed=0)
    assert (lo, hi) == (0.0, 1.0)


def test_mcnemar_is_the_package_one_on_both_branches(nb, scored):
    y, a, b = scored
    branches = set()
    for rows in (slice(None), slice(0, 20), slice(40, 100), slice(60, 75)):
        mine = nb["mcnemar_test"](y[rows], a[rows] >= 0.5, b[rows] >= 0.5)
        pkg = ev.mcnemar(y[rows], a[rows] >= 0.5, b[rows] >= 0.5)
        assert mine[:2] == (pkg["b"], pkg["c"])
        assert mine[2] == pytest.approx(pkg["p_value"], rel=1e-12, abs=1e-300)
        assert nb["mcnemar_test"](y[rows], b[rows] >= 0.5, a[rows] >= 0.5)[2] == pytest.approx(mine[2], rel=1e-12)
        branches.add(pkg["test"])
    assert branches == {"exact binomial", "chi-square, continuity corrected"}


def _pairs(b: int, c: int, both_right: int = 5, both_wrong: int = 3):
    """Labels all 1; A right and B wrong on b images, the reverse on c."""
    a = [1] * b + [0] * c + [1] * both_right + [0] * both_wrong
    bb = [0] * b + [1] * c + [1] * both_right + [0] * both_wrong
    return np.ones(len(a), int), np.array(a), np.array(bb)


def test_mcnemar_by_hand(nb):
    # exact: 2 * P(X <= 2), X ~ Binomial(12, 1/2) = 2 * (1 + 12 + 66) / 4096
    assert nb["mcnemar_test"](*_pairs(10, 2)) == (10, 2, 2 * 79 / 4096)
    assert nb["mcnemar_test"](*_pairs(5, 5))[2] == 1.0                       # capped at 1
    assert nb["mcnemar_test"](*_pairs(0, 0)) == (0, 0, 1.0)
    # chi-square: (|30 - 10| - 1)^2 / 40 = 9.025, p = P(chi2_1 > 9.025)
    b, c, p = nb["mcnemar_test"](*_pairs(30, 10))
    assert (b, c) == (30, 10) and p == pytest.approx(math.erfc(math.sqrt(9.025 / 2)), rel=1e-15)
    assert p == pytest.approx(ev.mcnemar(*_pairs(30, 10))["p_value"], rel=1e-12)
    # 24 discordant pairs: still exact; 25: chi-square
    assert nb["mcnemar_test"](*_pairs(20, 4))[2] == pytest.approx(2 * sum(math.comb(24, k) for k in range(5)) / 2 ** 24)
    assert nb["mcnemar_test"](*_pairs(20, 5))[2] == pytest.approx(math.erfc(math.sqrt((15 - 1) ** 2 / 25 / 2)))


# ------------------------------------------------------------------------------ ECE and temperature scaling
def test_ece_is_the_package_one(nb, scored):
    from aidetect_utils.metrics import expected_calibration_error
    y, a, b = scored
    for p in (a, b, np.clip(2 * a - 0.5, 0, 1), np.full(len(y), 0.5)):
        for n_bins in (15, 10, 4):
            assert nb["ece_equal_width"](y, p, n_bins) == pytest.approx(expected_calibration_error(y, p, n_bins),
                                                                         rel=1e-12, abs=1e-15)


def test_ece_by_hand(nb):
    # ten images all at P(FAKE) = 0.95, nine of them FAKE: one bin, |0.9 - 0.95| = 0.05
    y = np.array([1] * 9 + [0])
    assert nb["ece_equal_width"](y, np.full(10, 0.95)) == pytest.approx(0.05)
    # confidence 0.8 on every image (0.2 for REAL, 0.8 for FAKE), all right: |1 - 0.8| = 0.2
    assert nb["ece_equal_width"](np.array([0, 1, 0, 1]), np.array([0.2, 0.8, 0.2, 0.8])) == pytest.approx(0.2)


def test_temperature_scaling_is_the_package_one(nb, scored):
    from aidetect_utils import calibration
    y, a, b = scored
    val, test = np.arange(0, 120, 2), np.arange(1, 120, 2)           # fit on one half, apply on the other
    for p in (a, b, np.clip(1.6 * a - 0.3, 0, 1), np.where(y == 1, 0.999, 0.001)):
        t = nb["fit_temperature_by_nll"](p[val], y[val])
        assert t == pytest.approx(calibration.fit_temperature(p[val], y[val]), rel=1e-9)
        assert calibration.TEMPERATURE_BOUNDS[0] <= t <= calibration.TEMPERATURE_BOUNDS[1]
        q = nb["temperature_scaled"](p[test], t)
        assert np.allclose(q, calibration.apply_temperature(p[test], t), rtol=1e-12, atol=0)
        assert ((q >= 0.5) == (p[test] >= 0.5)).all() or (p[test] == 0.5).any()     # no verdict changes
    # rank scores are under-confident at the extremes of a weak detector: T moves away from 1
    assert nb["fit_temperature_by_nll"](b, y) != pytest.approx(1.0, abs=1e-3)


# ------------------------------------------------------------------------------ the domain score
@pytest.fixture(scope="module")
def domain_checks(cifake_members, tmp_path_factory):
    """Domain checks fitted on the 60 real CIFAKE training images by ``domain.fit`` (standardised
    and thresholded on half of the 60 test images each), with and without a feature layer, as
    fitted (float64) and as loaded back from a model folder (float32); the other images to score."""
    import torch
    from torch import nn
    from aidetect_utils import domain
    items = sorted(cifake_members.items())
    train = np.stack([decode_image(d).array for n, d in items if "/train/" in n])
    held = np.stack([decode_image(d).array for n, d in items if "/test/" in n])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 24), nn.ReLU(), nn.Linear(24, 2)).eval()

    def transform(x):
        return x.float() / 255

    checks = {}
    for layer in ("2", None):
        check = domain.fit(model, transform, train, held[:40], source_size=32, layer=layer, k=5, seed=0)
        folder = tmp_path_factory.mktemp(f"domain_{layer}")
        check.save(folder)
        checks[f"layer {layer}"], checks[f"layer {layer}, loaded"] = check, domain.DomainCheck.load(folder)
    return model, transform, checks, np.concatenate([held[40:], train[:10]])


def test_domain_score_is_the_package_one(nb, domain_checks):
    from aidetect_utils import domain
    model, transform, checks, x = domain_checks
    for name, check in checks.items():
        feats = domain.hooked_features(model, check.layer, x, transform) if check.layer else None
        mine = nb["domain_score"](domain.input_stats(x, check.jpeg_quality), feats, check)
        pkg = check.score(model, transform, x, feats=feats)
        for m, col in zip(mine, ["domain_score", "input_z", "features_z"]):
            assert np.allclose(m, pkg[col].to_numpy(), rtol=1e-4, atol=1e-4), (name, col)
        assert np.isfinite(mine[0]).all() and mine[0].std() > 0
        if check.layer is None:
            assert (mine[2] == 0).all() and np.array_equal(mine[0], mine[1])
        else:
            assert mine[2].std() > 0                                  # the feature part does move


def test_domain_score_by_hand(nb):
    """Identity covariance, a bank of two unit vectors, k = 1: every step checkable on paper."""
    from aidetect_utils import domain
    check = domain.DomainCheck(source_size=32, layer="f", k=1, weight=0.5,
                               arrays={"input.mean": np.zeros((1, 2)), "input.scale": np.ones(2),
                                       "input.precision": np.eye(2), "knn.bank": np.eye(2)},
                               z={"input_mu": 0.0, "input_sd": 1.0, "knn_mu": 0.0, "knn_sd": 1.0}, threshold=1.0)
    stats = np.array([[3.0, 4.0]])                                    # d^2 = 25
    feats = np.array([[2.0, 0.0]])                                    # unit (1, 0): distance 0 to its nearest
    score, input_z, features_z = nb["domain_score"](stats, feats, check)
    assert input_z[0] == pytest.approx(np.log(25 + 1e-6)) and features_z[0] == pytest.approx(0.0, abs=1e-6)
    assert score[0] == pytest.approx(np.log(25 + 1e-6))
    feats = np.array([[1.0, 1.0]])                                    # 45 degrees from both: sqrt(2 - sqrt(2))
    assert nb["domain_score"](stats, feats, check)[2][0] == pytest.approx(np.sqrt(2 - np.sqrt(2)))
