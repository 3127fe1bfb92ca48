"""Deduplication, stratified splits, and the prepared data every method notebook reads.

CIFAKE's FAKE half contains byte-identical files, some of them in both train and test (a
train-test leak). :func:`deduplicate` keeps one file per group inside a split and drops test
files that duplicate a training file, so reported test numbers are on unseen images.
:func:`make_splits` then draws a seeded, stratified validation set from train (and a test set
when the source has none) and optional subsets. :func:`save_prepared` writes the result as a
small ``splits.csv`` beside a pointer to the cache; :func:`load_prepared` gives it back.

Every notebook must run alone (Colab opens each badge in a fresh runtime): when the prepared
data is missing, :func:`load_prepared` runs notebook 00's steps itself through :func:`prepare`,
with notebook 00's parameters under the profile the notebook chose and the same source rules.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from . import params
from .data import Cache, build_cache, load_cache, resolve_source
from .paths import data_dir, home, project_root

SUBSETS = ("train", "val", "test")


def duplicate_groups(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per group of byte-identical files (same sha256): size, splits, labels, ids."""
    dup = manifest[manifest.duplicated("sha256", keep=False)]
    if dup.empty:
        return pd.DataFrame(columns=["sha256", "size", "splits", "labels", "ids"])
    g = dup.groupby("sha256", sort=False)
    out = pd.DataFrame({
        "size": g.size(),
        "splits": g["split"].agg(lambda s: "+".join(sorted(set(s)))),
        "labels": g["label_name"].agg(lambda s: "+".join(sorted(set(s)))),
        "ids": g["id"].agg(list),
    }).reset_index()
    return out.sort_values(["size", "sha256"], ascending=[False, True], ignore_index=True)


def deduplicate(manifest: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Drop test files whose bytes also occur in train, and repeated files inside a split.

    Returns the kept rows (original order) and a report with the counts behind each drop.
    """
    train_hashes = set(manifest.loc[manifest["split"] == "train", "sha256"])
    leak = (manifest["split"] == "test") & manifest["sha256"].isin(train_hashes)
    within = manifest.duplicated(["split", "sha256"], keep="first") & ~leak
    groups = duplicate_groups(manifest)
    report = {
        "n_before": int(len(manifest)),
        "groups_within_split": {
            s: int(((groups["splits"] == s)).sum()) for s in sorted(manifest["split"].unique())},
        "groups_across_splits": int(groups["splits"].str.contains(r"\+").sum()),
        "test_dropped_as_train_duplicates": {
            name: int(n) for name, n in manifest[leak].groupby("label_name").size().items()},
        "dropped_within_split": {
            f"{s}/{name}": int(n) for (s, name), n in manifest[within].groupby(["split", "label_name"]).size().items()},
    }
    kept = manifest[~(leak | within)].reset_index(drop=True)
    report["n_after"] = int(len(kept))
    return kept, report


def _strata(df: pd.DataFrame, n_smaller: int) -> pd.Series:
    """Stratify by label and CIFAR class when every stratum can be split (at least two rows
    each, and at least one row per stratum on the smaller side), else by label alone."""
    fine = df["label"].astype(str) + "_" + df["cifar_class"].astype(str)
    if fine.value_counts().min() >= 2 and n_smaller >= fine.nunique():
        return fine
    return df["label"]


def _split(df: pd.DataFrame, n_second: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seeded stratified split of ``df`` into (rest, a part of ``n_second`` rows)."""
    n_first = len(df) - n_second
    return train_test_split(df, test_size=n_second, random_state=seed,
                            stratify=_strata(df, min(n_first, n_second)))


def _take(df: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    """A stratified subset of ``n`` rows (all rows when ``n`` is None or too large)."""
    if n is None or n >= len(df):
        return df
    return _split(df, n, seed)[1]


def make_splits(manifest: pd.DataFrame, val_fraction: float = 0.2, test_fraction: float = 0.2,
                seed: int = 42, n_train: int | None = None, n_val: int | None = None,
                n_test: int | None = None) -> pd.DataFrame:
    """Assign each row a ``subset`` in train/val/test, stratified by label (and CIFAR class).

    Validation comes out of ``train``; a source without a test split (split ``all``) gives up
    ``test_fraction`` of it first. ``n_*`` then draw stratified subsets of each part.
    """
    df = manifest.copy()
    if not (0 < val_fraction < 1):
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    pool = df[df["split"].isin(["train", "all"])]
    test = df[df["split"] == "test"]
    if test.empty:
        pool, test = _split(pool, int(round(test_fraction * len(pool))), seed)
    train, val = _split(pool, int(round(val_fraction * len(pool))), seed)
    parts = {"train": _take(train, n_train, seed), "val": _take(val, n_val, seed),
             "test": _take(test, n_test, seed)}
    out = pd.concat([p.assign(subset=name) for name, p in parts.items()])
    return out.sort_values("index", ignore_index=True)


# ---------------------------------------------------------------- prepared data
@dataclass
class ImageSplit:
    """Images (N, H, W, 3 uint8) with labels and ids of one subset."""

    images: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    cifar_class: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def sample(self, n: int | None, seed: int = 0) -> "ImageSplit":
        """A seeded random subset of ``n`` images (all when ``n`` is None or too large).

        Rows of a split are in cache order, where each class is contiguous: the first ``n``
        images would all be of one class, so a subset must be drawn at random."""
        if n is None or n >= len(self):
            return self
        idx = np.sort(np.random.default_rng(seed).permutation(len(self))[:n])
        return ImageSplit(self.images[idx], self.labels[idx], self.ids[idx], self.cifar_class[idx])


@dataclass
class Prepared:
    path: Path
    cache: Cache
    splits: pd.DataFrame
    info: dict

    def split(self, subset: str) -> ImageSplit:
        if subset not in SUBSETS:
            raise ValueError(f"subset must be one of {SUBSETS}, got {subset!r}")
        rows = self.splits[self.splits["subset"] == subset]
        idx = rows["index"].to_numpy()
        return ImageSplit(images=np.asarray(self.cache.images[idx]), labels=rows["label"].to_numpy(),
                          ids=rows["id"].to_numpy(), cifar_class=rows["cifar_class"].to_numpy())


def default_prepared_dir(name: str = "cifake") -> Path:
    return data_dir() / "prepared" / name


def save_prepared(cache: Cache, splits: pd.DataFrame, info: dict,
                  out_dir: str | os.PathLike | None = None, name: str = "cifake") -> Path:
    """Write ``splits.csv`` and ``prepared.json`` (pointing at the cache) for later notebooks."""
    out = Path(out_dir) if out_dir else default_prepared_dir(name)
    out.mkdir(parents=True, exist_ok=True)
    cols = ["index", "id", "subset", "label", "cifar_class", "sha256"]
    splits[cols].to_csv(out / "splits.csv", index=False)
    counts = splits.groupby(["subset", "label"]).size()
    info = {**info, "cache": str(Path(cache.path).resolve()), "name": name,
            "counts": {f"{s}/{l}": int(n) for (s, l), n in counts.items()}}
    (out / "prepared.json").write_text(json.dumps(info, indent=1))
    return out


def prepare(profile: str, overrides: dict | None = None, out_dir: str | os.PathLike | None = None) -> Path:
    """Notebook 00 in one call: find the source (``data_source``, ``$AIDETECT_CIFAKE``, a
    previous download, else kagglehub), decode it into the cache, deduplicate, split, and save,
    with notebook 00's parameters under ``profile`` (plus ``overrides``). Returns the folder."""
    P = params.load(profile, "00_data_preparation", overrides)
    cache = build_cache(resolve_source(P.data_source), image_size=P.image_size)
    kept, report = deduplicate(cache.manifest)
    split_df = make_splits(kept, val_fraction=P.val_fraction, seed=P.seed,
                           n_train=P.n_train, n_val=P.n_val, n_test=P.n_test)
    return save_prepared(cache, split_df, out_dir=out_dir, info={
        "profile": profile, "seed": P.seed, "val_fraction": P.val_fraction, "image_size": P.image_size,
        "n_train": P.n_train, "n_val": P.n_val, "n_test": P.n_test, "deduplication": report})


def _shown(path: Path) -> str:
    """A folder as a reader may see it: relative to the data's home or the project."""
    for base in (home(), project_root()):
        if path.resolve().is_relative_to(base):
            return str(path.resolve().relative_to(base))
    return path.name


def load_prepared(path: str | os.PathLike | None = None, profile: str | None = None) -> Prepared:
    """Load what notebook 00 prepared (default ``data/prepared/cifake``).

    Missing (a notebook opened alone, as in a fresh Colab runtime): prepared here with
    :func:`prepare` under ``profile``, by default the profile the running notebook chose
    (``params.active_profile``); one line says so. Prepared under another profile than the
    notebook's: one line says that too (the subset sizes may differ)."""
    p = Path(path) if path else default_prepared_dir()
    profile = profile or params.active_profile()
    if not (p / "prepared.json").exists():
        if profile is None:
            raise FileNotFoundError(f"{p}: no prepared data; run notebooks/00_data_preparation.ipynb first")
        print(f"no prepared data in {_shown(p)}: preparing it now as notebook 00 does under profile "
              f"{profile!r} (decode, deduplicate, split); later notebooks reuse it")
        prepare(profile, out_dir=p)
    info = json.loads((p / "prepared.json").read_text())
    if profile and info.get("profile") not in (None, profile):
        print(f"note: {_shown(p)} was prepared under profile {info['profile']!r}, this notebook runs "
              f"{profile!r}; run notebook 00 under {profile!r} to prepare it for this profile")
    splits = pd.read_csv(p / "splits.csv", keep_default_na=False)
    return Prepared(path=p, cache=load_cache(info["cache"]), splits=splits, info=info)


def class_balance(splits: pd.DataFrame) -> pd.DataFrame:
    """Counts per subset and label, as a small table for notebooks."""
    t = splits.pivot_table(index="subset", columns="label", values="index", aggfunc="count", fill_value=0)
    t.columns = [["REAL", "FAKE"][c] for c in t.columns]
    t["total"] = t.sum(axis=1)
    return t.reindex([s for s in SUBSETS if s in t.index])
