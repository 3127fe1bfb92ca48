"""Data, splits and results as versions that must agree (issue 19): a prepared ``splits.csv`` is
only used with the cache it was made on, a damaged cache is rebuilt or named, ``--data`` never
silently does nothing, 07 never ranks methods on the few images two different test sets happen
to share, and Ctrl-C ends a headless run with one line. Every cache here is built from real
CIFAKE images (``cifake_folder``), damaged by hand where a case needs it, inside ``tmp_path``
(``AIDETECT_HOME``), never in the repository.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import yaml

from aidetect_utils import artifacts, data, params, pipeline, splits
from aidetect_utils import evaluation as ev

from .conftest import parameters_cell, write_notebook

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def home(tmp_path, monkeypatch):
    """Data and results in ``tmp_path``; no profile left active by an earlier test."""
    monkeypatch.setenv("AIDETECT_HOME", str(tmp_path))
    monkeypatch.setattr(params, "_active", None)
    return tmp_path


def _one_line(exc) -> str:
    text = str(exc.value if hasattr(exc, "value") else exc)
    assert "\n" not in text, text
    return text


def _test_only(cifake_folder: Path, where: Path) -> Path:
    """Another source: only CIFAKE's test folder (no train split), as ``testonly.tar.gz`` was."""
    shutil.copytree(cifake_folder / "test", where / "test")
    return where


# ------------------------------------------------------------------ A. data and splits, one version
@pytest.mark.parametrize("written_before_the_hash", [False, True])
def test_splits_of_a_rebuilt_cache_are_refused(written_before_the_hash, cifake_folder, home, monkeypatch):
    """Case 2: notebook 00 run on a new source rebuilds the cache and then fails (a test-only
    source cannot be split), leaving the old splits.csv, whose row numbers now point at other
    images (half the labels wrong). Every reader refuses it in one line; 00 on a good source
    makes it usable again. A folder written before the hash existed is caught row by row."""
    monkeypatch.setenv("AIDETECT_CIFAKE", str(cifake_folder))
    prep = splits.prepare("smoke")
    good = splits.load_prepared(prep)
    assert good.info["cache_hash"] == good.cache.content_hash == good.cache.meta["content_hash"]
    if written_before_the_hash:
        info = json.loads((prep / "prepared.json").read_text())
        del info["cache_hash"], info["splits_sha256"]
        (prep / "prepared.json").write_text(json.dumps(info))
    monkeypatch.setenv("AIDETECT_CIFAKE", str(_test_only(cifake_folder, home / "testonly")))
    with pytest.raises(ValueError):                      # 00 fails at the split, after rebuilding the cache
        splits.prepare("smoke")
    assert len(data.load_cache(good.cache.path)) == 60   # the cache now holds the test-only source
    with pytest.raises(splits.PreparedDataError) as e:
        splits.load_prepared(prep)
    msg = _one_line(e)
    assert msg.startswith("data/prepared/cifake") and "re-run notebooks/00_data_preparation.ipynb" in msg
    assert ("another version of the data cache data/cache/cifake-32px" in msg) != written_before_the_hash
    assert ("splits.csv does not fit the data cache data/cache/cifake-32px" in msg) == written_before_the_hash
    monkeypatch.setenv("AIDETECT_CIFAKE", str(cifake_folder))
    splits.prepare("smoke")                             # notebook 00 again, on the good source
    again = splits.load_prepared(prep)
    assert again.splits.equals(good.splits) and np.array_equal(again.split("test").images, good.split("test").images)


def test_a_splits_file_not_written_with_its_prepared_json_is_refused(cifake_folder, home, monkeypatch):
    """splits.csv and prepared.json are one unit: a splits.csv replaced or edited afterwards
    (another run's, a hand edit, a half copy) is refused even where its rows would load."""
    monkeypatch.setenv("AIDETECT_CIFAKE", str(cifake_folder))
    prep = splits.prepare("smoke")
    table = pd.read_csv(prep / "splits.csv", keep_default_na=False)
    table.loc[table["subset"] == "test", "subset"] = "train"          # every test image now trains
    table.to_csv(prep / "splits.csv", index=False)
    with pytest.raises(splits.PreparedDataError, match=r"^data/prepared/cifake/splits.csv is not the one written "
                                                       r"with its prepared.json .*re-run notebooks/00") as e:
        splits.load_prepared(prep)
    _one_line(e)
    assert not list(prep.glob(".*.tmp-*"))                            # written whole, nothing left beside


def test_save_prepared_refuses_splits_made_on_another_cache(cifake_folder, home):
    a = data.build_cache(cifake_folder, cache_dir=home / "a", progress=False)
    b = data.build_cache(_test_only(cifake_folder, home / "t"), cache_dir=home / "b", progress=False)
    made_on_a = splits.make_splits(splits.deduplicate(a.manifest)[0], seed=0)
    with pytest.raises(splits.PreparedDataError, match="these splits were not made on the cache b"):
        splits.save_prepared(b, made_on_a, {}, out_dir=home / "prep")
    assert not (home / "prep").exists()


def test_content_hash_names_the_content_and_costs_no_image_read(cifake_folder, home):
    """Same source -> same hash (rebuilt or not); another source or size -> another hash."""
    a = data.build_cache(cifake_folder, cache_dir=home / "a", progress=False)
    a2 = data.build_cache(cifake_folder, cache_dir=home / "a2", progress=False)
    b = data.build_cache(_test_only(cifake_folder, home / "t"), cache_dir=home / "b", progress=False)
    c = data.build_cache(cifake_folder, cache_dir=home / "c", source_size=16, progress=False)
    assert a.content_hash == a2.content_hash == data.content_hash(a.manifest, a.images.shape)
    assert len({a.content_hash, b.content_hash, c.content_hash}) == 3


# ------------------------------------------------------------------ case 4: --data without 00
@pytest.fixture()
def series(tmp_path):
    """A project with a 00 that prints its data source and a 01."""
    d = tmp_path / "notebooks"
    d.mkdir()
    cell = parameters_cell()
    write_notebook(d / "00_prep.ipynb", [cell, nbformat.v4.new_code_cell("import os\nprint(os.environ.get('AIDETECT_CIFAKE'))")])
    write_notebook(d / "01_train.ipynb", [nbformat.v4.new_code_cell("print('trained')")])
    (d / "profiles.yaml").write_text(yaml.safe_dump({"defaults": {"00_prep": {"n": 1}, "01_train": {"k": 0}},
                                                     "smoke": {"all": {}}}))
    return d


@pytest.mark.parametrize("only,exists,message", [
    (["01"], True, r"--data \S+other.tar.gz without notebook 00: only 00 prepares data from it, the others would use "
                   r"the data prepared before; add 00 \(--only 00 01\) or leave out --data"),
    (["01"], False, r"--data \S+other.tar.gz: no such file or folder"),
    (["00", "01"], False, r"--data \S+other.tar.gz: no such file or folder"),
])
def test_data_that_no_notebook_would_read_is_refused_at_once(only, exists, message, series, tmp_path, monkeypatch,
                                                              capsys):
    """Case 4: ``--only 04 --data other.tar.gz`` reloaded the old run (even for a path that does
    not exist): refused before any notebook starts, one line, exit 2."""
    other = tmp_path / "other.tar.gz"
    if exists:
        other.write_bytes(b"")
    monkeypatch.setenv("AIDETECT_ROOT", str(tmp_path))
    monkeypatch.delenv("AIDETECT_CIFAKE", raising=False)
    assert pipeline.main(["--only", *only, "--data", str(other)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and re.fullmatch(r"\[pipeline\] error: " + message + "\n", err), err
    assert not (tmp_path / "results").exists()                       # nothing ran
    assert "AIDETECT_CIFAKE" not in os.environ


# ------------------------------------------------------------------ B. a damaged cache
def _damage(cache_dir: Path, file: str) -> None:
    f = cache_dir / file
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


@pytest.mark.parametrize("file,problem", [
    ("images.npy", r"truncated: [\d,]+ of [\d,]+ bytes"),
    ("manifest.csv", r"[\d,]+ rows for 120 images"),
    ("meta.json", "unreadable: JSONDecodeError: .*"),
])
def test_a_damaged_cache_is_named_and_rebuilt_by_notebook_00(file, problem, cifake_folder, home, capsys):
    """A truncated images.npy gave ``ValueError: mmap length is greater than file size`` on every
    run, notebook 00 included, with no path and no remedy: now opening it says which file and
    what to do in one line, and 00 (build_cache) rebuilds it."""
    good = data.build_cache(cifake_folder, cache_dir=home / "c", progress=False)
    pixels = np.array(good.images)          # a copy: the memory map would read past the cut (SIGBUS)
    _damage(home / "c", file)
    with pytest.raises(data.CacheDamaged) as e:
        data.load_cache(home / "c")
    where = re.escape(str(home / "c"))
    assert re.fullmatch(rf"{where}/{file}: damaged data cache \({problem}\); re-run notebooks/"
                        rf"00_data_preparation.ipynb, which rebuilds it, or delete {where}", _one_line(e)), str(e.value)
    rebuilt = data.build_cache(cifake_folder, cache_dir=home / "c", progress=False)
    assert rebuilt.content_hash == good.content_hash and np.array_equal(rebuilt.images, pixels)
    said = capsys.readouterr().out
    assert ("is damaged" in said and "rebuilding it" in said) == (file != "meta.json")   # no meta: plainly stale


def test_a_damaged_cache_under_prepared_data(cifake_folder, home, monkeypatch, capsys):
    """A later notebook finds the cache damaged: rebuilt from the source it was built from while
    that source is unchanged (same content, so the splits stay valid), else one line naming the
    file and what to delete."""
    monkeypatch.setenv("AIDETECT_CIFAKE", str(cifake_folder))
    prep = splits.prepare("smoke")
    good = splits.load_prepared(prep)
    cache_dir, test_images = Path(good.cache.path), good.split("test").images     # a copy, read before the cut
    _damage(cache_dir, "images.npy")
    again = splits.load_prepared(prep)
    assert "images.npy of the data cache" in capsys.readouterr().out
    assert np.array_equal(again.split("test").images, test_images)
    _damage(cache_dir, "images.npy")
    shutil.rmtree(cifake_folder)                                      # the source is gone
    with pytest.raises(data.CacheDamaged, match=rf"^{re.escape(str(cache_dir / 'images.npy'))}: damaged data cache "
                                                r"\(truncated: .*or delete ") as e:
        splits.load_prepared(prep)
    _one_line(e)


# ------------------------------------------------------------------ C. 07 on different test sets
REC = {"trainable_params": 1, "total_params": 2, "train_seconds": 1.0, "inference_images_per_second": 1.0,
       "device": "cpu", "profile": "smoke"}


def _pred(ids, labels, seed=0):
    p = np.random.default_rng(seed).random(len(ids))
    return pd.DataFrame({"id": list(ids), "cifar_class": -1, "label": list(labels), "prob_fake": p})


def _smoke_snapshot_counts() -> tuple[int, int, int, list[int]]:
    """What the smoke snapshot of 07 printed: common images, REAL, FAKE, and per method."""
    nb = nbformat.read(ROOT / "tests" / "notebooks" / "07_evaluation.ipynb", 4)
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    m = re.search(r"common test images: (\d+) \(REAL (\d+), FAKE (\d+)\); scored per method: ([\d, ]+)", text)
    return int(m[1]), int(m[2]), int(m[3]), [int(n) for n in m[4].split(", ")]


def test_the_smoke_comparison_still_ranks_silently(capsys):
    """The smoke profile's methods (five on the 400 test images, the two VLMs on a seeded 200 of
    them, as its snapshot prints) are one test set: no warning, no refusal."""
    n_common, n_real, n_fake, per_method = _smoke_snapshot_counts()
    assert n_common >= ev.MIN_COMMON and n_real and n_fake
    big = max(per_method)
    labels = np.r_[np.zeros(n_real, int), np.ones(n_fake, int), np.arange(big - n_common) % 2]
    ids = [f"test/{'FAKE' if y else 'REAL'}/{i}.jpg" for i, y in enumerate(labels)]
    found = {f"m{k}": (REC, _pred(ids[:n], labels[:n], k)) for k, n in enumerate(per_method)}
    got, probs = ev.align(found)
    assert len(got) == n_common and (got["label"] == 0).sum() == n_real and probs.shape[1] == len(per_method)
    assert capsys.readouterr().out == ""


def test_methods_scored_on_different_test_sets_are_named_and_not_ranked(tmp_path, monkeypatch, capsys):
    """Case 3: the data changed under two of the methods; their 400 test images share 2 with
    the others'. 07 said "common test images: 2 (REAL 2, FAKE 0)" and ranked seven methods at
    1.0 or 0.0: now one printed line names the methods scored on other images, and the ranking
    is refused in one line with the counts."""
    monkeypatch.setattr(params, "_active", None)
    old = [f"test/{c}/{i}.jpg" for c in ("REAL", "FAKE") for i in range(200)]
    new = old[:2] + [f"test/{c}/n{i}.jpg" for c in ("REAL", "FAKE") for i in range(199)]
    y_old = [0] * 200 + [1] * 200
    y_new = [0, 0] + [0] * 199 + [1] * 199
    runs = [(m, old, y_old) for m in ("vit_finetune", "vit_frozen_head", "efficientnet_two_phase")]
    for name, ids, y in runs + [("qwen_vl_sft", new, y_new), ("qwen_vl_robust", new, y_new)]:
        artifacts.write_results(tmp_path / name, method=name, backbone="b", profile="smoke", ids=ids, labels=y,
                                prob_fake=np.random.default_rng(len(name)).random(len(ids)), trainable_params=1,
                                total_params=2, train_seconds=1.0, inference_seconds=1.0)
    found, _ = ev.discover(tmp_path)
    with pytest.raises(ValueError) as e:
        ev.align(found)
    assert _one_line(e) == (
        "only 2 test images (REAL 2, FAKE 0) are common to the methods (scored: efficientnet_two_phase 400, "
        "qwen_vl_robust 400, qwen_vl_sft 400, vit_finetune 400, vit_frozen_head 400): too few to rank them "
        f"(evaluation.MIN_COMMON = {ev.MIN_COMMON}, both classes); re-run the methods on the same prepared data, "
        "or leave out the ones scored on other data (parameter methods)")
    warned = capsys.readouterr().out.splitlines()
    assert warned == ["warning: the methods were scored on different test sets: qwen_vl_robust, qwen_vl_sft "
                      "(400 images) differ from efficientnet_two_phase, vit_finetune, vit_frozen_head (400 images); "
                      "2 images are common to all (was the data prepared again between their runs? re-run the "
                      "methods on the same prepared data)"]
    # left out (07's parameter `methods`), the others compare as before, silently
    labels, probs = ev.align({m: found[m] for m in ("vit_finetune", "vit_frozen_head", "efficientnet_two_phase")})
    assert len(labels) == 400 and capsys.readouterr().out == ""


def test_enough_common_images_on_different_sets_rank_with_the_warning(capsys):
    """Different test sets that still share enough images of both classes are compared on
    those, and the warning says so."""
    a = [f"x{i}" for i in range(300)]
    b = a[:150] + [f"y{i}" for i in range(150)]
    y = [i % 2 for i in range(300)]
    labels, probs = ev.align({"a": (REC, _pred(a, y)), "b": (REC, _pred(b, y[:150] + y[:150]))})
    assert len(labels) == 150
    assert capsys.readouterr().out.startswith("warning: the methods were scored on different test sets: b (300 images) "
                                              "differs from a (300 images); 150 images are common to all")


def test_a_common_set_without_a_class_every_method_scored_is_refused():
    a = [f"x{i}" for i in range(400)]
    y = [0] * 200 + [1] * 200
    other = [f"z{i}" for i in range(100)]
    # 150 in common, enough, but all REAL while both methods scored FAKE images too
    with pytest.raises(ValueError, match=r"^only 150 test images \(REAL 150, FAKE 0\) are common"):
        ev.align({"a": (REC, _pred(a, y)), "b": (REC, _pred(a[:150] + other, [0] * 150 + [1] * 100))})
    # both classes, but 60 in common where each method scored at least 160
    with pytest.raises(ValueError, match=r"^only 60 test images \(REAL 30, FAKE 30\) are common"):
        ev.align({"a": (REC, _pred(a, y)), "b": (REC, _pred(a[170:230] + other, y[170:230] + [1] * 100))})


# ------------------------------------------------------------------ D. Ctrl-C
def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_ctrl_c_is_one_line_exit_130_and_stops_the_kernel(tmp_path):
    """Ctrl-C during a notebook gave about 40 lines of KeyboardInterrupt traceback (and, from the
    kernel asked to shut down while busy, its own): now one line naming the notebook and cell,
    exit status 130, and the kernel process is gone. A real pipeline process and a real SIGINT."""
    d = tmp_path / "notebooks"
    d.mkdir()
    pid_file = tmp_path / "kernel.pid"
    write_notebook(d / "00_first.ipynb", [nbformat.v4.new_code_cell("print('first done')")])
    write_notebook(d / "01_long.ipynb", [nbformat.v4.new_code_cell(f"import os, pathlib, time\npathlib.Path({str(pid_file)!r})"
                                                        ".write_text(str(os.getpid()))"),
                              nbformat.v4.new_code_cell("time.sleep(120)")])
    (d / "profiles.yaml").write_text(yaml.safe_dump({"defaults": {"00_first": {"n": 1}, "01_long": {"k": 0}},
                                                     "smoke": {"all": {}}}))
    env = {**os.environ, "AIDETECT_ROOT": str(tmp_path), "AIDETECT_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen([sys.executable, "-m", "aidetect_utils.pipeline", "--profile", "smoke"], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not pid_file.exists() or not pid_file.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
        kernel = int(pid_file.read_text())
        time.sleep(0.5)                                    # inside time.sleep(120)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    said = [ln for ln in err.splitlines() if ln.startswith("[pipeline]")]
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    copy = tmp_path.resolve() / "home" / "results" / "notebooks" / "smoke" / "01_long.ipynb"   # in the home, beside its results
    assert said == [f"[pipeline] interrupted in 01_long.ipynb (in cell In [3] `time.sleep(120)`): its kernel was "
                    "stopped; finished notebooks and saved checkpoints are kept (executed copy so far: "
                    f"{copy}); re-run the same command to resume"]
    assert "[pipeline] 00_first.ipynb done in" in out
    deadline = time.monotonic() + 15
    while _alive(kernel) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(kernel), f"kernel {kernel} still running"
