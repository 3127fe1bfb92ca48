"""The solutions (solutions/NN_*_solutions.ipynb): one notebook per learner notebook, one solution
per exercise with its expected outcome, and every one of them runs top to bottom on the smoke
profile (papermill injects ``profile = "smoke"``), so a solution that stops matching the package
or the notebooks fails here."""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LEARNER = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SOLUTIONS = sorted((ROOT / "solutions").glob("[0-9][0-9]_*_solutions.ipynb"))


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def _text(cell: dict) -> str:
    return "".join(cell["source"])


def exercises_of(learner: Path) -> int:
    """How many numbered exercises the learner notebook's Exercises section lists."""
    section = next(_text(c) for c in _cells(learner) if _text(c).startswith("## Exercises"))
    return len(re.findall(r"^\d+\. ", section, re.M))


def test_one_solutions_notebook_per_learner_notebook():
    assert [p.name for p in SOLUTIONS] == [p.stem + "_solutions.ipynb" for p in LEARNER]


@pytest.mark.parametrize("learner", LEARNER, ids=lambda p: p.stem)
def test_every_exercise_has_a_solution_with_its_expected_outcome(learner):
    solution = ROOT / "solutions" / f"{learner.stem}_solutions.ipynb"
    cells = _cells(solution)
    headings = [int(m.group(1)) for c in cells if c["cell_type"] == "markdown"
                for m in [re.match(r"## Exercise (\d+)\b", _text(c))] if m]
    assert headings == list(range(1, exercises_of(learner) + 1)), f"{solution.name}: exercise headings {headings}"
    # each exercise's part of the notebook holds code and an expected outcome
    starts = [i for i, c in enumerate(cells) if re.match(r"## Exercise \d+", _text(c))] + [len(cells)]
    for n, (a, b) in enumerate(zip(starts, starts[1:]), 1):
        part = cells[a:b]
        assert any(c["cell_type"] == "code" and _text(c).strip() for c in part), f"exercise {n}: no code"
        assert any("**Expected outcome" in _text(c) for c in part if c["cell_type"] == "markdown"), \
            f"exercise {n}: no expected outcome"
    # the learner notebook's Exercises section links to its solutions
    section = next(_text(c) for c in _cells(learner) if _text(c).startswith("## Exercises"))
    assert f"../solutions/{solution.name}" in section, f"{learner.name}: Exercises do not link to {solution.name}"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """One home for all solutions: prepared smoke data and the smoke results they train are shared."""
    return tmp_path_factory.mktemp("solutions_home")


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.stem)
def test_solution_runs_on_smoke(solution, home, tmp_path, monkeypatch):
    import papermill as pm
    monkeypatch.setenv("AIDETECT_HOME", str(home))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    pm.execute_notebook(str(solution), str(tmp_path / solution.name), parameters={"profile": "smoke"},
                        cwd=str(solution.parent), kernel_name="python3", progress_bar=False)
