"""The cache, the sources, deduplication, splits and SID_Set, on real CIFAKE files."""
import io
import json
import shutil

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from aidetect_utils import data, splits
from aidetect_utils.data import DataSourceError, build_cache, cifar_class_from_name


def test_cifar_class_from_name():
    assert cifar_class_from_name("cifake/train/REAL/1234.jpg") == 0
    assert cifar_class_from_name("1234 (2).jpg") == 1
    assert cifar_class_from_name("9 (10).jpg") == 9
    assert cifar_class_from_name("9 (11).jpg") == -1
    assert cifar_class_from_name("photo.jpg") == -1


def test_folder_cache_counts_labels_and_pixels(cifake_folder, tmp_path, cifake_members):
    cache = build_cache(cifake_folder, cache_dir=tmp_path / "c", progress=False)
    m = cache.manifest
    assert cache.images.shape == (120, 32, 32, 3)
    assert m.groupby(["split", "label_name"]).size().to_dict() == {
        ("test", "FAKE"): 30, ("test", "REAL"): 30, ("train", "FAKE"): 30, ("train", "REAL"): 30}
    assert set(m.loc[m.label_name == "FAKE", "label"]) == {1} and set(m.loc[m.label_name == "REAL", "label"]) == {0}
    row = m.iloc[5]
    raw = cifake_members["cifake/" + row["id"]]
    expect = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))
    assert np.array_equal(cache.images[row["index"]], expect)
    assert row["cifar_class"] == cifar_class_from_name(row["id"])
    assert cache.report["n_skipped"] == 0


def test_archive_sources_match_folder(cifake_folder, tmp_path):
    ref = build_cache(cifake_folder, cache_dir=tmp_path / "ref", progress=False)
    tgz = shutil.make_archive(str(tmp_path / "cifake"), "gztar", root_dir=cifake_folder.parent, base_dir="cifake")
    zp = shutil.make_archive(str(tmp_path / "cifakez"), "zip", root_dir=cifake_folder.parent, base_dir="cifake")
    for i, src in enumerate((tgz, zp)):
        c = build_cache(src, cache_dir=tmp_path / f"a{i}", progress=False)
        a = c.manifest.set_index("id").sort_index()
        b = ref.manifest.set_index("id").sort_index()
        assert a.index.tolist() == [f"cifake/{x}" for x in b.index] or a.index.tolist() == b.index.tolist()
        assert a["sha256"].tolist() == b["sha256"].tolist()
        assert np.array_equal(c.images[a["index"].to_numpy()], ref.images[b["index"].to_numpy()])


def test_rebuild_is_a_noop_and_source_change_invalidates(cifake_folder, tmp_path):
    c1 = build_cache(cifake_folder, cache_dir=tmp_path / "c", progress=False)
    stamp = (tmp_path / "c" / "images.npy").stat().st_mtime_ns
    c2 = build_cache(cifake_folder, cache_dir=tmp_path / "c", progress=False)
    assert (tmp_path / "c" / "images.npy").stat().st_mtime_ns == stamp and len(c2) == len(c1)
    (cifake_folder / "train" / "REAL" / "new.png").write_bytes((cifake_folder / "train" / "REAL").glob("*.jpg").__next__().read_bytes())
    c3 = build_cache(cifake_folder, cache_dir=tmp_path / "c", progress=False)
    assert len(c3) == len(c1) + 1


def test_bad_files_are_skipped_and_reported(cifake_folder, tmp_path):
    real = cifake_folder / "train" / "REAL"
    good = next(real.glob("*.jpg")).read_bytes()
    (real / "zero.jpg").write_bytes(b"")
    (real / "half.jpg").write_bytes(good[: len(good) // 2])
    (real / "notes.jpg").write_text("not an image")
    Image.new("RGBA", (64, 64), (0, 255, 0, 128)).save(real / "rgba.png")
    Image.new("L", (32, 32), 9).save(real / "gray.png")
    (cifake_folder / "README.txt").write_text("outside class folders: ignored")
    cache = build_cache(cifake_folder, cache_dir=tmp_path / "c", progress=False)
    skipped = {s["id"].rsplit("/", 1)[-1]: s["reason"] for s in cache.report["skipped"]}
    assert set(skipped) == {"zero.jpg", "half.jpg", "notes.jpg"}
    assert "empty" in skipped["zero.jpg"] and "not an image" in skipped["notes.jpg"]
    converted = {c["id"].rsplit("/", 1)[-1] for c in cache.report["converted"]}
    assert converted == {"rgba.png", "gray.png"}
    assert len(cache) == 122


def test_human_faces_layout_any_case(cifake_members, tmp_path):
    root = tmp_path / "faces"
    for i, (name, b) in enumerate(cifake_members.items()):
        folder = "Real Images" if "/REAL/" in name else "AI-Generated Images"
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / f"{i}.jpg").write_bytes(b)
    cache = build_cache(root, name="faces", cache_dir=tmp_path / "c", cifar_names=False, progress=False)
    assert cache.manifest.groupby("label").size().tolist() == [60, 60]
    assert set(cache.manifest["split"]) == {"all"} and set(cache.manifest["cifar_class"]) == {-1}
    sp = splits.make_splits(cache.manifest, val_fraction=0.25, test_fraction=0.2, seed=1)
    assert sp.groupby("subset").size().to_dict() == {"test": 24, "train": 72, "val": 24}


def test_empty_or_missing_class_folder_is_rejected(cifake_folder, tmp_path):
    for f in (cifake_folder / "test" / "FAKE").iterdir():
        f.unlink()
    with pytest.raises(DataSourceError, match="empty class folder 'test/FAKE'"):
        build_cache(cifake_folder, cache_dir=tmp_path / "c", progress=False)
    (cifake_folder / "test" / "FAKE").rmdir()
    shutil.rmtree(cifake_folder / "train" / "FAKE")
    with pytest.raises(DataSourceError, match="no readable FAKE images"):
        build_cache(cifake_folder, cache_dir=tmp_path / "c", progress=False)
    assert not (tmp_path / "c").exists()
    with pytest.raises(DataSourceError, match="no such file"):
        build_cache(tmp_path / "nowhere", progress=False)


def test_interrupted_build_leaves_no_cache(cifake_folder, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(data.np, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        build_cache(cifake_folder, cache_dir=tmp_path / "c", progress=False)
    assert not (tmp_path / "c" / "meta.json").exists()
    monkeypatch.undo()
    assert len(build_cache(cifake_folder, cache_dir=tmp_path / "c", progress=False)) == 120


def test_resolve_source(tmp_path, monkeypatch):
    monkeypatch.setenv("AIDETECT_CIFAKE", str(tmp_path))
    assert data.resolve_source() == tmp_path.resolve()
    with pytest.raises(DataSourceError, match="no such file"):
        data.resolve_source(tmp_path / "missing")


def _manifest(rows):
    df = pd.DataFrame(rows, columns=["id", "split", "label", "sha256"])
    df["label_name"] = df["label"].map({0: "REAL", 1: "FAKE"})
    df["cifar_class"] = 0
    df.insert(0, "index", range(len(df)))
    return df


def test_deduplicate_counts_by_hand():
    m = _manifest([
        ("a", "train", 1, "h1"), ("b", "train", 1, "h1"),   # within-train pair: keep a
        ("c", "train", 1, "h2"), ("d", "test", 1, "h2"),    # leak: drop d
        ("e", "test", 1, "h3"), ("f", "test", 1, "h3"),     # within-test pair: keep e
        ("g", "test", 0, "h4"), ("h", "train", 0, "h5"),
    ])
    kept, rep = splits.deduplicate(m)
    assert kept["id"].tolist() == ["a", "c", "e", "g", "h"]
    assert rep["test_dropped_as_train_duplicates"] == {"FAKE": 1}
    assert rep["groups_across_splits"] == 1
    assert rep["groups_within_split"] == {"test": 1, "train": 1}
    assert rep["n_before"] == 8 and rep["n_after"] == 5
    assert splits.duplicate_groups(m)["size"].tolist() == [2, 2, 2]


def test_splits_are_disjoint_stratified_and_seeded():
    rng = np.random.default_rng(0)
    rows = [(f"tr{i}", "train", i % 2, f"x{i}") for i in range(1000)] + \
           [(f"te{i}", "test", i % 2, f"y{i}") for i in range(200)]
    m = _manifest(rows)
    m["cifar_class"] = rng.integers(0, 10, len(m))
    a = splits.make_splits(m, val_fraction=0.2, seed=3, n_train=300, n_test=100)
    b = splits.make_splits(m, val_fraction=0.2, seed=3, n_train=300, n_test=100)
    c = splits.make_splits(m, val_fraction=0.2, seed=4, n_train=300, n_test=100)
    assert a.equals(b) and not a.equals(c)
    sizes = a.groupby("subset").size().to_dict()
    assert sizes == {"train": 300, "val": 200, "test": 100}
    assert not a["id"].duplicated().any()
    assert set(a.loc[a.subset == "test", "split"]) == {"test"}
    assert a.groupby("subset")["label"].mean().between(0.45, 0.55).all()


def test_prepared_roundtrip(cifake_folder, tmp_path, no_active_profile):
    cache = build_cache(cifake_folder, cache_dir=tmp_path / "c", progress=False)
    kept, _ = splits.deduplicate(cache.manifest)
    sp = splits.make_splits(kept, seed=0)
    out = splits.save_prepared(cache, sp, {"seed": 0}, out_dir=tmp_path / "prep")
    prep = splits.load_prepared(out)
    test = prep.split("test")
    rows = sp[sp.subset == "test"]
    assert len(test) == len(rows) == 60
    assert np.array_equal(test.images, cache.images[rows["index"].to_numpy()])
    assert json.loads((out / "prepared.json").read_text())["counts"]["test/1"] == 30
    with pytest.raises(FileNotFoundError, match="run notebooks/00"):
        splits.load_prepared(tmp_path / "nothing")     # no notebook chose a profile in this test


@pytest.fixture()
def no_active_profile(monkeypatch):
    """Forget the profile an earlier test's ``params.load`` left behind."""
    from aidetect_utils import params
    monkeypatch.setattr(params, "_active", None)


def test_a_notebook_opened_alone_prepares_its_data(cifake_folder, tmp_path, monkeypatch, capsys):
    """Colab opens every badge in a fresh runtime: notebook 01 run alone finds no prepared data
    and prepares it itself, as notebook 00 would under the same profile and the same source rules
    ($AIDETECT_CIFAKE here), in AIDETECT_HOME (the folder a learner keeps on Drive)."""
    from aidetect_utils import params
    home = tmp_path / "drive"
    monkeypatch.setenv("AIDETECT_HOME", str(home))
    monkeypatch.setenv("AIDETECT_CIFAKE", str(cifake_folder))
    P = params.load("smoke", "01_vit_finetune")                  # the notebook's parameters cell
    prep = splits.load_prepared(P.prepared_dir)
    said = capsys.readouterr().out
    assert "no prepared data in data/prepared/cifake: preparing it now as notebook 00 does under profile 'smoke'" in said
    assert prep.path == home / "data" / "prepared" / "cifake" and prep.info["profile"] == "smoke"
    assert Path(prep.cache.path).is_relative_to(home / "data" / "cache")
    # the same splits as notebook 00's cells give, step by step, with its smoke parameters
    P0 = params.load("smoke", "00_data_preparation")
    cache = build_cache(cifake_folder, source_size=P0.source_size, cache_dir=tmp_path / "by_hand", progress=False)
    kept, report = splits.deduplicate(cache.manifest)
    by_hand = splits.make_splits(kept, val_fraction=P0.val_fraction, seed=P0.seed,
                                 n_train=P0.n_train, n_val=P0.n_val, n_test=P0.n_test)
    assert prep.splits["id"].tolist() == by_hand["id"].tolist()
    assert prep.splits["subset"].tolist() == by_hand["subset"].tolist()
    assert np.array_equal(prep.split("test").images, cache.images[by_hand.loc[by_hand.subset == "test", "index"]])
    assert prep.info["deduplication"] == report
    # a second notebook reuses it; one under another profile is told the subset sizes may differ
    again = splits.load_prepared(P.prepared_dir)
    assert capsys.readouterr().out == "" and again.splits.equals(prep.splits)
    params.load("cpu", "04_efficientnet_two_phase")
    splits.load_prepared()
    assert "was prepared under profile 'smoke', this notebook runs 'cpu'" in capsys.readouterr().out


def test_a_missing_source_is_one_line_when_preparing_alone(tmp_path, monkeypatch):
    from aidetect_utils import params
    from aidetect_utils.data import DataSourceError
    monkeypatch.setenv("AIDETECT_HOME", str(tmp_path))
    monkeypatch.setenv("AIDETECT_CIFAKE", str(tmp_path / "not-there.tar.gz"))
    params.load("smoke", "02_vit_frozen_head")
    with pytest.raises(DataSourceError, match="AIDETECT_CIFAKE=.*not-there.tar.gz: no such file or folder"):
        splits.load_prepared()


def test_sid_set_filter_and_balance():
    datasets = pytest.importorskip("datasets")
    rows = {"img_id": [], "image": [], "mask": [], "width": [], "height": [], "label": []}
    spec = [(0, 1024)] * 6 + [(0, 800)] * 2 + [(1, 1024)] * 4 + [(2, 1024)] * 5
    for i, (label, w) in enumerate(spec):
        rows["img_id"].append(f"id{i}")
        rows["image"].append(Image.new("RGB", (w // 64, 8), (label * 80, 0, 0)))
        rows["mask"].append(None)
        rows["width"].append(w)
        rows["height"].append(512)
        rows["label"].append(label)
    ds = datasets.Dataset.from_dict(rows, features=datasets.Features({
        "img_id": datasets.Value("string"), "image": datasets.Image(), "mask": datasets.Image(),
        "width": datasets.Value("int64"), "height": datasets.Value("int64"), "label": datasets.Value("int64")}))
    from aidetect_utils.sidset import load_sid_set
    out = load_sid_set(dataset=ds)
    assert sorted(out["label"]) == [0] * 4 + [1] * 4
    wide = load_sid_set(dataset=ds, min_width=1000, max_per_class=3)
    assert sorted(wide["label"]) == [0, 0, 0, 1, 1, 1] and min(wide["width"]) >= 1000
    assert load_sid_set(dataset=ds, seed=1)["img_id"] != load_sid_set(dataset=ds, seed=2)["img_id"]


def test_split_sample_is_random_seeded_and_mixed():
    labels = np.repeat([1, 0], 500)  # class-contiguous, as in the cache
    s = splits.ImageSplit(np.zeros((1000, 2, 2, 3), np.uint8), labels, np.arange(1000), np.zeros(1000, int))
    a, b = s.sample(100, seed=1), s.sample(100, seed=1)
    assert len(a) == 100 and np.array_equal(a.ids, b.ids)
    assert not np.array_equal(a.ids, s.sample(100, seed=2).ids)
    assert 30 < a.labels.sum() < 70  # both classes, not the first 100 rows
    assert s.sample(None) is s and s.sample(5000) is s
