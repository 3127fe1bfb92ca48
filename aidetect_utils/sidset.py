"""SID_Set (``saberzl/SID_Set`` on the Hugging Face hub) as a real-vs-fake dataset.

SID_Set rows have ``img_id``, ``image``, ``mask``, ``width``, ``height`` and ``label``: 0 real,
1 fully synthetic, 2 tampered (a real photo with a generated region). The recipe keeps labels
0 and 1 only, optionally only images at least ``min_width`` pixels wide, and undersamples the
larger class so both classes have the same count. Splits on the hub: ``train``, ``validation``.

``load_sid_set`` takes an already loaded ``datasets.Dataset`` too, which is how the tests run it
offline on a small dataset with the same schema. Without one it calls
``datasets.load_dataset``, which downloads the whole split; ``max_per_class`` caps what is
kept, not what is downloaded.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

SID_SET = "saberzl/SID_Set"
SID_LABELS = {0: "real", 1: "full_synthetic", 2: "tampered"}


def load_sid_set(split: str = "train", dataset=None, min_width: int | None = None,
                 max_per_class: int | None = None, seed: int = 42, path: str | None = None):
    """Return a balanced real (0) vs fully synthetic (1) ``datasets.Dataset``.

    ``dataset``: use this instead of downloading ``saberzl/SID_Set`` (same columns).
    ``path``: a local folder in the hub dataset's layout (``data/<split>-*.parquet``, e.g. a
    copy of SID_Set or ``rehearsal``'s SID_Set-like data), absolute or relative to the project root.
    ``min_width``: keep images at least this wide (the Qwen recipe uses 1024).
    ``max_per_class``: cap each class after balancing (sampled with ``seed``).
    """
    if dataset is None:
        from datasets import load_dataset

        from .paths import local_or_hub
        dataset = load_dataset(local_or_hub(path) if path else SID_SET, split=split)
    missing = {"label", "image"} - set(dataset.column_names)
    if missing:
        raise ValueError(f"SID_Set-like dataset lacks columns {sorted(missing)}")
    labels = np.asarray(dataset["label"])
    keep = labels != 2
    if min_width is not None:
        widths = (np.asarray(dataset["width"]) if "width" in dataset.column_names
                  else np.asarray([im.width for im in dataset["image"]]))
        keep &= widths >= min_width
    idx = np.flatnonzero(keep)
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(idx[labels[idx] == c]) for c in (0, 1)]
    n = min(len(p) for p in per_class)
    if max_per_class is not None:
        n = min(n, max_per_class)
    if n == 0:
        raise ValueError("SID_Set selection is empty for one class (check min_width and the split)")
    chosen = np.sort(np.concatenate([p[:n] for p in per_class]))
    return dataset.select(chosen.tolist())


def to_image_split(dataset, size: int, desc: str = "SID_Set"):
    """Decode a (balanced) SID_Set-like dataset into a ``splits.ImageSplit`` of ``size`` x ``size``
    RGB images, so the notebooks treat it exactly like CIFAKE. Unreadable images raise
    ``images.ImageError`` naming the row."""
    from datasets import Image as HFImage

    from .images import decode_image
    from .progress import progress
    from .splits import ImageSplit
    raw = dataset.cast_column("image", HFImage(decode=False))
    ids = raw["img_id"] if "img_id" in raw.column_names else [str(i) for i in range(len(raw))]
    images = np.stack([
        decode_image(row["image"]["bytes"] or Path(row["image"]["path"]).read_bytes(),
                     name=f"{desc} row {i} ({ids[i]})", size=size).array
        for i, row in enumerate(progress(raw, desc=f"decode {desc}"))])
    labels = np.asarray(raw["label"], dtype=int)
    return ImageSplit(images=images, labels=labels, ids=np.asarray(ids).astype(str),
                      cifar_class=np.full(len(labels), -1))
