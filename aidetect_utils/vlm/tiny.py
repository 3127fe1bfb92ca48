"""A small Qwen2.5-VL built offline: the same architecture with a few layers from a config, and
a processor built without downloads (a byte-level tokenizer with the Qwen special tokens and a
``Qwen2VLImageProcessor`` with small patches). What the ``smoke`` and ``cpu`` profiles and the
tests train, since no VLM weights can be downloaded there. The processor builder takes the
published settings too: the GPU measurement kit (``gpu_kit/rehearsal.py``) builds the 7B model's
processor with it.
"""
from __future__ import annotations

import torch


TINY = "tiny"                # model_name that builds a small Qwen2.5-VL from a config


SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
                  "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]


# The Qwen2.5-VL chat template, reduced to what this project sends (system, user with one image
# and text, assistant text). The real checkpoints bring their own.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def byte_level_tokenizer(added_tokens: list[tuple[str, bool]] | None = None, *, first_added_id: int | None = None,
                         eos_token: str | None = None, chat_template: str | None = None, **tokenizer_kwargs):
    """A ``Qwen2Tokenizer`` built offline: the 256 byte-level symbols and no BPE merges (text
    becomes one token per byte), then ``added_tokens`` as ``(token, special)`` pairs in id order,
    the special ones first (default: :data:`SPECIAL_TOKENS`, all special). The first added token
    is the end-of-text token (EOS and padding). ``first_added_id``: the id it must have; the ids
    between the byte symbols and it are unreachable filler entries, so a real checkpoint's token
    ids hold without its merges (checked). ``eos_token`` replaces the EOS afterwards (Qwen's chat
    models end a turn with ``<|im_end|>``); ``tokenizer_kwargs`` go to ``Qwen2Tokenizer``."""
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode
    added = added_tokens or [(t, True) for t in SPECIAL_TOKENS]
    vocab = {ch: i for i, ch in enumerate(bytes_to_unicode().values())}
    if first_added_id is not None:
        vocab.update({f"[filler-{i}]": i for i in range(len(vocab), first_added_id)})
    tok = Qwen2Tokenizer(vocab=vocab, merges=[], eos_token=added[0][0], pad_token=added[0][0], **tokenizer_kwargs)
    tok.add_special_tokens({"additional_special_tokens": [AddedToken(t, special=True, normalized=False)
                                                          for t, special in added[1:] if special]})
    plain = [AddedToken(t, special=False, normalized=False) for t, special in added if not special]
    if plain:
        tok.add_tokens(plain)
    if eos_token:
        tok.eos_token = eos_token
    if chat_template:
        tok.chat_template = chat_template
    if first_added_id is not None:
        got = tok.convert_tokens_to_ids([t for t, _ in added])
        if got != list(range(first_added_id, first_added_id + len(added))):
            raise RuntimeError(f"added tokens landed at ids {got}")
    return tok


def build_tiny_processor(patch_size: int = 4, merge_size: int = 2, min_pixels: int = 16 * 16,
                         max_pixels: int = 64 * 64, *, image_mean: list[float] | None = None,
                         image_std: list[float] | None = None, tokenizer=None, chat_template: str = CHAT_TEMPLATE):
    """A Qwen2.5-VL processor built offline: ``tokenizer`` (default :func:`byte_level_tokenizer`,
    the Qwen specials only) and image/video processors with these patch and pixel settings
    (``image_mean``/``image_std``: the processor's defaults unless given). The defaults are the
    tiny model's; the 7B model's settings give its processor (``gpu_kit/rehearsal.py``)."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor
    sizes = dict(patch_size=patch_size, temporal_patch_size=2, merge_size=merge_size)
    norm = {k: v for k, v in (("image_mean", image_mean), ("image_std", image_std)) if v is not None}
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels, **sizes, **norm),
        video_processor=Qwen2VLVideoProcessor(**sizes), tokenizer=tokenizer or byte_level_tokenizer(),
        chat_template=chat_template)


def tiny_config(processor, hidden_size: int = 64, num_hidden_layers: int = 2, num_attention_heads: int = 4,
                num_key_value_heads: int = 2, intermediate_size: int = 128, vision_depth: int = 2,
                vision_hidden_size: int = 32):
    """A ``Qwen2_5_VLConfig`` of the same architecture as the 7B model, a few layers deep."""
    from transformers import Qwen2_5_VLConfig
    tok = processor.tokenizer
    ids = dict(zip(SPECIAL_TOKENS, tok.convert_tokens_to_ids(SPECIAL_TOKENS)))
    head_dim = hidden_size // num_attention_heads
    half = head_dim // 2                      # mrope splits the rotary half-dim into t, h, w
    section = [half - 2 * (half // 3), half // 3, half // 3]
    ip = processor.image_processor
    return Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=intermediate_size,
                         num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
                         num_key_value_heads=num_key_value_heads, max_position_embeddings=2048,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                          "mrope_section": section},
                         bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                         pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(depth=vision_depth, hidden_size=vision_hidden_size,
                           intermediate_size=2 * vision_hidden_size, num_heads=2, out_hidden_size=hidden_size,
                           patch_size=ip.patch_size, spatial_merge_size=ip.merge_size, temporal_patch_size=2,
                           window_size=ip.patch_size * ip.merge_size * 4,
                           fullatt_block_indexes=[vision_depth - 1]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])


def build_tiny_qwen_vl(seed: int = 0, processor_kwargs: dict | None = None, **config_kwargs):
    """(model, processor): a randomly initialised small Qwen2.5-VL and its offline processor."""
    from transformers import Qwen2_5_VLForConditionalGeneration
    processor = build_tiny_processor(**(processor_kwargs or {}))
    torch.manual_seed(seed)
    return Qwen2_5_VLForConditionalGeneration(tiny_config(processor, **config_kwargs)), processor
