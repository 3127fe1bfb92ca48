"""The web demo: the analysis behind the page on real and hostile files, and the page itself in
a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``, installed by test.sh)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aidetect_utils import app, artifacts, domain, models, splits, transforms
from aidetect_utils.data import build_cache
from aidetect_utils.images import decode_image
from aidetect_utils.metrics import classification_metrics

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cifake_members):
    """Two small models trained here on real CIFAKE images: frozen EfficientNet-Lite0 ImageNet
    features + an MC-dropout MLP head, and a tiny ViT; saved as model folders."""
    out = tmp_path_factory.mktemp("models")
    items = sorted(cifake_members.items())
    x_all = np.stack([decode_image(d).array for _, d in items])
    y_all = np.array([1 if "/FAKE/" in n else 0 for n, _ in items])
    train = np.array(["/train/" in n for n, _ in items])
    torch.manual_seed(0)
    folders = []
    feat = models.build_feature_classifier({"kind": "timm", "name": "tf_efficientnet_lite0"},
                                           {"kind": "mlp", "hidden": [64, 32], "dropout": 0.5},
                                           pretrained="efficientnet-lite0-pypi")
    vit = models.ViTClassifier({"image_size": 32, "patch_size": 8, "hidden_size": 48, "num_hidden_layers": 2,
                                "num_attention_heads": 3, "intermediate_size": 96})
    for name, model in (("dino_bayesian_head", feat), ("vit_finetune", vit)):
        prep = transforms.preprocessing(32)
        tf = transforms.eval_transform(prep)
        x = torch.stack([tf(torch.from_numpy(im).permute(2, 0, 1)) for im in x_all])
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=1e-3)
        model.train()
        for _ in range(15):
            loss = torch.nn.functional.cross_entropy(model(x[train]), torch.from_numpy(y_all[train]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            p = torch.softmax(model(x[~train]), -1)[:, 1].numpy()
        m = classification_metrics(y_all[~train], p)
        check = domain.fit(model, tf, x_all[train], x_all[~train], source_size=32, seed=0)
        folder = artifacts.save_model_folder(out / name / "model", model, method=name, architecture=model.spec(),
                                             preprocessing=prep, domain_check=check,
                                             metrics={"accuracy": m["accuracy"], "roc_auc": m["roc_auc"],
                                                      "n_test": int((~train).sum()), "dataset": "cifake",
                                                      "profile": "test"})
        folders.append(folder)
    return folders


@pytest.fixture()
def files(tmp_path, cifake_members, realworld_members):
    names = sorted(cifake_members)
    real = next(n for n in names if "/test/REAL/" in n)
    fake = next(n for n in names if "/test/FAKE/" in n)
    out = {"real": tmp_path / "a_real.jpg", "fake": tmp_path / "a_fake.jpg"}
    out["real"].write_bytes(cifake_members[real])
    out["fake"].write_bytes(cifake_members[fake])
    out["text"] = tmp_path / "notes.png"
    out["text"].write_text("this is not an image")
    out["truncated"] = tmp_path / "cut.jpg"
    out["truncated"].write_bytes(cifake_members[fake][:300])
    big = np.random.default_rng(0).integers(0, 255, (200, 300, 4), dtype=np.uint8)
    out["rgba"] = tmp_path / "photo.png"
    Image.fromarray(big, mode="RGBA").save(out["rgba"])
    out["bomb"] = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(out["bomb"])          # 400 Mpx in a few kB
    out["photo"] = tmp_path / "city_photo.jpg"                # a real full-resolution photograph (realworld100)
    out["photo"].write_bytes(realworld_members[next(n for n in sorted(realworld_members) if "/REAL/city_" in n)])
    return out


def test_load_detectors_reads_what_they_are(trained):
    dets = app.load_detectors(trained)
    assert [d.name for d in dets] == ["dino_bayesian_head", "vit_finetune"]
    assert [d.mc_dropout for d in dets] == [True, False]
    assert [d.gradcam for d in dets] == [True, True]
    about = dets[0].about()
    assert "cifake images at 32x32 px" in about and "test accuracy" in about and "test profile" in about
    with pytest.raises(artifacts.ModelFolderError, match="not a model folder"):
        app.load_detectors([trained[0].parent])


def test_analyse_real_and_hostile_files(trained, files):
    dets = app.load_detectors(trained)
    res = {r.name: r for r in app.analyse([files[k] for k in ("real", "fake", "text", "truncated", "rgba", "bomb")], dets)}
    for k in ("real", "fake"):
        r = res[files[k].name]
        assert r.error is None and len(r.verdicts) == 2
        assert all(0 <= v.prob_fake <= 1 and v.label in ("REAL", "FAKE") for v in r.verdicts)
        assert r.verdicts[0].std is not None and r.verdicts[0].std >= 0 and r.verdicts[1].std is None
        assert all(v.cam_png for v in r.verdicts)
        # the page's number is the predict command's number (MC mean aside)
        direct = dets[1].predictor.prob_fake(decode_image(files[k], size=32).array[None])[0]
        assert r.verdicts[1].prob_fake == pytest.approx(direct, abs=1e-6)
    assert "not an image file" in res["notes.png"].error
    assert "corrupt or truncated" in res["cut.jpg"].error
    assert "decompression bomb" in res["bomb.png"].error
    rgba = res["photo.png"]
    assert rgba.error is None and "resized 300x200 to 32x32" in rgba.notes
    assert any("judge this 300x200 image downscaled to 32x32" in n for n in rgba.notes)
    # out of domain for both models, and why: its size; the verdict is still given
    assert [(v.in_domain, v.domain_note) for v in rgba.verdicts] == [(False, "300x200 px, trained on 32x32")] * 2
    tiny_cap = app.analyse([files["rgba"]], dets, max_bytes=1000)[0]
    assert "MB is over the" in tiny_cap.error and not tiny_cap.verdicts


def test_render_escapes_names(trained, tmp_path, files):
    hostile = tmp_path / "<img src=x onerror=alert(1)>.jpg"
    shutil.copy(files["real"], hostile)
    page = app.render(app.analyse([hostile, files["text"]], app.load_detectors(trained)))
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;.jpg" in page
    assert "Cannot use this file. notes.png: not an image file" in page and "P(FAKE) =" in page


def test_examples_come_from_the_test_split(tmp_path, cifake_folder):
    cache = build_cache(cifake_folder, cache_dir=tmp_path / "cache", progress=False)
    sp = splits.make_splits(cache.manifest, seed=0)
    prepared = splits.save_prepared(cache, sp, {"seed": 0}, out_dir=tmp_path / "prepared")
    paths = app.make_examples(2, prepared_dir=prepared)
    assert [Path(p).name.split("_")[2] for p in paths] == ["REAL", "REAL", "FAKE", "FAKE"]
    assert all(Image.open(p).size == (32, 32) for p in paths)
    assert app.make_examples(2, prepared_dir=tmp_path / "nothing") == []


# ------------------------------------------------------------------------------ in a real browser
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_page_in_headless_chromium(trained, files, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    chromium, driver_bin = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_bin):
        pytest.skip(os.environ.get("AIDETECT_NO_BROWSER", "install Debian's chromium and chromium-driver "
                                   "(./test.sh does when it may)"))
    port = _free_port()
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "aidetect_utils.app", *sum((["--model", str(f)] for f in trained), []),
                               "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    browser = None
    try:
        url = f"http://127.0.0.1:{port}/"
        for _ in range(120):
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                assert server.poll() is None, (tmp_path / "server.log").read_text()
                time.sleep(0.5)
        opts = webdriver.ChromeOptions()
        opts.binary_location = chromium
        for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1500"):
            opts.add_argument(a)
        browser = webdriver.Chrome(service=Service(driver_bin), options=opts)
        browser.get(url)
        wait = WebDriverWait(browser, 60)
        upload = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#upload input[type=file]"))
        assert "trained on cifake images at 32x32 px" in browser.find_element(By.TAG_NAME, "body").text
        upload.send_keys("\n".join(str(files[k]) for k in ("real", "fake", "text", "photo")))
        results = lambda b: b.find_element(By.ID, "results").text
        wait.until(lambda b: "notes.png: not an image file" in results(b) and "city_photo.jpg" in results(b))
        text = results(browser)
        assert "Cannot use this file." in text
        # a full-resolution photograph: a verdict from each model, each with the out-of-domain warning beside it
        photo = text.split("city_photo.jpg", 1)[1]
        assert photo.count("out of domain for this model:") == 2 and "px, trained on 32x32" in photo
        warnings = browser.find_elements(By.CSS_SELECTOR, "#results .ood")
        assert len(warnings) >= 2 and all(w.is_displayed() for w in warnings)
        for name in ("a_real.jpg", "a_fake.jpg"):
            block = text.split(name, 1)[1][:400]
            assert "dino_bayesian_head" in block and "vit_finetune" in block and "P(FAKE) =" in block
            assert "MC dropout" in block
        verdicts = browser.find_elements(By.CSS_SELECTOR, "#results td.verdict")
        assert len(verdicts) == 6 and {v.text for v in verdicts} <= {"REAL", "FAKE"}
        shot = ROOT / "results" / "figures" / "app_screenshot.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        # the server survived the bad file and still answers
        assert urllib.request.urlopen(url, timeout=5).status == 200
    finally:
        if browser is not None:
            browser.quit()
        server.terminate()
        server.wait(timeout=20)
        log.close()
