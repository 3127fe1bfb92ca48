"""What a method leaves behind, in one schema for all: results and a self-describing model folder.

``results/<method>/metrics.json``: method, backbone, profile, dataset, n_test, parameters,
train seconds, inference images/second, device, preprocessing and ``metrics`` (see
``metrics.classification_metrics``), and on a GPU its peak memory (``gpu.peak_memory``).
``results/<method>/predictions.csv``: one row per test image (id, cifar_class, label,
prob_fake). The evaluation notebook recomputes everything from these two files.

A model folder holds ``model.safetensors`` (or a Hugging Face ``save_pretrained`` folder, or
for a vision-language model a LoRA adapter, its processor and the base model's name) and
``aidetect_model.json``: method, architecture spec (see ``models.build_from_spec``),
preprocessing, class names, decision threshold, and the test metrics for the record. Loading
never unpickles anything.
"""
from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_model, save_model
from torch import nn

from . import CLASS_NAMES
from .gpu import peak_memory
from .metrics import classification_metrics

SCHEMA_VERSION = 1
MODEL_JSON = "aidetect_model.json"
SELF_LOADING = ("hf_image_classification", "qwen_vl_lora")  # builders that load their own weights
REQUIRED_KEYS = ("schema_version", "method", "backbone", "profile", "dataset", "n_test",
                 "trainable_params", "total_params", "train_seconds", "inference_images_per_second",
                 "device", "metrics")


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


def write_results(out_dir: str | Path, *, method: str, backbone: str, profile: str, ids, labels,
                  prob_fake, cifar_class=None, trainable_params: int, total_params: int,
                  train_seconds: float, inference_seconds: float, dataset: str = "cifake",
                  threshold: float = 0.5, preprocessing: dict | None = None, extra: dict | None = None) -> dict:
    """Score ``prob_fake`` against ``labels`` and write metrics.json and predictions.csv."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = np.asarray(labels).astype(int)
    prob_fake = np.asarray(prob_fake, dtype=float)
    n = len(labels)
    record = {
        "schema_version": SCHEMA_VERSION, "method": method, "backbone": backbone, "profile": profile,
        "dataset": dataset, "n_test": int(n), "trainable_params": int(trainable_params),
        "total_params": int(total_params), "train_seconds": round(float(train_seconds), 2),
        "inference_images_per_second": round(n / inference_seconds, 1) if inference_seconds > 0 else None,
        "device": device_name(), "preprocessing": preprocessing or {},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "metrics": classification_metrics(labels, prob_fake, threshold), "extra": extra or {},
    }
    record.update(peak_memory())   # GPU runs: peak memory of the notebook's process so far
    (out / "metrics.json").write_text(json.dumps(record, indent=1))
    pd.DataFrame({"id": ids, "cifar_class": cifar_class if cifar_class is not None else -1,
                  "label": labels, "prob_fake": prob_fake}).to_csv(out / "predictions.csv", index=False)
    return record


def read_results(out_dir: str | Path) -> tuple[dict, pd.DataFrame]:
    """metrics.json (checked against the schema) and predictions.csv of one method."""
    out = Path(out_dir)
    record = json.loads((out / "metrics.json").read_text())
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise ValueError(f"{out / 'metrics.json'}: missing keys {missing}")
    return record, pd.read_csv(out / "predictions.csv", keep_default_na=False)


def save_model_folder(folder: str | Path, model: nn.Module, *, method: str, architecture: dict,
                      preprocessing: dict, threshold: float = 0.5, metrics: dict | None = None,
                      extra: dict | None = None) -> Path:
    """Write a folder the predict command can load alone."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if architecture.get("builder") == "hf_image_classification":
        model.save_pretrained(folder, safe_serialization=True)
    elif architecture.get("builder") == "qwen_vl_lora":
        model.save_folder(folder)          # vlm.VLMDetector: LoRA adapter + processor (+ tiny base)
    else:
        save_model(model, str(folder / "model.safetensors"))
    spec = {"schema_version": SCHEMA_VERSION, "method": method, "architecture": architecture,
            "preprocessing": preprocessing, "class_names": CLASS_NAMES, "threshold": float(threshold),
            "metrics": metrics or {}, "extra": extra or {}}
    (folder / MODEL_JSON).write_text(json.dumps(spec, indent=1))
    return folder


def load_model_folder(folder: str | Path) -> tuple[nn.Module, dict]:
    """Rebuild the model of a folder written by :func:`save_model_folder`, in eval mode."""
    from .models import build_from_spec
    folder = Path(folder)
    spec_file = folder / MODEL_JSON
    if not spec_file.exists():
        raise FileNotFoundError(f"{folder}: not a model folder (no {MODEL_JSON})")
    spec = json.loads(spec_file.read_text())
    model = build_from_spec(spec["architecture"], folder)
    if spec["architecture"].get("builder") not in SELF_LOADING:
        load_model(model, str(folder / "model.safetensors"))
    return model.eval(), spec


def evaluate_and_save(model: nn.Module, test, *, method: str, backbone: str, profile: str,
                      preprocessing: dict, architecture: dict, train_seconds: float,
                      batch_size: int = 128, threshold: float = 0.5, extra: dict | None = None,
                      out_dir: str | Path | None = None, prob_fake=None,
                      inference_seconds: float | None = None, dataset: str = "cifake") -> dict:
    """The last steps every method notebook shares: score the test split, write
    ``results/<method>/metrics.json`` and ``predictions.csv``, and save ``results/<method>/model``.

    ``test`` is a ``splits.ImageSplit``. ``prob_fake``/``inference_seconds``: scores computed
    by the notebook (e.g. Monte Carlo dropout means) instead of one deterministic pass.
    Returns the metrics record.
    """
    from .engine import make_loader, predict_proba
    from .models import count_parameters
    from .paths import method_dir
    from .transforms import ArrayDataset, eval_transform

    out = Path(out_dir) if out_dir else method_dir(method)
    if prob_fake is None:
        loader = make_loader(ArrayDataset(test.images, test.labels, eval_transform(preprocessing)), batch_size)
        prob, seconds = predict_proba(model, loader, desc=f"{method} test")
    else:
        prob, seconds = np.asarray(prob_fake), float(inference_seconds or 0.0)
    trainable, total = count_parameters(model)
    record = write_results(out, method=method, backbone=backbone, profile=profile, ids=test.ids,
                           labels=test.labels, prob_fake=prob, cifar_class=test.cifar_class,
                           trainable_params=trainable, total_params=total, train_seconds=train_seconds,
                           inference_seconds=seconds, threshold=threshold, preprocessing=preprocessing,
                           extra=extra, dataset=dataset)
    save_model_folder(out / "model", model, method=method, architecture=architecture,
                      preprocessing=preprocessing, threshold=threshold,
                      metrics={k: record["metrics"][k] for k in ("accuracy", "roc_auc", "f1_fake")}
                      | {"n_test": record["n_test"], "dataset": record["dataset"], "profile": profile})
    return record
