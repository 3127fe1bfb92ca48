"""What a learner opens: the published notebooks (a real run), the smoke snapshots CI re-executes
with nbval, their common header, and nothing in them a reader should not see."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from aidetect_utils import publish

ROOT = Path(__file__).resolve().parents[1]
LEARNER = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SNAPSHOTS = ROOT / "tests" / "notebooks"
ALL = LEARNER + sorted(SNAPSHOTS.glob("[0-9][0-9]_*.ipynb"))


def _nb(path: Path) -> dict:
    return json.loads(path.read_text())


def _text(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def test_there_is_a_snapshot_for_every_notebook_and_nothing_else():
    assert len(LEARNER) == 8
    assert sorted(p.name for p in SNAPSHOTS.glob("*.ipynb")) == [p.name for p in LEARNER]


@pytest.mark.parametrize("path", ALL, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_nothing_a_reader_should_not_see(path):
    nb = _nb(path)
    raw = path.read_text()
    assert publish.machine_paths(nb) == []
    assert "papermill" not in nb["metadata"] and "widgets" not in nb["metadata"]
    assert "application/vnd.jupyter.widget-view+json" not in raw
    for c in nb["cells"]:
        assert "papermill" not in c.get("metadata", {})
        assert "injected-parameters" not in c.get("metadata", {}).get("tags", [])
        assert "NBVAL_" not in _text(c), "test markers belong in cell tags, not in the code"
        assert "[[NUMBER" not in _text(c), "a text placeholder for a measured number was never filled in"
        for o in c.get("outputs", []):
            assert o["output_type"] != "error"
            assert "Traceback (most recent call last)" not in json.dumps(o)


@pytest.mark.parametrize("learner", LEARNER, ids=lambda p: p.stem)
def test_snapshot_runs_exactly_the_learner_code(learner):
    """One source of code: the smoke snapshot differs from the learner copy only in its
    parameters cell (the profile) and its outputs."""
    mine, snap = _nb(learner), _nb(SNAPSHOTS / learner.name)
    assert publish.code_cells(snap) == publish.code_cells(mine)
    text = [[_text(c) for c in nb["cells"] if c["cell_type"] == "markdown" and publish.RUN_INFO_TAG
             not in c["metadata"].get("tags", [])] for nb in (snap, mine)]
    assert text[0] == text[1]                                       # and the same text around it
    params = [_text(c) for c in snap["cells"] if "parameters" in c["metadata"].get("tags", [])]
    assert params == [publish.parameters_source("smoke", {})]
    assert snap["metadata"]["aidetect"]["profile"] == "smoke"
    checked = [c for c in snap["cells"] if "nbval-check-output" in c["metadata"].get("tags", [])]
    assert checked and all(c.get("outputs") for c in checked)       # nbval has outputs to compare


@pytest.mark.parametrize("learner", LEARNER, ids=lambda p: p.stem)
def test_learner_copy_shows_a_real_run_of_its_own_code(learner):
    nb = _nb(learner)
    meta = nb["metadata"]["aidetect"]
    assert meta["profile"] in ("cpu", "gpu", "full")                  # never the smoke profile
    assert meta["code_sha256"] == publish.code_sha256(nb), "code changed since the run: republish (README)"
    params = [_text(c) for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])]
    assert params == [publish.parameters_source(meta["profile"], meta["overrides"])]
    info = [_text(c) for c in nb["cells"] if publish.RUN_INFO_TAG in c["metadata"].get("tags", [])]
    assert len(info) == 1 and f"`{meta['profile']}` profile" in info[0] and "wall time" in info[0]
    assert all(c.get("execution_count") for c in nb["cells"] if c["cell_type"] == "code")


@pytest.mark.parametrize("path", ALL, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_colab_header_is_generated_from_the_project_address(path):
    repo = publish.repository_url(ROOT)
    nb = _nb(path)
    synced = publish.sync_header(nb, path.stem, repo)
    assert [_text(c) for c in synced["cells"]] == [_text(c) for c in nb["cells"]], \
        "run python -m aidetect_utils.publish sync"
    badge = _text(nb["cells"][0])
    assert publish.colab_url(repo, path.stem) in badge and "colab-badge.svg" in badge


def test_readme_badges_follow_the_project_address():
    repo = publish.repository_url(ROOT)
    readme = (ROOT / "README.md").read_text()
    for p in LEARNER:
        assert publish.colab_url(repo, p.stem) in readme, f"README has no Colab badge for {p.stem}"


@pytest.mark.parametrize("learner", LEARNER, ids=lambda p: p.stem)
def test_teaching_text(learner):
    """Each notebook ends with what it taught, cites its sources and offers exercises."""
    md = [_text(c) for c in _nb(learner)["cells"] if c["cell_type"] == "markdown"]
    learned = [t for t in md if t.lstrip().startswith("## What we learned")]
    assert learned, "a 'What we learned' section"
    exercises = next((t for t in md if t.lstrip().startswith("## Exercises")), "")
    assert len(re.findall(r"^\s*\d+\.\s", exercises, re.M)) >= 2 and "hint" in exercises.lower()
    refs = next((t for t in md if t.lstrip().startswith("## References")), "")
    assert re.search(r"\(\d{4}\)", refs) and "http" in refs


def test_clean_turns_an_executed_notebook_into_a_readable_one(tmp_path):
    """publish.clean on papermill's output: machine paths replaced in every output form (a string or
    a list of lines), widget views, papermill metadata and the injected cell gone, the parameters
    cell saying the profile that ran, and a notebook holding an error refused."""
    project = tmp_path / "proj"
    here = f"{project}/results/x.csv"
    nb = {"metadata": {"papermill": {"input_path": f"{project}/notebooks/a.ipynb"}, "widgets": {"state": {}}},
          "nbformat": 4, "nbformat_minor": 5, "cells": [
              {"cell_type": "markdown", "id": "t", "metadata": {}, "source": "# 99 · title"},
              {"cell_type": "code", "id": "p", "metadata": {"tags": ["parameters"]}, "execution_count": 1,
               "outputs": [], "source": 'profile = "smoke"\noverrides = {}\n'},
              {"cell_type": "code", "id": "i", "metadata": {"tags": ["injected-parameters"]}, "execution_count": 2,
               "outputs": [], "source": 'profile = "cpu"\n'},
              {"cell_type": "code", "id": "c", "metadata": {"papermill": {"duration": 1.0}}, "execution_count": 3,
               "source": "print(1)", "outputs": [
                   {"output_type": "stream", "name": "stdout", "text": [f"wrote {here}\n", f"{tmp_path}/scratch\n"]},
                   {"output_type": "execute_result", "execution_count": 3, "metadata": {},
                    "data": {"text/plain": f"'{project}'", "application/vnd.jupyter.widget-view+json": {"model_id": "w"}}},
                   {"output_type": "display_data", "metadata": {},
                    "data": {"application/vnd.jupyter.widget-view+json": {"model_id": "v"}}}]}]}
    roots = [(str(project) + "/", ""), (str(project), "."), (str(tmp_path) + "/", "<tmp>/")]
    out = publish.clean(nb, profile="cpu", overrides={}, seconds=12.0, roots=roots, hardware="a test machine")
    assert publish.machine_paths(out) == []
    code = next(c for c in out["cells"] if c["id"] == "c")
    assert code["outputs"][0]["text"] == ["wrote results/x.csv\n", "<tmp>/scratch\n"]
    assert code["outputs"][1]["data"] == {"text/plain": "'.'"} and len(code["outputs"]) == 2
    assert "papermill" not in code["metadata"] and set(out["metadata"]) == {"aidetect"}
    assert [c["id"] for c in out["cells"]] == ["t", "run-info", "p", "c"]
    assert "".join(out["cells"][2]["source"]) == publish.parameters_source("cpu")
    assert out["metadata"]["aidetect"]["code_sha256"] == publish.code_sha256(out)
    nb["cells"][3]["outputs"].append({"output_type": "error", "ename": "ValueError", "evalue": "x", "traceback": []})
    with pytest.raises(ValueError, match="never published"):
        publish.clean(nb, profile="cpu", overrides={}, seconds=1.0, roots=roots, hardware="a test machine")
