"""Robust training (degradation augmentation), calibration that says when it cannot work, and the
real-world folder evaluation: on real CIFAKE images and the realworld100 files."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from aidetect_utils import evaluation as ev
from aidetect_utils import transforms
from aidetect_utils.images import decode_image


@pytest.fixture(scope="module")
def cifake_images(cifake_members):
    items = sorted(cifake_members.items())
    x = np.stack([decode_image(d).array for _, d in items])
    y = np.array([1 if "/FAKE/" in n else 0 for n, _ in items])
    return x, y


def _only(op: str, **strength) -> transforms.v2.Compose:
    """The degradation with one op switched on (p = 1) at a fixed strength."""
    kw = {"blur_sigma": None, "resize_scale": None, "jpeg_quality": None, "noise_sigma": None, **strength}
    return transforms.degradation(p={op: 1.0}, **kw)


def _chw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)


@pytest.mark.parametrize("op,strength,kind,level", [
    ("blur", {"blur_sigma": (1.0, 1.0)}, "blur", 1.0),
    ("resize", {"resize_scale": (0.5, 0.5)}, "resize", 0.5),
    ("jpeg", {"jpeg_quality": (30, 30)}, "jpeg", 30),
])
def test_each_op_is_exactly_the_corruption_it_trains_against(op, strength, kind, level, cifake_images):
    """At a fixed strength each op gives the very image notebook 07's robustness test scores."""
    x, _ = cifake_images
    tf = _only(op, **strength)
    out = np.stack([tf(_chw(im)).permute(1, 2, 0).numpy() for im in x[:20]])
    ref = ev.corrupt(x[:20], kind, level)
    assert out.dtype == np.uint8 and out.shape == x[:20].shape
    assert np.array_equal(out, ref)
    assert np.abs(out.astype(int) - x[:20]).mean() > 1.0    # and it really changed the images


def test_noise_has_the_drawn_standard_deviation(cifake_images):
    x, _ = cifake_images
    torch.manual_seed(0)
    tf = _only("noise", noise_sigma=(8.0, 8.0))
    im = x[0]
    diffs = np.concatenate([(tf(_chw(im)).permute(1, 2, 0).numpy().astype(float) - im).ravel() for _ in range(50)])
    inside = np.repeat((im > 40) & (im < 215), 50)           # pixels the clamp to [0, 255] cannot touch
    assert abs(diffs.reshape(50, -1)[:, inside[: im.size]].std() - 8.0) < 0.3


def test_strength_is_drawn_from_the_range(cifake_images):
    x, _ = cifake_images
    torch.manual_seed(0)
    tf = _only("resize", resize_scale=(0.25, 1.0))
    outs = {tf(_chw(x[0])).numpy().tobytes() for _ in range(12)}
    assert len(outs) >= 6                                      # different scales, different images


def test_probability_is_respected_and_zero_is_the_identity(cifake_images):
    x, _ = cifake_images
    torch.manual_seed(0)
    tf = _only("jpeg", jpeg_quality=(30, 30))
    tf.transforms[0].p = 0.3
    changed = np.mean([not torch.equal(tf(_chw(x[i % len(x)])), _chw(x[i % len(x)])) for i in range(400)])
    assert 0.23 < changed < 0.37                              # 400 draws at p = 0.3: well inside 3.5 sigma
    none = transforms.degradation(p=0.0)
    assert all(torch.equal(none(_chw(im)), _chw(im)) for im in x[:10])


def test_training_transform_keeps_labels_sizes_and_order(cifake_images):
    x, y = cifake_images
    prep = transforms.preprocessing(64)
    ds = transforms.ArrayDataset(x, y, transforms.train_transform(prep, hflip=True, degrade={"p": 0.5}))
    torch.manual_seed(0)
    items = [ds[i] for i in range(len(ds))]
    assert [lab for _, lab in items] == y.tolist()
    assert all(t.shape == (3, 64, 64) and t.dtype == torch.float32 for t, _ in items)
    # the degradations run first, at the source resolution (before the resize to the input size)
    steps = ds.transform.transforms
    assert isinstance(steps[0], transforms.v2.Compose) and isinstance(steps[-3], transforms.v2.Resize)


# ------------------------------------------------------------------ calibration
def test_calibration_fits_a_real_temperature():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 4000)                                 # the true log-odds of FAKE per image
    y = (rng.random(4000) < 1 / (1 + np.exp(-z))).astype(int)
    p = 1 / (1 + np.exp(-2 * z))                               # a model twice overconfident
    c = ev.calibrate(p, y)
    assert c["status"] == "fitted" and c["temperature"] == pytest.approx(2.0, rel=0.1) and c["reason"] == ""


def test_a_model_that_runs_the_fit_to_its_bound_is_reported_uncalibratable():
    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 1000)                                 # balanced, so the best constant is 0.5
    p = np.clip(rng.normal(0.9, 0.05, 2000), 0.01, 0.99)        # says FAKE for everything, ignoring the image
    assert ev.fit_temperature(p, y) == pytest.approx(50.0, rel=0.01)   # the raw optimum sits on the bound
    c = ev.calibrate(p, y)
    assert c["status"] == "uncalibratable" and c["temperature"] is None
    assert c["reason"].startswith("the fit ran to the upper bound T = 50")


def test_scores_at_chance_are_reported_uncalibratable_inside_the_bounds():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)                                # 52% FAKE: a finite temperature reaches it
    p = np.clip(rng.normal(0.9, 0.05, 2000), 0.01, 0.99)
    assert 10 < ev.fit_temperature(p, y) < 45
    c = ev.calibrate(p, y)
    assert c["status"] == "uncalibratable" and "as well as chance (ROC AUC 0.5" in c["reason"]


def test_perfect_separation_is_reported_uncalibratable():
    y = np.array([0, 1] * 50)
    p = np.where(y == 1, 0.8, 0.2)
    c = ev.calibrate(p, y)
    assert c["status"] == "uncalibratable" and "lower bound" in c["reason"]


# ------------------------------------------------------------------ real-world folders
def test_file_groups_of_realworld100_names():
    assert [ev.image_group(n) for n in ("gan_3.jpg", "diffusion2_10.jpg", "city_7.jpg", "photo.png")] == \
        ["gan", "diffusion2", "city", "photo"]
