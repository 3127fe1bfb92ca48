"""The question, the one-word answers, and the batches the model learns from (notebook 05's
answer-token label masking).

The model sees an image and one fixed question in Qwen's chat format and answers ``Real`` or
``Fake``. :class:`VLMCollator` builds the batch and masks every label but the answer's own
tokens (and the end-of-turn token) with -100, so the loss teaches the answer only, not to
repeat the prompt.
"""
from __future__ import annotations

import numpy as np
import torch

from ..losses import IGNORE_INDEX


QUESTION = "Is this image real or AI-generated?"


ANSWERS = ("Real", "Fake")   # index = label (REAL = 0, FAKE = 1)


END_OF_TURN = "<|im_end|>"


def messages(with_image: bool = True) -> list[dict]:
    content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": QUESTION}]
    return [{"role": "user", "content": content}]


def prompt_text(processor) -> str:
    """The chat-formatted question, ending where the assistant's answer begins."""
    return processor.apply_chat_template(messages(), add_generation_prompt=True, tokenize=False)


def answer_suffix(label: int) -> str:
    return ANSWERS[int(label)] + END_OF_TURN


def answer_token_ids(processor) -> tuple[int, int]:
    """Token ids of the first token of ``Real`` and of ``Fake`` (the two logits scored)."""
    tok = processor.tokenizer
    ids = tuple(tok(a, add_special_tokens=False)["input_ids"][0] for a in ANSWERS)
    if ids[0] == ids[1]:
        raise ValueError(f"answers {ANSWERS} start with the same token {ids[0]}: pick other words")
    return ids


def to_pil(x):
    """A CHW tensor (uint8, or float in [0, 1]) or HWC uint8 array -> PIL RGB image."""
    from PIL import Image
    if isinstance(x, torch.Tensor):
        if x.is_floating_point():
            x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
        x = x.permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(x), mode="RGB")


class VLMCollator:
    """(image, label) pairs -> a processor batch; with ``with_answers`` also ``labels`` that are
    -100 everywhere except on the answer tokens (``Real<|im_end|>`` or ``Fake<|im_end|>``), and
    ``is_fake`` per image for the focal loss.

    The answer is the fixed suffix of each sequence, so under right padding its tokens are the
    last ones before the padding; the collator checks they tokenise exactly as the answer alone.
    """

    def __init__(self, processor, with_answers: bool = True):
        self.processor, self.with_answers = processor, with_answers
        self.processor.tokenizer.padding_side = "right"
        self.prompt = prompt_text(processor)
        self.suffix_ids = [processor.tokenizer(answer_suffix(y), add_special_tokens=False)["input_ids"]
                           for y in (0, 1)]

    def __call__(self, batch) -> dict:
        images = [to_pil(x) for x, _ in batch]
        ys = [int(y) for _, y in batch]
        texts = [self.prompt + (answer_suffix(y) if self.with_answers else "") for y in ys]
        enc = self.processor(text=texts, images=images, padding=True, return_tensors="pt",
                             return_mm_token_type_ids=True)
        if not self.with_answers:
            return dict(enc)
        labels = torch.full_like(enc["input_ids"], IGNORE_INDEX)
        lengths = enc["attention_mask"].sum(1).tolist()
        for i, (y, n) in enumerate(zip(ys, lengths)):
            suffix = self.suffix_ids[y]
            got = enc["input_ids"][i, n - len(suffix):n].tolist()
            if got != suffix:
                raise RuntimeError(f"answer tokens {got} differ from {suffix}: the tokenizer merged "
                                   "the answer with the prompt")
            labels[i, n - len(suffix):n] = torch.tensor(suffix)
        return dict(enc) | {"labels": labels, "is_fake": torch.tensor(ys)}
