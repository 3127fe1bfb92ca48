"""Loading Qwen2.5-VL and adding LoRA: Unsloth on a CUDA GPU, transformers + peft elsewhere.

With a CUDA GPU and the ``unsloth`` package, the base model is loaded by Unsloth's
``FastVisionModel`` (4-bit, its fused kernels and LoRA); otherwise by transformers + peft.
:func:`select_backend` picks one and says why. Everything after loading (data, prompt, loss
masking, losses, training loop, scoring, saving) is the same code.
"""
from __future__ import annotations

import importlib.util
import warnings

import torch

from .tiny import TINY, build_tiny_qwen_vl


FULL_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"


# LoRA on the language model's attention projections only (the vision tower's are named qkv/proj)
LM_ATTENTION = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)"


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
        from ..models import _from_hub
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


def lora_summary(model) -> dict:
    """Trainable/total parameters and the modules that carry LoRA adapters: how many, their
    short names (``lora_targets``) and their full names in the base model (``lora_names``)."""
    from ..models import count_parameters
    trainable, total = count_parameters(model)
    wrapped = [n for n, m in model.named_modules() if hasattr(m, "lora_A") and hasattr(m, "base_layer")]
    return {"trainable": trainable, "total": total, "lora_modules": len(wrapped),
            "lora_targets": sorted({n.rsplit(".", 1)[-1] for n in wrapped}),
            "lora_names": sorted(n.removeprefix("base_model.model.") for n in wrapped)}


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


def recipe_model(P):
    """:func:`build_lora_model` with the VLM notebooks' parameters (``P.model_name``,
    ``P.backend``, ``P.load_in_4bit``, ``P.tiny_config``, ``P.min_pixels``, ``P.max_pixels``,
    ``P.lora_r``, ``P.lora_alpha``, ``P.lora_dropout``, ``P.seed``): notebook 05's model step."""
    return build_lora_model(P.model_name, P.backend, load_in_4bit=P.load_in_4bit, tiny=P.tiny_config,
                            min_pixels=P.min_pixels, max_pixels=P.max_pixels, lora_r=P.lora_r,
                            lora_alpha=P.lora_alpha, lora_dropout=P.lora_dropout, seed=P.seed)


def for_inference(model, backend: str):
    """Switch to inference (Unsloth has its own switch; otherwise eval mode)."""
    if backend == "unsloth":
        from unsloth import FastVisionModel
        FastVisionModel.for_inference(model)
    return model.eval()


def describe_model(info: dict) -> str:
    """What :func:`build_lora_model` loaded, in three lines for the notebook."""
    return (f"backend: {info['backend']} ({info['why']})\n"
            f"model: {info['model']} | LoRA on {info['lora_modules']} modules {info['lora_targets']}\n"
            f"trainable parameters: {info['trainable']:,} of {info['total']:,} ({info['trainable'] / info['total']:.2%})")
