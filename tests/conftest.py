"""Shared fixtures: small folders of *real* CIFAKE images taken from the archive by path.

The archive is found at ``$AIDETECT_CIFAKE`` or ``../shared/data/cifake.tar.gz`` beside the
project; nothing extracted from it is ever written inside the repository.
"""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _shared_archive(env: str, file_name: str, what: str) -> Path:
    """``$env``, else ``../shared/data/<file_name>`` beside the project; a failed test if absent."""
    p = Path(os.environ.get(env) or ROOT.parent / "shared" / "data" / file_name)
    if not p.exists():
        pytest.fail(f"{what} archive not found at {p}: set {env}")
    return p


def cifake_archive() -> Path:
    return _shared_archive("AIDETECT_CIFAKE", "cifake.tar.gz", "CIFAKE")


@pytest.fixture(scope="session")
def cifake_members() -> dict[str, bytes]:
    """The first 30 files of each train/test x REAL/FAKE folder of the real archive."""
    want: dict[str, int] = {}
    out: dict[str, bytes] = {}
    with tarfile.open(cifake_archive(), "r:gz") as tf:
        for m in tf:
            if not m.isfile():
                continue
            folder = m.name.rsplit("/", 1)[0]
            if want.get(folder, 0) < 30:
                want[folder] = want.get(folder, 0) + 1
                out[m.name] = tf.extractfile(m).read()
            if len(want) == 4 and all(v >= 30 for v in want.values()):
                break
    assert len(out) == 120
    return out


@pytest.fixture()
def cifake_folder(tmp_path, cifake_members) -> Path:
    """A Kaggle-layout folder (train|test/REAL|FAKE) of 120 real CIFAKE JPEGs."""
    root = tmp_path / "cifake"
    for name, data in cifake_members.items():
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def realworld_archive() -> Path:
    return _shared_archive("AIDETECT_REALWORLD100", "realworld100.tar", "realworld100")


@pytest.fixture(scope="session")
def realworld_members() -> dict[str, bytes]:
    """Every image of realworld100 (50 real photographs, 50 AI images of other generators, full
    resolution): a test set only, never trained or tuned on."""
    out: dict[str, bytes] = {}
    with tarfile.open(realworld_archive()) as tf:
        for m in tf:
            if m.isfile() and m.name.lower().endswith(".jpg"):
                out[m.name] = tf.extractfile(m).read()
    assert len(out) == 100
    return out


def fresh_env_with_torch(where: Path) -> Path:
    """A new virtual environment that sees this one's packages (torch...) but not aidetect_utils,
    as a fresh Colab runtime has torch and not this package. Returns its python."""
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    py = where / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # this environment's packages, added as a path: its .pth files (the editable aidetect_utils) are not run
    (site / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return py


# ------------------------------------------------------------------ small notebook series for the runner
def write_notebook(path: Path, cells: list) -> Path:
    """An .ipynb of ``cells`` (nbformat cells) with the ``python3`` kernel, as papermill runs it."""
    import nbformat
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def parameters_cell():
    """The cell papermill injects ``profile`` and ``overrides`` after (tagged ``parameters``)."""
    import nbformat
    cell = nbformat.v4.new_code_cell("profile = 'smoke'\noverrides = {}")
    cell.metadata["tags"] = ["parameters"]
    return cell


def train_series(tmp_path: Path, body: str, types: dict | None = None) -> Path:
    """``notebooks/00_train.ipynb`` (parameters, ``P = params.load(...)``, then ``body``) and a
    profiles.yaml giving it one parameter, ``lr``; ``types``: its ``types:`` section."""
    import nbformat
    import yaml
    d = tmp_path / "notebooks"
    d.mkdir(exist_ok=True)
    write_notebook(d / "00_train.ipynb", [
        parameters_cell(),
        nbformat.v4.new_code_cell("from aidetect_utils import params\nP = params.load(profile, '00_train', overrides)"),
        nbformat.v4.new_code_cell(body)])
    profiles = {"defaults": {"00_train": {"lr": 0.01}}, "smoke": {}}
    if types:
        profiles["types"] = types
    (d / "profiles.yaml").write_text(yaml.safe_dump(profiles))
    return d


def save_small_detector(folder: Path, imagenet: bool = False) -> Path:
    """A small EfficientNet-Lite0 detector (head width 16, seeded; ImageNet backbone weights when
    ``imagenet``) saved as a model folder that ``predict`` loads alone, for 32-px images."""
    import torch
    from aidetect_utils import artifacts, models, transforms
    torch.manual_seed(0)
    model = models.EfficientNetDetector("tf_efficientnet_lite0", hidden=16, dropout=0.5)
    if imagenet:
        models.load_lite0_imagenet(model.backbone)
    artifacts.save_model_folder(folder, model.eval(), method="t",
                                preprocessing=transforms.preprocessing(32, source_size=32),
                                architecture={"builder": "efficientnet_detector",
                                              "kwargs": {"backbone": "tf_efficientnet_lite0", "hidden": 16}})
    return folder
