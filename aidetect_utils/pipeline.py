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

``--data`` names the source notebook 00 prepares; without 00 among the selected notebooks it
is refused (the other notebooks read only 00's prepared data, so it would change nothing), and
a path that does not exist is refused before anything runs. Ctrl-C stops the running notebook's
kernel at once and ends the run with one line and exit status 130; finished notebooks and saved
checkpoints are kept, so the same command resumes.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from . import params, publish, runlog
from .images import one_line
from .paths import project_root, results_dir


def select(notebooks: list[Path], only: list[str] | None) -> list[Path]:
    if not only:
        return notebooks
    chosen = [nb for nb in notebooks if any(nb.stem == o or nb.stem.startswith(o) for o in only)]
    unknown = [o for o in only if not any(nb.stem == o or nb.stem.startswith(o) for nb in notebooks)]
    if unknown:
        raise ValueError(f"--only {unknown}: no such notebook in {[nb.stem for nb in notebooks]}")
    return chosen


def check_data(data: str | None, notebooks: list[Path]) -> None:
    """Refuse ``--data`` that does not exist, or that no selected notebook would read: only
    notebook 00 prepares data from it (the others load 00's prepared data, so ``--only 04
    --data other.tar.gz`` would silently re-use the old data)."""
    if not data:
        return
    if not Path(data).expanduser().exists():
        raise ValueError(f"--data {data}: no such file or folder")
    if not any(nb.stem[:2] == "00" for nb in notebooks):
        chosen = " ".join(nb.stem[:2] for nb in notebooks)
        raise ValueError(f"--data {data} without notebook 00: only 00 prepares data from it, the others would "
                         f"use the data prepared before; add 00 (--only 00 {chosen}) or leave out --data")


def parse_overrides(pairs: list[list[str]] | None) -> dict:
    """``[["backbone", "tf_efficientnet_lite0"], ["input_size", "224"]]`` -> parameters, each value
    read as YAML (so ``224`` is an int, ``null`` is None, ``[1, 2]`` a list), like papermill's ``-y``."""
    return {name: yaml.safe_load(value) for name, value in pairs or []}


def run(profile: str = "smoke", only: list[str] | None = None, data: str | None = None,
        publish_to: Path | None = None, notebooks_dir: Path | None = None, out_dir: Path | None = None,
        profiles_file: Path | None = None, kernel: str = "python3", overrides: dict | None = None,
        processes: int | None = None) -> list[dict]:
    """Execute the notebooks; return one record per notebook (name, seconds, output path).

    ``overrides``: parameters set on top of the profile's, for the selected notebooks that have
    them (a name no selected notebook has is an error). ``publish_to``: a folder that receives a
    cleaned copy of each executed notebook (``publish.clean``). ``processes``: how many
    processes (GPUs) each training step uses: ``AIDETECT_NUM_PROCESSES`` for the kernels, read
    by ``engine.fit`` and ``vlm.train_lora`` (None: as the environment says, else 1).

    Raises :class:`NotebookFailed` naming the notebook, cell and error of the first failure.
    """
    import papermill as pm

    root = project_root()
    nb_dir = notebooks_dir or root / "notebooks"
    profiles_file = profiles_file or nb_dir / "profiles.yaml"
    notebooks = select(sorted(nb_dir.glob("[0-9][0-9]_*.ipynb")), only)
    check_data(data, notebooks)
    kernel_env = _processes_env(processes)
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
    out = out_dir or results_dir() / "notebooks" / profile   # beside the results, in AIDETECT_HOME when it is set
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
        t0, started = time.perf_counter(), time.time()
        fd, log = tempfile.mkstemp(prefix="aidetect-runlog-", suffix=".jsonl")
        os.close(fd)
        # the kernel inherits these: engine.fit appends one line per phase to the run log, and
        # params.load reads this project's profiles.yaml
        saved = {k: os.environ.get(k) for k in (runlog.ENV_VAR, "AIDETECT_ROOT", *kernel_env)}
        os.environ.update({runlog.ENV_VAR: log, "AIDETECT_ROOT": str(nb_dir.parent), **kernel_env})
        try:
            with _kernel_stops_on_interrupt() as manager_class:
                pm.execute_notebook(str(nb), str(target), parameters=injected, kernel_name=kernel,
                                    cwd=str(nb_dir), progress_bar=False, log_output=False,
                                    kernel_manager_class=manager_class)
        except KeyboardInterrupt:
            fresh = target.exists() and target.stat().st_mtime >= started    # not a copy left by an earlier run
            raise Interrupted(nb.name, *(_running_cell(target) if fresh else ("?", "?")), target) from None
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


@contextlib.contextmanager
def _environment_kept():
    """Run the block, then put ``os.environ`` back exactly as it was (what ``run`` sets for its
    kernels, and a variant's home, do not leak into the calling notebook)."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _ensure_papermill() -> None:
    """Install papermill where it is missing (Colab has none): it executes the notebooks."""
    if importlib.util.find_spec("papermill") is None:
        print("installing papermill (runs the notebooks) ...", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "papermill>=2.6"], check=True)
        importlib.invalidate_caches()


def run_missing(notebooks: list[str], profile: str, kernel: str = "python3") -> list[dict]:
    """Run the method notebooks ``notebooks`` (stems, e.g. ``["04_efficientnet_two_phase"]``)
    one after the other under ``profile``, from inside a notebook: 07 with ``train_missing``,
    where Colab's runtime holds no results of the other notebooks. Each writes its
    ``results/<method>/`` as if it had been run alone (it prepares CIFAKE itself when missing).
    papermill, which executes them, is installed first where it is missing (Colab has none).
    The environment of the calling kernel is left as it was."""
    if not notebooks:
        print("nothing to train: every method asked for has results")
        return []
    _ensure_papermill()
    with _environment_kept():
        return run(profile, only=list(notebooks), kernel=kernel)


def variant_home(name: str) -> Path:
    """Where :func:`run_variant` keeps the variant ``name``: ``results/variants/<name>/``."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"a variant's name must be a plain folder name, got {name!r}")
    return results_dir() / "variants" / name


def run_variant(notebook: str, profile: str, overrides: dict, name: str, kernel: str = "python3",
                notebooks_dir: Path | None = None, reuse: tuple[str, ...] | list[str] = ()) -> Path:
    """Run the notebook ``notebook`` (a stem) under ``profile`` with ``overrides`` as a variant
    of the published run, and return the results folder it wrote.

    What an exercise "re-run notebook 04 with unfreeze_last = 30" needs, from inside a notebook,
    without touching the run it is compared with: the variant gets its own home,
    ``results/variants/<name>/`` (its ``results/<method>/`` inside), and reads this home's
    prepared data (``prepared_dir``; prepared first when missing). A variant already trained
    under the same settings is reloaded by ``engine.fit``, not retrained. papermill is
    installed first where it is missing; the calling kernel's environment is left as it was.

    ``reuse``: methods (``results/<method>/`` folders of this home) whose training checkpoints
    the variant starts with, e.g. ``["efficientnet_two_phase"]`` when only the robust model
    changes: ``engine.fit`` then reloads each run whose fingerprint (settings, data, initial
    weights, code) the override left unchanged, and trains afresh, with a line saying what
    changed, every run it did change. Nothing is reused that the variant already holds."""
    from .paths import HOME_VAR
    from .splits import default_prepared_dir
    home = variant_home(name)
    home.mkdir(parents=True, exist_ok=True)
    _seed_checkpoints(reuse, home / "results")
    _ensure_papermill()
    settings = {"prepared_dir": str(default_prepared_dir()), **overrides}
    with _environment_kept():
        os.environ[HOME_VAR] = str(home)
        run(profile, only=[notebook], kernel=kernel, overrides=settings, out_dir=home / "notebooks",
            notebooks_dir=notebooks_dir)
    return home / "results"


def _seed_checkpoints(methods, results: Path) -> None:
    """Copy the ``checkpoints`` folders of each method of this home into ``results`` (a
    variant's), keeping their places (``<method>/phase1/checkpoints``, ...); one the target
    already has is left as it is."""
    here = results_dir()
    for method in methods:
        found = sorted((here / method).rglob("checkpoints"))
        if not found:
            raise FileNotFoundError(f"reuse={method!r}: {here / method} holds no training checkpoints to start from")
        for ckpt in found:
            place = ckpt.relative_to(here)
            if not (results / place).exists():
                shutil.copytree(ckpt, results / place)
                print(f"variant starts with {place} (reloaded where its settings are unchanged)")


PROCESSES_VAR = "AIDETECT_NUM_PROCESSES"   # engine.PROCESSES_VAR (not imported: the runner does not load torch)


def _processes_env(processes: int | None) -> dict:
    """What the kernels get for ``--processes`` (nothing when it is not given: they inherit
    ``AIDETECT_NUM_PROCESSES`` as set, if at all). A bad number, given or inherited, stops the
    run before any notebook starts, with one line."""
    if processes is not None:
        if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
            raise ValueError(f"--processes {processes}: the number of training processes must be a whole number >= 1")
        return {PROCESSES_VAR: str(processes)}
    raw = os.environ.get(PROCESSES_VAR, "").strip()
    try:
        bad = bool(raw) and int(raw) < 1
    except ValueError:
        bad = True
    if bad:
        raise ValueError(f"{PROCESSES_VAR}={raw!r}: the number of training processes must be a whole number >= 1")
    return {}


_kernels: list = []         # the kernel managers of the notebook running now (see _kernel_stops_on_interrupt)


def _kill_kernel(km) -> None:
    """Stop a kernel at once: SIGKILL to its process group (its own session, so DataLoader
    workers and other children go with it, never this runner)."""
    prov = getattr(km, "provisioner", None)
    pid = getattr(prov, "pid", None) or getattr(getattr(prov, "process", None), "pid", None)
    if not pid:
        return
    with contextlib.suppress(OSError):
        pgid = os.getpgid(pid)
        if pgid != os.getpgid(0):
            os.killpg(pgid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def _kernel_stops_on_interrupt():
    """While a notebook runs, Ctrl-C (SIGINT) kills its kernel first and then interrupts the
    runner (KeyboardInterrupt), so papermill's clean-up finds the kernel gone instead of asking
    a busy one to shut down (which prints the kernel's own tracebacks); further Ctrl-Cs are
    ignored until the runner has said what happened. Yields the kernel manager class for
    papermill, which records each manager it creates. Outside the main thread, or where
    SIGINT is ignored (a background job), nothing changes."""
    from jupyter_client.manager import AsyncKernelManager

    class RecordedKernelManager(AsyncKernelManager):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            _kernels.append(self)

    def on_sigint(signum, frame):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for km in list(_kernels):
            _kill_kernel(km)
        raise KeyboardInterrupt

    try:
        previous = signal.getsignal(signal.SIGINT)
        if previous is signal.SIG_IGN:
            raise ValueError("SIGINT is ignored here")
        signal.signal(signal.SIGINT, on_sigint)
    except ValueError:        # not the main thread, or SIGINT ignored
        previous = None
    try:
        yield RecordedKernelManager
    finally:
        _kernels.clear()
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


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

    nb = publish.clean(nbformat.read(executed, 4), profile=profile, overrides=overrides, seconds=seconds,
                       roots=publish.default_roots(project))
    publish.write(nb, dest)
    print(f"[pipeline]   published {dest.relative_to(project) if dest.is_relative_to(project) else dest}", flush=True)


def _print_phases(notebook: str, log: str) -> None:
    for rec in runlog.read(log):
        on = f" on {rec['processes']} processes" if (rec.get("processes") or 1) > 1 else ""
        print(f"[pipeline]   {Path(notebook).stem[:2]} {rec['step']}: {rec['status']}{on}", flush=True)


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
    return one_line(exc, 200) or name


class Interrupted(Exception):
    """Ctrl-C while a notebook ran; ``str(err)`` is the one line the runner prints."""

    def __init__(self, notebook, exec_count, first_line, output):
        self.notebook = notebook
        where = "before its first cell" if exec_count == "?" else f"in cell In [{exec_count}] `{first_line}`"
        super().__init__(f"interrupted in {notebook} ({where}): its kernel was stopped; "
                         f"finished notebooks and saved checkpoints are kept (executed copy so far: {output}); "
                         "re-run the same command to resume")


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
    ap.add_argument("--processes", type=int, metavar="N",
                    help="train on N processes (one per GPU; on a CPU they share its cores): sets "
                         "AIDETECT_NUM_PROCESSES for the notebooks (default: as set in the environment, else 1)")
    ap.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                    help="set a notebook parameter on top of the profile (value read as YAML), for "
                         "every selected notebook, e.g. --only 04 -p input_size 224")
    args = ap.parse_args(argv)
    try:
        root = project_root()
        dest = root / "notebooks" if args.publish else (root / "tests" / "notebooks" if args.snapshot else None)
        records = run(args.profile, args.only, args.data, dest, kernel=args.kernel,
                      overrides=parse_overrides(args.parameter), processes=args.processes)
    except NotebookFailed as exc:
        print(f"[pipeline] FAILED: {exc}", file=sys.stderr)
        return 1
    except Interrupted as exc:
        print(f"[pipeline] {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("[pipeline] interrupted while no notebook was running: finished notebooks and saved checkpoints "
              "are kept; re-run the same command to resume", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as exc:
        print(f"[pipeline] error: {exc}", file=sys.stderr)
        return 2
    total = sum(r["seconds"] for r in records)
    print(f"[pipeline] {len(records)} notebook(s) in {total:.1f} s: " +
          ", ".join(f"{r['notebook']} {r['seconds']} s" for r in records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
