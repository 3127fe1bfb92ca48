"""Run the notebook series headless: ``python -m aidetect_utils.pipeline --profile smoke``.

Executes ``notebooks/NN_*.ipynb`` in order with papermill, injecting the chosen ``profile``
and the ``-p`` overrides; each notebook reads its values from ``notebooks/profiles.yaml``
(``params.load``), which are checked here first, so an unknown profile or parameter stops the
run before any notebook starts. Executed copies go to ``results/notebooks/<profile>/``;
``--publish`` also writes a cleaned copy back over ``notebooks/`` (the learner's copies: a real
run, ``--profile cpu``), ``--snapshot`` to ``tests/notebooks/`` (the smoke snapshots CI checks
with nbval); see ``publish``. The first failing notebook stops the run with the notebook, the cell and the
error named, and the exit status is 1 (also when the kernel itself died: killed, or out of
memory). After each notebook the console says, per training phase, whether it was "trained",
"resumed at epoch N" or "reloaded (same settings)" (see ``runlog``).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

from . import params, runlog
from .paths import project_root


def select(notebooks: list[Path], only: list[str] | None) -> list[Path]:
    if not only:
        return notebooks
    chosen = [nb for nb in notebooks if any(nb.stem == o or nb.stem.startswith(o) for o in only)]
    unknown = [o for o in only if not any(nb.stem == o or nb.stem.startswith(o) for nb in notebooks)]
    if unknown:
        raise ValueError(f"--only {unknown}: no such notebook in {[nb.stem for nb in notebooks]}")
    return chosen


def parse_overrides(pairs: list[list[str]] | None) -> dict:
    """``[["backbone", "tf_efficientnet_lite0"], ["input_size", "224"]]`` -> parameters, each value
    read as YAML (so ``224`` is an int, ``null`` is None, ``[1, 2]`` a list), like papermill's ``-y``."""
    return {name: yaml.safe_load(value) for name, value in pairs or []}


def run(profile: str = "smoke", only: list[str] | None = None, data: str | None = None,
        publish_to: Path | None = None, notebooks_dir: Path | None = None, out_dir: Path | None = None,
        profiles_file: Path | None = None, kernel: str = "python3", overrides: dict | None = None) -> list[dict]:
    """Execute the notebooks; return one record per notebook (name, seconds, output path).

    ``overrides``: parameters set on top of the profile's, for the selected notebooks that have
    them (a name no selected notebook has is an error). ``publish_to``: a folder that receives a
    cleaned copy of each executed notebook (``publish.clean``).

    Raises :class:`NotebookFailed` naming the notebook, cell and error of the first failure.
    """
    import papermill as pm

    root = project_root()
    nb_dir = notebooks_dir or root / "notebooks"
    profiles_file = profiles_file or nb_dir / "profiles.yaml"
    notebooks = select(sorted(nb_dir.glob("[0-9][0-9]_*.ipynb")), only)
    profiles = params.load_profiles(profiles_file)
    own = {}
    for nb in notebooks:   # every value checked before the first notebook starts
        names = set(params.defaults_for(profiles, nb.stem))
        own[nb.name] = {k: v for k, v in (overrides or {}).items() if k in names}
        params.load(profile, nb.stem, own[nb.name], path=profiles_file)
    unused = sorted(set(overrides or {}) - {k for o in own.values() for k in o})
    if unused:
        raise ValueError(f"-p {', '.join(unused)}: not a parameter of {', '.join(nb.stem for nb in notebooks)} "
                         "(see notebooks/profiles.yaml)")
    out = out_dir or root / "results" / "notebooks" / profile
    out.mkdir(parents=True, exist_ok=True)
    if data:
        os.environ["AIDETECT_CIFAKE"] = str(Path(data).expanduser().resolve())
    # Headless runs show no live cell output, so progress bars would only clutter the saved
    # notebooks; this runner prints per-notebook progress instead.
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers reads it at import
    records = []
    for nb in notebooks:
        target = out / nb.name
        injected = {"profile": profile, "overrides": own[nb.name]}
        print(f"[pipeline] {nb.name} ({profile}) -> {target}", flush=True)
        t0 = time.perf_counter()
        fd, log = tempfile.mkstemp(prefix="aidetect-runlog-", suffix=".jsonl")
        os.close(fd)
        # the kernel inherits these: engine.fit appends one line per phase to the run log, and
        # params.load reads this project's profiles.yaml
        saved = {k: os.environ.get(k) for k in (runlog.ENV_VAR, "AIDETECT_ROOT")}
        os.environ.update({runlog.ENV_VAR: log, "AIDETECT_ROOT": str(nb_dir.parent)})
        try:
            pm.execute_notebook(str(nb), str(target), parameters=injected, kernel_name=kernel,
                                cwd=str(nb_dir), progress_bar=False, log_output=False)
        except pm.PapermillExecutionError as exc:
            raise NotebookFailed(nb.name, exc.exec_count, _failed_cell(target), exc.ename, exc.evalue,
                                 target) from None
        except Exception as exc:  # noqa: BLE001 - the kernel died (DeadKernelError), timed out, or would not start
            raise NotebookFailed(nb.name, *_running_cell(target), type(exc).__name__,
                                 _kernel_failure(exc), target) from None
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
            _print_phases(nb.name, log)
            Path(log).unlink(missing_ok=True)
        seconds = time.perf_counter() - t0
        print(f"[pipeline] {nb.name} done in {seconds:.1f} s", flush=True)
        if publish_to is not None:
            _publish(target, Path(publish_to) / nb.name, profile, own[nb.name], seconds, nb_dir.parent)
        records.append({"notebook": nb.name, "seconds": round(seconds, 1), "output": str(target)})
    return records


def _failed_cell(path: Path) -> str:
    """First code line of the cell whose output is an error in the executed copy."""
    import nbformat
    try:
        for cell in nbformat.read(path, 4).cells:
            if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
                lines = [ln for ln in cell.source.splitlines() if ln.strip() and not ln.startswith("#")]
                return (lines or ["?"])[0][:80]
    except (OSError, ValueError):
        pass
    return "?"


def _publish(executed: Path, dest: Path, profile: str, overrides: dict, seconds: float, project: Path) -> None:
    import nbformat

    from . import publish
    nb = publish.clean(nbformat.read(executed, 4), profile=profile, overrides=overrides, seconds=seconds,
                       roots=publish.default_roots(project))
    publish.write(nb, dest)
    print(f"[pipeline]   published {dest.relative_to(project) if dest.is_relative_to(project) else dest}", flush=True)


def _print_phases(notebook: str, log: str) -> None:
    for rec in runlog.read(log):
        print(f"[pipeline]   {Path(notebook).stem[:2]} {rec['step']}: {rec['status']}", flush=True)


def _running_cell(path: Path) -> tuple[object, str]:
    """(execution count, first code line) of the cell that was running when the kernel stopped
    answering, from the executed copy papermill saved: the last cell papermill started (numbered
    as Jupyter would have, when the kernel died before numbering it). ("?", "?") when unknown."""
    import nbformat
    found, count = ("?", "?"), 0
    try:
        for cell in nbformat.read(path, 4).cells:
            if cell.cell_type != "code" or not cell.get("metadata", {}).get("papermill", {}).get("start_time"):
                continue
            count = cell.get("execution_count") or count + 1
            lines = [ln for ln in cell.source.splitlines() if ln.strip() and not ln.startswith("#")]
            found = (count, (lines or ["?"])[0][:80])
    except (OSError, ValueError):
        pass
    return found


def _kernel_failure(exc: Exception) -> str:
    name = type(exc).__name__
    if name == "DeadKernelError":
        return "the kernel died (killed, or out of memory); finished phases keep their checkpoints"
    from .images import one_line
    return one_line(exc, 200) or name


class NotebookFailed(RuntimeError):
    def __init__(self, notebook, exec_count, first_line, ename, evalue, output):
        self.notebook, self.exec_count, self.ename, self.evalue = notebook, exec_count, ename, evalue
        super().__init__(f"{notebook} failed in cell In [{exec_count}] `{first_line}`: {ename}: {evalue} "
                         f"(executed copy with the traceback: {output})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m aidetect_utils.pipeline", description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="smoke",
                    help="smoke (default), cpu, full, rehearsal or gpu: see notebooks/profiles.yaml")
    ap.add_argument("--only", nargs="+", metavar="NB", help="notebook names or number prefixes, e.g. 00 04")
    ap.add_argument("--data", help="CIFAKE folder or archive (default: $AIDETECT_CIFAKE, else download)")
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--publish", action="store_true",
                       help="also write cleaned copies over notebooks/ (the learner's copies: use --profile cpu)")
    where.add_argument("--snapshot", action="store_true",
                       help="also write cleaned copies to tests/notebooks/ (the smoke snapshots nbval checks)")
    ap.add_argument("--kernel", default="python3")
    ap.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                    help="set a notebook parameter on top of the profile (value read as YAML), for "
                         "every selected notebook, e.g. --only 04 -p input_size 224")
    args = ap.parse_args(argv)
    try:
        root = project_root()
        dest = root / "notebooks" if args.publish else (root / "tests" / "notebooks" if args.snapshot else None)
        records = run(args.profile, args.only, args.data, dest, kernel=args.kernel,
                      overrides=parse_overrides(args.parameter))
    except NotebookFailed as exc:
        print(f"[pipeline] FAILED: {exc}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as exc:
        print(f"[pipeline] error: {exc}", file=sys.stderr)
        return 2
    total = sum(r["seconds"] for r in records)
    print(f"[pipeline] {len(records)} notebook(s) in {total:.1f} s: " +
          ", ".join(f"{r['notebook']} {r['seconds']} s" for r in records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
