"""SID_Set (``saberzl/SID_Set`` on the Hugging Face hub) as a real-vs-fake dataset, streamed.

SID_Set rows have ``img_id``, ``image``, ``mask``, ``width``, ``height`` and ``label``: 0 real,
1 fully synthetic, 2 tampered (a real photo with a generated region). The recipe keeps labels
0 and 1 only, optionally only images at least ``min_width`` pixels wide, and balances the two
classes (the same count of each). Splits on the hub: ``train``, ``validation``.

The hub's splits are large (about 140 GB in all, per its card: more than a Colab disk), so
nothing is downloaded whole. :func:`sid_set_split`, what the VLM notebooks use, reads a split
as a stream (``load_dataset(..., streaming=True)``) in one pass, keeps the first
``max_per_class`` rows of each class that pass the filters, decodes each kept image straight
to the model's input size, and stops reading as soon as both classes are full. Memory holds
``2 * max_per_class`` small images, never a split or a full-size image more than one at a time.
With ``max_per_class=None`` it reads the whole split (still streamed) and then balances.
"The first" means in the split's stored order; a class that ends before it is full leaves the
other undersampled to its count, at random with ``seed``.

:func:`load_sid_set` makes the same selection as a small ``datasets.Dataset`` (images kept
encoded, as stored), or balances an already loaded ``datasets.Dataset`` given as ``dataset=``:
that is how tests run it on a small in-memory dataset with the same schema.
:func:`to_image_split` decodes such a dataset. A local folder in the hub's layout
(``data/<split>-*.parquet``, e.g. a copy of SID_Set or ``rehearsal``'s SID_Set-like data)
streams like the hub (``path=``).
"""
from __future__ import annotations
from .images import decode_image
from .paths import local_or_hub
from .progress import progress
from .splits import ImageSplit

import io
from pathlib import Path
from typing import Callable

import numpy as np

SID_SET = "saberzl/SID_Set"


def stream_sid_set(split: str = "train", max_per_class: int | None = None, *, min_width: int | None = None,
                   path: str | None = None, keep: Callable[[dict, str], object] | None = None,
                   desc: str = "SID_Set") -> tuple[list[dict], int]:
    """One streamed pass over a split: ``(kept rows, rows read)``.

    Keeps rows of label 0 or 1 (2, tampered, is skipped) at least ``min_width`` wide, the
    first ``max_per_class`` of each class (None: all), and stops reading as soon as both
    classes have that many. Each kept row is ``{"index", "img_id", "label", "width", "image"}``
    (``index``: its row number in the split) where ``image`` is ``keep(raw, name)`` of the stored
    image (``raw``: ``{"bytes", "path"}``, never decoded here; ``name``: the row, for messages),
    or ``raw`` itself without ``keep``: converting each image as it is kept keeps memory small. ``rows read`` counts the
    rows taken from the stream, to show where it stopped.
    """
    from datasets import load_dataset

    stream = _undecoded(load_dataset(local_or_hub(path) if path else SID_SET, split=split, streaming=True))
    taken = {0: 0, 1: 0}
    kept, read = [], 0
    bar = progress(total=2 * max_per_class if max_per_class else None, desc=f"stream {desc}", leave=False)
    for i, row in enumerate(stream):
        read += 1
        if i == 0 and {"label", "image"} - set(row):
            raise ValueError(f"SID_Set-like dataset lacks columns {sorted({'label', 'image'} - set(row))}")
        label = int(row["label"])
        if label not in taken or (max_per_class is not None and taken[label] >= max_per_class):
            continue
        width = row.get("width")
        if min_width is not None:
            width = width if width is not None else _stored_width(row["image"])
            if width < min_width:
                continue
        img_id = str(row.get("img_id", i))
        kept.append({"index": i, "img_id": img_id, "label": label, "width": width,
                     "image": keep(row["image"], f"{desc} row {i} ({img_id})") if keep else row["image"]})
        taken[label] += 1
        bar.update(1)
        if max_per_class is not None and min(taken.values()) >= max_per_class:
            break
    bar.close()
    return kept, read


def _undecoded(stream):
    """``stream`` with its image columns (``image``, ``mask``) read as stored bytes: decoding is
    left to the rows that are kept, and a tampered row's mask is never decoded at all. (Without
    known features a stream decodes nothing anyway.)"""
    from datasets import Features, Image
    if stream.features is None:
        return stream
    return stream.cast(Features({k: Image(decode=False) if isinstance(f, Image) else f
                                 for k, f in stream.features.items()}))


def _stored_width(image: dict) -> int:
    """An encoded image's width, read from its header (nothing is decoded)."""
    from PIL import Image
    data = image["bytes"] or Path(image["path"]).read_bytes()
    with Image.open(io.BytesIO(data)) as img:
        return img.width


def balanced_indices(labels, max_per_class: int | None = None, seed: int = 42) -> np.ndarray:
    """Row numbers (sorted) of ``labels`` (0/1; other values never chosen) with the same count
    of 0s and 1s: the smaller class's count, at most ``max_per_class``, each class sampled at
    random with ``seed``. Raises ``ValueError`` when a class is empty."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in (0, 1)]
    n = min(len(p) for p in per_class)
    if max_per_class is not None:
        n = min(n, max_per_class)
    if n == 0:
        raise ValueError("SID_Set selection is empty for one class (check min_width and the split)")
    return np.sort(np.concatenate([p[:n] for p in per_class]))


def load_sid_set(split: str = "train", dataset=None, min_width: int | None = None,
                 max_per_class: int | None = None, seed: int = 42, path: str | None = None):
    """A balanced real (0) vs fully synthetic (1) ``datasets.Dataset``.

    Without ``dataset``: the split streamed from the hub (``saberzl/SID_Set``) or from ``path``
    (a local folder in its layout, absolute or relative to the project root), the selection of
    :func:`stream_sid_set` (columns ``img_id``, ``image`` still encoded, ``width``, ``label``).
    ``dataset``: an already loaded ``datasets.Dataset`` with the same columns, filtered and
    balanced in memory (``max_per_class`` then samples each class with ``seed``).
    ``min_width``: keep images at least this wide (the Qwen recipe uses 1024).
    ``max_per_class``: at most this many images of each class.
    """
    if dataset is None:
        from datasets import Dataset, Features, Image, Value
        rows, _ = stream_sid_set(split, max_per_class, min_width=min_width, path=path)
        labels = [r["label"] for r in rows]
        rows = [rows[i] for i in balanced_indices(labels, max_per_class, seed)]
        features = Features({"img_id": Value("string"), "image": Image(), "width": Value("int64"),
                             "label": Value("int64")})
        return Dataset.from_dict({k: [r[k] for r in rows] for k in features}, features=features)
    missing = {"label", "image"} - set(dataset.column_names)
    if missing:
        raise ValueError(f"SID_Set-like dataset lacks columns {sorted(missing)}")
    labels = np.asarray(dataset["label"])
    keep = labels != 2
    if min_width is not None:
        widths = (np.asarray(dataset["width"]) if "width" in dataset.column_names
                  else np.asarray([im.width for im in dataset["image"]]))
        keep &= widths >= min_width
    return dataset.select(balanced_indices(np.where(keep, labels, -1), max_per_class, seed).tolist())


def sid_set_split(split: str, size: int, *, min_width: int | None = None, max_per_class: int | None = None,
                  seed: int = 42, path: str | None = None, dataset=None, desc: str | None = None):
    """A balanced ``splits.ImageSplit`` of ``size`` x ``size`` RGB images from SID_Set, so the
    notebooks treat it exactly like CIFAKE: streamed, each kept image decoded to ``size`` as
    it arrives (:func:`stream_sid_set`), then balanced. Says in one line how many rows it read.
    ``dataset``: an already loaded ``datasets.Dataset`` instead (:func:`load_sid_set` and
    :func:`to_image_split`). Unreadable images raise ``images.ImageError`` naming the row."""
    desc = desc or f"SID_Set {split}"
    if dataset is not None:
        return to_image_split(load_sid_set(split, dataset, min_width, max_per_class, seed), size, desc=desc)

    def small(image: dict, name: str) -> np.ndarray:
        """The stored image decoded straight to ``size`` x ``size`` (the full-size one is dropped at once)."""
        return decode_image(image["bytes"] or Path(image["path"]).read_bytes(), name=name, size=size).array

    rows, read = stream_sid_set(split, max_per_class, min_width=min_width, path=path, keep=small, desc=desc)
    rows = [rows[i] for i in balanced_indices([r["label"] for r in rows], max_per_class, seed)]
    labels = np.asarray([r["label"] for r in rows], dtype=int)
    wide = f", at least {min_width} px wide" if min_width else ""
    print(f"[sid_set] {desc}: read {read:,} rows, kept {int((labels == 0).sum()):,} real + "
          f"{int((labels == 1).sum()):,} fully synthetic{wide}, decoded at {size} px", flush=True)
    return ImageSplit(images=np.stack([r["image"] for r in rows]), labels=labels,
                      ids=np.asarray([r["img_id"] for r in rows]).astype(str), cifar_class=np.full(len(rows), -1))


def to_image_split(dataset, size: int, desc: str = "SID_Set"):
    """Decode a (balanced) SID_Set-like dataset into a ``splits.ImageSplit`` of ``size`` x ``size``
    RGB images, so the notebooks treat it exactly like CIFAKE. Unreadable images raise
    ``images.ImageError`` naming the row."""
    from datasets import Image as HFImage

    raw = dataset.cast_column("image", HFImage(decode=False))
    ids = raw["img_id"] if "img_id" in raw.column_names else [str(i) for i in range(len(raw))]
    images = np.stack([
        decode_image(row["image"]["bytes"] or Path(row["image"]["path"]).read_bytes(),
                     name=f"{desc} row {i} ({ids[i]})", size=size).array
        for i, row in enumerate(progress(raw, desc=f"decode {desc}"))])
    labels = np.asarray(raw["label"], dtype=int)
    return ImageSplit(images=images, labels=labels, ids=np.asarray(ids).astype(str),
                      cifar_class=np.full(len(labels), -1))
