"""Notebook 01's mechanism: ``fine_tune_step`` (forward, cross-entropy over [REAL, FAKE],
zero_grad, backward, Adam step), as the learner reads it in the notebook, must leave a tiny ViT
with exactly the weights that one epoch of ``engine.fit`` over a loader holding that one batch of
real CIFAKE images leaves. A different learning rate on one side must break the equality."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from aidetect_utils import engine, models, transforms
from aidetect_utils.images import decode_image
from tests.mechanisms._cells import mechanism_namespace

TINY = {"image_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 2, "intermediate_size": 64}
SEED, LR = 7, 1e-3


@pytest.fixture(scope="module")
def one_batch(cifake_members):
    """A loader holding exactly one batch: 16 real CIFAKE training images, 8 REAL and 8 FAKE."""
    items = sorted(n for n in cifake_members if "/train/" in n)
    names = [n for n in items if "/REAL/" in n][:8] + [n for n in items if "/FAKE/" in n][:8]
    images = np.stack([decode_image(cifake_members[n]).array for n in names])
    labels = np.array([1 if "/FAKE/" in n else 0 for n in names])
    ds = transforms.ArrayDataset(images, labels, transforms.eval_transform(transforms.preprocessing(32)))
    return engine.make_loader(ds, batch_size=len(ds), shuffle=False, num_workers=0)


def _both_sides(one_batch, out_dir, lr_mine=LR, lr_pkg=LR):
    """Weights after one step of the notebook's function and after one epoch of engine.fit, from
    identical starting weights; the step's loss and fit's loss of its only batch."""
    fine_tune_step = mechanism_namespace("01_vit_finetune")["fine_tune_step"]
    torch.manual_seed(SEED)
    start = models.ViTClassifier(TINY)
    mine, pkg = copy.deepcopy(start), copy.deepcopy(start)
    x, y = next(iter(one_batch))
    torch.manual_seed(SEED + 1)   # the seed engine.fit sets for epoch 1
    loss = fine_tune_step(mine, torch.optim.Adam(mine.parameters(), lr=lr_mine), x, y)
    history = engine.fit(pkg, one_batch, one_batch, torch.optim.Adam(pkg.parameters(), lr=lr_pkg), out_dir,
                         engine.TrainConfig(epochs=1, seed=SEED, restore_best=False, mixed_precision="no"),
                         resume=False, desc="mechanism test")
    return start, mine, pkg, loss, history


def _same(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return all(torch.allclose(sa[k], sb[k], atol=1e-6) for k in sa)


def test_tiny_vit_has_no_dropout_randomness():
    cfg = models.ViTClassifier(TINY).vit.config
    assert cfg.hidden_dropout_prob == 0.0 and cfg.attention_probs_dropout_prob == 0.0


def test_one_fine_tune_step_is_one_epoch_of_engine_fit_over_that_batch(one_batch, tmp_path):
    start, mine, pkg, loss, history = _both_sides(one_batch, tmp_path / "fit")
    assert isinstance(loss, float)
    assert len(history.batches) == 1 and abs(history.batches[0]["loss"] - loss) < 1e-6
    assert not _same(start, mine), "the step must move the weights"
    assert _same(mine, pkg)


def test_a_different_learning_rate_breaks_the_equality(one_batch, tmp_path):
    _, mine, pkg, _, _ = _both_sides(one_batch, tmp_path / "fit", lr_mine=2 * LR)
    assert not _same(mine, pkg)
