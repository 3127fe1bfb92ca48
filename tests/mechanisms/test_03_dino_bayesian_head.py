"""Notebook 03's mechanism: ``mc_dropout`` (T stochastic passes with only the dropout layers on,
seeded inside ``torch.random.fork_rng``; mean, std, predictive entropy and mutual information), as the
learner reads it in the notebook, must give what ``uncertainty.mc_dropout_predict`` gives on the same
real CIFAKE features (EfficientNet-Lite0 ImageNet features of the fixture's images) with the same
seed, and other samples with another seed."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from aidetect_utils import features, models, transforms, uncertainty
from aidetect_utils.images import decode_image
from tests.mechanisms._cells import mechanism_namespace

T, SEED = 20, 7
KEYS = ("prob_fake", "std", "entropy", "mutual_info")


@pytest.fixture(scope="module")
def lite0_features(cifake_members):
    """Lite0's 1,280 ImageNet features of the 120 real CIFAKE images, and their labels."""
    names = sorted(cifake_members)
    images = np.stack([decode_image(cifake_members[n]).array for n in names])
    labels = np.array([1 if "/FAKE/" in n else 0 for n in names])
    m = models.build_feature_classifier({"kind": "timm", "name": "tf_efficientnet_lite0"}, {"kind": "linear"},
                                        pretrained="efficientnet-lite0-pypi", seed=0).cpu()
    mean, std = models.normalization(m)
    tf = transforms.eval_transform(transforms.preprocessing(32, mean=mean, std=std))
    return torch.from_numpy(features.extract_features(m, images, tf, batch_size=64)[0]), labels


@pytest.fixture(scope="module")
def head(lite0_features):
    """The notebook's MLP head (dropout 0.5 before its first two linear layers), a few Adam steps on
    the real features so that its passes are not all near 0.5."""
    x, y = lite0_features
    torch.manual_seed(0)
    h = models.mlp_head(x.shape[1], (128, 64), 0.5)
    opt = torch.optim.Adam(h.parameters(), lr=1e-3)
    h.train()
    for _ in range(20):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(h(x), torch.from_numpy(y)).backward()
        opt.step()
    return h.eval()


@pytest.fixture()
def mc_dropout():
    return mechanism_namespace("03_dino_bayesian_head")["mc_dropout"]


def test_same_mean_std_entropy_and_mutual_information_as_the_package(mc_dropout, head, lite0_features):
    x, _ = lite0_features
    mine = mc_dropout(head, x, T=T, seed=SEED)
    pkg = uncertainty.mc_dropout_predict(head, x, n_samples=T, seed=SEED, batch_size=len(x))
    assert mine["samples"].shape == (T, len(x))
    for k in KEYS:
        assert np.allclose(mine[k], pkg[k].to_numpy(), atol=1e-6), k
    assert mine["std"].mean() > 1e-3                  # dropout was really on: the passes differ
    assert (mine["mutual_info"] >= -1e-9).all() and (mine["mutual_info"] <= mine["entropy"] + 1e-9).all()


def test_a_different_seed_gives_different_samples(mc_dropout, head, lite0_features):
    x, _ = lite0_features
    a, b = mc_dropout(head, x, T=T, seed=SEED), mc_dropout(head, x, T=T, seed=SEED + 1)
    assert not np.allclose(a["samples"], b["samples"])
    assert np.array_equal(a["samples"], mc_dropout(head, x, T=T, seed=SEED)["samples"])
    pkg = uncertainty.mc_dropout_predict(head, x, n_samples=T, seed=SEED, batch_size=len(x))
    assert not np.allclose(b["prob_fake"], pkg["prob_fake"].to_numpy(), atol=1e-6)


def test_only_dropout_is_switched_on_and_the_callers_random_stream_is_untouched(mc_dropout, head, lite0_features):
    x, _ = lite0_features
    state = torch.get_rng_state()
    mc_dropout(head, x, T=3, seed=SEED)
    assert torch.equal(state, torch.get_rng_state())
    assert not any(m.training for m in head.modules())   # back in evaluation mode afterwards


def test_mutual_information_cell_equals_the_package(mc_dropout, head, lite0_features):
    """The notebook's ``mutual_information`` (its own mechanism cell) is ``uncertainty.mutual_information``,
    on real MC-dropout samples and on hand-made ones."""
    mi = mechanism_namespace("03_dino_bayesian_head")["mutual_information"]
    x, _ = lite0_features
    samples = mc_dropout(head, x, T=T, seed=SEED)["samples"]
    assert np.allclose(mi(samples), uncertainty.mutual_information(samples), atol=1e-12)
    made = np.array([[0.5, 0.9, 0.1], [0.5, 0.1, 0.1]])       # all unsure / confident but disagreeing / agreeing
    assert np.allclose(mi(made), uncertainty.mutual_information(made), atol=1e-12)
    assert abs(mi(made)[0]) < 1e-12 and mi(made)[1] > 0.3 and abs(mi(made)[2]) < 1e-12


def test_two_class_entropy_and_max_probability_rank_identically_and_mutual_information_does_not():
    rng = np.random.default_rng(0)
    samples = rng.beta(0.7, 0.7, size=(30, 500))              # (T, N) P(FAKE) of spread-out passes
    p = samples.mean(0)
    entropy = uncertainty._entropy(p)
    one_minus_max = 1 - np.maximum(p, 1 - p)
    ranks = lambda s: np.argsort(np.argsort(s, kind="stable"), kind="stable")
    assert np.array_equal(ranks(entropy), ranks(one_minus_max))
    labels = rng.integers(0, 2, 500)
    a = uncertainty.accuracy_coverage(labels, p, entropy)
    b = uncertainty.accuracy_coverage(labels, p, one_minus_max)
    assert a.equals(b)
    mi = uncertainty.mutual_information(samples)
    assert not np.array_equal(ranks(mi), ranks(entropy))
    assert np.corrcoef(ranks(mi), ranks(entropy))[0, 1] < 0.99
