"""The fine-tuned VLM as a detector like every other: image tensors in, logits [Real, Fake] out.

Scoring never parses generated text: :class:`VLMDetector` reads the next-token logits at the
answer position and keeps the two answer tokens, so ``softmax([l_Real, l_Fake])[1]`` is
P(FAKE). Being an ``nn.Module`` that takes image tensors, the shared evaluation,
``predictions.csv``, the predict command and notebook 07 treat it the same way. Its model
folder (``adapter/``, ``processor/``, and the base: ``base/`` for a tiny model, whose weights are
saved whole, or ``base_load.json`` for a hub model, which is named and reloaded) is registered as
the ``qwen_vl_lora`` builder. ``base_load.json`` records how the hub base was loaded (4-bit nf4
or not, the compute dtype), so a model fine-tuned on a 4-bit base is reloaded on one.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..artifacts import evaluate_and_save as save, ModelFolderError
from ..engine import device_of, predict_proba
from ..models import from_hub
from ..registry import register
from ..transforms import preprocessing
from .backends import base_load_record, for_inference, load_kwargs_here
from .prompt import VLMCollator, answer_token_ids
from .tiny import TINY

BASE_LOAD = "base_load.json"       # in a model folder: how the base was loaded (backends.base_load_record)


class VLMDetector(nn.Module):
    """The fine-tuned VLM as a detector: image tensors (N, 3, H, W) -> logits [Real, Fake] (N, 2).

    The logits are the next-token logits at the answer position for the first tokens of
    ``Real`` and ``Fake``; their softmax is (P(REAL), P(FAKE)) given that the model answers one
    of the two, which is what ``engine.prob_fake_from_logits`` computes.

    Declarations (see ``models``): no feature layer cheap to read (its domain check uses input
    statistics only), no Grad-CAM, no MC dropout.
    """

    feature_layer = None
    supports_mc_dropout = False

    def __init__(self, model, processor, base_model: str, backend: str):
        super().__init__()
        self.model, self.processor = model, processor
        self.base_model, self.backend = base_model, backend
        self.collator = VLMCollator(processor, with_answers=False)
        self.answer_ids = list(answer_token_ids(processor))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = to_model(self.model, self.collator([(img, 0) for img in x]))
        logits = self.model(**batch).logits
        last = batch["attention_mask"].sum(1) - 1
        return logits[torch.arange(len(last), device=last.device), last][:, self.answer_ids].float()

    def gradcam_target(self, x: torch.Tensor | None = None):
        """None: Grad-CAM does not cover vision-language models."""
        return None

    def spec(self) -> dict:
        return {"builder": "qwen_vl_lora", "kwargs": {"base_model": self.base_model, "backend": self.backend}}

    def save_folder(self, folder: str | Path) -> None:
        """``adapter/`` (peft, safetensors), ``processor/``, and the base: for a tiny model built
        from a config its weights in ``base/``; a hub model is named, not copied, and
        ``base_load.json`` records how it was loaded (``backends.base_load_record``)."""
        folder = Path(folder)
        self.model.save_pretrained(folder / "adapter")
        self.processor.save_pretrained(folder / "processor")
        if self.base_model == TINY:
            copy.deepcopy(self.model).unload().save_pretrained(folder / "base", safe_serialization=True)
        else:
            (folder / BASE_LOAD).write_text(json.dumps(base_load_record(self.model), indent=1))

    @classmethod
    def from_folder(cls, folder: str | Path, base_model: str, backend: str = "transformers") -> "VLMDetector":
        """The detector :meth:`save_folder` wrote, with transformers + peft (whichever backend
        trained it). A hub base is loaded the way ``base_load.json`` says it was for training
        (``backends.base_load_kwargs``): in 4 bits again where bitsandbytes runs, else
        unquantized with a one-line warning. A folder saved before that file existed is
        reloaded as a 16-bit base (on a GPU) as it was then. A tiny base is loaded from ``base/``."""
        from peft import PeftModel
        from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration
        folder = Path(folder)
        check_adapter(folder / "adapter")
        processor = AutoProcessor.from_pretrained(folder / "processor")
        if base_model == TINY:
            base = Qwen2_5_VLForConditionalGeneration.from_pretrained(folder / "base", use_safetensors=True)
        else:
            record = read_base_load(folder)
            base = from_hub(Qwen2_5_VLForConditionalGeneration, base_model, **load_kwargs_here(record))
        model = PeftModel.from_pretrained(base, folder / "adapter")
        return cls(model.eval(), processor, base_model, "transformers")


ADAPTER_WEIGHTS = "adapter_model.safetensors"


def check_adapter(adapter: Path) -> None:
    """Refuse an ``adapter/`` folder without ``adapter_model.safetensors`` (``ModelFolderError``,
    one line) before peft sees it: peft 0.21's ``PeftModel.from_pretrained`` has no
    ``use_safetensors`` switch and unpickles ``adapter_model.bin`` when that is all there is
    (with ``weights_only=True``: a malicious file is refused, a benign one used). A model folder
    is read from safetensors only; peft prefers the safetensors file when it is present."""
    if (adapter / ADAPTER_WEIGHTS).is_file():
        return
    pickled = sorted(p.name for p in adapter.glob("*.bin")) if adapter.is_dir() else []
    raise ModelFolderError(f"adapter/ has no {ADAPTER_WEIGHTS}" + (
        f" (only {', '.join(pickled)}: pickles in a model folder are never loaded; save the adapter with "
        "safe_serialization=True)" if pickled else ""))


def read_base_load(folder: str | Path) -> dict:
    """A model folder's ``base_load.json``; ``{"load_in_4bit": False}`` (a 16-bit base) for a
    folder saved before the file existed."""
    file = Path(folder) / BASE_LOAD
    return json.loads(file.read_text()) if file.exists() else {"load_in_4bit": False}


def to_model(model, batch: dict) -> dict:
    """A collator batch moved to the model's device, images in the model's dtype, and the
    training-only entries (``labels``, ``is_fake``) left out: what ``model(**batch)`` takes."""
    device = device_of(model)
    dtype = next(p for p in model.parameters() if p.is_floating_point()).dtype
    out = {k: v.to(device) for k, v in batch.items() if k not in ("labels", "is_fake")}
    out["pixel_values"] = out["pixel_values"].to(dtype)
    return out


@torch.no_grad()
def batch_logits(model, batch: dict) -> torch.Tensor:
    """The model's logits (B, T, vocabulary) for a :class:`~.prompt.VLMCollator` batch, on the CPU
    in float32: what the answer-token losses are computed from."""
    return model(**to_model(model, batch)).logits.float().cpu()


def vlm_preprocessing(input_size: int, source_size: int = 32) -> dict:
    """Preprocessing record for a VLM: tensors in [0, 1] (mean 0, std 1); the processor
    normalises with the checkpoint's own statistics."""
    return preprocessing(input_size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), source_size=source_size)


def inference_detector(model, processor, info: dict) -> VLMDetector:
    """The model (switched to inference) as a :class:`VLMDetector`, from :func:`build_lora_model`'s ``info``."""
    return VLMDetector(for_inference(model, info["backend"]), processor, info["model"], info["backend"])


def score(model, processor, info: dict, loader, desc: str = "score") -> tuple[np.ndarray, float]:
    """P(FAKE) for every image of ``loader`` from the answer logits, and the seconds it took."""
    return predict_proba(inference_detector(model, processor, info), loader, desc=desc)


def evaluate_and_save(trainer, processor, info: dict, test, *, method: str, profile: str, preprocessing: dict,
                      dataset: str, batch_size: int, extra: dict | None = None, domain_check=None,
                      out_dir: str | Path | None = None) -> dict:
    """Score the test split with the fine-tuned model and write results/<method>/ (metrics.json,
    predictions.csv, model folder) exactly like the other methods. ``domain_check``: the
    model's ``domain.DomainCheck`` (for a VLM fitted with ``layer=None``: input statistics
    only), saved in the model folder; ``out_dir``: instead of results/<method>/."""
    detector = inference_detector(trainer.model, processor, info)
    return save(detector, test, method=method, backbone=info["model"], profile=profile, preprocessing=preprocessing,
                architecture=detector.spec(), train_seconds=trainer.train_seconds, batch_size=batch_size,
                dataset=dataset, extra={"backend": info["backend"], "steps": trainer.state.global_step, **(extra or {})},
                domain_check=domain_check, out_dir=out_dir)


@register("qwen_vl_lora", self_loading=True, large=lambda kw: kw.get("base_model") != TINY)   # a hub base: billions of parameters
def _build(folder, base_model: str, backend: str = "transformers") -> VLMDetector:
    return VLMDetector.from_folder(folder, base_model, backend)
