"""Obtain CIFAKE (or any folder-per-class dataset) and decode it once into a compact cache.

Sources: a folder in the Kaggle layout (``train|test/REAL|FAKE/*.jpg``), a ``.zip`` or
``.tar(.gz)`` of it, or a download through ``kagglehub``. Class folders are matched without
regard to case, and the human-faces layout (``Real Images`` / ``AI-Generated Images``) works too.
A source without ``train``/``test`` folders yields split ``all`` (see ``splits.make_splits``).

The cache is ``images.npy`` (N, S, S, 3 uint8, memory-mapped on load), ``manifest.csv`` (one row
per image: id, split, label, CIFAR class parsed from the file name, sha256 of the file bytes,
original size and mode), ``report.json`` (skipped and converted files) and ``meta.json``. It is
written to a temporary folder and renamed into place, so an interrupted build never leaves a
half cache; a valid cache for the same source and size makes ``build_cache`` a no-op.

A cache has a version: :func:`content_hash`, computed from its manifest (which file, split and
label each row is, and the sha256 of the file's bytes) and the images' shape, so a cache rebuilt
from another source, or at another size, has another hash. ``splits.save_prepared`` records it
and every reader of the prepared data checks it. A damaged cache (a truncated ``images.npy``, a
cut or edited manifest, unreadable JSON) is found when it is opened (:class:`CacheDamaged`, one
line naming the file): :func:`build_cache` then rebuilds it from its source, and so does
:func:`load_or_rebuild` while that source is still where the cache was built from.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from .progress import progress as progress_bar
from . import CIFAR10_CLASSES, CLASS_NAMES
from .images import ImageError, decode_image, display_name, one_line
from .paths import data_dir
from .runs import write_dir

CACHE_FORMAT = 1
KAGGLE_HANDLE = "birdy654/cifake-real-and-ai-generated-synthetic-images"
ENV_VAR = "AIDETECT_CIFAKE"

_CLASS_ALIASES = {
    "real": 0, "real images": 0, "real_images": 0, "reals": 0,
    "fake": 1, "fake images": 1, "fake_images": 1, "fakes": 1,
    "ai-generated images": 1, "ai_generated_images": 1, "ai-generated": 1, "ai_generated": 1,
    "ai generated images": 1, "synthetic": 1,
}
_SPLIT_ALIASES = {"train": "train", "training": "train", "test": "test", "testing": "test"}
# CIFAKE file names carry the CIFAR-10 class: "N.jpg" is class 0, "N (k).jpg" is class k-1.
_CIFAKE_NAME = re.compile(r"^\d+(?: \((\d+)\))?\.[A-Za-z]+$")


class DataSourceError(RuntimeError):
    """The dataset source is missing or not in a layout we understand (one-line message)."""


class CacheDamaged(DataSourceError):
    """A file of a data cache is missing, truncated or unreadable; the one-line message names
    the file and the remedy (notebook 00 rebuilds it)."""

    def __init__(self, cache: Path, file: str, problem: str):
        self.cache, self.file, self.problem = Path(cache), file, problem
        if not file:      # the whole folder is gone: nothing to delete
            super().__init__(f"{display_name(self.cache)}: data cache {problem}; re-run "
                             "notebooks/00_data_preparation.ipynb, which builds it")
            return
        super().__init__(f"{display_name(self.cache / file)}: damaged data cache ({problem}); re-run notebooks/"
                         f"00_data_preparation.ipynb, which rebuilds it, or delete {display_name(self.cache)}")


@dataclass
class Cache:
    """A decoded dataset: ``images[manifest.index]`` is the image of each manifest row.
    ``content_hash``: its version (:func:`content_hash`)."""

    path: Path
    images: np.ndarray
    manifest: pd.DataFrame
    report: dict
    meta: dict
    content_hash: str = ""

    def __len__(self) -> int:
        return len(self.manifest)


# ---------------------------------------------------------------- locating the source
def resolve_source(data_source: str | os.PathLike | None = None, download: bool = True) -> Path:
    """Where CIFAKE comes from: the argument, else ``$AIDETECT_CIFAKE``, else a previous
    download under ``data/raw``, else a fresh download with kagglehub (needs internet and, for
    Kaggle, an account token: see README)."""
    for cand, what in ((data_source, "data_source"), (os.environ.get(ENV_VAR), ENV_VAR)):
        if cand:
            p = Path(cand).expanduser()
            if not p.exists():
                raise DataSourceError(f"{what}={cand}: no such file or folder")
            return p.resolve()
    previous = data_dir() / "raw" / "cifake"
    if previous.exists():
        return previous
    if not download:
        raise DataSourceError(f"CIFAKE not found: pass data_source, set {ENV_VAR}, or allow download")
    return download_cifake(previous)


def external_folder(source: str | os.PathLike, name: str | None = None) -> Path:
    """A folder of images to evaluate on (e.g. ``realworld100``): ``source`` itself when it is a
    folder, else the ``.tar``/``.tar.gz``/``.zip`` archive extracted once under
    ``data/external/<name>/`` (links and absolute or ``..`` paths refused by the standard
    library's ``data`` filter; re-used while the archive is unchanged). Returns the folder that
    holds the REAL/FAKE sub-folders (the archive's single top folder, if it has one)."""
    src = Path(source).expanduser()
    if not src.exists():
        raise DataSourceError(f"{display_name(src)}: no such file or folder")
    if src.is_dir():
        return src
    stem = name or re.sub(r"\.(tar\.gz|tgz|tar|zip)$", "", src.name, flags=re.I)
    target = data_dir() / "external" / stem
    stamp = target / ".source.json"
    want = _fingerprint(src.resolve())
    if not (stamp.exists() and json.loads(stamp.read_text()) == want):
        def extract(tmp: Path) -> None:
            try:
                if src.name.lower().endswith(".zip"):
                    with zipfile.ZipFile(src) as zf:
                        for info in zf.infolist():
                            dest = (tmp / info.filename).resolve()
                            if not dest.is_relative_to(tmp.resolve()):
                                raise DataSourceError(f"{display_name(src)}: member {info.filename!r} points outside")
                        zf.extractall(tmp)
                else:
                    with tarfile.open(src, "r:*") as tf:
                        tf.extractall(tmp, filter="data")
            except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError) as exc:
                raise DataSourceError(f"{display_name(src)}: cannot extract ({type(exc).__name__}: "
                                      f"{one_line(exc)})") from None
            (tmp / ".source.json").write_text(json.dumps(want))   # last: marks a complete extraction
        # written beside its place and swapped in (a failed extraction leaves nothing behind)
        write_dir(target, extract, tmp=target.with_name(target.name + f".tmp-{os.getpid()}"))
    tops = [p for p in target.iterdir() if p.is_dir()]
    return tops[0] if len(tops) == 1 and label_from_folder(tops[0].name) is None else target


def download_cifake(target: Path) -> Path:
    """Download CIFAKE from Kaggle with ``kagglehub`` and link it under ``data/raw/cifake``."""
    try:
        import kagglehub
        path = Path(kagglehub.dataset_download(KAGGLE_HANDLE))
    except Exception as exc:  # noqa: BLE001 - network, auth and hub errors all end here
        raise DataSourceError(
            f"could not download {KAGGLE_HANDLE} from Kaggle ({type(exc).__name__}: {exc}); "
            f"download it by hand and pass its folder or archive as data_source / {ENV_VAR}") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        target.symlink_to(path, target_is_directory=True)
    return target


# ---------------------------------------------------------------- reading members
class _Unreadable:
    """A member that exists but cannot be read (a broken symlink, a symlink loop, a bad CRC):
    skipped and reported like an image that cannot be decoded."""

    def __init__(self, reason: str):
        self.reason = reason


def _iter_members(source: Path) -> Iterator[tuple[str, bytes | _Unreadable | None]]:
    """Yield ``(relative path, bytes)`` for files and ``(relative dir path + '/', None)`` for
    folders, from a folder, a zip or a tar archive, in a stable order. A member that cannot be
    read yields an :class:`_Unreadable` instead of bytes; an archive that cannot be read on
    (corrupt, truncated, not an archive) raises :class:`DataSourceError` naming it.

    Member names are made printable (:func:`images.display_name`): a name that is not valid
    UTF-8 is kept with ``\\xNN`` escapes, so manifests and reports can always be written.
    """
    name = source.name.lower()
    if source.is_dir():
        for root, dirs, files in os.walk(source):   # symlinked folders are not followed: no loops
            dirs.sort()
            rel_root = Path(root).relative_to(source)
            yield (display_name(rel_root.as_posix()) + "/", None)
            for f in sorted(files):
                rel = display_name((rel_root / f).as_posix())
                try:
                    yield (rel, (Path(root) / f).read_bytes())
                except OSError as exc:   # broken symlink, symlink loop, permission, a folder vanished
                    yield (rel, _Unreadable(f"cannot read file ({exc.strerror or exc})"))
    elif name.endswith(".zip"):
        yield from _archive_members(source, _zip_members)
    elif name.endswith((".tar", ".tar.gz", ".tgz")):
        yield from _archive_members(source, _tar_members)
    else:
        raise DataSourceError(f"{display_name(source)}: expected a folder, a .zip or a .tar/.tar.gz archive")


def _zip_members(source: Path):
    with zipfile.ZipFile(source) as zf:
        for info in zf.infolist():
            rel = display_name(info.filename)
            if info.is_dir():
                yield (rel, None)
                continue
            try:
                yield (rel, zf.read(info))
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError) as exc:
                yield (rel, _Unreadable(f"cannot read archive member ({type(exc).__name__}: {one_line(exc)})"))


def _tar_members(source: Path):
    with tarfile.open(source, "r:*") as tf:
        for m in tf:
            rel = display_name(m.name)
            if m.isdir():
                yield (rel + "/", None)
            elif m.isfile():
                f = tf.extractfile(m)
                yield (rel, f.read() if f else b"")
            elif m.issym() or m.islnk():
                yield (rel, _Unreadable("a link inside the archive (not followed)"))


def _archive_members(source: Path, members):
    """``members(source)``, with every way an archive itself can fail turned into one line."""
    try:
        yield from members(source)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        kind = "truncated" if isinstance(exc, EOFError) or "unexpected end" in str(exc).lower() else "corrupt or unreadable"
        raise DataSourceError(f"{display_name(source)}: {kind} archive ({type(exc).__name__}: {one_line(exc)}); "
                              "download it again or pass the extracted folder") from None


def _classify(rel: str) -> tuple[str, int] | None:
    """(split, label) of a member from its folder names, or None when outside a class folder."""
    parts = [p for p in rel.strip("/").split("/") if p and p != "."]
    label, split = None, "all"
    for i, part in enumerate(parts[:-1] if not rel.endswith("/") else parts):
        low = part.lower()
        if low in _SPLIT_ALIASES and label is None:
            split = _SPLIT_ALIASES[low]
        elif low in _CLASS_ALIASES:
            label = _CLASS_ALIASES[low]
    return None if label is None else (split, label)


def cifar_class_from_name(filename: str) -> int:
    """The CIFAR-10 class (0-9) encoded in a CIFAKE file name, or -1 when it does not parse."""
    m = _CIFAKE_NAME.match(Path(filename).name)
    if not m:
        return -1
    k = int(m.group(1)) - 1 if m.group(1) else 0
    return k if 0 <= k < 10 else -1


def _fingerprint(source: Path) -> dict:
    if source.is_dir():
        n = size = newest = 0
        for root, _, files in os.walk(source):
            for f in files:
                try:
                    st = os.stat(os.path.join(root, f))
                except OSError:          # a broken link or a loop: reported when the files are read
                    st = os.lstat(os.path.join(root, f))
                n, size, newest = n + 1, size + st.st_size, max(newest, st.st_mtime_ns)
        return {"path": display_name(source), "kind": "folder", "files": n, "bytes": size, "newest": newest}
    st = source.stat()
    return {"path": display_name(source), "kind": "archive", "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


# ---------------------------------------------------------------- the cache
def default_cache_dir(name: str, source_size: int) -> Path:
    return data_dir() / "cache" / f"{name}-{source_size}px"


MANIFEST_KEY = ("id", "split", "label", "sha256")     # what identifies each row's image


def content_hash(manifest: pd.DataFrame, shape: tuple) -> str:
    """The version of a cache: sha256 of the cache format, the images' shape and, row by row,
    each image's id, split, label and the sha256 of its file's bytes.

    Decoded pixels are a function of the file bytes and the image size, so this names the
    cache's content without reading its images (about 0.05 s for 120,000 rows, where hashing
    the 368 MB of pixels would take seconds on every load)."""
    h = hashlib.sha256(f"aidetect-cache/{CACHE_FORMAT}/{tuple(int(n) for n in shape)}".encode())
    for col in MANIFEST_KEY:
        h.update(b"\0" + "\n".join(map(str, manifest[col].tolist())).encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def _read_json(path: Path, file: str) -> dict:
    try:
        value = json.loads((path / file).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CacheDamaged(path, file, "missing") from None
    except (OSError, ValueError) as exc:
        raise CacheDamaged(path, file, f"unreadable: {type(exc).__name__}: {one_line(exc, 120)}") from None
    if not isinstance(value, dict):
        raise CacheDamaged(path, file, "not a JSON object")
    return value


def _open_images(path: Path, source_size: int | None) -> np.ndarray:
    """``images.npy`` memory-mapped, after its header was checked against the file's length
    (a truncated file is named with both sizes, not numpy's "mmap length is greater than file
    size") and its shape against an image cache's."""
    f = path / "images.npy"
    fmt = np.lib.format
    try:
        with open(f, "rb") as fh:
            version = fmt.read_magic(fh)
            reader = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
            if reader is None:
                raise ValueError(f"unsupported .npy version {version}")
            shape, _, dtype = reader(fh)
            expected = fh.tell() + int(np.prod(shape)) * dtype.itemsize
        size = f.stat().st_size
    except FileNotFoundError:
        raise CacheDamaged(path, "images.npy", "missing") from None
    except (OSError, ValueError, EOFError) as exc:
        raise CacheDamaged(path, "images.npy", f"not a readable .npy file: {one_line(exc, 120)}") from None
    if size < expected:
        raise CacheDamaged(path, "images.npy", f"truncated: {size:,} of {expected:,} bytes")
    if dtype != np.uint8 or len(shape) != 4 or shape[3] != 3 or shape[1] != shape[2] \
            or (source_size is not None and shape[1] != source_size):
        raise CacheDamaged(path, "images.npy", f"holds {dtype} {shape}, not (N, {source_size or 'S'}, "
                                               f"{source_size or 'S'}, 3) uint8 images")
    try:
        return np.load(f, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CacheDamaged(path, "images.npy", f"cannot be opened: {one_line(exc, 120)}") from None


def read_table(source) -> pd.DataFrame:
    """A manifest or splits CSV with ids and file hashes as text (ids always hold a "/"; a
    sha256 of digits only would be read as a number, so then the file is read again as text:
    forcing text on every read costs 0.03 s per 120,000 rows)."""
    m = pd.read_csv(source, keep_default_na=False)
    if "sha256" in m.columns and not pd.api.types.is_string_dtype(m["sha256"]):
        if hasattr(source, "seek"):
            source.seek(0)
        m = pd.read_csv(source, keep_default_na=False, dtype={"sha256": str})
    return m


def _read_manifest(path: Path, n_images: int) -> pd.DataFrame:
    """``manifest.csv``, checked to describe the ``n_images`` images row by row (a cut or edited
    manifest would pair images with the wrong labels)."""
    f = path / "manifest.csv"
    try:
        m = read_table(f)
    except FileNotFoundError:
        raise CacheDamaged(path, "manifest.csv", "missing") from None
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise CacheDamaged(path, "manifest.csv", f"unreadable: {type(exc).__name__}: {one_line(exc, 120)}") from None
    missing = [c for c in ("index", *MANIFEST_KEY) if c not in m.columns]
    if missing:
        raise CacheDamaged(path, "manifest.csv", f"no column {missing[0]!r}")
    if len(m) != n_images:
        raise CacheDamaged(path, "manifest.csv", f"{len(m):,} rows for {n_images:,} images")
    if not (m["index"].to_numpy() == np.arange(n_images)).all() or not m["label"].isin([0, 1]).all() \
            or not m["sha256"].str.fullmatch(r"[0-9a-f]{64}").all():
        raise CacheDamaged(path, "manifest.csv", "rows that are not index, label 0/1 and a sha256 in order")
    return m


def load_cache(path: str | os.PathLike) -> Cache:
    """Open a cache written by :func:`build_cache` (images memory-mapped, never pickled), after
    checking that its files are whole and agree with each other; raises :class:`CacheDamaged`
    (one line naming the file) when one is not."""
    path = Path(path)
    if not path.is_dir():
        raise CacheDamaged(path, "", "missing")
    meta = _read_json(path, "meta.json")
    images = _open_images(path, meta.get("source_size"))
    manifest = _read_manifest(path, images.shape[0])
    report = _read_json(path, "report.json")
    version = content_hash(manifest, images.shape)
    if meta.get("content_hash") not in (None, version):
        raise CacheDamaged(path, "manifest.csv", "its rows differ from those the cache was built with "
                                                 "(content hash in meta.json)")
    return Cache(path=path, images=images, manifest=manifest, report=report, meta=meta, content_hash=version)


def load_or_rebuild(path: str | os.PathLike, progress: bool = True) -> Cache:
    """:func:`load_cache`, and when the cache is damaged, rebuild it in place from the source
    its ``meta.json`` names if that source is still there and unchanged (one line says so);
    otherwise the :class:`CacheDamaged` line. The rebuilt cache has the same content hash as
    the one that was damaged, so splits prepared on it stay valid."""
    path = Path(path)
    try:
        return load_cache(path)
    except CacheDamaged as exc:
        try:
            meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
            source = Path(meta["source"]["path"])
            same = source.exists() and _fingerprint(source) == meta["source"]
        except (OSError, ValueError, KeyError, TypeError):
            same = False
        if not same:
            raise
        print(f"{exc.file} of the data cache {display_name(path)} is damaged ({exc.problem}): rebuilding it "
              f"from {display_name(source)}")
        size = meta.get("source_size") or meta.get("image_size", 32)      # "image_size": caches written before the rename
        return build_cache(source, name=meta.get("name", "cifake"), source_size=size, cache_dir=path,
                           force=True, progress=progress)


def _cache_is_valid(path: Path, fingerprint: dict, source_size: int) -> bool:
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return (meta.get("format") == CACHE_FORMAT and meta.get("source") == fingerprint
            and meta.get("source_size") == source_size
            and all((path / f).exists() for f in ("images.npy", "manifest.csv", "report.json")))


def build_cache(source: str | os.PathLike, name: str = "cifake", source_size: int = 32,
                cache_dir: str | os.PathLike | None = None, cifar_names: bool = True,
                force: bool = False, progress: bool = True) -> Cache:
    """Decode every image of ``source`` once into ``cache_dir`` and return the :class:`Cache`.

    Images that are not ``source_size`` square are resized (and listed in the report); files
    that fail to decode are skipped and listed with the reason. ``cifar_names`` parses the
    CIFAR-10 class from CIFAKE file names. Raises :class:`DataSourceError` when a class has no
    images or a class folder is empty.
    """
    source = Path(source).expanduser().resolve()
    if not source.exists():
        raise DataSourceError(f"{display_name(source)}: no such file or folder")
    cache_path = Path(cache_dir) if cache_dir else default_cache_dir(name, source_size)
    fingerprint = _fingerprint(source)
    if not force and _cache_is_valid(cache_path, fingerprint, source_size):
        try:
            return load_cache(cache_path)
        except CacheDamaged as exc:    # e.g. a truncated images.npy: decode the source again
            print(f"{exc.file} of the data cache {display_name(cache_path)} is damaged ({exc.problem}): rebuilding it")

    t0 = time.perf_counter()
    rows, arrays, skipped, converted = [], [], [], []
    class_dirs: set[str] = set()
    file_folders: set[str] = set()
    for rel, data in progress_bar(_iter_members(source), desc=f"decoding {source.name}", unit=" files",
                          disable=not progress):
        where = _classify(rel)
        if data is None:
            if where is not None and _is_class_dir(rel.rstrip("/")):
                class_dirs.add(rel.rstrip("/"))
            continue
        if where is None or Path(rel).name.startswith("."):
            continue  # README files, licences, hidden files outside class folders
        file_folders.add(rel.rsplit("/", 1)[0])
        if isinstance(data, _Unreadable):
            skipped.append({"id": rel, "reason": data.reason})
            continue
        try:
            dec = decode_image(data, name=rel, size=source_size)
        except ImageError as exc:
            skipped.append({"id": rel, "reason": str(exc).split(": ", 1)[-1]})
            continue
        split, label = where
        if dec.notes:
            converted.append({"id": rel, "notes": dec.notes})
        rows.append({"id": rel, "split": split, "label": label, "label_name": CLASS_NAMES[label],
                     "cifar_class": cifar_class_from_name(rel) if cifar_names else -1,
                     "sha256": hashlib.sha256(data).hexdigest(),
                     "orig_width": dec.orig_size[0], "orig_height": dec.orig_size[1],
                     "orig_mode": dec.orig_mode})
        arrays.append(dec.array)

    _check_classes(source, rows, skipped, class_dirs, file_folders)

    manifest = pd.DataFrame(rows)
    manifest.insert(0, "index", np.arange(len(manifest)))
    manifest["cifar_class_name"] = [CIFAR10_CLASSES[c] if c >= 0 else "" for c in manifest["cifar_class"]]
    report = {"n_images": len(manifest), "n_skipped": len(skipped), "n_converted": len(converted),
              "skipped": skipped, "converted": converted[:1000]}
    images = np.stack(arrays).astype(np.uint8)
    meta = {"format": CACHE_FORMAT, "name": name, "source": fingerprint, "source_size": source_size,
            "content_hash": content_hash(manifest, images.shape),
            "build_seconds": round(time.perf_counter() - t0, 2),
            "counts": manifest.groupby(["split", "label_name"]).size().rename("n").reset_index()
                              .to_dict(orient="records")}

    _write_cache(cache_path, images, manifest, report, meta)
    return load_cache(cache_path)


def _check_classes(source: Path, rows: list[dict], skipped: list[dict], class_dirs: set[str],
                   file_folders: set[str]) -> None:
    """Refuse (DataSourceError, one line) a source with an empty class folder or a class with no
    readable image."""
    empty = sorted(d for d in class_dirs
                   if not any(f == d or f.startswith(d + "/") for f in file_folders))
    if empty:
        raise DataSourceError(f"{display_name(source)}: empty class folder {empty[0]!r} (no files inside)")
    found = {r["label"] for r in rows}
    for label, cname in enumerate(CLASS_NAMES):
        if label not in found:
            raise DataSourceError(
                f"{display_name(source)}: no readable {cname} images; expected class folders named REAL/FAKE "
                "(any case) or 'Real Images'/'AI-Generated Images'"
                + (f" ({len(skipped)} files could not be decoded)" if skipped else ""))


def _write_cache(cache_path: Path, images: np.ndarray, manifest: pd.DataFrame, report: dict, meta: dict) -> None:
    """Write the cache beside its place and swap it in (``runs.write_dir``), ``meta.json`` last
    (it marks a complete cache), so an interrupted build never leaves a half cache."""
    def fill(tmp: Path) -> None:
        np.save(tmp / "images.npy", images, allow_pickle=False)
        manifest.to_csv(tmp / "manifest.csv", index=False)
        (tmp / "report.json").write_text(json.dumps(report, indent=1))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))  # written last: marks completeness
    write_dir(cache_path, fill, tmp=cache_path.with_name(cache_path.name + f".tmp-{os.getpid()}"))


def _is_class_dir(rel_dir: str) -> bool:
    return Path(rel_dir).name.lower() in _CLASS_ALIASES


def label_from_folder(name: str) -> int | None:
    """0 (REAL) or 1 (FAKE) for a class folder name CIFAKE-style sources use, else None."""
    return _CLASS_ALIASES.get(name.strip().lower())
