"""A vision-language model (Qwen2.5-VL) as a real-or-AI detector, with LoRA (notebooks 05, 06).

The model sees an image and one fixed question, and answers one word: ``Real`` or ``Fake``.

- **Backends.** With a CUDA GPU and the ``unsloth`` package, the base model is loaded by
  Unsloth's ``FastVisionModel`` (4-bit, its fused kernels and LoRA); otherwise by
  transformers + peft. :func:`select_backend` picks one and says why. Everything after loading
  (data, prompt, loss masking, losses, training loop, scoring, saving) is the same code.
- **Training** is Hugging Face's ``Trainer`` with :class:`AnswerLossTrainer`, which scores only
  the answer tokens, with cross-entropy (method 1) or focal loss (method 2, see ``losses``).
  TRL's ``SFTTrainer``, which Unsloth's notebooks use, is a ``Trainer`` subclass whose extra
  work (formatting a text dataset) is done here by :class:`VLMCollator`; the custom loss is the
  reason to stay on the base class.
- **Scoring** never parses generated text: :class:`VLMDetector` reads the next-token logits at
  the answer position and keeps the two answer tokens, so ``softmax([l_Real, l_Fake])[1]`` is
  P(FAKE). It is an ``nn.Module`` taking image tensors like every other detector, so the shared
  evaluation, ``predictions.csv``, the predict command and notebook 07 treat it the same way.
- **Offline tests** use :func:`build_tiny_qwen_vl`: a Qwen2.5-VL with a few layers built from a
  config, and a processor built without downloads (a byte-level tokenizer with the Qwen special
  tokens and a ``Qwen2VLImageProcessor`` with 4-pixel patches).
"""
from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import os
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .losses import IGNORE_INDEX, answer_cross_entropy, answer_focal_loss
from .progress import enabled as progress_enabled

# transformers 5.x deprecation raised from inside peft/Trainer, not from anything a reader can change
warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)

QUESTION = "Is this image real or AI-generated?"
ANSWERS = ("Real", "Fake")   # index = label (REAL = 0, FAKE = 1)
END_OF_TURN = "<|im_end|>"
FULL_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
TINY = "tiny"                # model_name that builds a small Qwen2.5-VL from a config
# LoRA on the language model's attention projections only (the vision tower's are named qkv/proj)
LM_ATTENTION = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)"

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


# ----------------------------------------------------------------------------- backends
def select_backend(requested: str = "auto", model_name: str = FULL_MODEL) -> tuple[str, str]:
    """("unsloth" | "transformers", why). ``requested``: auto, unsloth or transformers."""
    has_gpu = torch.cuda.is_available()
    has_unsloth = importlib.util.find_spec("unsloth") is not None
    if requested not in ("auto", "unsloth", "transformers"):
        raise ValueError(f"backend must be auto, unsloth or transformers, got {requested!r}")
    if requested == "unsloth":
        if not has_gpu:
            raise RuntimeError("backend='unsloth' needs a CUDA GPU (Unsloth refuses to import without "
                               "one); use backend='auto' or 'transformers'")
        if not has_unsloth:
            raise RuntimeError("backend='unsloth' but the unsloth package is not installed; create the "
                               "GPU environment: conda env create -f environment-gpu.yml")
        return "unsloth", "requested"
    if requested == "transformers":
        return "transformers", "requested"
    if model_name == TINY:
        return "transformers", "a tiny model built from a config (Unsloth loads hub checkpoints only)"
    if has_gpu and has_unsloth:
        return "unsloth", "a CUDA GPU and the unsloth package are present"
    if has_gpu:
        return "transformers", "a GPU is present but unsloth is not installed (see environment-gpu.yml)"
    return "transformers", "no CUDA GPU: Unsloth refuses to import without one"


# ----------------------------------------------------------------------------- tiny model
def build_tiny_processor(patch_size: int = 4, merge_size: int = 2, min_pixels: int = 16 * 16,
                         max_pixels: int = 64 * 64):
    """A Qwen2.5-VL processor built offline: byte-level BPE with no merges + the Qwen specials."""
    from transformers import (Qwen2_5_VLProcessor, Qwen2Tokenizer, Qwen2VLImageProcessor,
                              Qwen2VLVideoProcessor)
    from transformers.convert_slow_tokenizer import bytes_to_unicode
    vocab = {ch: i for i, ch in enumerate(bytes_to_unicode().values())}
    tok = Qwen2Tokenizer(vocab=vocab, merges=[])
    tok.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    sizes = dict(patch_size=patch_size, temporal_patch_size=2, merge_size=merge_size)
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels, **sizes),
        video_processor=Qwen2VLVideoProcessor(**sizes), tokenizer=tok, chat_template=CHAT_TEMPLATE)


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


# ----------------------------------------------------------------------------- loading
def load_base(model_name: str, backend: str, *, load_in_4bit: bool = True, tiny: dict | None = None,
              min_pixels: int | None = None, max_pixels: int | None = None, seed: int = 0):
    """(model, processor) before LoRA. ``model_name``: a hub name or :data:`TINY`."""
    if model_name == TINY:
        tiny = dict(tiny or {})
        proc_kw = {k: tiny.pop(k) for k in ("patch_size", "merge_size") if k in tiny}
        proc_kw.update({k: v for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if v})
        return build_tiny_qwen_vl(seed=seed, processor_kwargs=proc_kw, **tiny)
    if backend == "unsloth":
        from unsloth import FastVisionModel  # imported only here: it refuses to import without a GPU
        model, processor = FastVisionModel.from_pretrained(model_name, load_in_4bit=load_in_4bit,
                                                           use_gradient_checkpointing="unsloth")
    else:
        from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration
        from .models import _from_hub
        # on a GPU: bf16, loaded straight onto it (Trainer would move it, but scoring before
        # training, the zero-shot cell, would otherwise run the model on the CPU)
        kwargs = {"dtype": torch.bfloat16, "device_map": {"": 0}} if torch.cuda.is_available() else {}
        if load_in_4bit and torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes") is None:
            warnings.warn("load_in_4bit needs the bitsandbytes package (pip install -e .[gpu]); loading in bf16")
        elif load_in_4bit and torch.cuda.is_available():
            from transformers import BitsAndBytesConfig
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
        model = _from_hub(Qwen2_5_VLForConditionalGeneration, model_name, **kwargs)
        processor = _from_hub(AutoProcessor, model_name)
    if min_pixels:
        processor.image_processor.min_pixels = min_pixels
    if max_pixels:
        processor.image_processor.max_pixels = max_pixels
    return model, processor


def add_lora(model, backend: str, r: int = 16, alpha: int = 16, dropout: float = 0.0, seed: int = 0):
    """LoRA adapters on the language model's attention projections (q, k, v, o); all else frozen."""
    if backend == "unsloth":
        from unsloth import FastVisionModel
        model = FastVisionModel.get_peft_model(
            model, finetune_vision_layers=False, finetune_language_layers=True,
            finetune_attention_modules=True, finetune_mlp_modules=False, r=r, lora_alpha=alpha,
            lora_dropout=dropout, bias="none", random_state=seed)
        FastVisionModel.for_training(model)
        return model
    from peft import LoraConfig, get_peft_model
    if getattr(model, "is_loaded_in_4bit", False):
        from peft import prepare_model_for_kbit_training
        model = prepare_model_for_kbit_training(model)
    torch.manual_seed(seed)
    return get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, bias="none",
                                            target_modules=LM_ATTENTION))


# ----------------------------------------------------------------------------- prompt and batches
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


# ----------------------------------------------------------------------------- training
def _trainer_class():
    from transformers import Trainer

    class AnswerLossTrainer(Trainer):
        """``Trainer`` whose loss is computed on the answer tokens only: ``loss="ce"`` or
        ``"focal"`` (with ``focal_alpha``, ``focal_gamma``)."""

        def __init__(self, *args, loss: str = "ce", focal_alpha: float = 0.75, focal_gamma: float = 2.0, **kw):
            if loss not in ("ce", "focal"):
                raise ValueError(f"loss must be 'ce' or 'focal', got {loss!r}")
            super().__init__(*args, **kw)
            self.loss_name, self.focal_alpha, self.focal_gamma = loss, focal_alpha, focal_gamma

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels, is_fake = inputs.pop("labels"), inputs.pop("is_fake")
            out = model(**inputs)
            if self.loss_name == "focal":
                loss = answer_focal_loss(out.logits, labels, is_fake, self.focal_alpha, self.focal_gamma)
            else:
                loss = answer_cross_entropy(out.logits, labels)
            return (loss, out) if return_outputs else loss

    return AnswerLossTrainer


def train_lora(model, processor, train_dataset, out_dir: str | Path, *, loss: str = "ce",
               focal_alpha: float = 0.75, focal_gamma: float = 2.0, epochs: float = 1, lr: float = 2e-4,
               batch_size: int = 8, grad_accum: int = 1, scheduler: str = "linear", warmup_ratio: float = 0.05,
               weight_decay: float = 0.01, optim: str = "adamw_torch", seed: int = 0, logging_steps: int = 5,
               save_steps: int = 50):
    """Fine-tune the LoRA adapters; returns the ``Trainer`` (its ``state.log_history`` holds the losses).

    Checkpoints go to ``out_dir`` every ``save_steps`` (the last one kept); a run that was
    interrupted resumes from there, and a finished one returns at once, but only for the same
    settings: ``out_dir/fingerprint.json`` records every argument, a hash of the training data
    and of the model's initial trainable (LoRA) weights, and the base model's identity (its
    config, and for a model under 100 M parameters all its weights). Anything else removes the
    old checkpoints and trains afresh. The outcome is recorded with ``runlog``.
    """
    from transformers import TrainingArguments
    from transformers.trainer_utils import get_last_checkpoint

    from . import runlog
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = dict(loss=loss, focal_alpha=focal_alpha, focal_gamma=focal_gamma, epochs=epochs, lr=lr,
                    batch_size=batch_size, grad_accum=grad_accum, scheduler=scheduler, warmup_ratio=warmup_ratio,
                    weight_decay=weight_decay, optim=optim, seed=seed, save_steps=save_steps)
    fingerprint = _run_fingerprint(model, train_dataset, settings)
    fresh_reason = _forget_other_runs(out_dir, fingerprint)
    steps = int(np.ceil(len(train_dataset) / (batch_size * grad_accum)) * epochs)
    cuda = torch.cuda.is_available()
    args = TrainingArguments(
        output_dir=str(out_dir), num_train_epochs=epochs, per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=grad_accum, learning_rate=lr, lr_scheduler_type=scheduler,
        warmup_steps=int(round(warmup_ratio * steps)), weight_decay=weight_decay, optim=optim,
        logging_steps=logging_steps, save_strategy="steps", save_steps=save_steps, save_total_limit=1,
        report_to="none", seed=seed, data_seed=seed, bf16=cuda and torch.cuda.is_bf16_supported(),
        use_cpu=not cuda, remove_unused_columns=False, dataloader_num_workers=0,
        disable_tqdm=not progress_enabled())
    trainer = _trainer_class()(model=model, args=args, train_dataset=train_dataset,
                               data_collator=VLMCollator(processor), loss=loss,
                               focal_alpha=focal_alpha, focal_gamma=focal_gamma)
    last = get_last_checkpoint(str(out_dir)) if any(out_dir.glob("checkpoint-*")) else None
    timing = out_dir / "train_seconds.json"
    before = json.loads(timing.read_text())["seconds"] if (timing.exists() and last) else 0.0
    done = int(last.rsplit("-", 1)[1]) if last else 0
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=last)
    trainer.train_seconds = before + time.perf_counter() - t0   # summed over interrupted runs
    timing.write_text(json.dumps({"seconds": trainer.train_seconds}))
    if last is None:
        status = "trained" + (f" ({fresh_reason})" if fresh_reason else "")
    elif done >= trainer.state.max_steps:
        status = "reloaded (same settings)"
    else:
        status = f"resumed at step {done + 1} of {trainer.state.max_steps}"
    runlog.record("LoRA fine-tune", status, out_dir, steps=trainer.state.global_step)
    return trainer


def _run_fingerprint(model, train_dataset, settings: dict) -> dict:
    """What determines a LoRA run's result (see :func:`train_lora`)."""
    from .engine import data_signature, hash_array
    trainable = hashlib.sha256()
    for name, p in model.named_parameters():
        if p.requires_grad:
            trainable.update(name.encode())
            hash_array(trainable, p)
    base = getattr(model, "get_base_model", lambda: model)()
    n_params = sum(p.numel() for p in base.parameters())
    ident = {"name": getattr(base.config, "_name_or_path", ""), "config": base.config.to_json_string(use_diff=True)}
    if n_params < 100_000_000:
        whole = hashlib.sha256()
        for name, t in base.state_dict().items():
            whole.update(name.encode())
            hash_array(whole, t)
        ident["weights"] = whole.hexdigest()[:16]
    return {"settings": settings, "train_data": data_signature(train_dataset),
            "initial_trainable": trainable.hexdigest()[:16], "base": ident}


def _forget_other_runs(out_dir: Path, fingerprint: dict) -> str | None:
    """Remove checkpoints of a run with other settings; write this run's fingerprint. Returns
    what changed (None when nothing was there or nothing changed)."""
    file = out_dir / "fingerprint.json"
    now = json.loads(json.dumps(fingerprint, default=str))
    saved = json.loads(file.read_text()) if file.exists() else None
    checkpoints = list(out_dir.glob("checkpoint-*"))
    reason = None
    if checkpoints and saved != now:
        changed = [k for k in now if not isinstance(saved, dict) or saved.get(k) != now[k]]
        reason = "changed: " + ", ".join(k.replace("_", " ") for k in changed)
        print(f"[vlm] the checkpoints in {out_dir} are from other settings ({reason}): removed, training afresh")
        for c in checkpoints:
            shutil.rmtree(c)
        (out_dir / "train_seconds.json").unlink(missing_ok=True)
    file.write_text(json.dumps(now, indent=1))
    return reason


def loss_history(trainer) -> "pd.DataFrame":
    """Training loss per logged step, from ``trainer.state.log_history``."""
    import pandas as pd
    rows = [{"step": h["step"], "epoch": h.get("epoch"), "loss": h["loss"], "lr": h.get("learning_rate")}
            for h in trainer.state.log_history if "loss" in h]
    return pd.DataFrame(rows, columns=["step", "epoch", "loss", "lr"])


# ----------------------------------------------------------------------------- scoring and saving
class VLMDetector(nn.Module):
    """The fine-tuned VLM as a detector: image tensors (N, 3, H, W) -> logits [Real, Fake] (N, 2).

    The logits are the next-token logits at the answer position for the first tokens of
    ``Real`` and ``Fake``; their softmax is (P(REAL), P(FAKE)) given that the model answers one
    of the two, which is what ``engine.prob_fake_from_logits`` computes.
    """

    def __init__(self, model, processor, base_model: str, backend: str):
        super().__init__()
        self.model, self.processor = model, processor
        self.base_model, self.backend = base_model, backend
        self.collator = VLMCollator(processor, with_answers=False)
        self.answer_ids = list(answer_token_ids(processor))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from .engine import device_of
        device = device_of(self.model)
        dtype = next(p for p in self.model.parameters() if p.is_floating_point()).dtype
        batch = self.collator([(img, 0) for img in x])
        batch = {k: v.to(device) for k, v in batch.items()}
        batch["pixel_values"] = batch["pixel_values"].to(dtype)
        logits = self.model(**batch).logits
        last = batch["attention_mask"].sum(1) - 1
        return logits[torch.arange(len(last), device=device), last][:, self.answer_ids].float()

    def spec(self) -> dict:
        return {"builder": "qwen_vl_lora", "kwargs": {"base_model": self.base_model, "backend": self.backend}}

    def save_folder(self, folder: str | Path) -> None:
        """``adapter/`` (peft, safetensors), ``processor/``, and for a tiny model built from a
        config its base weights in ``base/`` (a hub model is named, not copied)."""
        folder = Path(folder)
        self.model.save_pretrained(folder / "adapter")
        self.processor.save_pretrained(folder / "processor")
        if self.base_model == TINY:
            copy.deepcopy(self.model).unload().save_pretrained(folder / "base", safe_serialization=True)

    @classmethod
    def from_folder(cls, folder: str | Path, base_model: str, backend: str = "transformers") -> "VLMDetector":
        from peft import PeftModel
        from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration
        from .models import _from_hub
        folder = Path(folder)
        processor = AutoProcessor.from_pretrained(folder / "processor")
        if base_model == TINY:
            base = Qwen2_5_VLForConditionalGeneration.from_pretrained(folder / "base", use_safetensors=True)
        else:
            kwargs = {"dtype": torch.bfloat16, "device_map": {"": 0}} if torch.cuda.is_available() else {}
            base = _from_hub(Qwen2_5_VLForConditionalGeneration, base_model, **kwargs)
        model = PeftModel.from_pretrained(base, folder / "adapter")
        return cls(model.eval(), processor, base_model, "transformers")


def vlm_preprocessing(image_size: int, source_size: int = 32) -> dict:
    """Preprocessing record for a VLM: tensors in [0, 1] (mean 0, std 1); the processor
    normalises with the checkpoint's own statistics."""
    from .transforms import preprocessing
    return preprocessing(image_size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), source_size=source_size)


def lora_summary(model) -> dict:
    """Trainable/total parameters and the module names that carry LoRA adapters."""
    from .models import count_parameters
    trainable, total = count_parameters(model)
    wrapped = [n for n, m in model.named_modules() if hasattr(m, "lora_A") and hasattr(m, "base_layer")]
    return {"trainable": trainable, "total": total, "lora_modules": len(wrapped),
            "lora_targets": sorted({n.rsplit(".", 1)[-1] for n in wrapped})}


def build_lora_model(model_name: str, backend: str = "auto", *, load_in_4bit: bool = True,
                     tiny: dict | None = None, min_pixels: int | None = None, max_pixels: int | None = None,
                     lora_r: int = 16, lora_alpha: int = 16, lora_dropout: float = 0.0, seed: int = 0):
    """Pick the backend, load the base model and its processor, add LoRA.
    Returns (model, processor, info) where ``info`` says which backend ran and why."""
    backend, why = select_backend(backend, model_name)
    base, processor = load_base(model_name, backend, load_in_4bit=load_in_4bit, tiny=tiny,
                                min_pixels=min_pixels, max_pixels=max_pixels, seed=seed)
    model = add_lora(base, backend, r=lora_r, alpha=lora_alpha, dropout=lora_dropout, seed=seed)
    return model, processor, {"backend": backend, "why": why, "model": model_name} | lora_summary(model)


def for_inference(model, backend: str):
    """Switch to inference (Unsloth has its own switch; otherwise eval mode)."""
    if backend == "unsloth":
        from unsloth import FastVisionModel
        FastVisionModel.for_inference(model)
    return model.eval()


def detection_data(dataset: str = "cifake", *, image_size: int, n_train: int | None, n_test: int | None,
                   prepared_dir=None, min_width: int | None = 1024, seed: int = 0, sid_set_path: str | None = None):
    """(train, test, preprocessing) for the VLM notebooks: ``splits.ImageSplit`` pairs.

    ``cifake``: random subsets of notebook 00's prepared train and test splits (32 px images,
    upsized to ``image_size`` by the transform). ``sid_set``: the hub's ``train`` and
    ``validation`` splits, label 2 dropped, at least ``min_width`` px wide, balanced, decoded at
    ``image_size`` (needs internet, or ``sid_set_path``: a local folder in its layout).
    """
    if dataset == "cifake":
        from .splits import load_prepared
        data = load_prepared(prepared_dir)
        train = data.split("train").sample(n_train, seed=seed)
        test = data.split("test").sample(n_test, seed=seed)
    elif dataset == "sid_set":
        from .sidset import load_sid_set, to_image_split
        half = lambda n: None if n is None else max(1, n // 2)
        load = lambda split, n: load_sid_set(split, min_width=min_width, max_per_class=half(n), seed=seed,
                                             path=sid_set_path)
        train = to_image_split(load("train", n_train), image_size, desc="SID_Set train")
        test = to_image_split(load("validation", n_test), image_size, desc="SID_Set validation")
    else:
        raise ValueError(f"dataset must be 'cifake' or 'sid_set', got {dataset!r}")
    return train, test, vlm_preprocessing(image_size, source_size=train.images.shape[1])


def describe_model(info: dict) -> str:
    """What :func:`build_lora_model` loaded, in three lines for the notebook."""
    return (f"backend: {info['backend']} ({info['why']})\n"
            f"model: {info['model']} | LoRA on {info['lora_modules']} modules {info['lora_targets']}\n"
            f"trainable parameters: {info['trainable']:,} of {info['total']:,} ({info['trainable'] / info['total']:.2%})")


def inference_detector(model, processor, info: dict) -> VLMDetector:
    """The model (switched to inference) as a :class:`VLMDetector`, from :func:`build_lora_model`'s ``info``."""
    return VLMDetector(for_inference(model, info["backend"]), processor, info["model"], info["backend"])


def score(model, processor, info: dict, loader, desc: str = "score") -> tuple[np.ndarray, float]:
    """P(FAKE) for every image of ``loader`` from the answer logits, and the seconds it took."""
    from .engine import predict_proba
    return predict_proba(inference_detector(model, processor, info), loader, desc=desc)


def evaluate_and_save(trainer, processor, info: dict, test, *, method: str, profile: str, preprocessing: dict,
                      dataset: str, batch_size: int, extra: dict | None = None) -> dict:
    """Score the test split with the fine-tuned model and write results/<method>/ (metrics.json,
    predictions.csv, model folder) exactly like the other methods."""
    from .artifacts import evaluate_and_save as save
    detector = inference_detector(trainer.model, processor, info)
    return save(detector, test, method=method, backbone=info["model"], profile=profile, preprocessing=preprocessing,
                architecture=detector.spec(), train_seconds=trainer.train_seconds, batch_size=batch_size,
                dataset=dataset, extra={"backend": info["backend"], "steps": trainer.state.global_step, **(extra or {})})
