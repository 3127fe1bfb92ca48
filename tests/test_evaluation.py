"""Notebook 07's statistics, corruptions, calibration and Grad-CAM against hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from aidetect_utils import evaluation as ev, explain
from aidetect_utils.images import decode_image
from aidetect_utils.metrics import expected_calibration_error


# ------------------------------------------------------------------------------ bootstrap
def test_bootstrap_ci_matches_the_normal_approximation():
    y = np.array([0, 1] * 1000)
    p = np.where(np.arange(2000) % 4 < 2, y, 1 - y).astype(float)      # exactly half right
    assert ev._accuracy(y, p) == 0.5
    lo, hi = ev.bootstrap_ci(y, p, "accuracy", n_boot=2000, seed=0)
    half_width = 1.96 * math.sqrt(0.25 / 2000)                            # 0.0219
    assert lo == pytest.approx(0.5 - half_width, abs=0.004)
    assert hi == pytest.approx(0.5 + half_width, abs=0.004)
    assert ev.bootstrap_ci(y, p, "accuracy", n_boot=200, seed=3) == ev.bootstrap_ci(y, p, "accuracy", n_boot=200, seed=3)


def test_bootstrap_ci_degenerate_and_auc():
    y = np.array([0, 0, 1, 1] * 25)
    assert ev.bootstrap_ci(y, y.astype(float), "accuracy", n_boot=100) == (1.0, 1.0)
    rng = np.random.default_rng(0)
    p = np.clip(y * 0.3 + rng.random(100) * 0.7, 0, 1)
    auc = ev._auc(y, p)
    lo, hi = ev.bootstrap_ci(y, p, "roc_auc", n_boot=500, seed=0)
    assert lo < auc < hi and 0.5 < lo


# ------------------------------------------------------------------------------ McNemar
def _preds(b: int, c: int, both_right: int = 5, both_wrong: int = 3):
    """Labels all 1; A right/B wrong on b images, the reverse on c."""
    a = [1] * b + [0] * c + [1] * both_right + [0] * both_wrong
    bb = [0] * b + [1] * c + [1] * both_right + [0] * both_wrong
    return np.ones(len(a), dtype=int), np.array(a), np.array(bb)


def test_mcnemar_exact_by_hand():
    y, a, b = _preds(10, 2)
    t = ev.mcnemar(y, a, b)
    assert (t["b"], t["c"], t["test"]) == (10, 2, "exact binomial")
    # two-sided: 2 * P(X <= 2), X ~ Binomial(12, 1/2) = 2 * (1 + 12 + 66) / 4096
    assert t["p_value"] == pytest.approx(2 * 79 / 4096, rel=1e-9)


def test_mcnemar_chi_square_by_hand():
    y, a, b = _preds(30, 10)
    t = ev.mcnemar(y, a, b)
    assert t["statistic"] == pytest.approx((20 - 1) ** 2 / 40)               # 9.025
    assert t["p_value"] == pytest.approx(math.erfc(math.sqrt(9.025 / 2)), rel=1e-9)
    assert ev.mcnemar(*_preds(0, 0))["p_value"] == 1.0
    assert ev.mcnemar(y, b, a)["p_value"] == pytest.approx(t["p_value"])       # symmetric


# ------------------------------------------------------------------------------ temperature scaling
def test_temperature_scaling_by_hand():
    # logit 2 at T = 2 becomes logit 1
    assert ev.apply_temperature([1 / (1 + math.exp(-2))], 2.0)[0] == pytest.approx(1 / (1 + math.exp(-1)))
    assert np.allclose(ev.apply_temperature([0.1, 0.5, 0.93], 1.0), [0.1, 0.5, 0.93])


def test_temperature_recovers_known_overconfidence():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, 100_000)
    y = (rng.random(z.size) < 1 / (1 + np.exp(-z / 2))).astype(int)    # true logit is z / 2
    p = 1 / (1 + np.exp(-z))                                              # model says z: too confident
    t = ev.fit_temperature(p, y)
    assert t == pytest.approx(2.0, abs=0.05)
    assert expected_calibration_error(y, ev.apply_temperature(p, t)) < expected_calibration_error(y, p) / 3


def test_reliability_bins():
    y = np.array([1, 0, 1, 0])
    p = np.array([0.9, 0.9, 0.6, 0.2])       # confidences 0.9, 0.9, 0.6, 0.8
    r = ev.reliability(y, p, n_bins=5)       # bins of width 0.1 over [0.5, 1]
    assert r["count"].sum() == 4
    assert r.set_index("bin_hi")["accuracy"].round(6).to_dict() == {0.6: 1.0, 0.8: 1.0, 0.9: 0.5}


# ------------------------------------------------------------------------------ corruptions
def test_corruptions_on_known_inputs():
    grey = np.full((2, 64, 64, 3), 128, dtype=np.uint8)
    for kind, s in (("blur", 2.0), ("resize", 0.25), ("noise", 0.0)):
        assert np.array_equal(ev.corrupt(grey, kind, s), grey), kind
    assert np.abs(ev.corrupt(grey, "jpeg", 30).astype(int) - 128).max() <= 1
    noisy = ev.corrupt(grey, "noise", 8.0, seed=1).astype(float)
    assert noisy.std() == pytest.approx(8.0, abs=0.3) and noisy.mean() == pytest.approx(128, abs=0.3)
    assert np.array_equal(noisy, ev.corrupt(grey, "noise", 8.0, seed=1))
    checker = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    checker[:, ::2, ::2] = checker[:, 1::2, 1::2] = 255                   # 1-pixel checkerboard
    assert ev.corrupt(checker, "resize", 0.5).std() < 0.2 * checker.std()  # the fine pattern is gone
    assert ev.corrupt(checker, "blur", 1.0).std() < 0.5 * checker.std()
    with pytest.raises(ValueError, match="unknown corruption"):
        ev.corrupt(grey, "rain", 1)


def test_jpeg_corruption_grows_with_lower_quality(cifake_members):
    # a never-compressed image: smooth gradients plus fine noise
    yy, xx = np.mgrid[0:64, 0:64]
    rng = np.random.default_rng(0)
    synth = np.stack([xx * 4, yy * 4, (xx + yy) * 2], -1) + rng.integers(0, 24, (64, 64, 3))
    synth = np.clip(synth, 0, 255).astype(np.uint8)[None]
    err = {q: np.mean((ev.corrupt(synth, "jpeg", q).astype(float) - synth) ** 2) for q in (95, 75, 50, 30)}
    assert 0 < err[95] < err[75] < err[50] < err[30]
    # CIFAKE files are JPEGs already: re-encoding near their own quality changes little, but
    # quality 30 still costs more than 95 or 50
    imgs = np.stack([decode_image(d).array for n, d in sorted(cifake_members.items())[:8]])
    err = {q: np.mean((ev.corrupt(imgs, "jpeg", q).astype(float) - imgs) ** 2) for q in (95, 50, 30)}
    assert 0 < err[95] < err[30] and err[50] < err[30]
    out = ev.corrupt(imgs, "jpeg", 50)
    assert out.shape == imgs.shape and out.dtype == np.uint8


# ------------------------------------------------------------------------------ results on disk
def test_align_keeps_common_ids_and_checks_labels():
    rec = {"trainable_params": 1, "total_params": 2, "train_seconds": 1.0, "inference_images_per_second": 1.0,
           "device": "cpu", "profile": "test"}
    a = pd.DataFrame({"id": ["x", "y", "z"], "cifar_class": [0, 1, 2], "label": [0, 1, 1], "prob_fake": [0.1, 0.8, 0.4]})
    b = pd.DataFrame({"id": ["z", "y"], "cifar_class": [2, 1], "label": [1, 1], "prob_fake": [0.9, 0.7]})
    labels, probs = ev.align({"a": (rec, a), "b": (rec, b)})
    assert labels["id"].tolist() == ["y", "z"]
    assert probs.to_dict("list") == {"a": [0.8, 0.4], "b": [0.7, 0.9]}
    table = ev.comparison_table({"a": (rec, a), "b": (rec, b)}, labels, probs, n_boot=50)
    assert table.index.tolist() == ["b", "a"] and table.loc["b", "accuracy"] == 1.0
    assert table.loc["a", "mcnemar_b_c"] == "1/0"     # b right and a wrong on one image
    with pytest.raises(ValueError, match="labels disagree"):
        ev.align({"a": (rec, a), "b": (rec, b.assign(label=[0, 1]))})



def test_every_method_table_names_the_backbone_it_ran_with():
    """07's tables carry the backbone each metrics.json records (a cpu-profile stand-in shows as
    what it is), first in the side-by-side table, and beside ``method`` in the long tables."""
    rec = {"trainable_params": 1, "total_params": 2, "train_seconds": 1.0, "inference_images_per_second": 1.0,
           "device": "cpu", "profile": "test"}
    pred = pd.DataFrame({"id": ["x", "y", "z", "w"], "cifar_class": [0, 1, 2, 3], "label": [0, 1, 1, 0],
                         "prob_fake": [0.1, 0.8, 0.4, 0.3]})
    found = {"dino_bayesian_head": ({**rec, "backbone": "tf_efficientnet_lite0"}, pred),
             "vit_finetune": ({**rec, "backbone": "vit-tiny-stand-in"}, pred.assign(prob_fake=[0.6, 0.9, 0.7, 0.2]))}
    labels, probs = ev.align(found)
    table = ev.comparison_table(found, labels, probs, n_boot=20)
    assert ev.TABLE_COLUMNS[0] == "backbone" and set(ev.TABLE_COLUMNS) <= set(table.columns)
    assert table["backbone"].to_dict() == {"dino_bayesian_head": "tf_efficientnet_lite0",
                                           "vit_finetune": "vit-tiny-stand-in"}
    # indexed by method: backbone first
    by_index = ev.with_backbone(pd.DataFrame({"ece": [0.1, 0.2]}, index=["vit_finetune", "dino_bayesian_head"]), found)
    assert list(by_index.columns) == ["backbone", "ece"]
    assert by_index["backbone"].tolist() == ["vit-tiny-stand-in", "tf_efficientnet_lite0"]
    # a method column: right after it; a row quoted from elsewhere keeps its own backbone, else "-"
    long = pd.DataFrame({"folder": ["r"] * 3, "method": ["dino_bayesian_head", "GPT-4o (reported)", "other"],
                         "backbone": [None, "gpt-4o", None], "accuracy": [0.5, 0.64, 0.5]})
    out = ev.with_backbone(long, found)
    assert list(out.columns) == ["folder", "method", "backbone", "accuracy"]
    assert out["backbone"].tolist() == ["tf_efficientnet_lite0", "gpt-4o", "-"]
    assert "backbone" not in long.columns or long["backbone"].isna().sum() == 2     # the input is not changed
    assert ev.backbone_of(found, "missing_method") == "-"

# ------------------------------------------------------------------------------ Grad-CAM
def test_gradcam_on_cnn_and_vit():
    from aidetect_utils.models import EfficientNetDetector, ViTClassifier, build_feature_classifier
    torch.manual_seed(0)
    x = torch.randn(3, 3, 32, 32)
    cnn = EfficientNetDetector("tf_efficientnet_lite0").eval()
    layer, _ = explain._target_layer(cnn, x)
    assert layer is cnn.backbone.blocks[2]                 # the last stage still 4x4 at 32 px
    maps = explain.explain_maps(cnn, x)
    assert maps.shape == (3, 32, 32) and maps.min() >= 0 and maps.max() <= 1 and maps.std() > 0
    vit = ViTClassifier({"image_size": 32, "patch_size": 8, "hidden_size": 48, "num_hidden_layers": 2,
                         "num_attention_heads": 3, "intermediate_size": 96}).eval()
    assert explain.explain_maps(vit, x).shape == (3, 32, 32)
    frozen = build_feature_classifier({"kind": "timm", "name": "tf_efficientnet_lite0"}, {"kind": "linear"})
    assert explain.explain_maps(frozen.eval(), x).std() > 0     # gradients reach a frozen backbone
    assert not explain.supports_explanations(torch.nn.Linear(2, 2))


# ------------------------------------------------------------------------------ robustness, read off
def _rob(rows):
    return pd.DataFrame([{"method": m, "corruption": k, "strength": s, "accuracy": a, "roc_auc": np.nan}
                         for m, k, s, a in rows])


ROB = _rob([("A", "clean", 0.0, 0.95), ("A", "jpeg", 30, 0.93), ("A", "blur", 1.0, 0.94), ("A", "blur", 2.0, 0.80),
            ("A", "noise", 16.0, 0.52), ("B", "clean", 0.0, 0.55), ("B", "jpeg", 30, 0.56), ("B", "blur", 1.0, 0.5),
            ("B", "blur", 2.0, 0.5), ("B", "noise", 16.0, 0.5)])


def test_robustness_table_reads_the_named_settings():
    t = ev.robustness_table(ROB)
    assert t.index.tolist() == ["A", "B"]
    assert t.columns.tolist() == ["clean", "JPEG q30", "resize x0.5", "blur σ=1", "noise 16"]
    assert t.loc["A"].tolist()[:2] == [0.95, 0.93] and t.loc["A", "blur σ=1"] == 0.94 and t.loc["B", "noise 16"] == 0.5
    assert t["resize x0.5"].isna().all()                            # not run: NaN, not a guess


def test_robustness_verdicts_by_hand():
    assert ev.chance_ceiling(100) == pytest.approx(0.5 + 1.96 * 0.05)           # 0.598
    v = ev.robustness_verdicts(ROB, n_images=100).set_index(["method", "corruption"])
    assert v.loc[("A", "jpeg"), "verdict"] == "holds"                            # 2 points
    assert v.loc[("A", "blur"), "verdict"] == "drops 15 points"
    assert v.loc[("A", "blur"), "worst_at"] == 2.0 and v.loc[("A", "blur"), "drop"] == pytest.approx(0.15)
    assert v.loc[("A", "noise"), "verdict"] == "falls to chance"                 # 0.52 <= 0.598
    assert (v.loc["B", "verdict"] == "at chance already").all()                 # clean 0.55 <= 0.598
    # more images, a narrower band: B's 0.55 is then better than guessing, and its blur drop shows
    v = ev.robustness_verdicts(ROB, n_images=10_000).set_index(["method", "corruption"])
    assert v.loc[("B", "blur"), "verdict"] == "falls to chance" and v.loc[("B", "jpeg"), "verdict"] == "holds"


# ------------------------------------------------------------------------------ the domain check, measured
class _StubCheck:
    def __init__(self, layer, has_score=True):
        self.layer, self.has_score, self.threshold = layer, has_score, 1.0


class _StubPredictor:
    """The three things domain_scores uses: ``domain``, ``prep`` and ``in_domain``; the score of an
    image is its mean pixel value / 100, so the expected numbers are computed by hand."""

    def __init__(self, layer="head.1", has_score=True):
        self.domain, self.prep, self.calls = _StubCheck(layer, has_score), {"source_size": 32}, []

    def in_domain(self, images, sizes):
        self.calls.append(len(images))
        s = images.reshape(len(images), -1).mean(1) / 100
        small = np.array([max(w, h) <= 64 for w, h in sizes])
        return pd.DataFrame({"domain_score": s, "input_z": s, "features_z": -s, "score_in_domain": s <= 1.0,
                             "in_domain": (s <= 1.0) & small})


def test_decode_files_skips_what_cannot_be_read(cifake_folder, tmp_path):
    files = sorted((cifake_folder / "test" / "REAL").iterdir())[:3]
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    x, sizes, names = ev.decode_files([*files, tmp_path / "broken.jpg"], 16)
    assert x.shape == (3, 16, 16, 3) and x.dtype == np.uint8 and sizes == [(32, 32)] * 3
    assert names == [str(f) for f in files]


def test_domain_scores_and_summary_by_hand(cifake_folder, monkeypatch):
    from aidetect_utils import domain_eval
    decoded = []
    real_decode = ev.decode_files
    monkeypatch.setattr(domain_eval, "decode_files", lambda files, size: decoded.append(size) or real_decode(files, size))
    ref = np.zeros((4, 32, 32, 3), np.uint8) + np.array([0, 50, 100, 150], np.uint8)[:, None, None, None]
    files = sorted((cifake_folder / "test" / "FAKE").iterdir())[:5]
    pred, vlm, old = _StubPredictor(), _StubPredictor(layer=None), _StubPredictor(has_score=False)
    scores = ev.domain_scores({"cnn": pred, "vlm": vlm, "old": old}, {"ref": ref, "files": files, "files again": files})
    assert set(scores["method"]) == {"cnn", "vlm"} and old.calls == []           # no fitted score: left out
    assert scores.groupby(["method", "set"], sort=False).size().tolist() == [4, 5, 5] * 2
    assert decoded == [32, 32]                  # each list of files decoded once, for both models
    assert scores.loc[scores["method"] == "vlm", "features_z"].isna().all()       # no feature part: NaN, not 0
    assert pred.calls == [4, 5, 5]
    with pytest.raises(ValueError, match="expects 32x32"):
        ev.domain_scores({"cnn": pred}, {"small": ref[:, :16, :16]})

    # the summary on a hand-made frame: reference scores 0, 1, 2, 3; set 2.5 and 5 (4 reference images
    # below 2.5, 4 below 5 but 3 is not below 2.5: 7 of 8 pairs ordered, AUC 0.875)
    hand = pd.DataFrame({"method": "m", "set": ["ref"] * 4 + ["out"] * 2, "image": [0, 1, 2, 3, 0, 1],
                         "domain_score": [0, 1, 2, 3, 2.5, 5], "input_z": [0, 1, 2, 3, 5, 6],
                         "features_z": [3, 2, 1, 0, 0.5, 0.5], "score_in_domain": [True, True, True, False, True, False],
                         "in_domain": [True, True, True, False, False, False], "threshold": 2.8})
    s = ev.domain_summary(hand, "ref").iloc[0]
    assert (s["n_reference"], s["n_set"], s["threshold"]) == (4, 2, 2.8)
    assert (s["flagged_reference"], s["flagged_set"], s["flagged_set_score_only"]) == (0.25, 1.0, 0.5)
    assert (s["auc_score"], s["auc_input"], s["auc_features"]) == (0.875, 1.0, 0.25)


def test_domain_histogram_draws_every_set_and_the_threshold(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    from aidetect_utils import plots
    fig = plots.domain_histogram({"a": np.array([0.0, 1.0, np.nan]), "b": np.array([3.0, 4.0])}, threshold=2.0,
                                 save=tmp_path / "d.png")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a (2)", "b (2)", "threshold 2.00"]
    assert (tmp_path / "d.png").stat().st_size > 0


class _TablePredictor:
    """What score_folders needs of a predict.Predictor: its source size and :meth:`table`."""

    def __init__(self, size: int):
        self.prep, self.seen = {"source_size": size}, []

    def table(self, images, sizes, names):
        self.seen.append(images.shape)
        p = images.reshape(len(images), -1).mean(1) / 255.0
        return pd.DataFrame({"path": names, "prob_fake": p, "label": np.where(p >= 0.5, "FAKE", "REAL"),
                             "in_domain": True})


def test_score_folders_decodes_each_folder_once_per_source_size(cifake_folder, monkeypatch):
    from aidetect_utils import images
    calls = []
    real = images.decode_files
    monkeypatch.setattr(images, "decode_files", lambda files, size: calls.append(size) or real(files, size))
    (cifake_folder / "test" / "FAKE" / "broken.jpg").write_bytes(b"not an image")
    preds = {"a": _TablePredictor(32), "b": _TablePredictor(32), "c": _TablePredictor(16)}
    per_image = ev.score_folders(preds, [cifake_folder / "test"])
    assert calls == [32, 16]                                   # not once per model
    assert preds["a"].seen == preds["b"].seen == [(60, 32, 32, 3)] and preds["c"].seen == [(60, 16, 16, 3)]
    assert per_image.groupby("method").size().to_dict() == {"a": 60, "b": 60, "c": 60}
    assert (per_image["n_files"] == 61).all()                  # the unreadable file counted, not scored
    assert per_image.groupby("label").size().to_dict() == {0: 90, 1: 90}             # 3 models x 30 each
    assert (per_image["label"] == per_image["path"].str.contains("/FAKE/").astype(int)).all()


def test_discover_names_the_notebook_behind_each_missing_method(tmp_path, monkeypatch):
    """07 opened alone (a fresh Colab runtime) compares what is there and says which notebook
    produces each method that is not."""
    from aidetect_utils import artifacts, params
    monkeypatch.setattr(params, "_active", "colab")
    y = np.array([0, 1, 0, 1])
    artifacts.write_results(tmp_path / "efficientnet_two_phase", method="efficientnet_two_phase", backbone="b0",
                            profile="colab", ids=["a", "b", "c", "d"], labels=y, prob_fake=[0.1, 0.9, 0.4, 0.7],
                            trainable_params=1, total_params=2, train_seconds=1.0, inference_seconds=1.0)
    (tmp_path / "vit_finetune").mkdir()                      # a folder without results: not a method yet
    found, notes = ev.discover(tmp_path)
    assert list(found) == ["efficientnet_two_phase"]
    assert notes == [
        "vit_finetune: no results yet; notebooks/01_vit_finetune.ipynb produces them (run it under profile 'colab')",
        "vit_frozen_head: no results yet; notebooks/02_vit_frozen_head.ipynb produces them (run it under profile 'colab')",
        "dino_bayesian_head: no results yet; notebooks/03_dino_bayesian_head.ipynb produces them (run it under profile 'colab')",
        "qwen_vl_sft: no results yet; notebooks/05_qwen_vl_method1_sft.ipynb produces them (run it under profile 'colab')",
        "qwen_vl_robust: no results yet; notebooks/06_qwen_vl_method2_robust.ipynb produces them (run it under profile 'colab')",
    ]
    found, notes = ev.discover(tmp_path / "nothing-yet")     # a fresh runtime: no results/ at all
    assert found == {} and len(notes) == 6
    with pytest.raises(ValueError, match=r"no results found: run at least one method notebook \(01-06\) first"):
        ev.align(found)


# ------------------------------------------------------------------------------ one decision threshold
def test_a_probability_on_the_threshold_is_fake_everywhere():
    """metrics.THRESHOLD is the one boundary, and P(FAKE) exactly on it is FAKE in the metrics,
    notebook 07's tables and the training loop's accuracy alike."""
    from aidetect_utils import engine, metrics
    y = np.array([1, 0, 1, 0])
    p = np.array([metrics.THRESHOLD, metrics.THRESHOLD, 0.9, 0.1])
    assert metrics.judged_fake(p).tolist() == [1, 1, 1, 0]
    assert metrics.classification_metrics(y, p)["accuracy"] == ev._accuracy(y, p) == 0.75
    labels = pd.DataFrame({"id": list("abcd"), "label": y, "cifar_class": [0, 0, 1, 1]})
    assert ev.per_class_accuracy(labels, pd.DataFrame({"m": p}), [str(i) for i in range(10)])["m"].tolist() == [0.5, 1.0]
    assert ev.confident_mistakes(labels, p)["id"].tolist() == ["b"]
    per_image = pd.DataFrame({"folder": "f", "method": "m", "label": y, "prob_fake": p, "n_files": 4,
                              "group": ["g"] * 4})
    assert ev.folder_summary(per_image, n_boot=10).loc[0, "judged_fake"] == 0.75
    assert ev.group_accuracy(per_image).loc["FAKE · g", "m"] == 1.0

    class OnTheFence(torch.nn.Module):                 # logit 0: P(FAKE) exactly 0.5 for every image
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return x.flatten(1).sum(1) * self.w
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(4, 3), torch.tensor(y)), batch_size=2)
    assert engine.evaluate_loss(OnTheFence(), loader)["acc"] == 0.5      # every image judged FAKE: the two FAKEs right
