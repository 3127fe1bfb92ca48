"""The notebooks' setup cell, run as Colab runs it: in a folder outside any clone, with a fresh
Python environment that already has torch (as Colab does) but not this package. A local bare
git repository of this commit stands in for GitHub (no network); pip builds and installs the
package from the clone, and must not replace the torch that is there."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aidetect_utils import publish

from .conftest import fresh_env_with_torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_setup_cell_clones_and_installs_outside_a_clone(tmp_path):
    if subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True).returncode:
        pytest.skip("not a git checkout")
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(ROOT), str(remote)], check=True)
    content = tmp_path / "content"                    # Colab's working folder
    content.mkdir()
    py = fresh_env_with_torch(tmp_path / "env")
    assert subprocess.run([str(py), "-c", "import aidetect_utils"], cwd=content).returncode != 0
    torch_before = subprocess.run([str(py), "-c", "import torch; print(torch.__file__, torch.__version__)"],
                                  check=True, capture_output=True, text=True).stdout
    nb = json.loads((ROOT / "notebooks" / "04_efficientnet_two_phase.ipynb").read_text())
    setup = next("".join(c["source"]) for c in nb["cells"] if publish.SETUP_TAG in c["metadata"].get("tags", []))
    after = ("\nimport aidetect_utils, torch\nfrom aidetect_utils.paths import project_root\n"
             "print('PKG', aidetect_utils.__file__)\nprint('ROOT', project_root())\n"
             "print('CWD', Path.cwd())\nprint('TORCH', torch.__file__, torch.__version__)\n")
    env = {**os.environ, "AIDETECT_REPO_URL": f"file://{remote}", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("AIDETECT_ROOT", None)
    res = subprocess.run([str(py), "-c", setup + after], cwd=content, env=env, capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    out = dict(line.split(" ", 1) for line in res.stdout.splitlines() if line.split(" ", 1)[0] in
               ("PKG", "ROOT", "CWD", "TORCH"))
    clone = content / publish.repository_url(ROOT).rsplit("/", 1)[1]
    assert out["PKG"].startswith(str(clone / "aidetect_utils"))          # the cloned package is the one imported
    assert out["ROOT"] == str(clone) and out["CWD"] == str(clone / "notebooks")
    assert "torch " in res.stdout and ("GPU:" in res.stdout or "no GPU:" in res.stdout)
    assert "TORCH " + torch_before.strip() == "TORCH " + out["TORCH"].strip()   # the same torch as before
    # run again (a second "Run all"): nothing is cloned or installed twice
    res2 = subprocess.run([str(py), "-c", setup + after], cwd=content, env=env, capture_output=True, text=True)
    assert res2.returncode == 0 and "Cloning" not in res2.stderr


def test_keep_on_drive_moves_data_and_results_to_the_mounted_folder(tmp_path, monkeypatch, capsys):
    """What the setup cell's KEEP_ON_DRIVE does in Colab, with a local folder as the "Drive" (the
    real google.colab mount exists only in Colab): AIDETECT_HOME points there, so data/ and
    results/ (and the paths printed in notebooks) move with it."""
    from aidetect_utils import paths
    monkeypatch.delenv(paths.HOME_VAR, raising=False)
    mounted = []
    folder = tmp_path / "drive" / "MyDrive" / "aidetect"
    got = paths.keep_on_drive(str(folder), mount=mounted.append)
    assert mounted == ["/content/drive"] and folder.is_dir()
    assert got == folder.resolve() and paths.results_dir() == folder.resolve() / "results"
    assert paths.data_dir() == folder.resolve() / "data"
    assert "kept across runtimes" in capsys.readouterr().out
    assert paths.shown(folder / "results" / "vit_finetune") == "$AIDETECT_HOME/results/vit_finetune"
    assert paths.shown(ROOT / "results" / "x") == "results/x"
    assert paths.shown(tmp_path / "elsewhere" / "y") == "y"          # never a machine path


def test_keep_on_drive_outside_colab_changes_nothing(monkeypatch, capsys):
    from aidetect_utils import paths
    monkeypatch.delenv(paths.HOME_VAR, raising=False)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    assert paths.keep_on_drive() == paths.project_root()
    out = capsys.readouterr().out
    assert paths.HOME_VAR not in os.environ and "not in Colab" in out
    assert str(paths.project_root()) not in out                       # no machine path in a notebook's output


def test_bitsandbytes_is_installed_only_on_a_gpu_without_it(monkeypatch, capsys):
    """The setup cell's last call: it installs only on a GPU that lacks bitsandbytes, says so,
    and returns nothing (a value would be shown under the setup cell of every notebook)."""
    import torch
    from aidetect_utils import gpu
    calls = []
    monkeypatch.setattr(gpu.subprocess, "run", lambda cmd, check: calls.append(cmd))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu.ensure_bitsandbytes(installed=lambda: False) is None and calls == []       # a CPU: nothing
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert gpu.ensure_bitsandbytes(installed=lambda: True) is None and calls == []        # already there
    assert capsys.readouterr().out == ""
    assert gpu.ensure_bitsandbytes(installed=lambda: False) is None
    assert calls == [[sys.executable, "-m", "pip", "install", "-q", "bitsandbytes"]]
    assert "installing bitsandbytes" in capsys.readouterr().out


def test_missing_notebooks_names_the_notebooks_of_methods_without_results(tmp_path):
    from aidetect_utils import evaluation as ev, pipeline
    (tmp_path / "efficientnet_two_phase").mkdir()
    (tmp_path / "efficientnet_two_phase" / "metrics.json").write_text("{}")
    everything = ev.missing_notebooks(tmp_path)
    assert "04_efficientnet_two_phase" not in everything
    assert everything == sorted(set(ev.series_methods().values()) - {"04_efficientnet_two_phase"})
    assert ev.missing_notebooks(tmp_path, ["efficientnet_two_phase", "vit_finetune"]) == ["01_vit_finetune"]
    assert ev.missing_notebooks(tmp_path, ["efficientnet_two_phase"]) == []
    assert pipeline.run_missing([], "smoke") == []                    # nothing to run: nothing started
