"""Exact-architecture checkpoints with RANDOM weights, and a SID_Set-like dataset, built offline.

The ``full`` profile names hub checkpoints that no machine here can download. This module
writes local stand-ins in the hub's own format, so the ``rehearsal`` profile runs the ``full``
recipes at their real sizes (memory, time) where no hub is reachable::

    python -m gpu_kit.rehearsal checkpoints data/rehearsal [--only vit,dino] [--tiny]
    python -m gpu_kit.rehearsal sid-set data/rehearsal/saberzl/SID_Set [--n-per-label 24]

(from the project root; part of the GPU measurement kit, ``gpu_kit/README.md``, not of the
``aidetect_utils`` package, which never imports it).

Checkpoints (folder names mirror the hub's, under the destination):

- ``google/vit-base-patch16-224-in21k`` and ``google/vit-base-patch16-224`` (ViT-B/16) and
  ``facebook/dino-vits16`` (ViT-S/16): the published configurations, written by transformers'
  own ``save_pretrained`` with its ``ViTImageProcessor``;
- ``timm/efficientnet_b0.ra_in1k``: timm's ``efficientnet_b0`` written by timm's
  ``save_for_hf`` (``config.json`` + ``model.safetensors``), what timm loads from a local
  folder or file (``pretrained="local:FOLDER"`` in :func:`models.load_pretrained_backbone`);
- ``Qwen/Qwen2.5-VL-7B-Instruct``: the published 8.3-billion-parameter configuration, its
  processor (``Qwen2VLImageProcessor`` with the original image settings, a tokenizer with Qwen's
  special tokens at their real ids, the chat template; built by the package's one offline
  processor builder, ``vlm.tiny.build_tiny_processor``, with the published settings) and bf16
  weights written tensor by tensor (:func:`write_random_weights`), so the 16.6 GB never sit in
  memory at once.

Every weight is random (normal(0, initializer_range) for linear, convolution and embedding
weights, ones for norm weights, zeros for biases): these checkpoints measure memory and time,
never accuracy. Each folder says so in a ``README.md`` and in ``config.json``
(``"aidetect_random_weights": true``). ``--tiny`` writes the same families, formats and
processors with a few small layers (what the tests and a CPU dry run load).

The tokenizer has the real special-token ids but not Qwen's 151,643 learned BPE merges (they
cannot be derived offline): its regular vocabulary is the 256 byte symbols plus unreachable
filler entries, so text becomes one token per byte. Sequence lengths of the one-word prompts
differ a little from the real tokenizer's; image tokens, which dominate, are the same.

The SID_Set-like dataset (:func:`build_sid_set`) has SID_Set's columns and labels, at
512-1024 px, with procedurally drawn images (gradients, shapes, noise; nothing downloaded), in
the hub's parquet layout, so :func:`sidset.load_sid_set` reads it from a local path unchanged.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
import torch

from aidetect_utils.vlm.tiny import build_tiny_processor, byte_level_tokenizer

RANDOM_KEY = "aidetect_random_weights"
NOTE = ("RANDOM WEIGHTS: an exact-architecture stand-in for the hub checkpoint of the same name, "
        "built offline by gpu_kit/rehearsal.py for measuring GPU memory and time. Its "
        "predictions mean nothing.")

# ---------------------------------------------------------------------------- published configurations
# From the checkpoints' config.json on the hub (ViT-B/16: transformers' ViTConfig defaults).
VIT_B16 = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
               patch_size=16, image_size=224, hidden_act="gelu", layer_norm_eps=1e-12, qkv_bias=True)
DINO_S16 = dict(VIT_B16, hidden_size=384, num_attention_heads=6, intermediate_size=1536)
VIT_TINY = dict(VIT_B16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]

QWEN_TEXT = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                 num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=128000,
                 rms_norm_eps=1e-6, hidden_act="silu", initializer_range=0.02, tie_word_embeddings=False,
                 rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]})
QWEN_VISION = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                   patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                   fullatt_block_indexes=[7, 15, 23, 31], hidden_act="silu", in_channels=3, tokens_per_second=2)
QWEN_TEXT_TINY = dict(QWEN_TEXT, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2,
                      rope_parameters=dict(QWEN_TEXT["rope_parameters"], mrope_section=[4, 2, 2]))
QWEN_VISION_TINY = dict(QWEN_VISION, depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                        out_hidden_size=64, fullatt_block_indexes=[1])
# Qwen2VLImageProcessor settings of Qwen2.5-VL-7B-Instruct's preprocessor_config.json
QWEN_IMAGE = dict(patch_size=14, merge_size=2, min_pixels=3136, max_pixels=12845056,    # temporal patch: 2
                  image_mean=CLIP_MEAN, image_std=CLIP_STD)
# The tokens Qwen2.5 adds after its 151,643 BPE tokens, in id order, and whether each is "special"
QWEN_ADDED_TOKENS = [
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True), ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True), ("<|box_start|>", True), ("<|box_end|>", True), ("<|quad_start|>", True),
    ("<|quad_end|>", True), ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False), ("</tool_call>", False),
    ("<|fim_prefix|>", False), ("<|fim_middle|>", False), ("<|fim_suffix|>", False), ("<|fim_pad|>", False),
    ("<|repo_name|>", False), ("<|file_sep|>", False)]
QWEN_BPE_SIZE = 151643            # id of <|endoftext|>, the first added token
# Qwen2-VL / Qwen2.5-VL chat template (system default, image/video placeholders, vision ids)
QWEN_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

CHECKPOINTS = {   # --only key -> folder under the destination (the hub name)
    "vit-in21k": "google/vit-base-patch16-224-in21k",
    "vit-224": "google/vit-base-patch16-224",
    "dino": "facebook/dino-vits16",
    "efficientnet": "timm/efficientnet_b0.ra_in1k",
    "qwen": "Qwen/Qwen2.5-VL-7B-Instruct",
}
GROUPS = {"vit": ["vit-in21k", "vit-224"]}
SID_SET_DIR = "saberzl/SID_Set"


def _mark_random(folder: Path, hub_name: str, what: str, config_file: str = "config.json") -> None:
    """README.md and a ``config.json`` key saying the weights are random."""
    cfg = folder / config_file
    data = json.loads(cfg.read_text())
    data[RANDOM_KEY] = True
    data["aidetect_stand_in_for"] = hub_name
    cfg.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    (folder / "README.md").write_text(
        f"# {hub_name} (RANDOM WEIGHTS)\n\n{NOTE}\n\n{what}\n\nWritten by "
        "`python -m gpu_kit.rehearsal checkpoints`. Do not use it for anything but "
        "timing and memory measurements.\n")


# ---------------------------------------------------------------------------- ViT and DINO
def build_vit(folder: Path, hub_name: str, tiny: bool = False, seed: int = 0) -> Path:
    """A ViT checkpoint (model, config, ``ViTImageProcessor``) in transformers' format."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor, ViTModel
    dino = "dino" in hub_name
    arch = VIT_TINY if tiny else (DINO_S16 if dino else VIT_B16)
    torch.manual_seed(seed)
    if hub_name.endswith("patch16-224"):      # the ImageNet-1k fine-tuned classifier
        model = ViTForImageClassification(ViTConfig(**arch, num_labels=1000))
    else:   # the bare encoder; in21k keeps its pre-logits pooler, DINO has none (as converted)
        model = ViTModel(ViTConfig(**arch), add_pooling_layer=not dino)
    model.save_pretrained(folder, safe_serialization=True)
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if dino else ([0.5] * 3, [0.5] * 3)
    ViTImageProcessor(size={"height": 224, "width": 224}, image_mean=mean, image_std=std).save_pretrained(folder)
    _mark_random(folder, hub_name, f"{type(model).__name__}: hidden {arch['hidden_size']}, "
                 f"{arch['num_hidden_layers']} layers, {arch['num_attention_heads']} heads, MLP "
                 f"{arch['intermediate_size']}, patch {arch['patch_size']}, {arch['image_size']} px.")
    return folder


# ---------------------------------------------------------------------------- EfficientNet-B0 (timm)
def build_efficientnet(folder: Path, hub_name: str, tiny: bool = False, seed: int = 0) -> Path:
    """timm ``efficientnet_b0`` (1000 classes) in the hub format timm writes and reads
    (``config.json`` + ``model.safetensors``). EfficientNet-B0 is small (5.3 M parameters), so
    ``tiny`` writes the real architecture too."""
    import timm
    from timm.models import save_for_hf
    torch.manual_seed(seed)
    model = timm.create_model("efficientnet_b0", pretrained=False)
    save_for_hf(model, str(folder), safe_serialization=True)
    _mark_random(folder, hub_name, "timm efficientnet_b0, 1000 classes; load with "
                 "pretrained_cfg_overlay=dict(file='model.safetensors') or pretrained='local:FOLDER'.")
    return folder


# ---------------------------------------------------------------------------- Qwen2.5-VL
def qwen_tokenizer():
    """A ``Qwen2Tokenizer`` with Qwen's added tokens at their real ids (151643-151664), EOS
    ``<|im_end|>``, pad ``<|endoftext|>`` and the chat template. Regular vocabulary: the 256
    byte-level symbols, then unreachable filler entries up to id 151642 (no merges; see the
    module docstring)."""
    return byte_level_tokenizer(QWEN_ADDED_TOKENS, first_added_id=QWEN_BPE_SIZE, eos_token="<|im_end|>",
                                chat_template=QWEN_CHAT_TEMPLATE, unk_token=None, model_max_length=131072)


def qwen_processor():
    """``Qwen2_5_VLProcessor``: the tokenizer above and the original image settings."""
    return build_tiny_processor(**QWEN_IMAGE, tokenizer=qwen_tokenizer(), chat_template=QWEN_CHAT_TEMPLATE)


def qwen_config(tiny: bool = False):
    """``Qwen2_5_VLConfig`` of Qwen2.5-VL-7B-Instruct (or the same family, a few small layers)."""
    from transformers import Qwen2_5_VLConfig
    ids = {t: QWEN_BPE_SIZE + i for i, (t, _) in enumerate(QWEN_ADDED_TOKENS)}
    text = dict(QWEN_TEXT_TINY if tiny else QWEN_TEXT, bos_token_id=ids["<|endoftext|>"],
                eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    cfg = Qwen2_5_VLConfig(
        text_config=text, vision_config=dict(QWEN_VISION_TINY if tiny else QWEN_VISION),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False)
    cfg.dtype = torch.bfloat16
    return cfg


def _init_kinds(model: torch.nn.Module) -> dict[int, tuple[str, float]]:
    """For each parameter (by identity): how the model's own ``_init_weights`` would start it:
    ("normal", std) for linear/convolution/embedding weights, ("ones", 0) for norm weights,
    ("zeros", 0) for biases. Any other module owning parameters is an error, not a guess."""
    std = getattr(model.config, "initializer_range", None)
    if std is None:
        std = model.config.get_text_config().initializer_range
    kinds = {}
    for name, module in model.named_modules():
        own = dict(module.named_parameters(recurse=False))
        if not own:
            continue
        linear = isinstance(module, (torch.nn.Linear, torch.nn.Embedding, torch.nn.Conv1d, torch.nn.Conv2d,
                                     torch.nn.Conv3d))
        norm = "norm" in type(module).__name__.lower()
        if not (linear or norm):
            raise TypeError(f"no random-init rule for {name} ({type(module).__name__})")
        for pname, p in own.items():
            kinds[id(p)] = (("zeros", 0.0) if pname == "bias" else ("normal", std) if linear else ("ones", 0.0))
    return kinds


def write_random_weights(model_class, config, folder: str | Path, *, max_shard_size: str | int = "5GB",
                         dtype: torch.dtype = torch.bfloat16, device: str | None = None, seed: int = 0) -> dict:
    """Write ``model_class(config)``'s weights, random, as safetensors shards + index, the way
    ``save_pretrained`` lays them out, without ever holding more than one shard in memory.

    Written by hand because no library does this: ``save_pretrained`` (and safetensors'
    ``save_file``) need every tensor materialised, 16.6 GB for Qwen2.5-VL-7B in bf16. Here the
    model is built on the ``meta`` device (names and shapes, no storage); the tensor names are
    those ``save_pretrained`` writes (transformers' own ``revert_weight_conversion``, where the
    installed version has it); ``huggingface_hub.split_torch_state_dict_into_shards`` plans the
    shards; each shard's tensors are then drawn (:func:`_init_kinds`; on ``device``, the GPU
    when there is one, which is much faster than the CPU for 8 billion numbers) and written with
    safetensors before the next shard is drawn. Returns the index (``weight_map`` and sizes).
    """
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    with torch.device("meta"):
        model = model_class(config).to(dtype)
    kinds = _init_kinds(model)
    state = model.state_dict(keep_vars=True)    # the parameters themselves (meta), to look up kinds
    try:   # the names save_pretrained writes (e.g. the hub's "model.layers.*" for Qwen2.5-VL)
        from transformers.modeling_utils import remove_tied_weights_from_state_dict, revert_weight_conversion
        state = revert_weight_conversion(model, remove_tied_weights_from_state_dict(state, model))
    except ImportError:
        pass
    missing = [k for k, t in state.items() if id(t) not in kinds]
    if missing:
        raise RuntimeError(f"tensors without an init rule (buffers or converted weights): {missing[:5]}")
    split = split_torch_state_dict_into_shards(state, max_shard_size=max_shard_size,
                                               filename_pattern="model{suffix}.safetensors")
    gen = torch.Generator(device=device).manual_seed(seed)
    for shard, names in split.filename_to_tensors.items():
        tensors = {}
        for name in names:
            meta = state[name]
            kind, std = kinds[id(meta)]
            if kind == "normal":
                t = torch.randn(meta.shape, generator=gen, device=device, dtype=torch.float32).mul_(std).to(dtype)
            else:
                t = (torch.ones if kind == "ones" else torch.zeros)(meta.shape, device=device, dtype=dtype)
            tensors[name] = t.cpu()
        save_file(tensors, str(folder / shard), metadata={"format": "pt"})
        del tensors
    n_params = sum(t.numel() for t in state.values())
    index = {"metadata": {"total_parameters": n_params, **split.metadata}, "weight_map": split.tensor_to_filename}
    if split.is_sharded:
        (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    config.save_pretrained(folder)
    return index


def build_qwen_vl(folder: Path, hub_name: str, tiny: bool = False, seed: int = 0, device: str | None = None,
                  max_shard_size: str | int = "5GB") -> Path:
    """Qwen2.5-VL-7B-Instruct's configuration, processor and random bf16 weights."""
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration
    cfg = qwen_config(tiny)
    index = write_random_weights(Qwen2_5_VLForConditionalGeneration, cfg, folder, seed=seed, device=device,
                                 max_shard_size=max_shard_size)
    qwen_processor().save_pretrained(folder)
    GenerationConfig(bos_token_id=cfg.text_config.bos_token_id, pad_token_id=cfg.text_config.pad_token_id,
                     eos_token_id=[cfg.text_config.eos_token_id, cfg.text_config.bos_token_id]).save_pretrained(folder)
    t, v = cfg.text_config, cfg.vision_config
    _mark_random(folder, hub_name, (
        f"Qwen2_5_VLForConditionalGeneration, {index['metadata']['total_parameters']:,} parameters in bf16 "
        f"({index['metadata']['total_size'] / 1e9:.1f} GB). Text: hidden {t.hidden_size}, {t.num_hidden_layers} "
        f"layers, {t.num_attention_heads} heads, {t.num_key_value_heads} KV heads, MLP {t.intermediate_size}, "
        f"vocabulary {t.vocab_size}. Vision: depth {v.depth}, hidden {v.hidden_size}, {v.num_heads} heads, MLP "
        f"{v.intermediate_size}, patch {v.patch_size}, merge {v.spatial_merge_size}, window {v.window_size}, "
        f"full attention in blocks {v.fullatt_block_indexes}. The tokenizer has Qwen's special tokens at their "
        "real ids but not its BPE merges (text is tokenised byte by byte)."))
    return folder


BUILDERS = {"vit-in21k": build_vit, "vit-224": build_vit, "dino": build_vit,
            "efficientnet": build_efficientnet, "qwen": build_qwen_vl}


def build_checkpoints(dest: str | Path, only: list[str] | None = None, tiny: bool = False,
                      device: str | None = None, seed: int = 0) -> dict[str, Path]:
    """Write the chosen checkpoints (default: all) under ``dest``; return key -> folder."""
    keys = []
    for k in only or list(CHECKPOINTS):
        for key in GROUPS.get(k, [k]):
            if key not in CHECKPOINTS:
                raise ValueError(f"unknown checkpoint {key!r}; choose from {sorted(CHECKPOINTS) + sorted(GROUPS)}")
            keys.append(key)
    out = {}
    for key in dict.fromkeys(keys):
        folder = Path(dest) / CHECKPOINTS[key]
        kw = {"device": device} if key == "qwen" else {}
        out[key] = BUILDERS[key](folder, CHECKPOINTS[key], tiny=tiny, seed=seed, **kw)
        print(f"[rehearsal] {key}: {folder}", flush=True)
    return out


# ---------------------------------------------------------------------------- SID_Set-like data
SID_SIZES = ((1024, 1024), (1024, 768), (512, 512), (1024, 640))   # (width, height), cycled: 3 in 4 >= 1024 wide


def _draw(rng: np.random.Generator, width: int, height: int, label: int) -> tuple[np.ndarray, np.ndarray | None]:
    """One procedural image (and the tampered region's mask for label 2).

    0 "real": a smooth two-colour gradient, a few filled ellipses and rectangles, and
    Gaussian sensor-like noise. 1 "full synthetic": the same kind of scene without sensor noise
    but with a faint periodic 8-pixel pattern, like an upsampling generator's checkerboard.
    2 "tampered": a real-kind scene with a synthetic-kind rectangle pasted in (mask = 255 there).
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    c0, c1 = rng.uniform(0, 255, 3).astype(np.float32), rng.uniform(0, 255, 3).astype(np.float32)
    t = (xx / width * rng.uniform(0.2, 1) + yy / height * rng.uniform(0.2, 1))[..., None] / 2
    img = c0 * (1 - t) + c1 * t
    for _ in range(int(rng.integers(3, 8))):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        rx, ry = rng.uniform(0.05, 0.3) * width, rng.uniform(0.05, 0.3) * height
        inside = (((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1) if rng.random() < 0.5 else \
            ((np.abs(xx - cx) <= rx) & (np.abs(yy - cy) <= ry))
        img[inside] = rng.uniform(0, 255, 3)
    pattern = 6 * np.sin(xx * np.pi / 4) * np.sin(yy * np.pi / 4)
    noisy = img + 6 * rng.standard_normal(img.shape, dtype=np.float32)
    mask = None
    if label == 0:
        img = noisy
    elif label == 1:
        img = img + pattern[..., None]
    else:
        img = noisy
        x0, y0 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
        x1, y1 = x0 + width // 3, y0 + height // 3
        img[y0:y1, x0:x1] = rng.uniform(0, 255, 3) + pattern[y0:y1, x0:x1, None]
        mask = np.zeros((height, width), np.uint8)
        mask[y0:y1, x0:x1] = 255
    return np.clip(img, 0, 255).astype(np.uint8), mask


def _encode(array: np.ndarray, fmt: str) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return buf.getvalue()


def build_sid_set(dest: str | Path, n_per_label: int = 24, splits: tuple[str, ...] = ("train", "validation"),
                  sizes: tuple[tuple[int, int], ...] = SID_SIZES, seed: int = 0) -> Path:
    """A local dataset in SID_Set's schema (img_id, image, mask, width, height, label: 0 real, 1
    fully synthetic, 2 tampered), ``n_per_label`` rows per label and split, sizes cycled from
    ``sizes``, written as ``data/<split>-00000-of-00001.parquet`` like the hub's dataset so
    ``datasets.load_dataset(dest)`` finds both splits. Images are JPEG, masks PNG."""
    from datasets import Dataset, Features, Image, Value
    dest = Path(dest)
    (dest / "data").mkdir(parents=True, exist_ok=True)
    features = Features({"img_id": Value("string"), "image": Image(), "mask": Image(),
                         "width": Value("int32"), "height": Value("int32"), "label": Value("int64")})
    for s, split in enumerate(splits):
        rng = np.random.default_rng([seed, s])
        rows = {k: [] for k in features}
        for label in (0, 1, 2):
            for i in range(n_per_label):
                w, h = sizes[i % len(sizes)]
                img, mask = _draw(rng, w, h, label)
                rows["img_id"].append(f"{split}_{label}_{i:05d}")
                rows["image"].append({"bytes": _encode(img, "JPEG"), "path": None})
                rows["mask"].append(None if mask is None else {"bytes": _encode(mask, "PNG"), "path": None})
                rows["width"].append(w)
                rows["height"].append(h)
                rows["label"].append(label)
        Dataset.from_dict(rows, features=features).to_parquet(str(dest / "data" / f"{split}-00000-of-00001.parquet"))
    # no YAML `configs:` block: with one, datasets' cache key ignores the files and two such
    # folders would share one cached copy; without it, splits are found by file name
    (dest / "README.md").write_text(
        "# SID_Set-like local dataset (procedural, NOT SID_Set)\n\nSame columns and labels as "
        "saberzl/SID_Set (0 real, 1 full synthetic, 2 tampered), images drawn procedurally by "
        "`python -m gpu_kit.rehearsal sid-set` (gradients, shapes, noise; nothing downloaded). "
        f"{n_per_label} rows per label and split, sizes {list(sizes)}. For timing and memory "
        "rehearsals only.\n")
    print(f"[rehearsal] SID_Set-like data: {dest} ({len(splits)} splits x {3 * n_per_label} rows)", flush=True)
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gpu_kit.rehearsal", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    ck = sub.add_parser("checkpoints", help="exact-architecture random checkpoints in the hub's format")
    ck.add_argument("dest", help="destination folder, e.g. data/rehearsal")
    ck.add_argument("--only", help=f"comma-separated: {', '.join(list(CHECKPOINTS) + list(GROUPS))}")
    ck.add_argument("--tiny", action="store_true", help="the same families with a few small layers (tests, CPU)")
    ck.add_argument("--device", help="where random numbers are drawn (default: cuda when available)")
    sd = sub.add_parser("sid-set", help="a SID_Set-like local dataset (procedural images)")
    sd.add_argument("dest", help="destination folder, e.g. data/rehearsal/saberzl/SID_Set")
    sd.add_argument("--n-per-label", type=int, default=24, help="rows per label and split (default 24)")
    for p in (ck, sd):
        p.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.what == "checkpoints":
        only = [s.strip() for s in args.only.split(",")] if args.only else None
        build_checkpoints(args.dest, only, tiny=args.tiny, device=args.device, seed=args.seed)
    else:
        build_sid_set(args.dest, n_per_label=args.n_per_label, seed=args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
