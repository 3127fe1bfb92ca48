"""The papermill runner: profile parameters reach the notebook; a failure names notebook and cell."""
import json

import nbformat
import pytest
import yaml

from aidetect_utils import pipeline


def _nb(path, cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture()
def series(tmp_path):
    d = tmp_path / "notebooks"
    d.mkdir()
    params = nbformat.v4.new_code_cell("profile = 'smoke'\nsize = 1")
    params.metadata["tags"] = ["parameters"]
    _nb(d / "00_a.ipynb", [params, nbformat.v4.new_code_cell("print('size', size * 2, profile)")])
    _nb(d / "01_b.ipynb", [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("1 / 0")])
    (d / "profiles.yaml").write_text(yaml.safe_dump({"smoke": {"all": {"size": 5}},
                                                     "big": {"00_a": {"size": 50}}}))
    return d


def test_parameters_for():
    prof = {"smoke": {"all": {"seed": 1, "n": 2}, "00_data": {"n": 3}}}
    assert pipeline.parameters_for(prof, "smoke", "00_data.ipynb") == {"seed": 1, "n": 3, "profile": "smoke"}
    with pytest.raises(ValueError, match="unknown profile"):
        pipeline.parameters_for(prof, "gpu", "00_data.ipynb")


def test_runs_with_profile_parameters(series, tmp_path):
    recs = pipeline.run("big", only=["00"], notebooks_dir=series, out_dir=tmp_path / "out")
    assert [r["notebook"] for r in recs] == ["00_a.ipynb"]
    out = nbformat.read(tmp_path / "out" / "00_a.ipynb", 4)
    printed = "".join(o.get("text", "") for c in out.cells for o in c.get("outputs", []))
    assert "size 100 big" in printed


def test_command_line_parameters_override_the_profile(series, tmp_path, monkeypatch):
    assert pipeline.parse_overrides([["size", "224"], ["name", "lite0"], ["n", "null"]]) == \
        {"size": 224, "name": "lite0", "n": None}
    recs = pipeline.run("big", only=["00"], notebooks_dir=series, out_dir=tmp_path / "out",
                        overrides={"size": 7})
    out = nbformat.read(recs[0]["output"], 4)
    printed = "".join(o.get("text", "") for c in out.cells for o in c.get("outputs", []))
    assert "size 14 big" in printed          # 7, not the profile's 50
    # the command line reaches run() with the value read as YAML
    seen = {}
    monkeypatch.setattr(pipeline, "run", lambda *a, **k: seen.update(k) or [])
    assert pipeline.main(["--only", "00", "-p", "size", "224", "-p", "tag", "x"]) == 0
    assert seen["overrides"] == {"size": 224, "tag": "x"}


def test_failure_names_notebook_and_cell(series, tmp_path, capsys):
    with pytest.raises(pipeline.NotebookFailed) as e:
        pipeline.run("smoke", notebooks_dir=series, out_dir=tmp_path / "out")
    assert e.value.notebook == "01_b.ipynb" and e.value.ename == "ZeroDivisionError"
    # named as Jupyter shows it (papermill's injected parameters cell ran first, as In [1])
    assert "01_b.ipynb failed in cell In [3] `1 / 0`: ZeroDivisionError" in str(e.value)
    # the first notebook ran before the failure
    assert (tmp_path / "out" / "00_a.ipynb").exists()


def test_unknown_only_is_an_error(series):
    with pytest.raises(ValueError, match="no such notebook"):
        pipeline.select(sorted(series.glob("*.ipynb")), ["99"])


def test_repository_profiles_cover_every_notebook():
    from aidetect_utils.paths import project_root
    root = project_root()
    prof = pipeline.load_profiles(root / "notebooks" / "profiles.yaml")
    assert {"smoke", "cpu", "full"} <= set(prof)
    for nb in sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        params_cell = next(c for c in nbformat.read(nb, 4).cells if "parameters" in c.metadata.get("tags", []))
        names = {line.split("=")[0].strip() for line in params_cell.source.splitlines()
                 if "=" in line and not line.lstrip().startswith("#")}
        for name in prof:
            extra = set(pipeline.parameters_for(prof, name, nb.name)) - names
            assert not extra, f"{name} profile sets {extra} that {nb.name} has no parameter for"
