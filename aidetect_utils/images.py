"""Robust image decoding: any file a user may hand us becomes an RGB uint8 array or a clear error.

Detectors see pixels, so every path into a model (the data cache, the predict command, the
demo) decodes through :func:`decode_image`. It handles what real folders contain: EXIF-rotated
photos, grayscale, palette and RGBA images, CMYK JPEGs, 16-bit PNGs, and it turns truncated,
empty, non-image and decompression-bomb files into an :class:`ImageError` with one line that
names the file. Pillow does the decoding; only the 16-bit and float scaling and the alpha
compositing are written here, because Pillow's ``convert("RGB")`` clips 16-bit values, reads a
float image in [0, 1] as black, and drops alpha onto black.
"""
from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".jfif"}

#: The most pixels ever decoded for one image (64 M: about 200 MB as RGB). A JPEG above it is
#: decoded at 1/2, 1/4 or 1/8 of its size (the JPEG decoder's own DCT scaling, ``Image.draft``),
#: so a genuine 144-megapixel photo costs no more memory than a 36-megapixel one; anything that
#: still exceeds the bound (any other format, or a JPEG over 64x the bound) is refused as a
#: possible decompression bomb.
MAX_PIXELS = 8192 * 8192
#: The largest reduction the JPEG decoder offers (1/8 of each side).
MAX_JPEG_REDUCTION = 8
# Pillow's own guard (a warning above this, an error above twice this) would refuse a genuine
# large photo before it can be decoded at reduced size; :func:`_within_pixel_bound` is the guard.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS * MAX_JPEG_REDUCTION ** 2


class ImageError(ValueError):
    """A file that cannot be used as an image. ``str(err)`` is one line naming the file."""


def display_name(path: str | os.PathLike) -> str:
    """A path as text that can always be printed or written as UTF-8.

    POSIX file names are bytes: a name that is not valid UTF-8 reaches Python with "surrogate
    escapes", which ``print`` and every UTF-8 writer refuse (a ``UnicodeEncodeError`` that would
    lose a whole batch). Such bytes are shown as ``\\xNN`` escapes instead; valid names are unchanged.
    """
    text = os.fspath(path)
    if isinstance(text, bytes):
        return text.decode("utf-8", "backslashreplace")
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@dataclass
class Decoded:
    """An RGB uint8 image and the notes of what was changed to get there."""

    array: np.ndarray
    orig_mode: str
    orig_size: tuple[int, int]  # (width, height) as stored in the file
    notes: list[str] = field(default_factory=list)


def _to_rgb(img: Image.Image, notes: list[str]) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        if mode == "F" and arr.size and arr.min() >= 0.0 and arr.max() <= 1.0:
            hi, scale = 1.0, "0-1"    # a float image in [0, 1] (scientific and HDR tools write these)
        else:
            hi = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
            scale = f"0-{int(hi)}"
        arr8 = np.clip(np.round(arr / hi * 255.0), 0, 255).astype(np.uint8)
        notes.append(f"scaled {mode} to 8-bit" + (f" (values {scale})" if mode == "F" else ""))
        return Image.fromarray(arr8, mode="L").convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        notes.append(f"composited {mode} on white")
        return Image.alpha_composite(background, rgba).convert("RGB")
    notes.append(f"converted {mode} to RGB")
    return img.convert("RGB")


def one_line(exc: BaseException | str, limit: int = 300) -> str:
    """An error's text on one line (library messages often span several), at most ``limit`` characters."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def decode_image(source: bytes | str | os.PathLike, name: str | None = None,
                 size: int | None = None) -> Decoded:
    """Decode ``source`` (file path or raw bytes) into an RGB uint8 array of shape (H, W, 3).

    ``size``: if given, the image is resized to ``size`` x ``size`` (bicubic, antialiased) when it
    is not already that size, and the resize is noted. Raises :class:`ImageError` on anything
    that is not a usable image.
    """
    label = display_name(name) if name else (display_name(source) if not isinstance(source, bytes) else "<bytes>")
    try:
        if isinstance(source, bytes):
            data = source
        else:
            data = Path(source).read_bytes()
    except OSError as exc:
        raise ImageError(f"{label}: cannot read file ({exc.strerror or exc})") from None
    if len(data) == 0:
        raise ImageError(f"{label}: empty file (0 bytes)")
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            # Pillow's own guard would refuse a genuine large photo at open(); the pixel bound
            # below replaces it, after the JPEG decoder was asked to reduce.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            orig_mode, orig_size = img.mode, img.size
            _within_pixel_bound(img, label, notes)
            img.load()  # forces the full decode: truncated files fail here
            orientation = _orientation(img)
            if orientation not in (None, 1):
                img = ImageOps.exif_transpose(img)
                notes.append(f"applied EXIF orientation {orientation}")
            img = _to_rgb(img, notes)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{label}: refused as a decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        raise ImageError(f"{label}: not an image file (format not recognised)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{label}: corrupt or truncated image ({exc})") from None
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=None)
        notes.append(f"resized {orig_size[0]}x{orig_size[1]} to {size}x{size}")
    arr = np.asarray(img, dtype=np.uint8)
    return Decoded(array=arr, orig_mode=orig_mode, orig_size=orig_size, notes=notes)


def _within_pixel_bound(img: Image.Image, label: str, notes: list[str]) -> None:
    """Set ``img`` (opened, not yet decoded) to decode at most :data:`MAX_PIXELS` pixels, or raise
    :class:`ImageError` when it cannot be."""
    w, h = img.size
    if w * h <= MAX_PIXELS:
        return
    k = 1
    if img.format == "JPEG":
        while w * h > MAX_PIXELS * k * k and k < MAX_JPEG_REDUCTION:
            k *= 2
    if w * h > MAX_PIXELS * k * k:
        what = ("even at 1/8 of each side, as the JPEG decoder allows" if img.format == "JPEG"
                else f"and {img.format or 'this'} files cannot be decoded at reduced size")
        raise ImageError(f"{label}: {w}x{h} pixels is over the {MAX_PIXELS:,}-pixel memory bound {what} "
                         "(refused as a possible decompression bomb)")
    img.draft(img.mode, (-(-w // k), -(-h // k)))
    notes.append(f"decoded the {w}x{h} JPEG at 1/{k} size ({img.size[0]}x{img.size[1]}) to stay "
                 f"within the {MAX_PIXELS // 2 ** 20} M-pixel memory bound")


def _orientation(img: Image.Image) -> int | None:
    try:
        return img.getexif().get(0x0112)
    except Exception:  # noqa: BLE001 - broken EXIF blocks are common and harmless here
        return None


def iter_image_files(paths: list[str | os.PathLike], missing: list[str] | None = None) -> list[Path]:
    """Expand files and folders (recursively) into a sorted list of candidate image files.

    Folders contribute files with an image extension; a file named explicitly is always kept,
    so that a mislabelled file still gets a clear decoding error instead of being ignored. A
    broken or looping symlink with an image name inside a folder is kept too, so that it gets its
    one line ("cannot read file (No such file or directory)", "... (Too many levels of symbolic
    links)") instead of vanishing from the count.
    A path that does not exist raises FileNotFoundError naming it, unless ``missing`` is given:
    then its one-line description is appended there and the other paths are still expanded.
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*")
                              if (f.is_file() or (f.is_symlink() and not f.exists()))
                              and f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith(".")))
        elif p.exists():
            out.append(p)
        elif missing is not None:
            missing.append(f"{display_name(p)}: no such file or folder")
        else:
            raise FileNotFoundError(f"{display_name(p)}: no such file or folder")
    return out


def decode_files(paths: list[str | os.PathLike], size: int) -> tuple[np.ndarray, list[tuple[int, int]], list[str], list[dict]]:
    """Image files decoded at ``size`` x ``size`` as the predict command decodes them: the
    (N, size, size, 3) uint8 array of those that decoded, their original (width, height) and
    display names, and ``{"path", "error"}`` (one line) for each file that did not."""
    arrays, sizes, names, errors = [], [], [], []
    for p in paths:
        try:
            dec = decode_image(p, size=size)
        except ImageError as exc:
            errors.append({"path": display_name(p), "error": str(exc)})
            continue
        arrays.append(dec.array)
        sizes.append(dec.orig_size)
        names.append(display_name(p))
    return (np.stack(arrays) if arrays else np.zeros((0, size, size, 3), np.uint8)), sizes, names, errors
