"""Notebook 07: every method side by side, on the same test images.

- **Which results exist**: :func:`discover` reads every ``results/<method>/`` with a valid
  ``metrics.json`` (any subset of methods), :func:`align` keeps the test images all of them scored,
  says in one line when some methods scored other test images than the rest (the data was
  prepared again between their runs), and refuses to rank on fewer than :data:`MIN_COMMON`.
- **Is the difference real**: :func:`bootstrap_ci` (percentile bootstrap over test images) and
  :func:`mcnemar` (paired test on the images where exactly one of two methods is right: exact
  binomial below 25 discordant pairs, chi-square with continuity correction above; scipy).
- **Beyond CIFAKE**: :func:`score_folders` runs every model on REAL/FAKE folders of other images
  (realworld100), :func:`folder_summary` and :func:`group_accuracy` read the results off.

Every verdict is ``metrics.judged_fake`` (P(FAKE) >= ``metrics.THRESHOLD``). The other questions
07 asks have a module each: ``robustness`` (corruptions), ``calibration`` (temperature scaling)
and ``domain_eval`` (measuring the domain check); Grad-CAM is in ``explain``. Their functions are
also reachable from here, so the notebook reads everything as ``ev.<name>``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from . import images, params
from .artifacts import read_results
from .calibration import TEMPERATURE_BOUNDS, apply_temperature, calibrate, fit_temperature, reliability, to_logit
from .data import label_from_folder
from .domain_eval import decode_files, domain_scores, domain_summary
from .metrics import THRESHOLD, accuracy, classification_metrics, expected_calibration_error, judged_fake, roc_auc
from .robustness import (CORRUPTIONS, KEY_SETTINGS, chance_ceiling, corrupt, robustness,
                         robustness_table, robustness_verdicts)

__all__ = [  # this module's own names, and those of the question modules notebook 07 reads through it
    "MIN_COMMON", "TABLE_COLUMNS", "METRICS", "series_methods", "discover", "group_by_test_set", "align",
    "backbone_of", "with_backbone",
    "bootstrap_ci", "mcnemar", "comparison_table", "per_class_accuracy", "confident_mistakes",
    "image_group", "folder_images", "score_folders", "folder_summary", "group_accuracy",
    "THRESHOLD", "judged_fake", "accuracy", "roc_auc", "classification_metrics", "expected_calibration_error",
    "CORRUPTIONS", "KEY_SETTINGS", "corrupt", "robustness", "robustness_table", "chance_ceiling", "robustness_verdicts",
    "TEMPERATURE_BOUNDS", "to_logit", "apply_temperature", "fit_temperature", "calibrate", "reliability",
    "decode_files", "domain_scores", "domain_summary",
]

MIN_COMMON = 100   # fewest common test images (both classes among them) a comparison is ranked on
TABLE_COLUMNS = ["backbone", "accuracy", "accuracy_ci", "balanced_accuracy", "precision_fake", "recall_fake", "f1_fake",
                 "roc_auc", "roc_auc_ci", "pr_auc", "tpr_at_5pct_fpr", "ece", "trainable_params",
                 "total_params", "train_seconds", "inference_images_per_second", "device", "profile", "n_test"]


# ------------------------------------------------------------------------------ results on disk
def series_methods() -> dict[str, str]:
    """{results folder: the notebook that writes it} for every method notebook of the series
    (their ``method`` parameter in ``profiles.yaml``)."""
    profiles = params.load_profiles()
    return {values["method"]: nb for nb in (profiles.get(params.DEFAULTS) or {})
            if "method" in (values := params.defaults_for(profiles, nb))}


def missing_notebooks(results_root: str | Path, methods: list[str] | None = None) -> list[str]:
    """The notebooks (stems, in series order) whose method has no ``metrics.json`` under
    ``results_root``: of ``methods`` if given, else of every method notebook of the series."""
    series = series_methods()
    wanted = series if methods is None else {m: series[m] for m in methods if m in series}
    return sorted(nb for m, nb in wanted.items() if not (Path(results_root) / m / "metrics.json").exists())


def discover(results_root: str | Path) -> tuple[dict, list[str]]:
    """{method: (metrics record, predictions DataFrame)} for every ``results/*/metrics.json``,
    and a list of one-line notes on folders that were skipped (and why) and on the series'
    methods that have no results yet, naming the notebook that produces each (a notebook opened
    alone, as Colab opens it, compares what is there)."""
    found, notes = {}, []
    root = Path(results_root)
    for d in sorted(root.iterdir()) if root.is_dir() else ():
        if not (d / "metrics.json").exists():
            continue
        try:
            found[d.name] = read_results(d)
        except (ValueError, OSError, json.JSONDecodeError) as exc:
            notes.append(f"{d.name}: skipped ({exc})")
    profile = params.active_profile()
    for method, nb in series_methods().items():
        if method not in found and not any(n.startswith(f"{method}:") for n in notes):
            notes.append(f"{method}: no results yet; notebooks/{nb}.ipynb produces them"
                         + (f" (run it under profile {profile!r})" if profile else ""))
    return found, notes


def backbone_of(found: dict, method: str, missing: str = "-") -> str:
    """The backbone ``method`` actually ran with, as its ``metrics.json`` records it (on the
    ``cpu`` profile often a small stand-in for the one the method is named after), else ``missing``
    (a method without results here, a row quoted from elsewhere)."""
    rec = found.get(method, ({},))[0] or {}
    return str(rec.get("backbone") or missing)


def with_backbone(df: pd.DataFrame, found: dict, method: str = "method", missing: str = "-") -> pd.DataFrame:
    """``df`` with a ``backbone`` column (:func:`backbone_of`) first, right after its ``method``
    column when it has one, else read off its index (method names). A ``backbone`` column
    already there keeps its values where the method has no results here. Returns a copy."""
    out = df.copy()
    names = out[method] if method in out.columns else pd.Series(out.index, index=out.index)
    values = pd.Series([backbone_of(found, str(m), missing="") for m in names], index=out.index)
    if "backbone" in out.columns:
        values = values.where(values != "", out["backbone"].fillna("").astype(str))
        out = out.drop(columns="backbone")
    values = values.where(values != "", missing)
    out.insert(list(out.columns).index(method) + 1 if method in out.columns else 0, "backbone", values)
    return out


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
#: what :func:`bootstrap_ci` can resample: metric name -> fn(labels, P(FAKE))
METRICS = {"accuracy": accuracy, "roc_auc": roc_auc}
_accuracy, _auc = accuracy, roc_auc   # their names here before metrics had them (07's tests use them)


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
    """One row per method: the backbone it ran with (:func:`backbone_of`), metrics on the aligned
    test images, bootstrap CIs, size, time, and McNemar's test against the most accurate method."""
    y = labels["label"].to_numpy()
    rows = {}
    for name in probs.columns:
        rec = found[name][0]
        m = classification_metrics(y, probs[name].to_numpy())
        row = {"backbone": backbone_of(found, name)}
        row.update({k: m[k] for k in ("accuracy", "balanced_accuracy", "precision_fake", "recall_fake", "f1_fake",
                                 "roc_auc", "pr_auc", "tpr_at_5pct_fpr", "ece")})
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
        t = mcnemar(y, judged_fake(probs[best]), judged_fake(probs[name]))
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
        right = judged_fake(probs[name].to_numpy()) == y
        out[name] = pd.Series(right[known]).groupby(labels["cifar_class"].to_numpy()[known]).mean()
    table = pd.DataFrame(out)
    table.index = [class_names[i] for i in table.index]
    return table


def confident_mistakes(labels: pd.DataFrame, prob: np.ndarray, k: int = 6) -> pd.DataFrame:
    """The ``k`` wrong predictions made with the most confidence (P(FAKE) farthest from the threshold)."""
    y = labels["label"].to_numpy()
    p = np.asarray(prob)
    wrong = np.flatnonzero(judged_fake(p) != y)
    order = wrong[np.argsort(-np.abs(p[wrong] - THRESHOLD), kind="stable")][:k]
    return labels.iloc[order].assign(prob_fake=p[order]).reset_index().rename(columns={"index": "row"})


# ------------------------------------------------------------------------------ beyond CIFAKE
def image_group(path: str | Path) -> str:
    """The group a file belongs to by its name, the part before a trailing ``_<number>``:
    ``gan_3.jpg`` -> ``gan``, ``diffusion2_10.jpg`` -> ``diffusion2``, ``city_7.jpg`` -> ``city``
    (realworld100's naming: generator family for AI images, category for photographs)."""
    return re.sub(r"[_-]?\d+$", "", Path(path).stem) or Path(path).stem


def folder_images(root: str | Path) -> tuple[list[Path], np.ndarray]:
    """Files and labels of a REAL/FAKE folder (class names as ``data`` understands them)."""
    root = Path(root)
    files, labels = [], []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        label = label_from_folder(sub.name)
        if label is None:
            continue
        found = images.iter_image_files([sub])
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
    frames = []
    for folder in folders:
        files, labels = folder_images(folder)
        label_of = dict(zip(map(str, files), labels))
        decoded: dict = {}                                   # source size -> decoded files, once
        for name, pred in predictors.items():
            size = int(pred.prep["source_size"])
            if size not in decoded:
                decoded[size] = decode_files(files, size)
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
               "accuracy": accuracy(y, p), "roc_auc": roc_auc(y, p), "judged_fake": float(judged_fake(p).mean())}
        for metric in ("accuracy", "roc_auc"):
            row[f"{metric}_lo"], row[f"{metric}_hi"] = bootstrap_ci(y, p, metric, n_boot=n_boot, seed=seed)
        if "in_domain" in g:
            row["flagged_out_of_domain"] = float((~g["in_domain"].astype(bool)).mean())
        rows.append(row)
    return pd.DataFrame(rows)


def group_accuracy(per_image: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per file group (generator family for AI images, category for photographs; rows,
    labelled with their class) and method (columns)."""
    g = per_image.assign(correct=judged_fake(per_image["prob_fake"]) == per_image["label"],
                         row=per_image["label"].map({0: "REAL", 1: "FAKE"}) + " · " + per_image["group"])
    return g.pivot_table(index="row", columns="method", values="correct", aggfunc="mean", sort=False)
