"""Notebook 02's mechanism: ``feature_cache`` (a frozen backbone's features computed once, stored as
.npy beside a JSON key that hashes the settings, the images' pixels and the backbone's weights), as the
learner reads it in the notebook, must give the same features as ``features.cached_features`` on real
CIFAKE images, hit the cache on the second call, and miss it when the images (same count, other
content) or the backbone's weights change. The package must behave the same way on each case."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from aidetect_utils import features, models, transforms
from aidetect_utils.images import decode_image
from tests.mechanisms._cells import mechanism_namespace

TINY = {"image_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 64}
SETTINGS = {"backbone": {"kind": "vit", "config": TINY}, "prep": "32 px, mean/std 0.5", "view": 0}


@pytest.fixture(scope="module")
def image_sets(cifake_members):
    """Two sets of 40 real CIFAKE images each: the same count, other content."""
    names = sorted(cifake_members)
    images = np.stack([decode_image(cifake_members[n]).array for n in names])
    return images[0:120:3], images[1:120:3]


@pytest.fixture(scope="module")
def model():
    return models.build_feature_classifier({"kind": "vit", "config": TINY}, {"kind": "linear"}, "cls", "none", seed=0)


def _extract(m):
    tf = transforms.eval_transform(transforms.preprocessing(32, mean=[0.5] * 3, std=[0.5] * 3))
    return lambda imgs: features.extract_features(m, imgs, tf, batch_size=16)[0]


def _mine(ns, folder, images, m):
    return ns["feature_cache"](folder, "train_view0", SETTINGS, images, m.backbone, _extract(m))


def _package(folder, images, m):
    feats, _, hit = features.cached_features(folder, "train_view0", SETTINGS, lambda: (_extract(m)(images), 0.0),
                                             images=images, model=m)
    return feats, hit


@pytest.fixture()
def ns():
    return mechanism_namespace("02_vit_frozen_head")


def test_same_features_as_the_package_and_a_hit_on_the_second_call(ns, image_sets, model, tmp_path):
    a, _ = image_sets
    mine = [_mine(ns, tmp_path / "mine", a, model) for _ in range(2)]
    pkg = [_package(tmp_path / "package", a, model) for _ in range(2)]
    assert [hit for _, hit in mine] == [False, True]
    assert [hit for _, hit in pkg] == [False, True]
    assert mine[0][0].dtype == np.float32 and mine[0][0].shape == (len(a), TINY["hidden_size"])
    for (f_mine, _), (f_pkg, _) in zip(mine, pkg):
        assert np.array_equal(f_mine, f_pkg)
    assert np.array_equal(mine[0][0], _extract(model)(a))


def test_other_images_of_the_same_count_miss(ns, image_sets, model, tmp_path):
    a, b = image_sets
    assert a.shape == b.shape and not np.array_equal(a, b)
    _mine(ns, tmp_path / "mine", a, model)
    _package(tmp_path / "package", a, model)
    f_mine, hit_mine = _mine(ns, tmp_path / "mine", b, model)
    f_pkg, hit_pkg = _package(tmp_path / "package", b, model)
    assert not hit_mine and not hit_pkg
    assert np.array_equal(f_mine, f_pkg) and np.array_equal(f_mine, _extract(model)(b))
    assert _mine(ns, tmp_path / "mine", b, model)[1]            # the new images are now the cached ones


def test_changed_backbone_weights_miss(ns, image_sets, model, tmp_path):
    a, _ = image_sets
    _mine(ns, tmp_path / "mine", a, model)
    _package(tmp_path / "package", a, model)
    other = copy.deepcopy(model)
    with torch.no_grad():
        next(other.backbone.parameters()).add_(1e-3)
    f_mine, hit_mine = _mine(ns, tmp_path / "mine", a, other)
    f_pkg, hit_pkg = _package(tmp_path / "package", a, other)
    assert not hit_mine and not hit_pkg
    assert np.array_equal(f_mine, f_pkg) and not np.array_equal(f_mine, _extract(model)(a))


def test_other_settings_miss(ns, image_sets, model, tmp_path):
    a, _ = image_sets
    _mine(ns, tmp_path / "mine", a, model)
    f, hit = ns["feature_cache"](tmp_path / "mine", "train_view0", {**SETTINGS, "view": 1}, a, model.backbone,
                                 _extract(model))
    assert not hit
