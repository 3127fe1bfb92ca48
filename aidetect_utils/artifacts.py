"""What a method leaves behind, in one schema for all: results and a self-describing model folder.

``results/<method>/metrics.json``: method, backbone, profile, dataset, n_test, parameters,
train seconds, inference images/second, device, preprocessing and ``metrics`` (see
``metrics.classification_metrics``), and on a GPU its peak memory (``gpu.peak_memory``).
``results/<method>/predictions.csv``: one row per test image (id, cifar_class, label,
prob_fake). The evaluation notebook recomputes everything from these two files.

A model folder holds ``model.safetensors`` (or a Hugging Face ``save_pretrained`` folder, or
for a vision-language model a LoRA adapter, its processor and the base model's name) and
``aidetect_model.json``: method, architecture spec (a builder name and its arguments, see ``registry``),
preprocessing, class names, decision threshold, and the test metrics for the record. Loading
never unpickles anything.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_model, save_model
from torch import nn

from . import CLASS_NAMES, registry
from .domain import DOMAIN_JSON, DomainCheck
from .engine import make_loader, predict_proba
from .gpu import peak_memory
from .images import display_name, one_line
from .metrics import classification_metrics
from .paths import holding, method_dir
from .transforms import ArrayDataset, eval_transform

SCHEMA_VERSION = 1
MODEL_JSON = "aidetect_model.json"
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
                      extra: dict | None = None, domain_check=None) -> Path:
    """Write a folder the predict command can load alone; ``domain_check`` (``domain.fit``) is
    saved beside the weights, so every reload can say whether an input resembles the training data."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "save_folder"):
        model.save_folder(folder)          # vlm.VLMDetector: LoRA adapter + processor (+ tiny base)
    elif registry.get(architecture.get("builder")).self_loading:
        model.save_pretrained(folder, safe_serialization=True)   # a Hugging Face model
    else:
        save_model(model, str(folder / "model.safetensors"))
    spec = {"schema_version": SCHEMA_VERSION, "method": method, "architecture": architecture,
            "preprocessing": preprocessing, "class_names": CLASS_NAMES, "threshold": float(threshold),
            "metrics": metrics or {}, "extra": extra or {}}
    (folder / MODEL_JSON).write_text(json.dumps(spec, indent=1))
    if domain_check is not None:
        domain_check.save(folder)
    return folder


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, as metrics.json records them."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


class ModelFolderError(ValueError):
    """A model folder that cannot be loaded; ``str(err)`` is one line naming the folder and the fault."""


def read_model_spec(folder: str | Path) -> dict:
    """``aidetect_model.json`` of ``folder``, checked: an architecture with a builder, and a
    preprocessing record with positive sizes and a usable normalisation. Raises
    :class:`ModelFolderError`."""
    folder = Path(folder)
    where = display_name(folder)
    spec_file = folder / MODEL_JSON
    if not folder.is_dir():
        raise ModelFolderError(f"{where}: no such model folder")
    if not spec_file.is_file():
        raise ModelFolderError(f"{where}: not a model folder (no {MODEL_JSON})")
    try:
        spec = json.loads(spec_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelFolderError(f"{where}: {MODEL_JSON} is not readable JSON ({exc})") from None
    if not isinstance(spec, dict):
        raise ModelFolderError(f"{where}: {MODEL_JSON} must hold a JSON object")
    arch = spec.get("architecture")
    if not isinstance(arch, dict) or not isinstance(arch.get("builder"), str):
        raise ModelFolderError(f"{where}: {MODEL_JSON} has no \"architecture\" with a \"builder\"")
    if not isinstance(arch.get("kwargs", {}), dict):
        raise ModelFolderError(f"{where}: {MODEL_JSON}: architecture \"kwargs\" must be an object")
    prep = spec.get("preprocessing")
    if not isinstance(prep, dict):
        raise ModelFolderError(f"{where}: {MODEL_JSON} has no \"preprocessing\" record")
    for key in ("source_size", "input_size"):
        v = prep.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 8192:
            raise ModelFolderError(f"{where}: {MODEL_JSON}: preprocessing {key} must be a whole number of "
                                   f"pixels from 1 to 8192, got {v!r}")
    for key in ("mean", "std"):
        v = prep.get(key)
        if (not isinstance(v, list) or len(v) != 3 or not all(isinstance(x, (int, float)) for x in v)
                or (key == "std" and not all(x > 0 for x in v))):
            raise ModelFolderError(f"{where}: {MODEL_JSON}: preprocessing {key} must be three numbers"
                                   f"{' above 0' if key == 'std' else ''}, got {v!r}")
    t = spec.get("threshold", 0.5)
    if not isinstance(t, (int, float)) or not 0.0 <= t <= 1.0:
        raise ModelFolderError(f"{where}: {MODEL_JSON}: threshold must be a number in [0, 1], got {t!r}")
    return spec


def load_model_folder(folder: str | Path) -> tuple[nn.Module, dict]:
    """Rebuild the model of a folder written by :func:`save_model_folder`, in eval mode.

    Every fault of the folder (a missing or edited JSON, missing, truncated or mismatched
    weights, weights holding NaN or infinity) raises :class:`ModelFolderError` with one line;
    nothing is ever unpickled."""
    folder = Path(folder)
    where = display_name(folder)
    spec = read_model_spec(folder)
    builder = spec["architecture"]["builder"]
    try:
        self_loading = registry.get(builder).self_loading
    except ValueError as exc:
        raise ModelFolderError(f"{where}: cannot rebuild the {builder!r} architecture ({exc})") from None
    if not self_loading and not (folder / "model.safetensors").is_file():
        raise ModelFolderError(f"{where}: no model.safetensors (weights are only read from safetensors)")
    with _utf8_path(folder) as folder:
        return _load(folder, spec, builder, self_loading, where), spec


def load_domain_check(folder: str | Path, spec: dict):
    """The folder's ``domain.DomainCheck`` (a resolution-only one when it was saved without);
    a damaged one raises :class:`ModelFolderError`."""
    folder = Path(folder)
    try:
        with _utf8_path(folder) as readable:
            check = DomainCheck.load(readable)
        if check is not None and check.has_score and check.layer and "knn.bank" not in check.arrays:
            raise ValueError("knn.bank missing")
    except Exception as exc:  # noqa: BLE001 - bad JSON, missing or truncated arrays
        raise ModelFolderError(f"{display_name(folder)}: {DOMAIN_JSON} or its arrays are damaged "
                               f"({type(exc).__name__}: {one_line(exc)})") from None
    return check or DomainCheck(source_size=spec["preprocessing"]["source_size"])


@contextlib.contextmanager
def _utf8_path(folder: Path):
    """``folder``, or, when its name is not valid UTF-8 (which safetensors and the Hugging Face
    loaders cannot open), the same folder reached through an open descriptor (Linux's
    ``/proc/self/fd``), for as long as the model is being read."""
    try:
        str(folder).encode("utf-8")
    except UnicodeEncodeError:
        pass
    else:
        yield folder
        return
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        yield Path(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def _load(folder: Path, spec: dict, builder: str, self_loading: bool, where: str) -> nn.Module:
    weights = folder / "model.safetensors"
    try:
        model = registry.build(spec["architecture"], folder)
    except ModelFolderError as exc:   # a builder names the fault; the folder is named here
        raise ModelFolderError(f"{where}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any builder fault is a fault of the folder's JSON or files
        raise ModelFolderError(f"{where}: cannot rebuild the {builder!r} architecture "
                               f"({type(exc).__name__}: {one_line(exc)})") from None
    if not self_loading:
        try:
            load_model(model, str(weights))
        except Exception as exc:  # noqa: BLE001 - safetensors header/size errors, shape mismatches
            raise ModelFolderError(f"{where}: model.safetensors does not fit the architecture in {MODEL_JSON} "
                                   f"({type(exc).__name__}: {one_line(exc)})") from None
    bad = non_finite_tensors(model)
    if bad:
        what = "model.safetensors holds" if not self_loading else "its weights hold"
        raise ModelFolderError(f"{where}: {what} NaN or infinite values in {len(bad)} tensor"
                               f"{'s' if len(bad) > 1 else ''} (first: {bad[0]!r}); the model is damaged: "
                               "retrain it or restore the folder")
    return model.eval()


def non_finite_tensors(model: nn.Module) -> list[str]:
    """Names of the floating-point parameters holding NaN or infinity, and of the buffers
    holding NaN (a buffer may hold -inf on purpose, e.g. an attention mask). A model folder
    with such weights would score every image NaN; it is refused when loaded instead."""
    bad = []
    with torch.no_grad():
        for kind, tensors in (("param", model.named_parameters()), ("buffer", model.named_buffers())):
            for name, t in tensors:
                if not t.is_floating_point() or t.is_meta:
                    continue
                if not (torch.isfinite(t).all() if kind == "param" else not torch.isnan(t).any()):
                    bad.append(name)
    return bad


def evaluate_and_save(model: nn.Module, test, *, method: str, backbone: str, profile: str,
                      preprocessing: dict, architecture: dict, train_seconds: float,
                      batch_size: int = 128, threshold: float = 0.5, extra: dict | None = None,
                      out_dir: str | Path | None = None, prob_fake=None,
                      inference_seconds: float | None = None, dataset: str = "cifake", domain_check=None) -> dict:
    """The last steps every method notebook shares: score the test split, write
    ``results/<method>/metrics.json`` and ``predictions.csv``, and save ``results/<method>/model``.

    ``test`` is a ``splits.ImageSplit``. ``prob_fake``/``inference_seconds``: scores computed
    by the notebook (e.g. Monte Carlo dropout means) instead of one deterministic pass.
    ``domain_check``: the model's ``domain.DomainCheck``, saved in the model folder.
    ``out_dir`` is held while it is written (``paths.hold``; ``results/<method>/`` already is).
    Returns the metrics record.
    """
    out = Path(out_dir) if out_dir else method_dir(method)
    with holding(out):   # one run writes a results folder at a time (paths.hold)
        return _evaluate_and_save(model, test, out, method=method, backbone=backbone, profile=profile,
                                  preprocessing=preprocessing, architecture=architecture, train_seconds=train_seconds,
                                  batch_size=batch_size, threshold=threshold, extra=extra, prob_fake=prob_fake,
                                  inference_seconds=inference_seconds, dataset=dataset, domain_check=domain_check)


def _evaluate_and_save(model, test, out: Path, *, method, backbone, profile, preprocessing, architecture,
                       train_seconds, batch_size, threshold, extra, prob_fake, inference_seconds, dataset,
                       domain_check) -> dict:
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
                      preprocessing=preprocessing, threshold=threshold, domain_check=domain_check,
                      metrics={k: record["metrics"][k] for k in ("accuracy", "roc_auc", "f1_fake")}
                      | {"n_test": record["n_test"], "dataset": record["dataset"], "profile": profile})
    return record
