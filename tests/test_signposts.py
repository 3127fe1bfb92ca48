"""Signposts that must stay true: the package's one module map lists every module, and every
file path or ``python -m`` module the documents, scripts and code name exists."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import aidetect_utils

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "aidetect_utils"

# a repository path to a script or document, e.g. gpu_kit/rehearsal.sh, aidetect_utils/domain.py
PATH = re.compile(r"(?<![\w/.-])((?:aidetect_utils|gpu_kit|benchmarks|scripts|tests)/[\w./*-]*\.(?:py|sh|md|yaml|cfg))")
MODULE = re.compile(r"-m ((?:aidetect_utils|gpu_kit)(?:\.\w+)+)")


def _documents() -> list[Path]:
    files = [ROOT / n for n in ("README.md", "RESULTS.md", "results/README.md", "data/README.md",
                                "notebooks/profiles.yaml", ".gitignore", "run.sh", "test.sh")]
    for folder, pattern in (("gpu_kit", "*"), ("benchmarks", "*"), ("scripts", "*"), ("tests", "*.py"),
                            ("aidetect_utils", "**/*.py")):
        files += [p for p in (ROOT / folder).glob(pattern) if p.is_file() and p.suffix in (".py", ".sh", ".md")]
    return [f for f in files if f.exists()]


def test_the_module_map_lists_every_module():
    doc = aidetect_utils.__doc__
    modules = {".".join(p.relative_to(PKG).with_suffix("").parts) for p in PKG.rglob("*.py")
               if p.name != "__init__.py" and "__pycache__" not in p.parts}
    assert len(modules) > 20
    missing = sorted(m for m in modules if f"``{m}``" not in doc)
    assert not missing, f"aidetect_utils/__init__.py's module map lacks {missing}"
    listed = set(re.findall(r"^\s*- ``([\w.]+)``", doc, re.M)) - {"vlm"}
    assert not listed - modules, f"the module map lists modules that do not exist: {sorted(listed - modules)}"


def test_every_path_and_module_named_exists():
    stale = []
    for f in _documents():
        text = f.read_text(errors="replace")
        for path in PATH.findall(text):
            if not (any(ROOT.glob(path)) if "*" in path else (ROOT / path).exists()):
                stale.append(f"{f.relative_to(ROOT)}: {path}")
        for module in MODULE.findall(text):
            if importlib.util.find_spec(module) is None:
                stale.append(f"{f.relative_to(ROOT)}: -m {module}")
    assert not stale, "named but missing:\n" + "\n".join(stale)


def test_readme_points_to_the_results_and_the_gpu_kit():
    readme = (ROOT / "README.md").read_text()
    assert "[RESULTS.md](RESULTS.md)" in readme and "gpu_kit/README.md" in readme
    assert "## Measured here" not in readme and "## Measured here" in (ROOT / "RESULTS.md").read_text()
