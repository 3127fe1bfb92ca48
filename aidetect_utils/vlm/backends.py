"""Loading Qwen2.5-VL and adding LoRA: Unsloth on a CUDA GPU, transformers + peft elsewhere.

With a CUDA GPU and the ``unsloth`` package, the base model is loaded by Unsloth's
``FastVisionModel`` (4-bit, its fused kernels and LoRA); otherwise by transformers + peft.
:func:`select_backend` picks one and says why. Everything after loading (data, prompt, loss
masking, losses, training loop, scoring, saving) is the same code.

How the base is loaded is decided in one place, :func:`base_load_kwargs`, for training
(:func:`load_base`) and for reloading a saved model (``detector.VLMDetector.from_folder``): in 4
bits (nf4, through bitsandbytes) when asked and bitsandbytes runs on the device, else in the
device's precision (``gpu.compute_dtype``: bf16 on Ampere or newer, fp16 on a T4, the CPU's
default there). :func:`base_load_record` says how a model's base was loaded, so a saved model is
reloaded the way it was trained: LoRA adapters learned on a 4-bit base fit that base.
"""
from __future__ import annotations

import importlib.util
import warnings

import torch

from ..artifacts import count_parameters
from ..gpu import compute_dtype
from ..models import from_hub
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
        # on a GPU the model is loaded straight onto it (Trainer would move it, but scoring
        # before training, the zero-shot cell, would otherwise run the model on the CPU)
        model = from_hub(Qwen2_5_VLForConditionalGeneration, model_name,
                          **load_kwargs_here({"load_in_4bit": load_in_4bit, "quant_type": "nf4"}))
        processor = from_hub(AutoProcessor, model_name)
    if min_pixels:
        processor.image_processor.min_pixels = min_pixels
    if max_pixels:
        processor.image_processor.max_pixels = max_pixels
    return model, processor


# ----------------------------------------------------------- how the base model is loaded
def base_load_kwargs(load: dict, *, capability: tuple[int, int] | None,
                     bitsandbytes: bool) -> tuple[dict, str | None]:
    """The ``from_pretrained`` keyword arguments that load a base model as ``load`` describes,
    and a one-line note when it cannot be loaded that way here (None when it can).

    ``load``: a :func:`base_load_record` (``load_in_4bit``, and for 4 bits ``quant_type``,
    ``compute_dtype``, ``double_quant``, ``skip_modules``; else ``dtype``), or a request such as
    ``{"load_in_4bit": True, "quant_type": "nf4"}``. ``capability``: the CUDA compute capability
    of the GPU it goes to, None for the CPU. ``bitsandbytes``: whether bitsandbytes runs 4-bit
    layers on that device. A pure function of its arguments (:func:`load_kwargs_here` supplies
    this machine's), so what a Colab T4 would get can be checked anywhere.

    The dtype (of a 4-bit model's computation and other weights, or of a whole 16-bit model):
    on a GPU the recorded 16-bit dtype (trained in fp16 on a T4: fp16 on an A100 too), except
    bf16 on a GPU without native bf16 (a T4), which gets fp16 with a note; nothing recorded (or
    float32): ``gpu.compute_dtype``, bf16 on compute capability >= 8.0, else fp16. On the CPU:
    float32, and a base that is not 4-bit gets no arguments at all (as before).

    - 4 bits and bitsandbytes runs there: a ``BitsAndBytesConfig`` with the recorded settings.
    - 4 bits without bitsandbytes: the model unquantized (GPU: 16 bits; CPU: as before), with
      a note saying so.
    """
    on_gpu = capability is not None
    device = f"the GPU (compute capability {capability[0]}.{capability[1]})" if on_gpu else "the CPU"
    dtype, note = (compute_dtype(capability=capability) if on_gpu else torch.float32), None
    wanted = load.get("compute_dtype") if load.get("load_in_4bit") else load.get("dtype")
    if on_gpu and wanted in ("float16", "bfloat16"):
        if wanted == "bfloat16" and dtype != torch.bfloat16:
            note = f"the base was loaded in bfloat16, which {device} lacks natively: float16 instead"
        else:
            dtype = getattr(torch, wanted)
    if load.get("load_in_4bit") and bitsandbytes:
        from transformers import BitsAndBytesConfig
        quant = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=load.get("quant_type") or "nf4", bnb_4bit_compute_dtype=dtype,
            bnb_4bit_use_double_quant=bool(load.get("double_quant")), llm_int8_skip_modules=load.get("skip_modules"))
        return ({"quantization_config": quant, "dtype": dtype, "device_map": {"": 0 if on_gpu else "cpu"}}, note)
    if load.get("load_in_4bit"):
        where = f"in {str(dtype).removeprefix('torch.')} on {device}" if on_gpu else f"in full precision on {device}"
        note = (f"a 4-bit ({load.get('quant_type') or 'nf4'}) base needs bitsandbytes, which is not installed or "
                f"does not run on {device} (pip install -e .[gpu]): loading it {where} instead")
    return ({"dtype": dtype, "device_map": {"": 0}} if on_gpu else {}), note


def bitsandbytes_runs_on(device_type: str) -> bool:
    """Whether the bitsandbytes package is installed and runs 4-bit layers on ``device_type``
    ("cuda" or "cpu"; recent releases run on a CPU too, bitsandbytes 0.50.2 does)."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return False
    if device_type == "cuda":
        return True
    import bitsandbytes          # imported only when asked: it prints notes about its kernels
    return device_type in getattr(bitsandbytes, "supported_torch_devices", ())


def load_kwargs_here(load: dict) -> dict:
    """:func:`base_load_kwargs` for this machine (its first GPU, else the CPU); a model that
    cannot be loaded as ``load`` says is loaded as the note says, with the note as a warning."""
    capability = torch.cuda.get_device_capability(0) if torch.cuda.is_available() else None
    has_bnb = bool(load.get("load_in_4bit")) and bitsandbytes_runs_on("cuda" if capability else "cpu")
    kwargs, note = base_load_kwargs(load, capability=capability, bitsandbytes=has_bnb)
    if note:
        warnings.warn(note, stacklevel=2)
    return kwargs


def base_load_record(model) -> dict:
    """How ``model``'s base (under its LoRA adapters, if any) was loaded: ``{"load_in_4bit":
    True, "quant_type": "nf4", "compute_dtype": "float16", "double_quant": False,
    "skip_modules": None}`` for a 4-bit base (read from its ``quantization_config``, whether
    transformers or Unsloth loaded it), ``{"load_in_4bit": False, "dtype": "bfloat16"}``
    otherwise. Saved in the model folder and passed back to :func:`base_load_kwargs` on reload."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    quant = getattr(base.config, "quantization_config", None)
    quant = quant.to_dict() if hasattr(quant, "to_dict") else dict(quant or {})
    if getattr(base, "is_loaded_in_4bit", False) or quant.get("load_in_4bit"):
        return {"load_in_4bit": True, "quant_type": quant.get("bnb_4bit_quant_type", "nf4"),
                "compute_dtype": str(quant.get("bnb_4bit_compute_dtype", "float32")).removeprefix("torch."),
                "double_quant": bool(quant.get("bnb_4bit_use_double_quant", False)),
                "skip_modules": quant.get("llm_int8_skip_modules")}
    dtype = next(p.dtype for p in base.parameters() if p.is_floating_point())
    return {"load_in_4bit": False, "dtype": str(dtype).removeprefix("torch.")}


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


def recipe_model(recipe: "Recipe"):
    """Notebook 05's model step: :func:`build_lora_model` with the ``training.Recipe``'s ``model_name``,
    ``backend``, ``load_in_4bit``, ``tiny_config``, ``min_pixels``, ``max_pixels``, ``lora_r``,
    ``lora_alpha``, ``lora_dropout`` and ``seed``."""
    r = recipe
    return build_lora_model(r.model_name, r.backend, load_in_4bit=r.load_in_4bit, tiny=r.tiny_config,
                            min_pixels=r.min_pixels, max_pixels=r.max_pixels, lora_r=r.lora_r,
                            lora_alpha=r.lora_alpha, lora_dropout=r.lora_dropout, seed=r.seed)


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
