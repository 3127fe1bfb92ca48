"""Notebook 07: every method side by side, on the same test images.

- **Which results exist**: :func:`discover` reads every ``results/<method>/`` with a valid
  ``metrics.json`` (any subset of methods), :func:`align` keeps the test images all of them scored,
  says in one line when some methods scored other test images than the rest (the data was
  prepared again between their runs), and refuses to rank on fewer than :data:`MIN_COMMON`.
- **Is the difference real**: :func:`bootstrap_ci` (percentile bootstrap over test images) and
  :func:`mcnemar` (paired test on the images where exactly one of two methods is right: exact
  binomial below 25 discordant pairs, chi-square with continuity correction above; scipy).
- **Robustness**: :func:`corrupt` applies JPEG re-compression, down-and-up resizing, Gaussian
  blur or Gaussian noise (torchvision) to uint8 images, before each model's own preprocessing.
- **Calibration**: :func:`fit_temperature` fits one temperature on validation data by
  minimising the log loss of ``sigmoid(logit(p) / T)`` (scipy); :func:`apply_temperature`.
- **Why the model decides**: Grad-CAM lives in ``explain`` (notebook 07 and the web demo use it).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import optimize, stats
from sklearn import metrics as skm
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from .metrics import classification_metrics, confidence_bins, expected_calibration_error  # noqa: F401 (07 uses ECE via ev)

MIN_COMMON = 100   # fewest common test images (both classes among them) a comparison is ranked on
TABLE_COLUMNS = ["accuracy", "accuracy_ci", "balanced_accuracy", "precision_fake", "recall_fake", "f1_fake",
                 "roc_auc", "roc_auc_ci", "pr_auc", "tpr_at_5pct_fpr", "ece", "trainable_params",
                 "total_params", "train_seconds", "inference_images_per_second", "device", "profile", "n_test"]


# ------------------------------------------------------------------------------ results on disk
def series_methods() -> dict[str, str]:
    """{results folder: the notebook that writes it} for every method notebook of the series
    (their ``method`` parameter in ``profiles.yaml``)."""
    from . import params
    profiles = params.load_profiles()
    return {values["method"]: nb for nb in (profiles.get(params.DEFAULTS) or {})
            if "method" in (values := params.defaults_for(profiles, nb))}


def discover(results_root: str | Path) -> tuple[dict, list[str]]:
    """{method: (metrics record, predictions DataFrame)} for every ``results/*/metrics.json``,
    and a list of one-line notes on folders that were skipped (and why) and on the series'
    methods that have no results yet, naming the notebook that produces each (a notebook opened
    alone, as Colab opens it, compares what is there)."""
    from .artifacts import read_results
    from .params import active_profile
    found, notes = {}, []
    root = Path(results_root)
    for d in sorted(root.iterdir()) if root.is_dir() else ():
        if not (d / "metrics.json").exists():
            continue
        try:
            found[d.name] = read_results(d)
        except (ValueError, OSError, json.JSONDecodeError) as exc:
            notes.append(f"{d.name}: skipped ({exc})")
    profile = active_profile()
    for method, nb in series_methods().items():
        if method not in found and not any(n.startswith(f"{method}:") for n in notes):
            notes.append(f"{method}: no results yet; notebooks/{nb}.ipynb produces them"
                         + (f" (run it under profile {profile!r})" if profile else ""))
    return found, notes


def group_by_test_set(found: dict) -> list[list[str]]:
    """The methods grouped by the test images they scored, largest set first: a method whose
    images all lie in a larger method's set belongs to its group (05/06 score a seeded sample of
    the same test split), one whose images do not was scored on other data."""
    ids = {name: set(pred["id"].astype(str)) for name, (_, pred) in found.items()}
    groups: list[tuple[set, list[str]]] = []
    for name in sorted(ids, key=lambda n: -len(ids[n])):
        home = next((g for g in groups if ids[name] <= g[0]), None)
        if home is None:
            groups.append((ids[name], [name]))
        else:
            home[1].append(name)
    return [names for _, names in groups]


def _different_test_sets(found: dict, groups: list[list[str]], n_common: int) -> str:
    """One line naming the methods scored on other test images than the largest group."""
    main = max(groups, key=len)
    size = {name: len(pred) for name, (_, pred) in found.items()}
    others = [f"{', '.join(g)} ({max(size[n] for n in g):,} images)" for g in groups if g is not main]
    named = sum(len(g) for g in groups if g is not main)
    return (f"warning: the methods were scored on different test sets: {'; '.join(others)} "
            f"{'differs' if named == 1 else 'differ'} from {', '.join(main)} ({max(size[n] for n in main):,} "
            f"images); {n_common:,} images are common to all (was the data prepared again between their runs? "
            "re-run the methods on the same prepared data)")


def align(found: dict, min_common: int = MIN_COMMON) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(labels, P(FAKE)) on the test images every method scored: ``labels`` has id, label and
    cifar_class; ``probs`` one column per method, rows in the same order.

    When some methods scored other test images than the rest (not a sample of the same ones),
    one printed line names them (console and notebook). A ranking is refused (ValueError, one
    line naming the methods and counts) when the common images are fewer than ``min_common``,
    or lack a class every method scored: a comparison on the two images that survive the
    alignment reads as a perfect or a useless detector. A run whose every method scored fewer
    images than ``min_common`` (a deliberately tiny test set) needs all of the smallest set in
    common instead, so only images lost to the alignment are counted against it."""
    if not found:
        raise ValueError("no results found: run at least one method notebook (01-06) first")
    common = None
    for _, pred in found.values():
        ids = set(pred["id"].astype(str))
        common = ids if common is None else common & ids
    groups = group_by_test_set(found)
    if len(groups) > 1:
        print(_different_test_sets(found, groups, len(common)), flush=True)
    if not common:
        raise ValueError("the methods share no test image ids (were they run on different data?)")
    first = next(iter(found.values()))[1]
    base = first[first["id"].astype(str).isin(common)].copy()
    base["id"] = base["id"].astype(str)
    base = base.sort_values("id", ignore_index=True)[["id", "label", "cifar_class"]]
    probs = pd.DataFrame(index=base.index)
    for name, (_, pred) in found.items():
        p = pred.assign(id=pred["id"].astype(str)).set_index("id")
        if not (p.loc[base["id"], "label"].to_numpy() == base["label"].to_numpy()).all():
            raise ValueError(f"{name}: labels disagree with the other methods on the same ids")
        probs[name] = p.loc[base["id"], "prob_fake"].to_numpy(dtype=float)
    _enough_in_common(found, base, min_common)
    return base, probs


def _enough_in_common(found: dict, base: pd.DataFrame, min_common: int) -> None:
    """Refuse (one line) a comparison on fewer common images than ``min_common`` (or than the
    smallest method's whole set, when every method scored fewer), or without a class that
    every method scored."""
    need = min(min_common, min(len(pred) for _, pred in found.values()))
    every = set.intersection(*(set(pred["label"].astype(int)) for _, pred in found.values()))
    have = set(base["label"].astype(int))
    if len(base) >= need and every <= have:
        return
    y = base["label"].to_numpy()
    scored = ", ".join(f"{name} {len(pred):,}" for name, (_, pred) in found.items())
    raise ValueError(f"only {len(base):,} test images (REAL {int((y == 0).sum()):,}, FAKE {int((y == 1).sum()):,}) are "
                     f"common to the methods (scored: {scored}): too few to rank them (evaluation.MIN_COMMON = "
                     f"{min_common}, both classes); re-run the methods on the same prepared data, or leave out the "
                     "ones scored on other data (parameter methods)")


# ------------------------------------------------------------------------------ statistics
def _accuracy(y, p):
    return float(((p >= 0.5).astype(int) == y).mean())


def _auc(y, p):
    return float(skm.roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")


METRICS = {"accuracy": _accuracy, "roc_auc": _auc}


def bootstrap_ci(y_true, prob_fake, metric: str = "accuracy", n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``metric`` (accuracy or roc_auc) over resampled images."""
    y = np.asarray(y_true).astype(int)
    p = np.asarray(prob_fake, dtype=float)
    fn = METRICS[metric]
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        v = fn(y[idx], p[idx])
        if np.isfinite(v):
            vals.append(v)
    if not vals:
        return float("nan"), float("nan")
    a = (1 - level) / 2
    lo, hi = np.quantile(vals, [a, 1 - a])
    return float(lo), float(hi)


def mcnemar(y_true, pred_a, pred_b) -> dict:
    """McNemar's test of two classifiers on the same images.

    b: images A gets right and B wrong; c: the reverse. Exact two-sided binomial test on
    b of b + c when b + c < 25, else chi-square (1 dof) of (|b - c| - 1)^2 / (b + c)."""
    y = np.asarray(y_true).astype(int)
    ra = np.asarray(pred_a).astype(int) == y
    rb = np.asarray(pred_b).astype(int) == y
    b, c = int((ra & ~rb).sum()), int((~ra & rb).sum())
    if b + c == 0:
        return {"b": 0, "c": 0, "statistic": 0.0, "p_value": 1.0, "test": "no discordant pairs"}
    if b + c < 25:
        return {"b": b, "c": c, "statistic": float(min(b, c)),
                "p_value": float(stats.binomtest(b, b + c, 0.5).pvalue), "test": "exact binomial"}
    chi2 = (abs(b - c) - 1) ** 2 / (b + c)
    return {"b": b, "c": c, "statistic": float(chi2), "p_value": float(stats.chi2.sf(chi2, 1)),
            "test": "chi-square, continuity corrected"}


def comparison_table(found: dict, labels: pd.DataFrame, probs: pd.DataFrame, n_boot: int = 1000,
                     seed: int = 0) -> pd.DataFrame:
    """One row per method: metrics on the aligned test images, bootstrap CIs, size, time,
    and McNemar's test against the most accurate method."""
    y = labels["label"].to_numpy()
    rows = {}
    for name in probs.columns:
        rec = found[name][0]
        m = classification_metrics(y, probs[name].to_numpy())
        row = {k: m[k] for k in ("accuracy", "balanced_accuracy", "precision_fake", "recall_fake", "f1_fake",
                                 "roc_auc", "pr_auc", "tpr_at_5pct_fpr", "ece")}
        for metric in ("accuracy", "roc_auc"):
            lo, hi = bootstrap_ci(y, probs[name].to_numpy(), metric, n_boot=n_boot, seed=seed)
            row[f"{metric}_ci"] = f"[{lo:.4f}, {hi:.4f}]"
            row[f"{metric}_lo"], row[f"{metric}_hi"] = lo, hi
        row.update({k: rec.get(k) for k in ("trainable_params", "total_params", "train_seconds",
                                            "inference_images_per_second", "device", "profile")})
        row["n_test"] = len(y)
        rows[name] = row
    table = pd.DataFrame.from_dict(rows, orient="index").sort_values("accuracy", ascending=False)
    best = table.index[0]
    for name in table.index:
        if name == best:
            table.loc[name, ["mcnemar_vs_best_p", "mcnemar_b_c"]] = [np.nan, "-"]
            continue
        t = mcnemar(y, probs[best] >= 0.5, probs[name] >= 0.5)
        table.loc[name, "mcnemar_vs_best_p"] = t["p_value"]
        table.loc[name, "mcnemar_b_c"] = f"{t['b']}/{t['c']}"
    table.index.name = "method"
    return table


def per_class_accuracy(labels: pd.DataFrame, probs: pd.DataFrame, class_names) -> pd.DataFrame:
    """Accuracy of each method on the test images of each CIFAR-10 class (rows: classes)."""
    known = labels["cifar_class"].to_numpy() >= 0
    if not known.any():
        return pd.DataFrame()
    y = labels["label"].to_numpy()
    out = {}
    for name in probs.columns:
        right = ((probs[name].to_numpy() >= 0.5).astype(int) == y)
        out[name] = pd.Series(right[known]).groupby(labels["cifar_class"].to_numpy()[known]).mean()
    table = pd.DataFrame(out)
    table.index = [class_names[i] for i in table.index]
    return table


def confident_mistakes(labels: pd.DataFrame, prob: np.ndarray, k: int = 6) -> pd.DataFrame:
    """The ``k`` wrong predictions made with the most confidence (highest |P(FAKE) - 0.5|)."""
    y = labels["label"].to_numpy()
    p = np.asarray(prob)
    wrong = np.flatnonzero((p >= 0.5).astype(int) != y)
    order = wrong[np.argsort(-np.abs(p[wrong] - 0.5), kind="stable")][:k]
    return labels.iloc[order].assign(prob_fake=p[order]).reset_index().rename(columns={"index": "row"})


# ------------------------------------------------------------------------------ robustness
CORRUPTIONS = {"jpeg": [95, 75, 50, 30],          # JPEG quality
               "resize": [0.75, 0.5, 0.25],       # downscale factor, then back up (bicubic)
               "blur": [0.5, 1.0, 2.0],           # Gaussian blur sigma in pixels
               "noise": [4.0, 8.0, 16.0]}         # Gaussian noise std in 0-255 units


def corrupt(images: np.ndarray, kind: str, strength: float, seed: int = 0) -> np.ndarray:
    """(N, H, W, 3) uint8 -> the same shape and type, degraded by ``kind`` at ``strength``."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    h, w = x.shape[-2:]
    if kind == "jpeg":
        out = torch.stack([v2.JPEG(quality=int(strength))(im) for im in x])
    elif kind == "resize":
        small = (max(1, round(h * strength)), max(1, round(w * strength)))
        mode = v2.InterpolationMode.BICUBIC
        out = TF.resize(TF.resize(x, small, interpolation=mode, antialias=True), (h, w),
                        interpolation=mode, antialias=True)
    elif kind == "blur":
        k = 2 * int(np.ceil(3 * strength)) + 1
        out = TF.gaussian_blur(x, kernel_size=[k, k], sigma=[float(strength)] * 2)
    elif kind == "noise":
        g = torch.Generator().manual_seed(seed)
        out = (x.float() + torch.randn(x.shape, generator=g) * float(strength)).round().clamp(0, 255).to(torch.uint8)
    else:
        raise ValueError(f"unknown corruption {kind!r}; choose from {sorted(CORRUPTIONS)}")
    return out.permute(0, 2, 3, 1).contiguous().numpy()


def robustness(predictors: dict, images: np.ndarray, labels: np.ndarray, corruptions: dict | None = None,
               seed: int = 0, progress_desc: str = "robustness") -> pd.DataFrame:
    """Accuracy and ROC AUC of every predictor (name -> ``predict.Predictor``) on clean and
    corrupted copies of ``images``: one row per (method, corruption, strength)."""
    from .progress import progress
    corruptions = CORRUPTIONS if corruptions is None else corruptions
    settings = [("clean", 0.0)] + [(k, s) for k, levels in corruptions.items() for s in levels]
    rows = []
    for kind, strength in progress(settings, desc=progress_desc):
        x = images if kind == "clean" else corrupt(images, kind, strength, seed)
        for name, pred in predictors.items():
            p = pred.prob_fake(x)
            rows.append({"method": name, "corruption": kind, "strength": strength,
                         "accuracy": _accuracy(labels, p), "roc_auc": _auc(labels, p)})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------ calibration
def to_logit(p) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def apply_temperature(prob_fake, temperature: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-to_logit(prob_fake) / temperature))


TEMPERATURE_BOUNDS = (0.05, 50.0)


def fit_temperature(prob_fake_val, y_val) -> float:
    """The temperature T in :data:`TEMPERATURE_BOUNDS` minimising validation log loss of
    ``sigmoid(logit(p) / T)``. It can end on a bound; :func:`calibrate` says when that means
    the model cannot be calibrated this way."""
    z, y = to_logit(prob_fake_val), np.asarray(y_val).astype(float)
    res = optimize.minimize_scalar(lambda log_t: _nll(z, y, np.exp(log_t)), bounds=tuple(np.log(TEMPERATURE_BOUNDS)),
                                   method="bounded", options={"xatol": 1e-6})
    return float(np.exp(res.x))


def _nll(z: np.ndarray, y: np.ndarray, t: float) -> float:
    """Mean log loss of ``sigmoid(z / t)`` against labels ``y``."""
    q = np.clip(1.0 / (1.0 + np.exp(-z / t)), 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


def calibrate(prob_fake_val, y_val) -> dict:
    """Temperature scaling that never silently hits its bound: ``{"temperature", "status",
    "reason"}`` where status is "fitted", or "uncalibratable" (temperature None) when the best
    temperature lies on a bound of the search (moving to the bound changes the validation log
    loss by under 1e-4 nats): at the upper bound flattening every score towards 0.5 keeps
    helping, at the lower bound sharpening does (validation separated perfectly, so no finite
    temperature is best); or when the scores rank validation images about as well as chance
    (ROC AUC < 0.55), so that any temperature only flattens them towards the base rate."""
    p, y = np.asarray(prob_fake_val, dtype=float), np.asarray(y_val).astype(int)
    t = fit_temperature(p, y)
    lo, hi = TEMPERATURE_BOUNDS
    z, best = to_logit(p), _nll(to_logit(p), y, t)
    # "on a bound": moving the temperature all the way to it changes the validation loss by less
    # than 1e-4 nats, so no temperature inside the search range is actually preferred
    at_hi, at_lo = _nll(z, y, hi) - best < 1e-4, _nll(z, y, lo) - best < 1e-4
    auc, acc = _auc(y, p), _accuracy(y, p)
    if not (at_hi or at_lo or auc < 0.55):
        return {"temperature": t, "status": "fitted", "reason": ""}
    if at_hi:
        why = (f"the fit ran to the upper bound T = {hi:g}: flattening every score towards 0.5 keeps "
               f"improving the validation log loss, because the scores carry almost no information "
               f"(validation ROC AUC {auc:.3f}, accuracy {acc:.3f})")
    elif at_lo:
        why = (f"the fit ran to the lower bound T = {lo:g}: sharpening keeps improving the validation log "
               f"loss because validation images are separated perfectly (accuracy {acc:.3f})")
    else:
        why = (f"its scores rank validation images about as well as chance (ROC AUC {auc:.3f}, accuracy "
               f"{acc:.3f}): a temperature (best: {t:.3g}) could only flatten them towards the base rate")
    return {"temperature": None, "status": "uncalibratable", "reason": why}


def reliability(y_true, prob_fake, n_bins: int = 10) -> pd.DataFrame:
    """Mean confidence and accuracy of the predicted class per equal-width confidence bin."""
    edges = np.linspace(0.5, 1.0, n_bins + 1)
    conf, correct, idx = confidence_bins(np.asarray(y_true).astype(int), np.asarray(prob_fake, dtype=float), edges)
    rows = [{"bin_lo": edges[b], "bin_hi": edges[b + 1], "confidence": conf[idx == b].mean(),
             "accuracy": correct[idx == b].mean(), "count": int((idx == b).sum())}
            for b in range(n_bins) if (idx == b).any()]
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------ beyond CIFAKE
def image_group(path: str | Path) -> str:
    """The group a file belongs to by its name, the part before a trailing ``_<number>``:
    ``gan_3.jpg`` -> ``gan``, ``diffusion2_10.jpg`` -> ``diffusion2``, ``city_7.jpg`` -> ``city``
    (realworld100's naming: generator family for AI images, category for photographs)."""
    import re
    return re.sub(r"[_-]?\d+$", "", Path(path).stem) or Path(path).stem
def folder_images(root: str | Path) -> tuple[list[Path], np.ndarray]:
    """Files and labels of a REAL/FAKE folder (class names as ``data`` understands them)."""
    from .data import label_from_folder
    from .images import iter_image_files
    root = Path(root)
    files, labels = [], []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        label = label_from_folder(sub.name)
        if label is None:
            continue
        found = iter_image_files([sub])
        files += found
        labels += [label] * len(found)
    if not files:
        raise ValueError(f"{root}: no REAL/FAKE sub-folders with images")
    return files, np.asarray(labels)


def score_folders(predictors: dict, folders: list) -> pd.DataFrame:
    """Every predictor on every REAL/FAKE folder, one row per (folder, method, image): path,
    group (:func:`image_group`), label, prob_fake, and the model folder's domain check
    (``in_domain``, ``domain_score``...) when it has one. Unreadable files are left out (and
    counted by :func:`folder_summary` through ``n_files``)."""
    from .images import decode_files as decode
    frames = []
    for folder in folders:
        files, labels = folder_images(folder)
        label_of = dict(zip(map(str, files), labels))
        decoded: dict = {}                                   # source size -> decoded files, once
        for name, pred in predictors.items():
            size = int(pred.prep["source_size"])
            if size not in decoded:
                decoded[size] = decode(files, size)[:3]
            table = pred.table(*decoded[size])
            table = table.assign(folder=str(folder), method=name, n_files=len(files),
                                 label=[label_of.get(p, -1) for p in table["path"]],
                                 group=[image_group(p) for p in table["path"]])
            frames.append(table)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def folder_summary(per_image: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per (folder, method): images scored and unreadable, accuracy and ROC AUC with 95%
    bootstrap intervals, the share judged FAKE, and the share flagged out of domain."""
    rows = []
    for (folder, method), g in per_image.groupby(["folder", "method"], sort=False):
        y, p = g["label"].to_numpy(), g["prob_fake"].to_numpy()
        row = {"folder": folder, "method": method, "n_images": len(g), "unreadable": int(g["n_files"].iloc[0]) - len(g),
               "accuracy": _accuracy(y, p), "roc_auc": _auc(y, p), "judged_fake": float((p >= 0.5).mean())}
        for metric in ("accuracy", "roc_auc"):
            row[f"{metric}_lo"], row[f"{metric}_hi"] = bootstrap_ci(y, p, metric, n_boot=n_boot, seed=seed)
        if "in_domain" in g:
            row["flagged_out_of_domain"] = float((~g["in_domain"].astype(bool)).mean())
        rows.append(row)
    return pd.DataFrame(rows)


def group_accuracy(per_image: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per file group (generator family for AI images, category for photographs; rows,
    labelled with their class) and method (columns)."""
    g = per_image.assign(correct=(per_image["prob_fake"] >= 0.5).astype(int) == per_image["label"],
                         row=per_image["label"].map({0: "REAL", 1: "FAKE"}) + " · " + per_image["group"])
    return g.pivot_table(index="row", columns="method", values="correct", aggfunc="mean", sort=False)


# ------------------------------------------------------------------------------ robustness, read off
#: the settings notebook 07's compact robustness table shows: name -> (corruption, strength)
KEY_SETTINGS = {"clean": ("clean", 0.0), "JPEG q30": ("jpeg", 30.0), "resize x0.5": ("resize", 0.5),
                "blur σ=1": ("blur", 1.0), "noise 16": ("noise", 16.0)}


def robustness_table(rob: pd.DataFrame, settings: dict | None = None, metric: str = "accuracy") -> pd.DataFrame:
    """``metric`` of every method (rows, in :func:`robustness`'s order) at a few named settings
    (columns, :data:`KEY_SETTINGS` by default); NaN where a setting was not run."""
    settings = KEY_SETTINGS if settings is None else settings
    methods = list(dict.fromkeys(rob["method"]))
    cols = {}
    for name, (kind, strength) in settings.items():
        sel = rob[(rob["corruption"] == kind) & np.isclose(rob["strength"].astype(float), float(strength))]
        cols[name] = sel.drop_duplicates("method").set_index("method")[metric].reindex(methods)
    return pd.DataFrame(cols, index=pd.Index(methods, name="method"))


def chance_ceiling(n: int, chance: float = 0.5, z: float = 1.96) -> float:
    """The highest accuracy on ``n`` images still consistent with guessing at rate ``chance``:
    ``chance + z * sqrt(chance * (1 - chance) / n)`` (the upper end of a normal 95% interval)."""
    return float(chance + z * np.sqrt(chance * (1 - chance) / max(1, n)))


def robustness_verdicts(rob: pd.DataFrame, n_images: int, chance: float = 0.5, tolerance: float = 0.05) -> pd.DataFrame:
    """One verdict per (method, corruption), read off :func:`robustness`'s numbers: the clean
    accuracy, the worst accuracy over the corruption's strengths (and at which), the drop, and

    - "at chance already" when even the clean accuracy is within :func:`chance_ceiling`,
    - "falls to chance" when the worst accuracy is,
    - "drops N points" when the drop exceeds ``tolerance``,
    - "holds" otherwise (a drop of at most ``tolerance``).

    ``chance``: the accuracy of guessing (the share of the more common label on these images)."""
    ceiling = chance_ceiling(n_images, chance)
    clean = rob[rob["corruption"] == "clean"].drop_duplicates("method").set_index("method")["accuracy"]
    rows = []
    for (name, kind), g in rob[rob["corruption"] != "clean"].groupby(["method", "corruption"], sort=False):
        at = g.loc[g["accuracy"].idxmin()]
        c, worst = float(clean[name]), float(at["accuracy"])
        drop = c - worst
        if c <= ceiling:
            verdict = "at chance already"
        elif worst <= ceiling:
            verdict = "falls to chance"
        elif drop > tolerance:
            verdict = f"drops {100 * drop:.0f} points"
        else:
            verdict = "holds"
        rows.append({"method": name, "corruption": kind, "clean": c, "worst": worst,
                     "worst_at": float(at["strength"]), "drop": drop, "chance_ceiling": ceiling, "verdict": verdict})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------ the domain check, measured
def decode_files(files: list, size: int) -> tuple[np.ndarray, list[tuple[int, int]], list[str]]:
    """Image files decoded at ``size`` x ``size`` as the predict command decodes them: the
    (N, size, size, 3) uint8 array, each file's original (width, height), and the names of the
    files that decoded (unreadable ones are left out; :func:`images.decode_files` also says why)."""
    from .images import decode_files as decode
    return decode(files, size)[:3]


def domain_scores(predictors: dict, sets: dict) -> pd.DataFrame:
    """The domain check of every predictor that has a fitted score (``Predictor.domain.has_score``)
    on every named set of images, one row per (method, set, image).

    ``sets``: name -> an (N, S, S, 3) uint8 array already at the models' source size S (its
    images count as S x S files), or a list of files, decoded once per source size by
    :func:`decode_files`, whose original sizes feed the resolution check. Columns:
    ``domain_score``, ``input_z``, ``features_z`` (NaN for a check without a feature part),
    ``score_in_domain`` (the score alone under the threshold), ``in_domain`` (score and
    resolution), ``threshold``."""
    decoded: dict = {}
    frames = []
    for name, pred in predictors.items():
        check = pred.domain
        if check is None or not check.has_score:
            continue
        size = int(pred.prep["source_size"])
        for set_name, src in sets.items():
            if isinstance(src, np.ndarray):
                if src.shape[1:3] != (size, size):
                    raise ValueError(f"{set_name}: images are {src.shape[2]}x{src.shape[1]}, {name} expects {size}x{size}")
                images, sizes = src, [(size, size)] * len(src)
            else:
                if (set_name, size) not in decoded:
                    decoded[set_name, size] = decode_files(list(src), size)
                images, sizes, _ = decoded[set_name, size]
            if not len(images):
                continue
            f = pred.in_domain(images, sizes)
            if not check.layer:
                f["features_z"] = np.nan
            frames.append(f.assign(method=name, set=set_name, image=np.arange(len(f)), threshold=check.threshold))
    cols = ["method", "set", "image", "domain_score", "input_z", "features_z", "score_in_domain", "in_domain", "threshold"]
    return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)


def _auc_or_nan(y: np.ndarray, s: np.ndarray) -> float:
    ok = np.isfinite(s)
    return _auc(y[ok], s[ok]) if ok.all() and len(s) else float("nan")


def domain_summary(scores: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Per method and per set other than ``reference`` (the in-domain images, e.g. the CIFAKE test
    split): the number of images of each, the share of each flagged out of domain (the set with
    and without the resolution check), and how well each score separates the set (positive) from
    the reference: ROC AUC of ``domain_score``, ``input_z`` and ``features_z``."""
    rows = []
    for method, g in scores.groupby("method", sort=False):
        ref = g[g["set"] == reference]
        for set_name, o in g[g["set"] != reference].groupby("set", sort=False):
            y = np.r_[np.zeros(len(ref), int), np.ones(len(o), int)]
            row = {"method": method, "set": set_name, "n_reference": len(ref), "n_set": len(o),
                   "threshold": float(g["threshold"].iloc[0]),
                   "flagged_reference": float((~ref["in_domain"].astype(bool)).mean()) if len(ref) else float("nan"),
                   "flagged_set": float((~o["in_domain"].astype(bool)).mean()),
                   "flagged_set_score_only": float((~o["score_in_domain"].astype(bool)).mean())}
            for col, key in (("domain_score", "auc_score"), ("input_z", "auc_input"), ("features_z", "auc_features")):
                s = np.r_[ref[col].to_numpy(float), o[col].to_numpy(float)]
                row[key] = _auc_or_nan(y, s) if len(ref) else float("nan")
            rows.append(row)
    return pd.DataFrame(rows)
