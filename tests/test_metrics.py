"""Metrics against values computed by hand, and the results schema round trip."""
import json

import numpy as np
import pytest

from aidetect_utils import artifacts
from aidetect_utils.metrics import classification_metrics, expected_calibration_error, tpr_at_fpr

Y = [0, 0, 1, 1]
P = [0.1, 0.6, 0.4, 0.9]


def test_hand_computed_metrics():
    m = classification_metrics(Y, P)
    # predictions 0,1,0,1 -> one hit per class
    assert m["accuracy"] == 0.5 and m["balanced_accuracy"] == 0.5
    assert m["confusion_matrix"] == [[1, 1], [1, 1]]
    assert m["precision_fake"] == 0.5 and m["recall_fake"] == 0.5 and m["f1_fake"] == 0.5
    # positive/negative pairs ranked correctly: (0.4>0.1), (0.9>0.1), (0.9>0.6); (0.4<0.6) wrong
    assert m["roc_auc"] == pytest.approx(0.75)
    # average precision: ranks 0.9(TP) 0.6(FP) 0.4(TP) 0.1(FP) -> (1/1 + 2/3) / 2
    assert m["pr_auc"] == pytest.approx((1 + 2 / 3) / 2)
    assert m["support"] == {"REAL": 2, "FAKE": 2}


def test_ece_by_hand():
    # confidences 0.9 (right), 0.6 (wrong), 0.6 (wrong), 0.9 (right): two bins of half the images
    assert expected_calibration_error(Y, P) == pytest.approx(0.5 * 0.6 + 0.5 * 0.1)
    # a perfectly calibrated, perfectly confident model
    assert expected_calibration_error([0, 1, 1], [0.0, 1.0, 1.0]) == pytest.approx(0.0)


def test_tpr_at_fpr_by_hand():
    # with no false positive allowed (threshold above 0.6) only 0.9 is caught: TPR 0.5
    assert tpr_at_fpr(Y, P, 0.05) == 0.5
    assert tpr_at_fpr(Y, P, 0.5) == 1.0


def test_threshold_moves_decisions():
    assert classification_metrics(Y, P, threshold=0.35)["confusion_matrix"] == [[1, 1], [0, 2]]


@pytest.mark.parametrize("y,p,msg", [([0, 1], [0.5], "2 labels but 1"), ([0, 2], [0.1, 0.2], "labels must be"),
                                     ([0, 1], [0.1, 1.2], "in \\[0, 1\\]"), ([], [], "no predictions")])
def test_bad_inputs(y, p, msg):
    with pytest.raises(ValueError, match=msg):
        classification_metrics(y, p)


def test_write_and_read_results(tmp_path):
    rec = artifacts.write_results(tmp_path, method="m", backbone="b", profile="smoke", ids=["a", "b", "c", "d"],
                                  labels=Y, prob_fake=P, cifar_class=[0, 1, 2, 3], trainable_params=10,
                                  total_params=100, train_seconds=1.234, inference_seconds=0.5)
    assert rec["inference_images_per_second"] == 8.0 and rec["n_test"] == 4
    back, preds = artifacts.read_results(tmp_path)
    assert back["metrics"]["roc_auc"] == pytest.approx(0.75)
    assert preds.columns.tolist() == ["id", "cifar_class", "label", "prob_fake"]
    assert np.allclose(preds["prob_fake"], P)
    bad = json.loads((tmp_path / "metrics.json").read_text())
    del bad["device"]
    (tmp_path / "metrics.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="device"):
        artifacts.read_results(tmp_path)
