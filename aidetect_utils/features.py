"""Extract a frozen backbone's features once, cache them, and explain a head through them.

When only a head is trained on a frozen backbone, running the backbone on every batch of every
epoch recomputes the same numbers again and again. :func:`cached_features` computes them once
(one pass per augmented view) and stores them as ``.npy`` beside a JSON key; the head then
trains on a tensor of features in seconds. Augmented training views are cached as extra
samples, so augmentation survives the caching.

:func:`gradient_importance` ranks features by the mean absolute gradient of the FAKE logit
with respect to each feature (saliency over the feature vector), averaged over images.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .engine import TrainConfig, device_of, fit, make_loader
from .progress import progress
from .runs import array_signature, fingerprint_hash, weights_signature, write_beside_then_rename
from .transforms import ArrayDataset


@torch.inference_mode()
def extract_features(model: nn.Module, images: np.ndarray, transform, batch_size: int = 128,
                     seed: int | None = None, desc: str = "features") -> tuple[np.ndarray, float]:
    """``model.features`` of every image (in order) as float32, and the seconds it took.

    ``seed`` fixes the random draws of an augmenting ``transform`` (one view per seed).
    """
    model.eval()
    device = device_of(model)
    if seed is not None:
        torch.manual_seed(seed)
    loader = make_loader(ArrayDataset(images, np.zeros(len(images), int), transform), batch_size)
    out = []
    t0 = time.perf_counter()
    for x, _ in progress(loader, desc=desc, leave=False):
        out.append(model.features(x.to(device)).float().cpu())
    return torch.cat(out).numpy(), time.perf_counter() - t0


def cached_features(folder: str | Path, name: str, info: dict, compute, *, images: np.ndarray | None = None,
                    model: nn.Module | None = None) -> tuple[np.ndarray, float, bool]:
    """Load ``folder/name.npy`` if it was computed for the same ``info``, images and model
    weights, else ``compute()``.

    ``info``: the settings that shape the features (backbone, preprocessing, view, seed).
    ``images``/``model``: the images the features are of and the model that computes them;
    their contents are hashed into the key (``runs.array_signature``, ``runs.weights_signature``),
    so other images of the same count, or other weights of the same architecture, are never
    served stale features. ``compute()`` returns (features, seconds). Returns (features,
    seconds spent computing them originally, whether they came from the cache). Each file is
    written whole or not at all (``runs.write_beside_then_rename``), the key last.
    """
    folder = Path(folder)
    arr_file, meta_file = folder / f"{name}.npy", folder / f"{name}.json"
    info = dict(info)
    if images is not None:
        info["images_sha256"] = array_signature(images)
    if model is not None:
        info["weights_sha256"] = weights_signature(getattr(model, "backbone", model))
    key = fingerprint_hash(info)
    if arr_file.exists() and meta_file.exists():
        meta = json.loads(meta_file.read_text())
        if meta.get("key") == key:
            return np.load(arr_file, allow_pickle=False), float(meta["seconds"]), True
    feats, seconds = compute()

    def write_features(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, feats.astype(np.float32), allow_pickle=False)
        meta_file.unlink(missing_ok=True)      # no key beside new features until both are written
    write_beside_then_rename(arr_file, write_features)
    meta = {"key": key, "seconds": seconds, "shape": list(feats.shape), "info": info}
    write_beside_then_rename(meta_file, lambda tmp: tmp.write_text(json.dumps(meta, default=str)))
    return feats, seconds, False


def gradient_importance(head: nn.Module, features: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Mean |d logit(FAKE) / d feature| over ``features`` (head in eval mode: dropout off).

    For a two-logit head the FAKE logit minus the REAL logit is differentiated, which is what
    moves P(FAKE).
    """
    head.eval()
    device = device_of(head)
    total = torch.zeros(features.shape[1])
    for i in range(0, len(features), batch_size):
        x = torch.tensor(features[i:i + batch_size], device=device, requires_grad=True)
        out = head(x)
        score = out[:, 1] - out[:, 0] if out.ndim == 2 and out.shape[1] == 2 else out.reshape(-1)
        (grad,) = torch.autograd.grad(score.sum(), x)
        total += grad.abs().sum(0).cpu()
    return (total / len(features)).numpy()


def train_head_on_features(head: nn.Module, feats: np.ndarray, labels: np.ndarray, val_feats: np.ndarray,
                           val_labels: np.ndarray, optimizer, out_dir, config, batch_size: int = 128,
                           desc: str = "head", resume: bool = True):
    """``engine.fit`` on cached feature vectors: the head alone, no backbone in the loop."""
    tr = torch.utils.data.TensorDataset(torch.tensor(feats), torch.tensor(np.asarray(labels)).long())
    va = torch.utils.data.TensorDataset(torch.tensor(val_feats), torch.tensor(np.asarray(val_labels)).long())
    # feature vectors are indexed in memory: worker processes would only add copying
    return fit(head, make_loader(tr, batch_size, shuffle=True, num_workers=0),
               make_loader(va, 4 * batch_size, num_workers=0), optimizer,
               out_dir, config, desc=desc, resume=resume)


def compare_cached_vs_uncached(make_model, make_optimizer, train, val, train_tf, eval_tf, epochs: int,
                               aug_views: int, out_dir, batch_size: int = 128, seed: int = 42) -> dict:
    """Train the same head twice on the same images for ``epochs`` epochs, and time both:

    - *uncached*: the whole model (frozen backbone + head) on image batches, the backbone run
      on every batch of every epoch (what the original recipes do);
    - *cached*: features extracted once (a clean view plus ``aug_views`` augmented views of the
      training images, and the validation images), then the head trained on them.

    ``make_model()`` returns a fresh ``FeatureClassifier`` (same initial head for both runs);
    ``make_optimizer(params)`` its optimizer. Returns seconds, speed-up and validation accuracy.
    """
    out_dir = Path(out_dir)
    cfg = TrainConfig(epochs=epochs, seed=seed, restore_best=False)

    model = make_model()
    tr = make_loader(ArrayDataset(train.images, train.labels, train_tf), batch_size, shuffle=True)
    va = make_loader(ArrayDataset(val.images, val.labels, eval_tf), 2 * batch_size)
    t0 = time.perf_counter()
    h_unc = fit(model, tr, va, make_optimizer(model.head.parameters()), out_dir / "uncached", cfg, resume=False,
                desc="uncached")
    uncached_s = time.perf_counter() - t0

    model = make_model()
    t0 = time.perf_counter()
    views = [extract_features(model, train.images, eval_tf, batch_size)[0]]
    views += [extract_features(model, train.images, train_tf, batch_size, seed=seed + v)[0]
              for v in range(1, aug_views + 1)]
    val_f = extract_features(model, val.images, eval_tf, batch_size)[0]
    extract_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    h = train_head_on_features(model.head, np.concatenate(views), np.tile(train.labels, aug_views + 1), val_f,
                               val.labels, make_optimizer(model.head.parameters()), out_dir / "cached",
                               cfg, batch_size, desc="cached", resume=False)
    head_s = time.perf_counter() - t1
    return {"images": len(train), "epochs": epochs, "aug_views": aug_views,
            "uncached_seconds": round(uncached_s, 2), "cached_seconds": round(extract_s + head_s, 2),
            "cached_extract_seconds": round(extract_s, 2), "cached_head_seconds": round(head_s, 2),
            "speedup": round(uncached_s / (extract_s + head_s), 2),
            "uncached_val_acc": round(h_unc.epochs[-1]["val_acc"], 4), "cached_val_acc": round(h.epochs[-1]["val_acc"], 4)}
