"""The GPU measurement kit (``gpu_kit/``): outside the package, which never imports it; its
shell scripts parse; its README names every file in it. What the kit builds is tested in
``test_rehearsal.py``."""
from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT / "gpu_kit"


def test_the_kit_is_outside_the_package_and_the_package_never_imports_it():
    assert not (ROOT / "aidetect_utils" / "rehearsal.py").exists()
    for py in (ROOT / "aidetect_utils").rglob("*.py"):
        for node in ast.walk(ast.parse(py.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            assert not any(n.split(".")[0] == "gpu_kit" for n in names), f"{py.name} imports the GPU kit"


@pytest.mark.parametrize("script", sorted(KIT.glob("*.sh")), ids=lambda p: p.name)
def test_the_shell_scripts_parse(script):
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_kit_readme_names_every_file_of_the_kit():
    readme = (KIT / "README.md").read_text()
    files = {p.name for p in KIT.iterdir() if p.is_file() and p.suffix in (".py", ".sh")} - {"__init__.py"}
    assert files and not {f for f in files if f"`{f}`" not in readme}
