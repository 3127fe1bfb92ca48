"""Does this input resemble what the model was trained on? A check every model folder carries.

A detector trained on 32x32 CIFAKE JPEGs answers "FAKE, 0.98" on a 3000x2000 photograph just as
confidently as on a CIFAKE image, and is at chance on such inputs. Each saved model therefore
stores a :class:`DomainCheck`, and ``predict``, the web page and notebook 07 report per image
``in_domain`` and the score behind it. Two checks, each fitted on the model's own training data:

1. **Resolution.** An image whose sides are more than ``max_scale`` times larger or smaller than
   the training images (``source_size``, 32 px for CIFAKE) is out of domain: it is judged
   shrunk or blown up to a size it never had.
2. **A score at the training resolution** (the image as the model sees it), the sum of two
   standardised parts, flagged above the 95th percentile of in-domain validation images:

   - *input statistics*: 14 numbers describing how the image is encoded and what its pixels
     look like (the error when it is re-saved as a JPEG at quality 75, how close its 8x8 DCT
     coefficients sit to the quantisation steps of a q75 JPEG, steps across the 8-pixel block
     borders, high-frequency and gradient energy, colour means, spreads, saturation, clipped
     pixels), scored by the Mahalanobis distance to a Gaussian fitted on training images
     (scikit-learn's Ledoit-Wolf covariance);
   - *features*: the distance from the model's own penultimate features (L2-normalised) to the
     k-th nearest of a bank of training images' features (Sun et al., 2022, "Out-of-distribution
     detection with deep nearest neighbors"), weighted 0.5.

What it measures on this project's models is in RESULTS.md ("Robustness, calibration, beyond
CIFAKE") and notebook 07: almost all of the separation comes from the input statistics. The
reason is worth knowing: every CIFAKE file is a 32x32 JPEG at quality 75, and the input
statistics recognise that encoding. So the check answers "was this image made
like the training images?", not "is its content familiar?": a photograph saved as a 32-px q75
JPEG passes it, and a never-compressed 32-px PNG is flagged. Nothing is fitted on realworld100:
Gaussian and bank on training images, standardisation and threshold on two disjoint sets of
validation images.
"""
from __future__ import annotations
from .engine import device_of, is_channels_last, match_memory_format
from .transforms import ArrayDataset

import io
import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

DOMAIN_JSON, DOMAIN_WEIGHTS = "domain.json", "domain.safetensors"
STAT_NAMES = ["log_recompress_mse", "dct_q75_residual", "log_block_h", "log_block_v", "log_hf_energy",
              "log_grad_energy", "mean_r", "mean_g", "mean_b", "std_r", "std_g", "std_b", "sat_mean", "clip_frac"]
# The IJG luminance quantisation table at quality 50 (JPEG standard, Annex K), scaled to quality q
# as libjpeg does: every JPEG encoder starts from it, which is why a q75 JPEG's DCT coefficients
# sit on multiples of these steps.
_Q50 = np.array([16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
                 14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113,
                 92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], float).reshape(8, 8)
_ZIGZAG = [(0, 1), (1, 0), (2, 0), (1, 1), (0, 2), (0, 3), (1, 2), (2, 1), (3, 0), (4, 0), (3, 1), (2, 2), (1, 3),
           (0, 4), (0, 5)]          # the 15 lowest-frequency AC coefficients


def _q_table(quality: int) -> np.ndarray:
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    return np.clip(np.floor((_Q50 * scale + 50) / 100), 1, 255)


def input_stats(images: np.ndarray, jpeg_quality: int = 75) -> np.ndarray:
    """(N, H, W, 3) uint8 at the training resolution -> (N, 14) statistics, :data:`STAT_NAMES`."""
    from PIL import Image
    from scipy.fft import dctn
    x = images.astype(np.float64)
    n, h, w = x.shape[:3]
    y = x @ np.array([0.299, 0.587, 0.114])                                  # luminance, as JPEG codes it
    rec = np.empty(n)
    for i in range(n):                                                       # a q75 JPEG re-saved at q75 barely changes
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(images[i])).save(buf, format="JPEG", quality=jpeg_quality)
        rec[i] = np.mean((np.asarray(Image.open(buf).convert("RGB"), np.float64) - x[i]) ** 2)
    hb, wb = h // 8 * 8, w // 8 * 8
    blocks = (y[:, :hb, :wb] - 128).reshape(n, hb // 8, 8, wb // 8, 8).transpose(0, 1, 3, 2, 4)
    coef = dctn(blocks, type=2, axes=(-2, -1), norm="ortho") / _q_table(jpeg_quality)
    c = np.stack([coef[..., a, b] for a, b in _ZIGZAG], -1)
    residual = np.abs(c - np.round(c)).mean(axis=(1, 2, 3))                  # ~0 on the JPEG grid
    dh, dv = np.abs(np.diff(y, axis=2)), np.abs(np.diff(y, axis=1))
    on_h, on_v = np.arange(w - 1) % 8 == 7, np.arange(h - 1) % 8 == 7
    block_h = (dh[:, :, on_h].mean((1, 2)) + 1e-3) / (dh[:, :, ~on_h].mean((1, 2)) + 1e-3)
    block_v = (dv[:, on_v].mean((1, 2)) + 1e-3) / (dv[:, ~on_v].mean((1, 2)) + 1e-3)
    var = y.var(axis=(1, 2)) + 1.0
    lap = 4 * y[:, 1:-1, 1:-1] - y[:, :-2, 1:-1] - y[:, 2:, 1:-1] - y[:, 1:-1, :-2] - y[:, 1:-1, 2:]
    hf = (lap ** 2).mean((1, 2)) / var
    grad = ((dh ** 2).mean((1, 2)) + (dv ** 2).mean((1, 2))) / var
    mx, mn = x.max(-1), x.min(-1)
    return np.column_stack([np.log(rec + 1e-3), residual, np.log(block_h), np.log(block_v), np.log(hf + 1e-6),
                            np.log(grad + 1e-6), x.mean((1, 2)) / 255, x.std((1, 2)) / 255,
                            ((mx - mn) / (mx + 1e-6)).mean((1, 2)), ((x <= 2) | (x >= 253)).mean((1, 2, 3))])


def penultimate_layer(model: nn.Module) -> str | None:
    """The module whose output is the model's penultimate representation (the kNN features), as
    the model declares it (``feature_layer``, see ``models``), or None for a model without one
    cheap to read (a vision-language model: input statistics only)."""
    return getattr(model, "feature_layer", None)


@contextmanager
def recording(model: nn.Module, layer: str):
    """Inside the block, every forward pass of ``model`` appends the output of its submodule
    ``layer`` to the yielded list, one vector per image: conv maps are averaged over space, token
    sequences give their first (class) token, vectors stay as they are. :func:`stacked` joins them."""
    out: list[torch.Tensor] = []

    def hook(_module, _inputs, o):
        o = (o[0] if isinstance(o, (tuple, list)) or hasattr(o, "to_tuple") else o).float()   # a ModelOutput too
        out.append((o.flatten(2).mean(-1) if o.ndim == 4 else o[:, 0] if o.ndim == 3 else o.reshape(len(o), -1)).cpu())

    handle = model.get_submodule(layer).register_forward_hook(hook)
    try:
        yield out
    finally:
        handle.remove()


def stacked(recorded: list[torch.Tensor]) -> np.ndarray:
    return torch.cat(recorded).numpy() if recorded else np.zeros((0, 0), np.float32)


@torch.inference_mode()
def hooked_features(model: nn.Module, layer: str, images: np.ndarray, transform, batch_size: int = 256) -> np.ndarray:
    """The output of submodule ``layer`` for each image, one vector each (see :func:`recording`)."""
    model.eval()
    device, channels_last = device_of(model), is_channels_last(model)
    loader = torch.utils.data.DataLoader(ArrayDataset(images, np.zeros(len(images), int), transform),
                                         batch_size=batch_size)
    with recording(model, layer) as out:
        for x, _ in loader:
            model(match_memory_format(x.to(device), channels_last))
    return stacked(out)


def _knn_distance(bank: np.ndarray, feats: np.ndarray, k: int) -> np.ndarray:
    """Distance from each L2-normalised row of ``feats`` to its k-th nearest row of ``bank``."""
    b = torch.from_numpy(bank).float()
    res = []
    for s in range(0, len(feats), 4096):
        x = torch.nn.functional.normalize(torch.from_numpy(feats[s:s + 4096]).float(), dim=1)
        sim = (x @ b.T).topk(min(k, len(b)), dim=1).values[:, -1]
        res.append(torch.sqrt(torch.clamp(2 - 2 * sim, min=0)))
    return torch.cat(res).numpy().astype(np.float64)


@dataclass
class DomainCheck:
    """The domain check of one model (see the module docstring); :func:`fit` builds it."""

    source_size: int
    max_scale: float = 2.0
    layer: str | None = None
    k: int = 10
    weight: float = 0.5
    quantile: float = 0.95
    jpeg_quality: int = 75
    arrays: dict = field(default_factory=dict)   # input.mean/scale/precision (float32), knn.bank
    z: dict = field(default_factory=dict)
    threshold: float | None = None
    fitted_on: dict = field(default_factory=dict)

    # ---------------------------------------------------------------- resolution
    def resolution_note(self, size: tuple[int, int]) -> str:
        """"" when (width, height) is within ``max_scale`` of the training size, else why not."""
        w, h = size
        lo, hi = self.source_size / self.max_scale, self.source_size * self.max_scale
        if max(w, h) > hi or min(w, h) < lo:
            return f"{w}x{h} px, trained on {self.source_size}x{self.source_size}"
        return ""

    # ---------------------------------------------------------------- the score
    def _parts(self, model, transform, images: np.ndarray, feats: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        s = input_stats(images, self.jpeg_quality)
        zz = (s - self.arrays["input.mean"][0].astype(np.float64)) / self.arrays["input.scale"].astype(np.float64)
        s_in = np.log(((zz @ self.arrays["input.precision"].astype(np.float64)) * zz).sum(1) + 1e-6)
        if self.layer is None or self.weight == 0 or (model is None and feats is None):
            return s_in, np.zeros_like(s_in)
        if feats is None:
            feats = hooked_features(model, self.layer, images, transform)
        return s_in, _knn_distance(self.arrays["knn.bank"], feats, self.k)

    @property
    def has_score(self) -> bool:
        """False for a resolution-only check (a model folder saved before checks were fitted)."""
        return "input.mean" in self.arrays and bool(self.z)

    @property
    def feature_layer(self) -> str | None:
        """The layer whose output the score reads (:func:`recording` it while the model runs anyway
        saves a second pass), or None when the score reads no features."""
        return self.layer if self.has_score and self.layer is not None and self.weight != 0 else None

    def score(self, model, transform, images: np.ndarray, feats: np.ndarray | None = None) -> pd.DataFrame:
        """Per image at the training resolution: ``domain_score`` (higher: less like training),
        its ``input_z`` and ``features_z`` parts, and ``score_in_domain`` (score under the threshold).
        ``feats``: the :attr:`feature_layer` output of these images when already recorded (else
        the model is run for it)."""
        if not self.has_score:
            nan = np.full(len(images), np.nan)
            return pd.DataFrame({"domain_score": nan, "input_z": nan, "features_z": nan,
                                 "score_in_domain": np.ones(len(images), bool)})
        s_in, s_knn = self._parts(model, transform, images, feats)
        zi = (s_in - self.z["input_mu"]) / self.z["input_sd"]
        zk = (s_knn - self.z["knn_mu"]) / self.z["knn_sd"] if self.layer else np.zeros_like(zi)
        score = zi + (self.weight * zk if self.layer else 0.0)
        frame = pd.DataFrame({"domain_score": score, "input_z": zi, "features_z": zk})
        if self.threshold is not None:
            frame["score_in_domain"] = score <= self.threshold
        return frame

    def judge(self, model, transform, images: np.ndarray, sizes: list[tuple[int, int]],
              feats: np.ndarray | None = None) -> pd.DataFrame:
        """:meth:`score` plus the resolution check: ``in_domain`` and a one-phrase ``domain_note``
        saying why an image is out of domain ("" when it is not)."""
        frame = self.score(model, transform, images, feats)
        notes = []
        for size, (_, r) in zip(sizes, frame.iterrows()):
            note = self.resolution_note(size)
            if not note and not r.get("score_in_domain", True):
                note = ("not encoded like the training images" if r["input_z"] >= self.weight * r["features_z"]
                        else "unlike the training images' features") + f" (score {r['domain_score']:.1f} > {self.threshold:.1f})"
            notes.append(note)
        frame["in_domain"] = [n == "" for n in notes]
        frame["domain_note"] = notes
        return frame

    def describe(self) -> str:
        if not self.has_score:
            return f"in domain: sides within {self.max_scale:g}x of {self.source_size} px (no score fitted)"
        if self.threshold is None:
            return "a domain check being fitted"
        what = "input statistics" + (f" + {self.weight:g} x kNN on {self.layer!r} features" if self.layer else "")
        return (f"in domain: sides within {self.max_scale:g}x of {self.source_size} px, and {what} under "
                f"{self.threshold:.2f} (the {self.quantile:.0%} quantile of validation images)")

    # ---------------------------------------------------------------- the model folder
    def save(self, folder: str | Path) -> None:
        from safetensors.numpy import save_file
        folder = Path(folder)
        save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in self.arrays.items()},
                  str(folder / DOMAIN_WEIGHTS))
        spec = {k: getattr(self, k) for k in ("source_size", "max_scale", "layer", "k", "weight", "quantile",
                                              "jpeg_quality", "z", "threshold", "fitted_on")}
        (folder / DOMAIN_JSON).write_text(json.dumps({"stats": STAT_NAMES, **spec}, indent=1))

    @classmethod
    def load(cls, folder: str | Path) -> "DomainCheck | None":
        """The check saved in ``folder``, or None for a folder saved without one."""
        from safetensors.numpy import load_file
        folder = Path(folder)
        if not (folder / DOMAIN_JSON).exists():
            return None
        spec = json.loads((folder / DOMAIN_JSON).read_text())
        spec.pop("stats", None)
        return cls(**spec, arrays=load_file(str(folder / DOMAIN_WEIGHTS)))


def fit(model: nn.Module, transform, train_images: np.ndarray, val_images: np.ndarray, *, source_size: int,
        layer: str | None = "auto", n_stats: int = 20000, bank_size: int = 10000, k: int = 10, weight: float = 0.5,
        quantile: float = 0.95, max_scale: float = 2.0, seed: int = 0) -> DomainCheck:
    """Fit a :class:`DomainCheck` for ``model``: the input-statistics Gaussian on up to
    ``n_stats`` training images and the kNN bank on ``bank_size`` of them; the standardisation
    on one half of the validation images and the threshold (``quantile``) on the other half.
    ``transform``: the model's evaluation transform. ``layer="auto"``: :func:`penultimate_layer`."""
    from sklearn.covariance import LedoitWolf
    rng = np.random.default_rng(seed)
    layer = penultimate_layer(model) if layer == "auto" else layer
    tr = train_images[np.sort(rng.permutation(len(train_images))[:n_stats])]
    stats = input_stats(tr)
    mean, scale = stats.mean(0), stats.std(0) + 1e-8
    arrays = {"input.mean": mean[None], "input.scale": scale,
              "input.precision": LedoitWolf().fit((stats - mean) / scale).precision_}
    if layer is not None:
        bank = hooked_features(model, layer, tr[:bank_size], transform)
        arrays["knn.bank"] = bank / (np.linalg.norm(bank, axis=1, keepdims=True) + 1e-12)
    check = DomainCheck(source_size=source_size, max_scale=max_scale, layer=layer, k=k, weight=weight,
                        quantile=quantile, arrays=arrays,
                        fitted_on={"train_images": int(len(tr)), "bank": int(min(bank_size, len(tr))) if layer else 0,
                                   "val_images": int(len(val_images)), "seed": seed})
    order = rng.permutation(len(val_images))
    cal, thr = val_images[np.sort(order[: len(order) // 2])], val_images[np.sort(order[len(order) // 2:])]
    s_in, s_knn = check._parts(model, transform, cal)
    check.z = {"input_mu": float(s_in.mean()), "input_sd": float(s_in.std() + 1e-12),
               "knn_mu": float(s_knn.mean()), "knn_sd": float(s_knn.std() + 1e-12)}
    check.threshold = float(np.quantile(check.score(model, transform, thr)["domain_score"], quantile))
    if not np.isfinite(check.threshold):
        raise ValueError("the domain check's threshold is not finite (too few or degenerate validation images)")
    return check
