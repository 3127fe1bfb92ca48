"""What a training step tells the console of a headless run: "trained", "resumed at epoch N" or
"reloaded (same settings)", per phase.

A notebook run by papermill prints into the executed notebook, not the terminal, so a headless
user would not see that a phase was reloaded instead of trained. :func:`record` prints the line
(for Jupyter users) and, when the runner has set ``AIDETECT_RUN_LOG`` to a file, appends it there
as JSON; ``pipeline`` reads that file after each notebook and prints every line on its console.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

ENV_VAR = "AIDETECT_RUN_LOG"


def record(step: str, status: str, where: str | os.PathLike | None = None, **details) -> None:
    """Say that ``step`` (e.g. "phase 1") was ``status``; kept in the run log when there is one."""
    print(f"[{step}] {status}" + (f" ({Path(where).name}/)" if where else ""), flush=True)
    log = os.environ.get(ENV_VAR)
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, "status": status,
                                "where": str(where) if where else None, **details}, default=str) + "\n")


def read(path: str | os.PathLike) -> list[dict]:
    """The records a run appended to ``path`` (none when it wrote nothing)."""
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
