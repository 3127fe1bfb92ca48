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

The cache and the splits are one versioned unit: ``splits.csv`` holds cache row numbers, so it
is only right for the cache it was made on. ``prepared.json`` records that cache's content hash
(``data.content_hash``) and the sha256 of ``splits.csv``, written beside it, and
:func:`load_prepared` refuses, in one line naming the folder and saying to re-run notebook 00,
splits whose cache was since rebuilt from another source (a notebook 00 that failed after
rebuilding the cache left the old splits behind, which pointed at other images: half the labels
wrong, silently), a ``splits.csv`` that is not the one written with ``prepared.json``, or rows that
name other images than the cache holds at their index (also for folders written before the hash).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from . import params
from .data import Cache, build_cache, content_hash, load_or_rebuild, read_table, resolve_source
from .images import one_line
from .paths import data_dir, home, project_root
from .runs import write_beside_then_rename

SUBSETS = ("train", "val", "test")
SPLIT_COLUMNS = ["index", "id", "subset", "label", "cifar_class", "sha256"]
RERUN_00 = "re-run notebooks/00_data_preparation.ipynb to prepare it again"


class PreparedDataError(ValueError):
    """The prepared data does not fit its cache (or is unreadable); the message is one line
    naming the folder and saying to re-run notebook 00."""


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


def _cache_version(cache: Cache) -> str:
    return cache.content_hash or content_hash(cache.manifest, cache.images.shape)


def _rows_mismatch(cache: Cache, splits: pd.DataFrame) -> str | None:
    """Why the rows of ``splits`` do not name the images ``cache`` holds at their index (id,
    file hash and label), or None when every row does."""
    try:
        idx = splits["index"].to_numpy()
        n = len(cache.manifest)
        if len(idx) and (idx.min() < 0 or idx.max() >= n):
            return f"row index {int(idx.max()):,} beyond the cache's {n:,} images"
        m = cache.manifest

        def text(col):
            return np.asarray(col.tolist(), dtype=object)
        bad = ((text(m["id"])[idx] != text(splits["id"])) | (text(m["sha256"])[idx] != text(splits["sha256"]))
               | (m["label"].to_numpy()[idx] != splits["label"].to_numpy()))
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        return f"rows that cannot be read ({type(exc).__name__}: {one_line(exc, 120)})"
    if bad.any():
        first = splits["id"].astype(str).to_numpy()[bad.argmax()]
        return (f"{int(bad.sum()):,} of {len(bad):,} rows name other images than the cache holds there "
                f"(first: {first!r})")
    return None


def save_prepared(cache: Cache, splits: pd.DataFrame, info: dict,
                  out_dir: str | os.PathLike | None = None, name: str = "cifake") -> Path:
    """Write ``splits.csv`` and ``prepared.json`` for later notebooks, as one unit: the JSON
    points at the cache and records its content hash and the sha256 of the ``splits.csv``
    written with it (:func:`load_prepared` checks both). Each file is written whole or not at
    all; splits that do not index into ``cache`` are refused."""
    out = Path(out_dir) if out_dir else default_prepared_dir(name)
    why = _rows_mismatch(cache, splits)
    if why:
        raise PreparedDataError(f"{_shown(out)}: these splits were not made on the cache "
                                f"{_shown(Path(cache.path))} ({why})")
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    splits[SPLIT_COLUMNS].to_csv(buf, index=False)
    table = buf.getvalue().encode("utf-8", "surrogatepass")
    counts = splits.groupby(["subset", "label"]).size()
    info = {**info, "cache": str(Path(cache.path).resolve()), "name": name,
            "counts": {f"{s}/{l}": int(n) for (s, l), n in counts.items()},
            "cache_hash": _cache_version(cache), "splits_sha256": hashlib.sha256(table).hexdigest()}
    write_beside_then_rename(out / "splits.csv", lambda tmp: tmp.write_bytes(table))
    text = json.dumps(info, indent=1).encode()
    write_beside_then_rename(out / "prepared.json", lambda tmp: tmp.write_bytes(text))   # last: vouches for splits.csv
    return out


def prepare(profile: str, overrides: dict | None = None, out_dir: str | os.PathLike | None = None) -> Path:
    """Notebook 00 in one call: find the source (``data_source``, ``$AIDETECT_CIFAKE``, a
    previous download, else kagglehub), decode it into the cache, deduplicate, split, and save,
    with notebook 00's parameters under ``profile`` (plus ``overrides``). Returns the folder."""
    P = params.load(profile, "00_data_preparation", overrides)
    cache = build_cache(resolve_source(P.data_source), source_size=P.source_size)
    kept, report = deduplicate(cache.manifest)
    split_df = make_splits(kept, val_fraction=P.val_fraction, seed=P.seed,
                           n_train=P.n_train, n_val=P.n_val, n_test=P.n_test)
    return save_prepared(cache, split_df, out_dir=out_dir, info={
        "profile": profile, "seed": P.seed, "val_fraction": P.val_fraction, "source_size": P.source_size,
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
    try:
        info = json.loads((p / "prepared.json").read_text(encoding="utf-8"))
        cache_dir = Path(info["cache"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PreparedDataError(f"{_shown(p)}/prepared.json: unreadable ({type(exc).__name__}); {RERUN_00}") from None
    if profile and info.get("profile") not in (None, profile):
        print(f"note: {_shown(p)} was prepared under profile {info['profile']!r}, this notebook runs "
              f"{profile!r}; run notebook 00 under {profile!r} to prepare it for this profile")
    splits = _read_splits(p, info)
    cache = load_or_rebuild(cache_dir)
    recorded, now = info.get("cache_hash"), _cache_version(cache)
    if recorded is not None and recorded != now:
        raise PreparedDataError(
            f"{_shown(p)}: its splits were made on another version of the data cache {_shown(cache_dir)} "
            f"(content hash {recorded[:12]}, now {now[:12]}: the cache was rebuilt from other data since); {RERUN_00}")
    # with both hashes matching, these are the rows save_prepared checked against this very cache;
    # a folder written before the hashes existed is checked row by row (0.05 s for 120,000 rows)
    why = None if recorded is not None and info.get("splits_sha256") else _rows_mismatch(cache, splits)
    if why:
        raise PreparedDataError(f"{_shown(p)}/splits.csv does not fit the data cache {_shown(cache_dir)} ({why}); "
                                f"{RERUN_00}")
    return Prepared(path=p, cache=cache, splits=splits, info=info)


def _read_splits(p: Path, info: dict) -> pd.DataFrame:
    """``splits.csv``, refused unless it is the file written with ``prepared.json`` (its sha256)."""
    try:
        table = (p / "splits.csv").read_bytes()
    except OSError as exc:
        raise PreparedDataError(f"{_shown(p)}/splits.csv: {exc.strerror or exc}; {RERUN_00}") from None
    if info.get("splits_sha256") not in (None, hashlib.sha256(table).hexdigest()):
        raise PreparedDataError(f"{_shown(p)}/splits.csv is not the one written with its prepared.json "
                                f"(changed or replaced since); {RERUN_00}")
    try:
        return read_table(io.BytesIO(table))
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise PreparedDataError(f"{_shown(p)}/splits.csv: unreadable ({type(exc).__name__}); {RERUN_00}") from None


def class_balance(splits: pd.DataFrame) -> pd.DataFrame:
    """Counts per subset and label, as a small table for notebooks."""
    t = splits.pivot_table(index="subset", columns="label", values="index", aggfunc="count", fill_value=0)
    t.columns = [["REAL", "FAKE"][c] for c in t.columns]
    t["total"] = t.sum(axis=1)
    return t.reindex([s for s in SUBSETS if s in t.index])
