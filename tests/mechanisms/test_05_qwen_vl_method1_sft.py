"""Notebook 05's mechanism cells against the package on real CIFAKE images and the tiny Qwen2.5-VL:
LoRA's configuration and hand count against ``vlm.add_lora``/``vlm.lora_summary``, and the
answer-token label masking against ``vlm.VLMCollator``."""
from __future__ import annotations

import pytest
import torch

from aidetect_utils import vlm
from tests.mechanisms._cells import cifake_tensors, mechanism_namespace, mechanism_sources

NB = "05_qwen_vl_method1_sft"


@pytest.fixture(scope="module")
def ns():
    return mechanism_namespace(NB)


@pytest.fixture(scope="module")
def images(cifake_members):
    """Six real CIFAKE training images (3 REAL, 3 FAKE) as uint8 CHW tensors, with labels."""
    return cifake_tensors(cifake_members, 3, keep=lambda name, taken: "/train/" in name)


def _base(seed=0):
    return vlm.load_base(vlm.TINY, "transformers", seed=seed)


@pytest.mark.parametrize("r", [4, 16])
def test_lora_count_by_hand_equals_add_lora(ns, r):
    base, _ = _base()
    by_hand, names = ns["lora_trainable"](base, r), sorted(ns["lora_targets"](base))
    summary = vlm.lora_summary(vlm.add_lora(base, "transformers", r=r, alpha=16, seed=0))
    assert by_hand == summary["trainable"] > 0
    assert names == summary["lora_names"] and len(names) == summary["lora_modules"] == 8
    assert {n.rsplit(".", 1)[-1] for n in names} == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert all(".language_model." in n for n in names)                  # the vision tower is left alone
    # a wrong count (as if every adapted matrix were square) does not match: k/v project to fewer dims
    wrong = sum(r * 2 * m.in_features for m in ns["lora_targets"](_base()[0]).values())
    assert wrong != summary["trainable"]


def test_lora_config_builds_the_same_adapters_as_add_lora(ns):
    from peft import get_peft_model
    base = _base()[0]
    torch.manual_seed(0)                                        # add_lora seeds torch, then calls peft
    mine = get_peft_model(base, ns["lora_config"](8, 16))
    pkg = vlm.add_lora(_base()[0], "transformers", r=8, alpha=16, seed=0)
    a = {k: v for k, v in mine.state_dict().items() if "lora_" in k}
    b = {k: v for k, v in pkg.state_dict().items() if "lora_" in k}
    assert a.keys() == b.keys() and len(a) == 16
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert vlm.lora_summary(mine) == vlm.lora_summary(pkg)
    # another rank is another configuration
    other = get_peft_model(_base()[0], ns["lora_config"](4, 16))
    assert vlm.lora_summary(other)["trainable"] != vlm.lora_summary(pkg)["trainable"]


def test_lora_forward_is_what_peft_computes(ns):
    model = vlm.add_lora(_base()[0], "transformers", r=8, alpha=16, seed=0)
    layer = model.base_model.model.model.language_model.layers[1].self_attn.k_proj
    A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    x = torch.randn(5, layer.in_features, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert not B.any()                                                # B = 0: the base model
        assert torch.allclose(ns["lora_forward"](x, layer.base_layer.weight, layer.base_layer.bias, A, B, 16, 8),
                              layer.base_layer(x), atol=1e-6)
        B.normal_(generator=torch.Generator().manual_seed(1))             # as after some training
        mine = ns["lora_forward"](x, layer.base_layer.weight, layer.base_layer.bias, A, B, 16, 8)
        assert torch.allclose(mine, layer(x), atol=1e-5)
        assert not torch.allclose(ns["lora_forward"](x, layer.base_layer.weight, layer.base_layer.bias, A, B, 8, 8),
                                  layer(x), atol=1e-5)                    # a wrong scale does not match


def _pairs(images):
    imgs, labels = images
    big = torch.nn.functional.interpolate(imgs[4][None].float(), size=48).to(torch.uint8)[0]   # more image tokens
    return [(x, y) for x, y in zip(imgs, labels)] + [(big, 1)]             # rows of different lengths: padding


def test_answer_labels_equal_the_collators(ns, images):
    _, processor = _base()
    pairs = _pairs(images)
    batch, answer_ids = ns["chat_batch"](processor, [vlm.to_pil(x) for x, _ in pairs], [y for _, y in pairs])
    mine = ns["answer_labels"](batch["input_ids"], batch["attention_mask"], answer_ids)
    pkg = vlm.VLMCollator(processor)(pairs)
    assert (pkg["attention_mask"].sum(1) < pkg["input_ids"].shape[1]).any()    # some rows are padded
    assert torch.equal(batch["input_ids"], pkg["input_ids"])
    assert torch.equal(mine, pkg["labels"])
    tok = processor.tokenizer
    assert [tok.decode(row[row != -100]) for row in mine] == [vlm.answer_suffix(y) for _, y in pairs]


def test_a_wrong_mask_does_not_match(ns, images):
    _, processor = _base()
    pairs = _pairs(images)
    batch, answer_ids = ns["chat_batch"](processor, [vlm.to_pil(x) for x, _ in pairs], [y for _, y in pairs])
    pkg = vlm.VLMCollator(processor)(pairs)["labels"]

    def off_by_one(input_ids, attention_mask, answer_ids):     # the span one token too early
        labels = torch.full_like(input_ids, -100)
        for i, ids in enumerate(answer_ids):
            end = int(attention_mask[i].sum()) - 1
            labels[i, end - len(ids):end] = input_ids[i, end - len(ids):end]
        return labels

    def without_end_of_turn(input_ids, attention_mask, answer_ids):   # the answer word only
        labels = ns["answer_labels"](input_ids, attention_mask, answer_ids)
        last = attention_mask.sum(1) - 1
        labels[torch.arange(len(last)), last] = -100
        return labels

    for wrong in (off_by_one, without_end_of_turn):
        assert not torch.equal(wrong(batch["input_ids"], batch["attention_mask"], answer_ids), pkg), wrong.__name__
    # the cell itself, edited the same way, refuses: the answer no longer ends the sequence
    src = next(s for s in mechanism_sources(NB) if "def answer_labels" in s)
    edited = {}
    exec(src.replace("end = int(attention_mask[i].sum())", "end = int(attention_mask[i].sum()) - 1"), edited)
    with pytest.raises(AssertionError, match="must end the sequence"):
        edited["answer_labels"](batch["input_ids"], batch["attention_mask"], answer_ids)
