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


# ------------------------------------------------------------------ the domain check
@pytest.fixture(scope="module")
def lite0_check(cifake_members):
    """EfficientNet-Lite0 ImageNet features + a small head, and its domain check fitted on the
    fixture's 60 training images and 30 of its test images (the other 30 stay unseen)."""
    from aidetect_utils import domain, models
    items = sorted(cifake_members.items())
    x = np.stack([decode_image(d).array for _, d in items])
    train = np.array(["/train/" in n for n, _ in items])
    torch.manual_seed(0)
    model = models.build_feature_classifier({"kind": "timm", "name": "tf_efficientnet_lite0"},
                                            {"kind": "mlp", "hidden": [64, 32], "dropout": 0.5},
                                            pretrained="efficientnet-lite0-pypi").eval()
    prep = transforms.preprocessing(32)
    test_idx = np.flatnonzero(~train)
    val, unseen = test_idx[::2], test_idx[1::2]
    check = domain.fit(model, transforms.eval_transform(prep), x[train], x[val], source_size=32, seed=0)
    return model, prep, check, x[unseen]


def test_the_domain_check_tells_realworld100_from_cifake(lite0_check, realworld_members):
    from sklearn.metrics import roc_auc_score
    model, prep, check, unseen = lite0_check
    assert check.layer == "head.5" and check.arrays["knn.bank"].shape == (60, 32)
    assert check.arrays["input.precision"].shape == (14, 14) and np.isfinite(check.threshold)
    rw = [decode_image(b, size=32) for _, b in sorted(realworld_members.items())[::5]]      # 20 of them
    rw_images = np.stack([d.array for d in rw])
    tf = transforms.eval_transform(prep)
    s_cifake = check.score(model, tf, unseen)["domain_score"].to_numpy()
    s_rw = check.score(model, tf, rw_images)["domain_score"].to_numpy()
    # the score alone (no resolution check), fitted on CIFAKE only, ranks realworld100 higher
    assert roc_auc_score([0] * len(s_cifake) + [1] * len(s_rw), np.r_[s_cifake, s_rw]) > 0.9
    # with the resolution check, every full-resolution photograph is out of domain, and says why
    judged = check.judge(model, tf, rw_images, [d.orig_size for d in rw])
    assert not judged["in_domain"].any()
    assert all(n.endswith("px, trained on 32x32") for n in judged["domain_note"])
    cifake = check.judge(model, tf, unseen, [(32, 32)] * len(unseen))
    assert cifake["in_domain"].mean() >= 0.8          # 95th-percentile threshold, fitted on 30 images


def test_the_domain_check_survives_the_model_folder(lite0_check, tmp_path):
    from aidetect_utils import artifacts, predict
    model, prep, check, unseen = lite0_check
    folder = artifacts.save_model_folder(tmp_path / "m", model, method="t", architecture=model.spec(),
                                         preprocessing=prep, domain_check=check)
    again = predict.Predictor(folder, device="cpu")
    tf = transforms.eval_transform(prep)
    pd_a = check.score(model, tf, unseen)
    pd_b = again.domain.score(again.model, again.transform, unseen)
    assert np.allclose(pd_a["domain_score"], pd_b["domain_score"], atol=1e-5)
    assert again.domain.threshold == check.threshold and again.domain.layer == check.layer


def test_predict_writes_the_domain_columns_and_warns(lite0_check, realworld_members, tmp_path, capsys):
    from aidetect_utils import artifacts, predict
    model, prep, check, unseen = lite0_check
    folder = artifacts.save_model_folder(tmp_path / "m", model, method="t", architecture=model.spec(),
                                         preprocessing=prep, domain_check=check)
    d = tmp_path / "imgs"
    d.mkdir()
    name, raw = next((n, b) for n, b in sorted(realworld_members.items()) if "/FAKE/gan_" in n)
    (d / "gan.jpg").write_bytes(raw)
    from PIL import Image
    Image.fromarray(unseen[0]).save(d / "cifake.png")
    out = tmp_path / "p.csv"
    assert predict.main(["--model", str(folder), str(d), "--output", str(out)]) == 0
    import pandas as pd
    table = pd.read_csv(out, keep_default_na=False).set_index("path")
    assert list(table.columns) == ["prob_fake", "label", "in_domain", "domain_score", "domain_note"]
    gan = table.loc[str(d / "gan.jpg")]
    assert gan["in_domain"] in (False, "False") and gan["domain_note"].endswith("px, trained on 32x32")
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and "of 2 images are out of domain for this model" in err
    assert len(err.strip().splitlines()) == 1


def test_the_predictor_reads_the_domain_features_from_its_own_forward_pass(lite0_check, realworld_members, tmp_path):
    """predict and the web page score an image and check its domain with one pass of the model,
    and get the same verdicts, scores and notes as the check run on its own."""
    from aidetect_utils import artifacts, predict
    model, prep, check, unseen = lite0_check
    folder = artifacts.save_model_folder(tmp_path / "m", model, method="t", architecture=model.spec(),
                                         preprocessing=prep, domain_check=check)
    pred = predict.Predictor(folder, device="cpu")
    rw = [decode_image(b, size=32) for _, b in sorted(realworld_members.items())[::10]]      # 10 of them
    images = np.concatenate([unseen, np.stack([d.array for d in rw])])
    sizes = [(32, 32)] * len(unseen) + [(32, 32)] * 5 + [d.orig_size for d in rw[5:]]
    seen = []
    handle = pred.model.register_forward_hook(lambda _m, inputs, _o: seen.append(len(inputs[0])))
    try:
        probs, frame = pred.score(images, sizes)
    finally:
        handle.remove()
    assert sum(seen) == len(images)                                       # each image through the model once
    alone = pred.in_domain(images, sizes)
    assert np.allclose(probs, pred.prob_fake(images), atol=1e-6)
    assert np.allclose(frame["domain_score"], alone["domain_score"], atol=1e-5)
    assert frame["in_domain"].tolist() == alone["in_domain"].tolist()
    assert frame["domain_note"].tolist() == alone["domain_note"].tolist()
    assert not frame["in_domain"].iloc[-5:].any() and frame["in_domain"].iloc[:len(unseen)].mean() > 0.5
