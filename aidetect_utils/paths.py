"""Where things live: the project root, ``data/`` and ``results/``, wherever a notebook runs from.

Notebooks run with ``notebooks/`` as the working directory (Jupyter, papermill, nbval) while
the CLI runs from the root; both must read and write the same folders, so every path is built
from :func:`project_root`. ``AIDETECT_ROOT`` overrides it (the code and ``profiles.yaml``).

``AIDETECT_HOME`` moves only what runs produce, ``data/`` and ``results/``, somewhere that
outlives the machine: Colab gives every notebook opened from a badge a fresh runtime whose
disk is wiped, so a learner points ``AIDETECT_HOME`` at a Google Drive folder and notebook 00's
prepared data and each method's model are there for the next notebook.

One run writes one results folder at a time (:func:`hold`): :func:`method_dir` takes an OS
lock on ``results/<method>/`` for the life of the process (a notebook kernel, a script), and
``engine.fit`` for the length of a training run, so a second run started on the same folders
(another kernel, another ``pipeline`` run on the same clone) is refused at once with one line
naming the holder instead of restoring the other run's checkpoints and publishing its numbers.
The lock is ``fcntl.flock`` on ``<folder>/.lock``: the kernel drops it when the holder exits or
is killed, so a killed run never leaves a stale lock behind (the file stays; it is not the lock).
Reading results (notebook 07, ``evaluation``, the predict command) takes no lock.
"""
from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from pathlib import Path

HOME_VAR = "AIDETECT_HOME"
LOCK_FILE = ".lock"


def project_root() -> Path:
    """The folder holding ``pyproject.toml`` above the working directory (or ``AIDETECT_ROOT``)."""
    env = os.environ.get("AIDETECT_ROOT")
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for cand in (here, *here.parents):
        if (cand / "pyproject.toml").exists() and (cand / "aidetect_utils").is_dir():
            return cand
    return here


def home() -> Path:
    """Where ``data/`` and ``results/`` live: ``AIDETECT_HOME`` if set (e.g. a Drive folder in
    Colab), else the project root."""
    env = os.environ.get(HOME_VAR)
    return Path(env).expanduser().resolve() if env else project_root()


def shown(path) -> str:
    """``path`` as a reader may see it in a notebook's output: relative to the project, or as
    ``$AIDETECT_HOME/...`` when it lies in a home set elsewhere (a Drive folder), else only its
    name (no machine path in what is printed)."""
    p = Path(path).expanduser().resolve()
    if p.is_relative_to(project_root()):
        return str(p.relative_to(project_root()))
    if os.environ.get(HOME_VAR) and p.is_relative_to(home()):
        return str(Path(f"${HOME_VAR}") / p.relative_to(home()))
    return p.name


DRIVE_HOME = "/content/drive/MyDrive/aidetect"   # where keep_on_drive puts data/ and results/ in Colab


def keep_on_drive(folder: str = DRIVE_HOME, mount=None) -> Path:
    """In Colab, mount Google Drive and make ``folder`` on it the home of ``data/`` and
    ``results/`` (``AIDETECT_HOME``), so prepared data, checkpoints and results outlive the
    runtime: a notebook opened later from its badge, in a fresh runtime, finds them there.
    Outside Colab it changes nothing and says so. ``mount``: the function that mounts Drive
    (default ``google.colab.drive.mount``)."""
    if mount is None:
        if "google.colab" not in sys.modules:
            print("keep_on_drive: not in Colab; data/ and results/ stay in", shown(home()))   # no machine path
            return home()
        from google.colab import drive
        mount = drive.mount
    mount("/content/drive")
    Path(folder).mkdir(parents=True, exist_ok=True)
    os.environ[HOME_VAR] = str(folder)
    print(f"data/ and results/ now live in {folder} (Google Drive): they are kept across runtimes")
    return home()


def data_dir() -> Path:
    return home() / "data"


def results_dir() -> Path:
    return home() / "results"


def method_dir(method: str) -> Path:
    """``results/<method>/``: metrics.json, predictions.csv, model/, checkpoints/, figures; held
    by this process from now on (:func:`hold`), so a second run on it is refused at once."""
    d = results_dir() / method
    d.mkdir(parents=True, exist_ok=True)
    hold(d)
    return d


class FolderInUse(RuntimeError):
    """Another live process holds the folder (:func:`hold`); ``str(err)`` is one line naming it."""


_held: dict[Path, int] = {}     # folder -> open descriptor of its lock file (the flock lives with it)
running: str | None = None      # what this process runs ("04_efficientnet_two_phase (profile 'smoke')"): params.load


def _run_root(folder: Path) -> Path:
    """The folder whose lock guards ``folder``: ``results/<method>`` for anything inside a
    method's results (so ``engine.fit`` on ``results/m/train`` and ``method_dir("m")`` are one
    lock), else ``folder`` itself."""
    folder = Path(folder).expanduser().resolve()
    results = results_dir()
    if folder != results and folder.is_relative_to(results):
        return results / folder.relative_to(results).parts[0]
    return folder


def holds(folder: str | os.PathLike) -> bool:
    """True when this process already holds ``folder`` (or a folder guarding it)."""
    root = _run_root(Path(folder))
    return any(h == root or root.is_relative_to(h) for h in _held)


def _describe_self() -> str:
    """Who holds a lock: pid, host, what it runs (:data:`running`: the notebook and profile of its
    last ``params.load``, else its command line) and since when; written into the lock file."""
    what = running or " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv)) or "python"
    what = " ".join(what.split())
    if len(what) > 120:
        what = what[:117] + "..."
    return f"pid {os.getpid()} on {socket.gethostname()}, running {what}, since {time.strftime('%Y-%m-%d %H:%M:%S')}"


def _rank() -> int:
    """This process's rank in a distributed run (``RANK``, set by ``torchrun`` and ``accelerate
    launch``), 0 otherwise."""
    try:
        return int(os.environ.get("RANK", "0") or 0)
    except ValueError:
        return 0


def hold(folder: str | os.PathLike) -> Path:
    """Lock ``folder`` (see :func:`_run_root`) for this process's life, or raise
    :class:`FolderInUse` at once when another live process holds it. Re-entrant: a notebook
    kernel calls :func:`method_dir` and ``engine.fit`` many times. In a distributed run only
    rank 0 takes the lock, for all its processes (forked workers inherit it). A filesystem
    that has no locks (some network mounts) or a read-only folder is used unlocked, as before.
    Returns the locked folder."""
    root = _run_root(Path(folder))
    if holds(root) or _rank() > 0:
        return root
    root.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:      # a read-only folder: nothing will be written there by this process either
        return root
    try:
        import fcntl
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "a process that has not said who it is yet"
        os.close(fd)
        from .images import display_name
        raise FolderInUse(f"{display_name(root)} is in use by another run ({' '.join(holder.split())}): wait for "
                          "it to end or stop it; two runs on one results folder would read each other's "
                          "checkpoints and publish each other's numbers") from None
    except (ImportError, OSError):   # no fcntl (Windows), or a filesystem without locks
        os.close(fd)
        return root
    try:                             # who holds it, for the message another run gets
        os.ftruncate(fd, 0)
        os.pwrite(fd, _describe_self().encode("utf-8", "replace") + b"\n", 0)
    except OSError:                  # a full disk: the lock holds all the same
        pass
    _held[root] = fd
    return root


def release(folder: str | os.PathLike) -> None:
    """Let go of a folder :func:`hold` took (it is released anyway when the process ends)."""
    fd = _held.pop(_run_root(Path(folder)), None)
    if fd is not None:
        os.close(fd)


@contextlib.contextmanager
def holding(folder: str | os.PathLike):
    """:func:`hold` ``folder`` for the length of a ``with`` block, unless this process held it
    already (then it keeps it)."""
    if holds(folder):
        yield
        return
    root = hold(folder)
    try:
        yield
    finally:
        release(root)


def local_or_hub(name: str) -> str:
    """A checkpoint or dataset name as given, or the absolute path of a local folder it names:
    an absolute path, or one relative to the working directory, the project root or
    :func:`home` (so a profile can say ``data/rehearsal/...`` while notebooks run from
    ``notebooks/``). Anything else (``google/vit-base-patch16-224``) is returned unchanged, for
    the hub."""
    p = Path(name).expanduser()
    for cand in ((p,) if p.is_absolute() else (p, project_root() / p, home() / p)):
        if cand.exists():
            return str(cand.resolve())
    return name
