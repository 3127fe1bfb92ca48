"""Notebook 06's mechanism cells against the package on real CIFAKE images: the focal loss on the
tiny Qwen2.5-VL's own answer-token logits against ``losses.answer_focal_loss``/``losses.focal_loss``,
and the JPEG re-compression against ``transforms.jpeg_simulation``."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from aidetect_utils import losses, transforms, vlm
from tests.mechanisms._cells import cifake_tensors, mechanism_namespace

NB = "06_qwen_vl_method2_robust"


@pytest.fixture(scope="module")
def ns():
    return mechanism_namespace(NB)


@pytest.fixture(scope="module")
def images(cifake_members):
    """Twelve real CIFAKE images (6 REAL, 6 FAKE, train and test) as uint8 CHW tensors, with labels."""
    return cifake_tensors(cifake_members, 6, keep=lambda name, taken: taken < 3 or "/test/" in name)


@pytest.fixture(scope="module")
def batch_and_logits(images):
    """A collator batch of the real images and the tiny model's logits on it (B, T, vocabulary)."""
    model, processor, _ = vlm.build_lora_model(vlm.TINY, lora_r=8, seed=0)
    imgs, labels = images
    batch = vlm.VLMCollator(processor)(list(zip(imgs, labels)))
    logits = vlm.batch_logits(model.eval(), batch)
    assert logits.shape[:2] == batch["labels"].shape and logits.shape[2] == model.config.text_config.vocab_size
    return batch, logits


@pytest.mark.parametrize("alpha,gamma", [(0.75, 2.0), (0.25, 0.5), (0.5, 0.0), (0.9, 5.0)])
def test_focal_loss_equals_the_package(ns, batch_and_logits, alpha, gamma):
    batch, logits = batch_and_logits
    args = (logits, batch["labels"], batch["is_fake"])
    mine = ns["focal_answer_loss"](*args, alpha, gamma)
    assert np.allclose(mine, losses.answer_focal_loss(*args, alpha, gamma), rtol=1e-6, atol=1e-7)
    # and the per-row form the package builds it from
    lg, lb = logits[:, :-1].reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1)
    positive = batch["is_fake"].bool()[:, None].expand(-1, logits.shape[1] - 1).reshape(-1)
    assert np.allclose(mine, losses.focal_loss(lg, lb, positive, alpha, gamma), rtol=1e-6, atol=1e-7)


def test_focal_loss_at_gamma0_alpha_half_is_half_the_cross_entropy(ns, batch_and_logits):
    batch, logits = batch_and_logits
    half = ns["focal_answer_loss"](logits, batch["labels"], batch["is_fake"], 0.5, 0.0)
    assert np.allclose(half, losses.answer_cross_entropy(logits, batch["labels"]) / 2, rtol=1e-6)


def test_a_wrong_focal_loss_does_not_match(ns, batch_and_logits):
    batch, logits = batch_and_logits
    pkg = losses.answer_focal_loss(logits, batch["labels"], batch["is_fake"], 0.75, 2.0)
    swapped = ns["focal_answer_loss"](logits, batch["labels"], 1 - batch["is_fake"], 0.75, 2.0)   # alpha on REAL
    unshifted = ns["focal_answer_loss"](logits[:, 1:], batch["labels"][:, :-1], batch["is_fake"], 0.75, 2.0)
    assert not np.allclose(swapped, pkg, rtol=1e-4) and not np.allclose(unshifted, pkg, rtol=1e-4)


@pytest.mark.parametrize("quality", [30, 50, 75, 95])
def test_jpeg_recompress_equals_the_package_at_a_fixed_quality(ns, images, quality):
    imgs, _ = images
    for x in imgs:
        mine = ns["jpeg_recompress"](x, quality)
        assert torch.equal(mine, transforms.jpeg_simulation(quality)(x))
        assert mine.shape == x.shape and mine.dtype == torch.uint8


def test_jpeg_recompress_draws_the_same_qualities_with_the_same_seed(ns, images):
    imgs, _ = images
    torch.manual_seed(7)
    mine = [ns["jpeg_recompress"](x, (50, 95)) for x in imgs for _ in range(3)]
    torch.manual_seed(7)
    sim = transforms.jpeg_simulation((50, 95))
    pkg = [sim(x) for x in imgs for _ in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(mine, pkg))
    assert len({a.numpy().tobytes() for a in mine[:3]}) > 1        # the quality really is drawn


def test_another_quality_does_not_match(ns, images):
    imgs, _ = images
    assert any(not torch.equal(ns["jpeg_recompress"](x, 51), transforms.jpeg_simulation(50)(x)) for x in imgs)
    assert all(not torch.equal(ns["jpeg_recompress"](x, 50), x) for x in imgs)   # it re-encodes
