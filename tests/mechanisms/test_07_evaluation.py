"""Notebook 07's written-out statistics (the cells tagged ``mechanism``): the percentile bootstrap
interval of accuracy and McNemar's test, against ``evaluation.bootstrap_ci`` and
``evaluation.mcnemar`` on the predictions of two simple scorers on real CIFAKE images, and
against values computed by hand."""
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
