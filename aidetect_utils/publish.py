"""The notebooks a learner opens, and the smoke snapshots CI checks, from one source of code.

``notebooks/NN_*.ipynb`` are the learner's copies: each shows a real run (``--profile cpu``, or a
GPU run named as such) whose numbers agree with its text. ``tests/notebooks/NN_*.ipynb`` are
smoke snapshots: the same notebooks executed with ``--profile smoke``, which CI re-executes and
compares with nbval (cells tagged ``nbval-check-output``). Both are written by the runner
(``pipeline --publish`` / ``--snapshot``) through :func:`clean`, never edited by hand, and a
test proves their code cells identical. Editing a notebook means editing ``notebooks/``, then
re-running both.

:func:`clean` turns papermill's executed copy into a readable notebook: the injected-parameters
cell is folded into the parameters cell (which then says the profile that ran), papermill's
metadata, widget state and machine paths go, a short "this copy shows" cell says the profile,
hardware, library versions and wall time, and ``metadata.aidetect.code_sha256`` records which
code produced the outputs. A notebook with an error output is refused.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
import re
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from .paths import project_root
from .runs import write_beside_then_rename

PARAMETERS = '''profile = {profile}{pad}# "smoke", "cpu" or "full" (the table above); also "gpu" and "rehearsal"
overrides = {overrides}{pad2}# any parameter shown by P below, on top of the profile, e.g. {{"seed": 0}}
'''
RUN_INFO_TAG = "run-info"
#: absolute paths a reader must never see (what the test and the before-stop check look for)
MACHINE_PATH = re.compile(r"(?<![\w.])/(?:tmp|work|root|home|Users|private|var/folders)/[^\s'\"<>)\]]*")


def parameters_source(profile: str, overrides: dict | None = None) -> str:
    """The parameters cell for a profile, as a reader would type it (double-quoted strings)."""
    p, o = json.dumps(profile), repr(dict(overrides or {}))
    return PARAMETERS.format(profile=p, overrides=o, pad=" " * max(1, 20 - len("profile = ") - len(p)),
                             pad2=" " * max(1, 20 - len("overrides = ") - len(o)))


def code_cells(nb: dict) -> list[str]:
    """The source of every code cell except the parameters cell (what a profile does not change)."""
    out = []
    for c in nb["cells"]:
        if c["cell_type"] != "code" or "parameters" in c.get("metadata", {}).get("tags", []):
            continue
        out.append("".join(c["source"]) if isinstance(c["source"], list) else c["source"])
    return out


def code_sha256(nb: dict) -> str:
    return hashlib.sha256("\n\x00\n".join(code_cells(nb)).encode()).hexdigest()


def _source(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def _scrub(text: str | list[str], roots: list[tuple[str, str]]) -> str | list[str]:
    """``text`` (a string, or a notebook's list of lines) with each machine path replaced."""
    if isinstance(text, list):
        return [_scrub(line, roots) for line in text]
    for path, replacement in roots:
        text = text.replace(path, replacement)
    return text


def _scrub_output(out: dict, roots) -> dict | None:
    if out.get("output_type") == "error":
        raise ValueError(f"an error output ({out.get('ename')}: {out.get('evalue')}): a notebook with an error is "
                         "never published")
    out = copy.deepcopy(out)
    data = out.get("data")
    if data is not None:
        data.pop("application/vnd.jupyter.widget-view+json", None)   # widget state is not saved: orphaned views
        if not data:
            return None
        for key in ("text/plain", "text/html", "text/markdown", "text/latex"):
            if key in data:
                data[key] = _scrub(data[key], roots)
    if "text" in out:
        out["text"] = _scrub(out["text"], roots)
    out.get("metadata", {}).pop("papermill", None)
    return out


def machine_paths(nb: dict) -> list[str]:
    """Absolute machine paths anywhere in a notebook's outputs, sources or metadata."""
    return sorted(set(MACHINE_PATH.findall(json.dumps(nb))))


def describe_hardware() -> str:
    import torch
    if torch.cuda.is_available():
        return f"one {torch.cuda.get_device_name(0)} GPU"
    return f"a {os.cpu_count()}-core {platform.machine()} CPU, no GPU"


def run_info(profile: str, overrides: dict, seconds: float, hardware: str, versions: str, when: str) -> str:
    extra = f" with `overrides = {overrides!r}`" if overrides else ""
    mins = f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"
    return (f"> **This copy shows a real run** of the `{profile}` profile{extra} on {hardware} "
            f"({versions}): {mins} wall time, {when}. Every number below comes from that run; "
            f"choose another profile in the parameters cell to reproduce it or to run bigger.")


def versions() -> str:
    import torch
    import transformers
    return f"Python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}"


def clean(nb: dict, *, profile: str, overrides: dict | None, seconds: float, roots: list[tuple[str, str]] | None = None,
          hardware: str | None = None) -> dict:
    """A readable copy of papermill's executed notebook ``nb`` (see the module docstring)."""
    nb = copy.deepcopy(nb)
    roots = sorted(roots or [], key=lambda r: -len(r[0]))
    cells = []
    for c in nb["cells"]:
        tags = c.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags or RUN_INFO_TAG in tags:
            continue
        c.get("metadata", {}).pop("papermill", None)
        c.get("metadata", {}).pop("execution", None)
        if "parameters" in tags:
            c["source"] = _source(parameters_source(profile, overrides))
        if c["cell_type"] == "code":
            c["outputs"] = [o for o in (_scrub_output(o, roots) for o in c.get("outputs", [])) if o is not None]
        cells.append(c)
    info = {"cell_type": "markdown", "id": "run-info", "metadata": {"tags": [RUN_INFO_TAG]},
            "source": _source(run_info(profile, dict(overrides or {}), seconds, hardware or describe_hardware(),
                                       versions(), datetime.now(timezone.utc).strftime("%Y-%m-%d")))}
    # right under the title and the setup cell, the first thing a reader sees
    anchor = next((i for i, c in enumerate(cells) if SETUP_TAG in c.get("metadata", {}).get("tags", [])), None)
    if anchor is None:
        anchor = next((i for i, c in enumerate(cells) if c["cell_type"] == "markdown"
                       and "".join(c["source"]).lstrip().startswith("# ")), 0)
    nb["cells"] = cells[:anchor + 1] + [info] + cells[anchor + 1:]
    for key in ("papermill", "widgets"):
        nb["metadata"].pop(key, None)
    nb["metadata"]["aidetect"] = {"profile": profile, "overrides": dict(overrides or {}),
                                  "wall_seconds": round(seconds, 1), "code_sha256": code_sha256(nb)}
    left = machine_paths(nb)
    if left:
        raise ValueError(f"machine paths left in the outputs: {left[:3]} (print paths relative to the project)")
    return nb


def default_roots(project: Path) -> list[tuple[str, str]]:
    """Machine paths that may legitimately show up in outputs, and what the reader sees instead."""
    roots = [(str(project.resolve()) + "/", ""), (str(project.resolve()), ".")]
    cifake = os.environ.get("AIDETECT_CIFAKE")
    if cifake:
        p = Path(cifake).expanduser().resolve()
        roots.append((str(p), f"$AIDETECT_CIFAKE ({p.name})"))
    tmp = tempfile.gettempdir()
    roots.append((str(Path(tmp).resolve()) + "/", "<tmp>/"))
    return roots


def write(nb: dict, path: Path) -> None:
    import nbformat
    from nbformat.validator import normalize
    _, nb = normalize(nbformat.from_dict(nb))        # cell ids where missing
    write_beside_then_rename(path, lambda tmp: nbformat.write(nbformat.from_dict(nb), str(tmp)))


# ------------------------------------------------------------------ the common header (Colab)
BADGE_TAG, SETUP_TAG = "colab-badge", "setup"
SETUP = """# Setup (run first). In a clone it only checks the machine; opened alone, as Colab opens a
# notebook from GitHub (in /content), it clones the project and installs its package, keeping
# the torch that is already there.
KEEP_ON_DRIVE = False   # Colab: True keeps data/ and results/ on Google Drive, for the next notebook's runtime
import os, subprocess, sys
from pathlib import Path
REPO = os.environ.get("AIDETECT_REPO_URL", "{url}")   # pyproject.toml [project.urls]
root = next((p for p in (Path.cwd(), *Path.cwd().parents) if (p / "aidetect_utils" / "__init__.py").exists()), None)
if root is None:
    root = Path.cwd() / "{name}"
    if not root.exists():
        subprocess.run(["git", "clone", "--depth", "1", REPO, str(root)], check=True)
os.chdir(root / "notebooks")
try:
    import aidetect_utils
except ModuleNotFoundError:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", str(root)], check=True)
    sys.path.insert(0, str(root))   # the running kernel does not see a fresh install on its own
import torch
from aidetect_utils import gpu, paths
if KEEP_ON_DRIVE:
    paths.keep_on_drive()
print("torch", torch.__version__, "|", f"GPU: {{torch.cuda.get_device_name(0)}}" if torch.cuda.is_available() else
      "no GPU: the smoke and cpu profiles run on this CPU; full and colab need a GPU (Colab: Runtime > Change runtime type)")
gpu.ensure_bitsandbytes()   # on a GPU only: 05/06 load their 7B model in 4 bits with it
"""


def repository_url(project: Path | None = None) -> str:
    """The project's public address: ``[project.urls] Repository`` in pyproject.toml."""
    text = ((project or project_root()) / "pyproject.toml").read_text()
    try:
        import tomllib   # Python 3.11+
        return tomllib.loads(text)["project"]["urls"]["Repository"].rstrip("/")
    except ImportError:
        return re.search(r'^Repository\s*=\s*"([^"]+)"', text, re.M).group(1).rstrip("/")


def colab_url(repo: str, notebook: str, folder: str = "notebooks") -> str:
    owner_name = repo.split("github.com/", 1)[1]
    return f"https://colab.research.google.com/github/{owner_name}/blob/main/{folder}/{notebook}.ipynb"


def badge_source(repo: str, notebook: str, folder: str = "notebooks") -> str:
    return (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"({colab_url(repo, notebook, folder)}) "
            f"[![View on GitHub](https://img.shields.io/badge/view%20on-GitHub-181717?logo=github)]"
            f"({repo}/blob/main/{folder}/{notebook}.ipynb)")


def setup_source(repo: str) -> str:
    return SETUP.format(url=repo, name=repo.rsplit("/", 1)[1])


def sync_header(nb: dict, notebook: str, repo: str, folder: str = "notebooks") -> dict:
    """``nb`` with its first two cells the badge and the setup cell rendered for ``repo`` (added
    when missing, replaced when present): the common header, generated, never hand-edited.
    ``folder``: where the notebook lives in the repository (``solutions`` for the solutions)."""
    cells = [c for c in nb["cells"] if not ({BADGE_TAG, SETUP_TAG} & set(c.get("metadata", {}).get("tags", [])))]
    badge = {"cell_type": "markdown", "id": "colab-badge", "metadata": {"tags": [BADGE_TAG]},
             "source": _source(badge_source(repo, notebook, folder))}
    old_setup = next((c for c in nb["cells"] if SETUP_TAG in c.get("metadata", {}).get("tags", [])), None)
    setup = {"cell_type": "code", "id": "setup", "execution_count": None, "metadata": {"tags": [SETUP_TAG]},
             "outputs": old_setup.get("outputs", []) if old_setup else [], "source": _source(setup_source(repo))}
    nb = copy.deepcopy(nb)
    nb["cells"] = [badge] + cells[:1] + [setup] + cells[1:] if cells and cells[0]["cell_type"] == "markdown" \
        else [badge, setup] + cells
    return nb


def main(argv: list[str] | None = None) -> int:
    """``python -m aidetect_utils.publish sync``: render the badge and setup cell of every
    notebook (learner copies, smoke snapshots and solutions) from pyproject.toml's address."""
    import argparse
    ap = argparse.ArgumentParser(prog="python -m aidetect_utils.publish")
    ap.add_argument("command", choices=["sync"])
    ap.parse_args(argv)
    root = project_root()
    repo = repository_url(root)
    for folder, shown in ((root / "notebooks", "notebooks"), (root / "tests" / "notebooks", "notebooks"),
                          (root / "solutions", "solutions")):
        for path in sorted(folder.glob("[0-9][0-9]_*.ipynb")):
            nb = sync_header(json.loads(path.read_text()), path.stem, repo, shown)
            write(nb, path)
            print("synced", path.relative_to(root))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
