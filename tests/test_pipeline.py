"""The papermill runner: profile parameters reach the notebook; a failure names notebook and cell."""

import nbformat
import pytest
import yaml

from aidetect_utils import params, pipeline

from .conftest import parameters_cell, write_notebook


@pytest.fixture()
def series(tmp_path):
    """A two-notebook project: 00 reads its parameters through params.load, 01 fails."""
    d = tmp_path / "notebooks"
    d.mkdir()
    cell = parameters_cell()
    write_notebook(d / "00_a.ipynb", [cell, nbformat.v4.new_code_cell(
        "from aidetect_utils import params\nP = params.load(profile, '00_a', overrides)\n"
        "print('size', P.size * 2, profile)")])
    write_notebook(d / "01_b.ipynb", [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("1 / 0")])
    (d / "profiles.yaml").write_text(yaml.safe_dump({
        "defaults": {"00_a": {"size": 1}, "01_b": {"k": 0}},
        "smoke": {"all": {}}, "big": {"00_a": {"size": 50}}, "bigger": {"extends": "big", "01_b": {"k": 2}}}))
    return d


def test_profile_values_and_parameters(series):
    prof = params.load_profiles(series / "profiles.yaml")
    assert params.profile_values(prof, "bigger", "00_a.ipynb") == {"size": 50}
    assert params.profile_values(prof, "bigger", "01_b") == {"k": 2}
    P = params.load("big", "00_a", {}, path=series / "profiles.yaml")
    assert P.size == 50 and P.profile == "big" and P.rows() == [("size", 50, "profile")]
    assert params.load("big", "00_a", {"size": 3}, path=series / "profiles.yaml").size == 3
    with pytest.raises(ValueError, match="unknown profile 'gpu'; choose from"):
        params.load("gpu", "00_a", path=series / "profiles.yaml")
    with pytest.raises(ValueError, match="'sise' is not a parameter of this notebook"):
        params.load("big", "00_a", {"sise": 3}, path=series / "profiles.yaml")
    with pytest.raises(AttributeError, match="read-only"):
        P.size = 4


def test_runs_with_profile_parameters(series, tmp_path):
    recs = pipeline.run("big", only=["00"], notebooks_dir=series, out_dir=tmp_path / "out")
    assert [r["notebook"] for r in recs] == ["00_a.ipynb"]
    out = nbformat.read(tmp_path / "out" / "00_a.ipynb", 4)
    printed = "".join(o.get("text", "") for c in out.cells for o in c.get("outputs", []))
    assert "size 100 big" in printed
    # papermill injected the profile and the overrides, and nothing else
    injected = next(c for c in out.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert injected.source.splitlines()[1:] == ['profile = "big"', "overrides = {}"]


def test_command_line_parameters_override_the_profile(series, tmp_path, monkeypatch):
    assert pipeline.parse_overrides([["size", "224"], ["name", "lite0"], ["n", "null"]]) == \
        {"size": 224, "name": "lite0", "n": None}
    recs = pipeline.run("big", only=["00"], notebooks_dir=series, out_dir=tmp_path / "out",
                        overrides={"size": 7})
    out = nbformat.read(recs[0]["output"], 4)
    printed = "".join(o.get("text", "") for c in out.cells for o in c.get("outputs", []))
    assert "size 14 big" in printed          # 7, not the profile's 50
    # a name no selected notebook has stops the run before anything starts
    with pytest.raises(ValueError, match="-p tag: not a parameter of 00_a"):
        pipeline.run("big", only=["00"], notebooks_dir=series, out_dir=tmp_path / "out2", overrides={"tag": 1})
    assert not (tmp_path / "out2" / "00_a.ipynb").exists()
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


def test_repository_profiles_are_parameters_of_their_notebooks():
    """Every profile loads for every notebook: no value that is not a parameter (params.load raises)."""
    prof = params.load_profiles()
    assert {"smoke", "cpu", "full", "colab", "gpu", "rehearsal"} <= set(params.profile_names(prof))
    for nb in sorted((params.profiles_file().parent).glob("[0-9][0-9]_*.ipynb")):
        for name in params.profile_names(prof):
            assert params.load(name, nb.stem).profile == name


def test_colab_profile_is_the_real_recipe_cut_to_a_free_t4():
    """`colab` runs the hub checkpoints of `full` (nothing local, nothing tiny), the 7B VLM in
    4 bits on streamed SID_Set, and less work than `full` where `full` would not fit an hour."""
    def load(profile, nb):
        return params.load(profile, nb).as_dict()
    for nb in ("01_vit_finetune", "02_vit_frozen_head", "03_dino_bayesian_head"):
        assert load("colab", nb)["checkpoint"] == load("full", nb)["checkpoint"]
        assert "/" in load("colab", nb)["checkpoint"] and not load("colab", nb)["checkpoint"].startswith("data/")
    assert load("colab", "01_vit_finetune")["epochs"] < load("full", "01_vit_finetune")["epochs"]
    c4, f4 = load("colab", "04_efficientnet_two_phase"), load("full", "04_efficientnet_two_phase")
    assert (c4["backbone"], c4["pretrained"], c4["input_size"]) == ("efficientnet_b0", "timm-hub", 224)
    assert c4["phase1_epochs"] + c4["phase2_epochs"] < f4["phase1_epochs"] + f4["phase2_epochs"]
    for nb in ("05_qwen_vl_method1_sft", "06_qwen_vl_method2_robust"):
        c, f = load("colab", nb), load("full", nb)
        assert c["model_name"] == "Qwen/Qwen2.5-VL-7B-Instruct" and c["load_in_4bit"] is True
        assert c["dataset"] == "sid_set" and c["sid_set_path"] is None and c["backend"] == "auto"
        assert c["n_train"] * c["epochs"] <= 1200 < f["n_train"] and c["n_test"] < f["n_test"]
    assert load("colab", "00_data_preparation")["n_train"] is None          # every CIFAKE image, as full


def test_a_variant_runs_in_its_own_home_on_this_homes_data(tmp_path, monkeypatch):
    """run_variant: the variant's results go to results/variants/<name>/results, the published
    results stay as they were, the prepared data read is this home's, the environment is restored."""
    import json
    import os
    from aidetect_utils import paths, splits
    d = tmp_path / "notebooks"
    d.mkdir()
    write_notebook(d / "04_m.ipynb", [parameters_cell(), nbformat.v4.new_code_cell(
        "import json\nfrom aidetect_utils import params, paths\nP = params.load(profile, '04_m', overrides)\n"
        "out = paths.results_dir() / 'm'\nout.mkdir(parents=True, exist_ok=True)\n"
        "(out / 'metrics.json').write_text(json.dumps({'lr': P.lr, 'prepared_dir': P.prepared_dir}))")])
    (d / "profiles.yaml").write_text(yaml.safe_dump({
        "defaults": {"04_m": {"prepared_dir": None, "lr": 0.1}}, "smoke": {}}))
    home = tmp_path / "home"
    monkeypatch.setenv("AIDETECT_HOME", str(home))
    published = home / "results" / "m"
    published.mkdir(parents=True)
    (published / "metrics.json").write_text('{"lr": 0.1}')
    before = dict(os.environ)
    got = pipeline.run_variant("04_m", "smoke", {"lr": 0.5}, "lr_half", notebooks_dir=d)
    assert got == home / "results" / "variants" / "lr_half" / "results" == pipeline.variant_home("lr_half") / "results"
    assert json.loads((got / "m" / "metrics.json").read_text()) == \
        {"lr": 0.5, "prepared_dir": str(home / "data" / "prepared" / "cifake")}
    assert json.loads((published / "metrics.json").read_text()) == {"lr": 0.1}       # untouched
    assert dict(os.environ) == before and paths.home() == home
    assert (pipeline.variant_home("lr_half") / "notebooks" / "04_m.ipynb").exists()  # the executed copy
    assert splits.default_prepared_dir() == home / "data" / "prepared" / "cifake"
    for bad in ("", "../x", "a/b", ".hidden"):
        with pytest.raises(ValueError, match="plain folder name"):
            pipeline.variant_home(bad)


def test_a_variant_reuses_only_the_checkpoints_it_is_asked_to(tmp_path, monkeypatch):
    """run_variant(reuse=[method]): the method's checkpoint folders are copied into the variant
    at their places (phase1/checkpoints, ...), nothing else of the published run is; a variant
    that already holds a checkpoint keeps its own; a method without checkpoints is one clear error."""
    d = tmp_path / "notebooks"
    d.mkdir()
    write_notebook(d / "04_m.ipynb", [parameters_cell(), nbformat.v4.new_code_cell(
        "from aidetect_utils import paths\n"
        "print(sorted(str(p.relative_to(paths.results_dir())) for p in paths.results_dir().rglob('*') if p.is_file()))")])
    (d / "profiles.yaml").write_text(yaml.safe_dump({"defaults": {"04_m": {"prepared_dir": None}}, "smoke": {}}))
    home = tmp_path / "home"
    monkeypatch.setenv("AIDETECT_HOME", str(home))
    published = home / "results" / "m"
    for phase in ("phase1", "phase2"):
        (published / phase / "checkpoints" / "last").mkdir(parents=True)
        (published / phase / "checkpoints" / "last" / "state.json").write_text(phase)
        (published / phase / "history.json").write_text("[]")
    (published / "metrics.json").write_text("{}")
    own = pipeline.variant_home("v") / "results" / "m" / "phase2" / "checkpoints" / "last"
    own.mkdir(parents=True)
    (own / "state.json").write_text("the variant's own")
    got = pipeline.run_variant("04_m", "smoke", {}, "v", notebooks_dir=d, reuse=["m"])
    files = sorted(str(p.relative_to(got)) for p in got.rglob("*") if p.is_file())
    assert files == ["m/phase1/checkpoints/last/state.json", "m/phase2/checkpoints/last/state.json"]
    assert (got / "m/phase1/checkpoints/last/state.json").read_text() == "phase1"
    assert (own / "state.json").read_text() == "the variant's own"
    with pytest.raises(FileNotFoundError, match="no training checkpoints"):
        pipeline.run_variant("04_m", "smoke", {}, "w", notebooks_dir=d, reuse=["absent"])
