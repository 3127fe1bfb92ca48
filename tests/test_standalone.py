"""Every notebook run alone, as a Colab badge runs it: a fresh runtime, nothing run before it.

Each case starts from an empty folder outside any clone with only the notebook file in it (what
Colab opens from GitHub) and a fresh Python environment that has torch but not this package.
The notebook's own setup cell clones the project from a local bare repository standing in for
GitHub (no network) and installs it; then the notebook runs top to bottom under the ``smoke``
profile with papermill, in a kernel of that fresh environment. Notebooks 01-06 find no prepared
data and prepare it themselves (``splits.load_prepared``), from ``$AIDETECT_CIFAKE`` as the
source rules say; here that is a small archive of real CIFAKE files, so each case decodes
1,200 images instead of 120,000.

Notebook 07 compares the detectors that 01-06 trained; run alone it has none. With
``train_missing`` it runs the notebook of each missing method first (here one, 04, through
``methods``) and then evaluates it, listing the methods it still lacks with their notebooks.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from aidetect_utils import publish

from .conftest import ROOT, cifake_archive, fresh_env_with_torch

ALONE = sorted(p.name for p in (ROOT / "notebooks").glob("0[0-6]_*.ipynb"))
PER_FOLDER = 300          # real CIFAKE files per train|test x REAL|FAKE folder: smoke needs 400 train, 400 test


@pytest.fixture(scope="module")
def github(tmp_path_factory) -> Path:
    """A bare repository of this commit: what the setup cell clones instead of GitHub."""
    if shutil.which("git") is None:
        pytest.skip("needs git")
    if subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True).returncode:
        pytest.skip("not a git checkout")
    remote = tmp_path_factory.mktemp("github") / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(ROOT), str(remote)], check=True)
    return remote


@pytest.fixture(scope="module")
def small_cifake(tmp_path_factory) -> Path:
    """A .tar.gz in CIFAKE's layout with the first PER_FOLDER files of each of its four folders."""
    out = tmp_path_factory.mktemp("cifake") / "cifake-small.tar.gz"
    taken: dict[str, int] = {}
    with tarfile.open(cifake_archive(), "r:gz") as src, tarfile.open(out, "w:gz") as dst:
        for m in src:
            folder = m.name.rsplit("/", 1)[0]
            if m.isfile() and taken.get(folder, 0) < PER_FOLDER:
                taken[folder] = taken.get(folder, 0) + 1
                dst.addfile(m, io.BytesIO(src.extractfile(m).read()))
            if len(taken) == 4 and min(taken.values()) >= PER_FOLDER:
                break
    assert sorted(taken.values()) == [PER_FOLDER] * 4
    return out


def _method(notebook: Path) -> str | None:
    """The results folder a notebook writes (its ``method`` parameter), read from profiles.yaml."""
    from aidetect_utils import params
    return params.load("smoke", notebook.stem, path=ROOT / "notebooks" / "profiles.yaml").as_dict().get("method")


def _run_alone(name: str, github: Path, small_cifake: Path, tmp_path: Path, *options: str):
    """Run notebook ``name`` as Colab would from its badge; return (the clone, what its cells printed)."""
    content = tmp_path / "content"                       # Colab's working folder
    content.mkdir()
    shutil.copy(ROOT / "notebooks" / name, content / name)
    py = fresh_env_with_torch(tmp_path / "env")
    assert subprocess.run([str(py), "-c", "import aidetect_utils"], cwd=content, capture_output=True).returncode != 0
    env = {**os.environ, "AIDETECT_REPO_URL": f"file://{github}", "AIDETECT_CIFAKE": str(small_cifake),
           "PIP_DISABLE_PIP_VERSION_CHECK": "1", "HF_HUB_OFFLINE": "1"}
    for var in ("AIDETECT_ROOT", "AIDETECT_HOME", "JUPYTER_PATH"):
        env.pop(var, None)
    res = subprocess.run([str(py), "-m", "papermill", name, "executed.ipynb", "-k", "python3",
                          "-p", "profile", "smoke", *options, "--no-progress-bar"],
                         cwd=content, env=env, capture_output=True, text=True, timeout=900)
    clone = content / publish.repository_url(ROOT).rsplit("/", 1)[1]
    assert res.returncode == 0, (res.stderr or res.stdout)[-3000:]
    executed = json.loads((content / "executed.ipynb").read_text())
    said = "".join("".join(o.get("text", "")) for c in executed["cells"] if c["cell_type"] == "code"
                   for o in c.get("outputs", []))
    return clone, said


@pytest.mark.parametrize("name", ALONE)
def test_notebook_runs_alone_in_a_fresh_runtime(name, github, small_cifake, tmp_path):
    clone, said = _run_alone(name, github, small_cifake, tmp_path)
    assert (clone / "aidetect_utils" / "__init__.py").exists()
    prepared = json.loads((clone / "data" / "prepared" / "cifake" / "prepared.json").read_text())
    assert prepared["profile"] == "smoke" and Path(prepared["cache"]).is_relative_to(clone / "data" / "cache")
    if name.startswith("00"):
        assert "preparing it now" not in said                 # 00 prepares with its own cells
    else:
        assert "no prepared data in data/prepared/cifake: preparing it now as notebook 00 does under profile 'smoke'" in said
        method = _method(ROOT / "notebooks" / name)
        record = json.loads((clone / "results" / method / "metrics.json").read_text())
        assert record["profile"] == "smoke" and record["n_test"] > 0
        assert (clone / "results" / method / "model" / "aidetect_model.json").exists()


def test_evaluation_alone_trains_what_is_missing(github, small_cifake, tmp_path):
    """07 opened alone: nothing to compare until ``train_missing`` runs 04 (the one method asked
    for) inside it; then 04's detector is evaluated and the others are named as missing."""
    clone, said = _run_alone("07_evaluation.ipynb", github, small_cifake, tmp_path,
                             "-y", "overrides: {train_missing: true, methods: [efficientnet_two_phase]}")
    record = json.loads((clone / "results" / "efficientnet_two_phase" / "metrics.json").read_text())
    assert record["profile"] == "smoke" and record["n_test"] > 0
    assert (clone / "results" / "notebooks" / "smoke" / "04_efficientnet_two_phase.ipynb").exists()
    assert "1 methods: efficientnet_two_phase" in said
    assert "vit_finetune: no results yet; notebooks/01_vit_finetune.ipynb produces them" in said
    assert not (clone / "results" / "vit_finetune").exists()          # only what was asked for was trained
