"""Notebooks 05/06: focal loss, JPEG simulation, answer-only loss masking, the tiny Qwen2.5-VL
fine-tune on real CIFAKE images, answer-logit probabilities, and the saved folder."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from aidetect_utils import losses, transforms, vlm
from aidetect_utils.engine import evaluate_loss, predict_proba
from aidetect_utils.images import decode_image


@pytest.fixture(scope="module")
def real_images(cifake_members):
    """24 real CIFAKE training images (12 REAL, 12 FAKE), decoded, with labels."""
    picked = {0: [], 1: []}
    for name, data in sorted(cifake_members.items()):
        label = 1 if "/FAKE/" in name else 0
        if "/train/" in name and len(picked[label]) < 12:
            picked[label].append(decode_image(data, name=name).array)
    images = np.stack(picked[0] + picked[1])
    return images, np.array([0] * 12 + [1] * 12)


@pytest.fixture(scope="module")
def tiny():
    return vlm.build_lora_model(vlm.TINY, lora_r=8, lora_alpha=16, seed=0)


# ------------------------------------------------------------------------------ focal loss
def test_focal_loss_matches_hand_computed_values():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [5.0, 5.0, 5.0]])
    targets = torch.tensor([0, 2, -100])
    positive = torch.tensor([True, False, True])
    # row 0: p_t = e^2 / (e^2 + 2), FAKE -> alpha 0.75; row 1: p_t = 1 / (e + 2), REAL -> 0.25
    p0 = math.exp(2) / (math.exp(2) + 2)
    p1 = 1 / (math.e + 2)
    expected = (0.75 * (1 - p0) ** 2 * -math.log(p0) + 0.25 * (1 - p1) ** 2 * -math.log(p1)) / 2
    got = losses.focal_loss(logits, targets, positive, alpha=0.75, gamma=2.0)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.5 * (0.0081520 + 0.2408758), rel=1e-5)   # the numbers, written out


def test_focal_loss_is_half_cross_entropy_at_gamma0_alpha_half():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 7, 11, generator=g)
    labels = torch.randint(0, 11, (2, 7), generator=g)
    labels[:, :4] = -100
    is_fake = torch.tensor([1, 0])
    fl = losses.answer_focal_loss(logits, labels, is_fake, alpha=0.5, gamma=0.0)
    ce = losses.answer_cross_entropy(logits, labels)
    assert fl.item() == pytest.approx(0.5 * ce.item(), rel=1e-6)
    # and the shift is the causal one: position t predicts token t + 1
    manual = F.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), ignore_index=-100)
    assert ce.item() == pytest.approx(manual.item(), rel=1e-6)
    # gamma > 0 down-weights: focal loss is below alpha-weighted cross-entropy
    assert losses.answer_focal_loss(logits, labels, is_fake, alpha=0.5, gamma=2.0) < fl


# ------------------------------------------------------------------------------ JPEG simulation
def test_jpeg_simulation_really_reencodes(real_images):
    images, _ = real_images
    x = torch.from_numpy(images[0]).permute(2, 0, 1).contiguous()
    for q in (50, 95):
        y = transforms.jpeg_simulation(q)(x)
        assert y.shape == x.shape and y.dtype == torch.uint8
        assert (y != x).any(), f"quality {q} returned the input unchanged"
    sizes = [transforms.jpeg_bytes(torch.from_numpy(im).permute(2, 0, 1).contiguous(), q)
             for im in images[:8] for q in (50, 95)]
    assert all(s50 < s95 for s50, s95 in zip(sizes[::2], sizes[1::2]))
    # the random range draws different qualities: two draws of one image differ somewhere
    sim = transforms.jpeg_simulation((50, 95))
    torch.manual_seed(0)
    outs = {sim(x).numpy().tobytes() for _ in range(6)}
    assert len(outs) > 1


def test_method2_transform_keeps_size_and_range(real_images):
    images, _ = real_images
    prep = vlm.vlm_preprocessing(48)
    tf = transforms.train_transform(prep, color_jitter=0.3, crop_scale=(0.6, 1.0), jpeg_quality=(50, 95))
    out = tf(torch.from_numpy(images[0]).permute(2, 0, 1))
    assert out.shape == (3, 48, 48) and out.dtype == torch.float32
    assert 0.0 <= out.min() and out.max() <= 1.0


# ------------------------------------------------------------------------------ prompt and masking
def test_only_the_answer_is_scored(tiny, real_images):
    _, processor, _ = tiny
    images, labels = real_images
    small = torch.from_numpy(images[0]).permute(2, 0, 1)
    big = torch.nn.functional.interpolate(small[None].float(), size=48).to(torch.uint8)[0]  # more image tokens
    batch = vlm.VLMCollator(processor)([(small, 0), (big, 1)])
    tok = processor.tokenizer
    assert batch["input_ids"].shape == batch["labels"].shape
    n_tokens = batch["attention_mask"].sum(1)
    assert n_tokens[0] < n_tokens[1]                       # the first row is right-padded
    for row, answer in enumerate(("Real", "Fake")):
        scored = batch["labels"][row] != -100
        idx = scored.nonzero().flatten()
        assert tok.decode(batch["labels"][row][scored]) == answer + "<|im_end|>"
        assert idx.max().item() == n_tokens[row].item() - 1    # the answer ends the sequence
        assert (idx.diff() == 1).all()                         # one contiguous span
        prompt = tok.decode(batch["input_ids"][row][: idx.min()])
        assert prompt.endswith("<|im_start|>assistant\n") and vlm.QUESTION in prompt
    assert batch["is_fake"].tolist() == [0, 1]
    assert (batch["mm_token_type_ids"].sum(1) > 0).all()       # image positions are marked


def test_answer_tokens_are_distinct(tiny):
    _, processor, _ = tiny
    real, fake = vlm.answer_token_ids(processor)
    assert real != fake
    assert processor.tokenizer.decode([real]) == "R" and processor.tokenizer.decode([fake]) == "F"


def test_backend_selection_without_gpu():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert vlm.select_backend("auto", vlm.FULL_MODEL) == ("transformers", "no CUDA GPU: Unsloth refuses to import without one")
    assert vlm.select_backend("auto", vlm.TINY)[0] == "transformers"
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        vlm.select_backend("unsloth")
    with pytest.raises(ValueError, match="backend must be"):
        vlm.select_backend("vllm")


# ------------------------------------------------------------------------------ training and scoring
def test_tiny_finetune_lowers_loss_and_gives_probabilities(real_images, tmp_path, capsys):
    images, labels = real_images
    model, processor, info = vlm.build_lora_model(vlm.TINY, lora_r=8, lora_alpha=16, seed=0)
    assert info["backend"] == "transformers" and info["lora_targets"] == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert 0 < info["trainable"] < info["total"] / 5
    prep = vlm.vlm_preprocessing(32)
    ds = transforms.ArrayDataset(images, labels, transforms.eval_transform(prep))
    batch = vlm.VLMCollator(processor)([ds[i] for i in range(len(ds))])

    def answer_loss():
        model.eval()
        with torch.no_grad():
            out = model(**{k: v for k, v in batch.items() if k not in ("labels", "is_fake")})
        return losses.answer_cross_entropy(out.logits, batch["labels"]).item()

    before = answer_loss()
    frozen = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad and "embed" in n}
    trainer = vlm.train_lora(model, processor, ds, tmp_path / "run", loss="focal", epochs=3, lr=5e-3,
                             batch_size=8, logging_steps=1, save_steps=1000)
    after = answer_loss()
    assert after < before - 0.1, (before, after)
    assert all(torch.equal(p, dict(model.named_parameters())[n]) for n, p in frozen.items())
    assert trainer.state.global_step == 9 and len(vlm.loss_history(trainer)) == 9
    assert "'loss'" not in capsys.readouterr().out      # no log dict printed per logging step
    table = vlm.loss_table(vlm.loss_history(trainer), rows=4)
    assert table["step"].tolist() == [1, 4, 7, 9]        # every 3rd logged step and the last

    detector = vlm.VLMDetector(model.eval(), processor, vlm.TINY, "transformers")
    x = torch.stack([ds[i][0] for i in range(6)])
    with torch.no_grad():
        two = torch.softmax(detector(x), dim=-1)
    assert two.shape == (6, 2)
    assert torch.allclose(two.sum(1), torch.ones(6), atol=1e-6)
    loader = torch.utils.data.DataLoader(ds, batch_size=8)
    prob, _ = predict_proba(detector, loader)
    assert prob.shape == (24,) and ((prob >= 0) & (prob <= 1)).all()
    assert np.allclose(prob[:6], two[:, 1].numpy(), atol=1e-5)
    # the answer logits are the model's own next-token logits, not a separate head
    assert evaluate_loss(detector, loader)["loss"] > 0


def test_saved_folder_reloads_and_predicts(real_images, tmp_path, capsys):
    from aidetect_utils import artifacts, predict
    from aidetect_utils.splits import ImageSplit
    images, labels = real_images
    model, processor, info = vlm.build_lora_model(vlm.TINY, lora_r=8, seed=1)
    prep = vlm.vlm_preprocessing(32)
    ds = transforms.ArrayDataset(images, labels, transforms.eval_transform(prep))
    trainer = vlm.train_lora(model, processor, ds, tmp_path / "run", epochs=1, lr=5e-3, batch_size=8, save_steps=1000)
    detector = vlm.VLMDetector(trainer.model.eval(), processor, vlm.TINY, "transformers")
    test = ImageSplit(images, labels, np.array([f"img{i}" for i in range(24)]), np.full(24, -1))
    record = artifacts.evaluate_and_save(detector, test, method="qwen_vl_test", backbone=vlm.TINY, profile="test",
                                         preprocessing=prep, architecture=detector.spec(), train_seconds=1.0,
                                         batch_size=8, out_dir=tmp_path / "res")
    assert record["n_test"] == 24 and record["trainable_params"] == info["trainable"]
    folder = tmp_path / "res" / "model"
    assert {p.name for p in folder.iterdir()} == {"adapter", "processor", "base", "aidetect_model.json"}
    saved = np.loadtxt(tmp_path / "res" / "predictions.csv", delimiter=",", skiprows=1, usecols=3)
    reloaded = predict.Predictor(folder, device="cpu")
    assert np.allclose(reloaded.prob_fake(images), saved, atol=1e-5)
    # the command line on real image files
    files = []
    for i in (0, 23):
        p = tmp_path / f"img{i}.png"
        from PIL import Image
        Image.fromarray(images[i]).save(p)
        files.append(str(p))
    capsys.readouterr()
    assert predict.main(["--model", str(folder), *files]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(("FAKE" in l) or ("REAL" in l) for l in lines)


# ------------------------------------------------------------------------------ the recipe object
def test_recipe_is_built_from_params_and_drives_the_data_and_model_steps(monkeypatch):
    import dataclasses

    from aidetect_utils import params
    P = params.load("smoke", "06_qwen_vl_method2_robust", {})
    recipe = vlm.Recipe.from_params(P)
    assert (recipe.method, recipe.epochs, recipe.focal_gamma, recipe.tiny_config) == \
        (P.method, P.epochs, P.focal_gamma, P.tiny_config)
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.epochs = 3
    assert dataclasses.replace(recipe, epochs=3).epochs == 3 and recipe.epochs == P.epochs
    # notebook 05's parameters have no focal_*: the defaults stay
    assert vlm.Recipe.from_params(params.load("smoke", "05_qwen_vl_method1_sft", {})).focal_alpha == 0.75
    # recipe_data and recipe_model read the recipe's fields, nothing else
    seen = {}
    monkeypatch.setattr("aidetect_utils.vlm.data.detection_data", lambda *a, **k: seen.setdefault("data", (a, k)))
    monkeypatch.setattr("aidetect_utils.vlm.backends.build_lora_model",
                        lambda *a, **k: seen.setdefault("model", (a, k)))
    vlm.recipe_data(recipe)
    vlm.recipe_model(recipe)
    assert seen["data"][0] == (recipe.dataset,) and seen["data"][1]["n_train"] == recipe.n_train
    assert seen["model"][0] == (recipe.model_name, recipe.backend) and seen["model"][1]["lora_r"] == recipe.lora_r


def test_loss_table_keeps_every_kth_step_and_the_last():
    import pandas as pd
    losses = pd.DataFrame({"step": range(1, 41), "epoch": np.linspace(0.05, 2, 40), "loss": np.linspace(3, 1, 40),
                           "lr": np.linspace(2e-3, 0, 40)})
    table = vlm.loss_table(losses, rows=10)
    assert table["step"].tolist() == [1, 5, 9, 13, 17, 21, 25, 29, 33, 37, 40]
    assert len(vlm.loss_table(losses.head(3))) == 3 and vlm.loss_table(losses.head(0)).empty
