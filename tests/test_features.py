"""Frozen-backbone models, cached features, MC dropout and feature importance."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from aidetect_utils import features, models, splits, transforms, uncertainty

TINY_VIT = {"image_size": 32, "patch_size": 8, "hidden_size": 24, "num_hidden_layers": 1,
            "num_attention_heads": 2, "intermediate_size": 32}


@pytest.fixture(scope="module")
def real_images(cifake_members):
    items = sorted(cifake_members.items())
    imgs = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for _, b in items])
    labels = np.array([1 if "/FAKE/" in n else 0 for n, _ in items])
    return imgs, labels


def test_frozen_vit_trains_only_the_head():
    torch.manual_seed(0)
    m = models.FeatureClassifier({"kind": "vit", "config": TINY_VIT}, {"kind": "linear"}, pooling="cls")
    trainable, total = models.count_parameters(m)
    assert trainable == 24 * 2 + 2 and total > trainable
    m.train()
    assert not m.backbone.training and m.head.training
    mlp = models.FeatureClassifier({"kind": "vit", "config": TINY_VIT}, {"kind": "mlp", "hidden": [128, 64]})
    assert models.count_parameters(mlp)[0] == (24 * 128 + 128) + (128 * 64 + 64) + (64 * 2 + 2)
    assert [type(l).__name__ for l in mlp.head] == ["Dropout", "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Linear"]


def test_pooling_choices_differ_and_match_definition(real_images):
    imgs, _ = real_images
    prep = transforms.preprocessing(32, (0.5,) * 3, (0.5,) * 3)
    x = torch.stack([transforms.eval_transform(prep)(torch.from_numpy(i).permute(2, 0, 1)) for i in imgs[:4]])
    torch.manual_seed(0)
    m = models.FeatureClassifier({"kind": "vit", "config": TINY_VIT}, {"kind": "linear"}, pooling="mean").eval()
    hidden = m.backbone(pixel_values=x).last_hidden_state
    assert torch.allclose(m.features(x), hidden.mean(1))
    m.pooling = "cls"
    assert torch.allclose(m.features(x), hidden[:, 0])


@pytest.mark.parametrize("factory", [
    lambda: models.FeatureClassifier({"kind": "vit", "config": TINY_VIT}, {"kind": "mlp", "hidden": [8]}, "mean"),
    lambda: models.ViTClassifier(config=TINY_VIT, interpolate_pos_encoding=True),
])
def test_model_folder_rebuilds_the_same_model(factory, tmp_path):
    """Through the JSON spec of a model folder, offline: same outputs, even at another input size."""
    from aidetect_utils import artifacts
    torch.manual_seed(1)
    m = factory().eval()
    prep = transforms.preprocessing(32, (0.5,) * 3, (0.5,) * 3)
    artifacts.save_model_folder(tmp_path / "m", m, method="t", architecture=m.spec(), preprocessing=prep)
    m2, spec = artifacts.load_model_folder(tmp_path / "m")
    x = torch.randn(2, 3, 16, 16)  # a smaller input than the config's 32: position embeddings interpolated
    with torch.no_grad():
        assert torch.allclose(m(x), m2(x), atol=1e-6)


def test_cached_features_hit_and_invalidate(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return np.ones((3, 2), np.float32) * len(calls), 1.5
    f, s, hit = features.cached_features(tmp_path, "x", {"a": 1}, compute)
    assert not hit and s == 1.5 and f.sum() == 6
    f, s, hit = features.cached_features(tmp_path, "x", {"a": 1}, compute)
    assert hit and len(calls) == 1 and f.sum() == 6
    f, _, hit = features.cached_features(tmp_path, "x", {"a": 2}, compute)
    assert not hit and f.sum() == 12


def test_gradient_importance_of_a_linear_head_is_its_weight_difference():
    head = torch.nn.Linear(5, 2)
    imp = features.gradient_importance(head, np.random.default_rng(0).normal(size=(10, 5)).astype(np.float32))
    w = head.weight.detach().numpy()
    assert np.allclose(imp, np.abs(w[1] - w[0]), atol=1e-6)


def test_extract_features_matches_model_and_seeded_views(real_images):
    imgs, _ = real_images
    prep = transforms.preprocessing(32, (0.5,) * 3, (0.5,) * 3)
    torch.manual_seed(0)
    m = models.FeatureClassifier({"kind": "vit", "config": TINY_VIT}, {"kind": "linear"})
    f, secs = features.extract_features(m, imgs[:10], transforms.eval_transform(prep), batch_size=4)
    x = torch.stack([transforms.eval_transform(prep)(torch.from_numpy(i).permute(2, 0, 1)) for i in imgs[:10]])
    with torch.no_grad():
        assert np.allclose(f, m.features(x).numpy(), atol=1e-5) and secs > 0
    aug = transforms.train_transform(prep, hflip=True, rotation=15, color_jitter=0.2)
    a1 = features.extract_features(m, imgs[:10], aug, 4, seed=7)[0]
    a2 = features.extract_features(m, imgs[:10], aug, 4, seed=7)[0]
    a3 = features.extract_features(m, imgs[:10], aug, 4, seed=8)[0]
    assert np.array_equal(a1, a2) and not np.allclose(a1, a3)


def test_cached_and_uncached_training_agree(real_images, tmp_path):
    """Without augmentation both paths see the same inputs, weights and batches: same accuracy."""
    imgs, labels = real_images
    tr = splits.ImageSplit(imgs[:80], labels[:80], np.arange(80), np.zeros(80, int))
    va = splits.ImageSplit(imgs[80:], labels[80:], np.arange(40), np.zeros(40, int))
    prep = transforms.preprocessing(32, (0.5,) * 3, (0.5,) * 3)
    tf = transforms.eval_transform(prep)

    def make():
        torch.manual_seed(0)
        return models.FeatureClassifier({"kind": "vit", "config": TINY_VIT}, {"kind": "linear"})
    r = features.compare_cached_vs_uncached(make, lambda p: torch.optim.Adam(p, lr=1e-2), tr, va, tf, tf,
                                            epochs=2, aug_views=0, out_dir=tmp_path, batch_size=16)
    assert r["cached_val_acc"] == r["uncached_val_acc"]
    assert r["cached_seconds"] == pytest.approx(r["cached_extract_seconds"] + r["cached_head_seconds"], abs=0.011)
    assert r["speedup"] > 0 and r["images"] == 80 and r["epochs"] == 2


def test_mc_dropout():
    torch.manual_seed(0)
    head = models.mlp_head(6, (16,), dropout=0.5)
    x = torch.randn(50, 6)
    mc = uncertainty.mc_dropout_predict(head, x, n_samples=30, seed=3)
    assert list(mc.columns) == ["prob_fake", "std", "entropy", "mutual_info", "prob_fake_det"]
    assert (mc["std"] > 0).all() and (mc["mutual_info"] >= -1e-12).all()
    assert mc.equals(uncertainty.mc_dropout_predict(head, x, n_samples=30, seed=3))
    # the caller's random stream is left where it was
    torch.manual_seed(11); expected = torch.rand(3)
    torch.manual_seed(11); uncertainty.mc_dropout_predict(head, x, n_samples=4, seed=3)
    assert torch.equal(torch.rand(3), expected)
    assert not head.training and all(not m.training for m in head.modules())
    with torch.no_grad():
        det = torch.softmax(head(x), -1)[:, 1].numpy()
    assert np.allclose(mc["prob_fake_det"], det)
    no_drop = models.mlp_head(6, (16,), dropout=0.0)
    assert np.allclose(uncertainty.mc_dropout_predict(no_drop, x, n_samples=5)["std"], 0)
    with pytest.raises(ValueError, match="no dropout"):
        uncertainty.mc_dropout_predict(torch.nn.Linear(6, 2), x)


def test_accuracy_coverage_by_hand():
    y = [0, 1, 1, 0]
    p = [0.1, 0.9, 0.2, 0.6]          # right, right, wrong, wrong
    unc = [0.1, 0.2, 0.9, 0.5]        # the two mistakes are the most uncertain
    t = uncertainty.accuracy_coverage(y, p, unc, coverages=[1.0, 0.75, 0.5])
    assert t["n_kept"].tolist() == [4, 3, 2]
    assert t["accuracy"].tolist() == [0.5, pytest.approx(2 / 3), 1.0]


def test_backbone_helpers():
    assert models.backbone_spec("vit", "google/vit-base-patch16-224") == {"kind": "vit", "checkpoint": "google/vit-base-patch16-224"}
    assert models.backbone_spec("vit", None, TINY_VIT) == {"kind": "vit", "config": TINY_VIT}
    with pytest.raises(ValueError, match="backbone kind"):
        models.backbone_spec("resnet")
    lite = models.build_feature_classifier(models.backbone_spec("timm"), {"kind": "linear"},
                                           pretrained="efficientnet-lite0-pypi", seed=3)
    assert models.count_parameters(lite)[0] == 1280 * 2 + 2
    assert models.normalization(lite) == ([0.5] * 3, [0.5] * 3)  # tf_efficientnet_lite0's own config
    a = models.build_feature_classifier(models.backbone_spec("vit", None, TINY_VIT), {"kind": "linear"}, seed=3)
    b = models.build_feature_classifier(models.backbone_spec("vit", None, TINY_VIT), {"kind": "linear"}, seed=3)
    assert torch.equal(a.head.weight, b.head.weight)
