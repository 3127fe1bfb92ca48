"""Every kind of awkward file a user hands us decodes to RGB or fails with one clear line."""
import io

import numpy as np
import pytest
from PIL import Image

from aidetect_utils import images
from aidetect_utils.images import ImageError, decode_image


def _bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_real_cifake_jpeg(cifake_members):
    name, data = next(iter(cifake_members.items()))
    d = decode_image(data, name=name)
    assert d.array.shape == (32, 32, 3) and d.array.dtype == np.uint8
    assert d.orig_mode == "RGB" and d.notes == []


@pytest.mark.parametrize("data,needle", [
    (b"", "empty file"),
    (b"this is a text file, not an image", "not an image"),
])
def test_empty_and_non_image(data, needle):
    with pytest.raises(ImageError, match=needle) as e:
        decode_image(data, name="bad.jpg")
    assert str(e.value).startswith("bad.jpg:") and "\n" not in str(e.value)


def test_truncated_jpeg(cifake_members):
    data = next(iter(cifake_members.values()))
    with pytest.raises(ImageError, match="truncated"):
        decode_image(data[: len(data) // 2], name="half.jpg")


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="cannot read"):
        decode_image(tmp_path / "nope.png")


def test_grayscale_palette_cmyk():
    gray = decode_image(_bytes(Image.new("L", (5, 4), 77), "PNG"))
    assert gray.array.shape == (4, 5, 3) and (gray.array == 77).all()
    pal = Image.new("P", (3, 3), 0)
    pal.putpalette([10, 20, 30] + [0] * 765)
    assert (decode_image(_bytes(pal, "PNG")).array == [10, 20, 30]).all()
    cmyk = decode_image(_bytes(Image.new("CMYK", (4, 4), (0, 0, 0, 0)), "JPEG"))
    assert cmyk.orig_mode == "CMYK" and cmyk.array.min() > 240  # no ink = white


def test_rgba_is_composited_on_white():
    img = Image.new("RGBA", (2, 2), (255, 0, 0, 0))      # fully transparent red
    img.putpixel((0, 0), (0, 0, 255, 255))               # one opaque blue pixel
    d = decode_image(_bytes(img, "PNG"))
    assert tuple(d.array[0, 0]) == (0, 0, 255)
    assert tuple(d.array[1, 1]) == (255, 255, 255)
    assert any("composited" in n for n in d.notes)


def test_16bit_png_is_scaled_not_clipped():
    arr = np.array([[0, 32896, 65535]], dtype=np.uint16)
    d = decode_image(_bytes(Image.fromarray(arr), "PNG"))
    assert d.array[0, :, 0].tolist() == [0, 128, 255]


def test_exif_rotation_is_applied():
    img = Image.new("RGB", (8, 4), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    d = decode_image(_bytes(img, "JPEG", exif=exif.tobytes()))
    assert d.array.shape == (8, 4, 3)
    assert any("EXIF orientation 6" in n for n in d.notes)


def test_resize_to_cache_size():
    d = decode_image(_bytes(Image.new("RGB", (64, 48), (1, 2, 3)), "PNG"), size=32)
    assert d.array.shape == (32, 32, 3) and "resized 64x48 to 32x32" in d.notes


def test_decompression_bomb_is_refused(monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 100)
    with pytest.raises(ImageError, match="decompression bomb"):
        decode_image(_bytes(Image.new("RGB", (20, 20)), "PNG"), name="bomb.png")


def test_iter_image_files(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"1")
    (tmp_path / "a" / "notes.txt").write_text("skip me")
    (tmp_path / "y.JPG").write_bytes(b"2")
    found = images.iter_image_files([tmp_path / "a", tmp_path / "y.JPG"])
    assert [p.name for p in found] == ["x.png", "y.JPG"]
    with pytest.raises(FileNotFoundError, match="missing"):
        images.iter_image_files([tmp_path / "missing"])
