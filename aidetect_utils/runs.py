"""Is this run the same as the one on disk, and how are its files written safely.

A training run may be cut short, re-run unchanged, or re-run with one setting edited. What
decides between resuming, reloading and training afresh lives here, used by ``engine.fit``,
``vlm.train_lora`` and ``features.cached_features``:

- **identity**: a run's fingerprint is a JSON-able dict of everything that determines its
  result, hashed (:func:`fingerprint_hash`). Its pieces: the content of arrays and datasets
  (:func:`hash_array`, :func:`data_signature`), a model's weights (:func:`weights_signature`),
  what its modules compute besides the weights (:func:`model_signature`), the notebook's
  training code on the call stack (:func:`code_signature`), and ``engine.fit``'s whole
  fingerprint (:func:`run_fingerprint`);
- **the verdict**: :func:`changed` says which entries differ ("changed: optimizer, val data"),
  and :func:`run_status` is the one line a run reports ("trained", "trained (changed: ...)",
  "resumed at epoch N", "reloaded (same settings)");
- **writing safely**: a file is written beside its place and renamed over it
  (:func:`write_beside_then_rename`); a folder is written beside its place and swapped in
  (:func:`write_dir`, :func:`replace_dir`), and a swap cut by a kill is finished by
  :func:`recover_dir`; so a kill at any moment leaves the old or the new, whole, never half;
- **checkpoints** of ``engine.fit`` (``checkpoints/last``: weights, optimizer, scheduler and a
  ``state.json`` written last; ``checkpoints/best``: weights): saved, read back with every file
  checked before anything is loaded (:class:`CheckpointError`, one line naming the file and the
  folder to delete), and the decision to resume, reload or start afresh
  (:func:`plan_resume`, :func:`start_from`).

Weights are written with safetensors; optimizer/scheduler states with ``torch.save`` and read
back with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import types
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np

from .images import display_name, one_line

if TYPE_CHECKING:
    import pandas as pd
    from torch import nn
    from torch.utils.data import DataLoader, Dataset


# ------------------------------------------------------------------------------ what a run did
def run_status(reloaded: bool = False, resumed_at: str | None = None, fresh_reason: str | None = None) -> str:
    """The one line a run reports: "reloaded (same settings)", "resumed at <resumed_at>" (e.g.
    "epoch 3", "step 5 of 8"), else "trained", with why a checkpoint on disk was not reused
    ("trained (changed: optimizer)")."""
    if reloaded:
        return "reloaded (same settings)"
    if resumed_at is not None:
        return f"resumed at {resumed_at}"
    return "trained" + (f" ({fresh_reason})" if fresh_reason else "")


@dataclass
class History:
    """What ``engine.fit`` did: one row per epoch, the per-batch losses, the best epoch, and
    whether the run was trained, resumed or reloaded (its ``state.json`` keeps it all)."""
    epochs: list[dict] = field(default_factory=list)
    batches: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    best_value: float | None = None
    stopped_early: bool = False
    resumed_from: int | None = None   # epoch a run was resumed after (None: fresh or reloaded)
    reloaded: bool = False            # True: a finished run with this configuration was reloaded

    fresh_reason: str | None = None   # why a fresh run did not reuse a checkpoint (None: there was none)
    processes: int = 1                # how many processes trained the last epochs (see engine.fit)

    @property
    def train_seconds(self) -> float:
        return float(sum(e["seconds"] for e in self.epochs))

    @property
    def status(self) -> str:
        """"trained", "resumed at epoch N" or "reloaded (same settings)" (:func:`run_status`)."""
        resumed = None if self.resumed_from is None else f"epoch {self.resumed_from + 1}"
        return run_status(self.reloaded, resumed, self.fresh_reason)

    def frame(self) -> "pd.DataFrame":
        import pandas as pd
        return pd.DataFrame(self.epochs)


# ------------------------------------------------------------------------------ identity
def hash_array(h, a) -> None:
    """Feed a whole array (numpy or torch, any dtype and memory layout) to ``h``, in row chunks."""
    import torch
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu()
        h.update(f"{a.dtype}{tuple(a.shape)}".encode())
        flat = a.contiguous().reshape(-1)
        if flat.is_floating_point() and flat.dtype not in (torch.float32, torch.float64, torch.float16):
            flat = flat.view(torch.int16) if flat.element_size() == 2 else flat.float()
        a = flat.numpy()
    a = np.asarray(a)
    h.update(f"{a.dtype}{a.shape}".encode())
    rows = max(1, (1 << 24) // max(1, a[0].nbytes if a.ndim and len(a) else 1))
    for i in range(0, len(a) if a.ndim else 1, rows):
        h.update(np.ascontiguousarray(a[i:i + rows] if a.ndim else a).tobytes())


def array_signature(a) -> str:
    """A hash of one array's content (:func:`hash_array`), e.g. the images features are of."""
    h = hashlib.sha256()
    hash_array(h, a)
    return h.hexdigest()[:16]


def tensors_signature(named: Iterable[tuple[str, object]]) -> str:
    """A hash of named tensors, names included: a ``state_dict``'s items, or only the
    parameters a run trains."""
    h = hashlib.sha256()
    for name, t in named:
        h.update(name.encode())
        hash_array(h, t)
    return h.hexdigest()[:16]


def data_signature(dataset: "Dataset") -> str:
    """A hash of a dataset's whole content: its labels and inputs (``ArrayDataset`` or
    ``TensorDataset``) and its transform's description, else only its length and type.
    Two datasets of the same size but different images, or the same images resized or augmented
    differently, must not share a checkpoint."""
    h = hashlib.sha256(f"{type(dataset).__name__} {len(dataset)} {getattr(dataset, 'transform', None)!r}".encode())
    arrays = ([dataset.images, dataset.labels] if hasattr(dataset, "images") and hasattr(dataset, "labels")
              else list(getattr(dataset, "tensors", ())))
    for a in arrays:
        hash_array(h, a)
    return h.hexdigest()[:16]


def weights_signature(module: "nn.Module") -> str:
    """A hash of every parameter and buffer of ``module`` (its ``state_dict``): the initial
    weights a run starts from, pretrained, random or an earlier phase's result."""
    return tensors_signature(module.state_dict().items())


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_SIMPLE = (int, float, str, bool, type(None))


def _stable_repr(x) -> str:
    """``repr`` without memory addresses, and with sets in a fixed order (string hashes, and so
    set order, change from one process to the next)."""
    if isinstance(x, (set, frozenset)):
        return "{" + ", ".join(sorted(_stable_repr(v) for v in x)) + "}"
    if isinstance(x, tuple):
        return "(" + ", ".join(_stable_repr(v) for v in x) + ")"
    return _ADDRESS.sub("", repr(x))


def _hash_code(h, code: types.CodeType) -> None:
    """Feed a function's compiled code to ``h``: its bytecode, the names it reads and its
    constants (nested functions included), not its line numbers: moving a cell changes nothing."""
    h.update(code.co_code)
    h.update(repr((code.co_names, code.co_varnames, code.co_freevars)).encode())
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            _hash_code(h, c)
        else:
            h.update(_stable_repr(c).encode())


def _hash_function(h, fn) -> None:
    fn = getattr(fn, "__func__", fn)                 # bound, static and class methods
    code = getattr(fn, "__code__", None)
    if code is None:
        return
    _hash_code(h, code)
    h.update(_stable_repr((getattr(fn, "__defaults__", None), getattr(fn, "__kwdefaults__", None))).encode())
    for cell in getattr(fn, "__closure__", None) or ():   # values a closure captured, when plain
        try:
            v = cell.cell_contents
        except ValueError:
            continue
        h.update((_stable_repr(v) if isinstance(v, _SIMPLE + (tuple, frozenset)) else type(v).__qualname__).encode())


def _is_local_code(obj) -> bool:
    """Defined in the running notebook or script (``__main__``), not in an installed package."""
    return getattr(obj, "__module__", None) == "__main__"


def _class_code(h, cls: type) -> None:
    for klass in cls.__mro__:
        if not _is_local_code(klass):
            continue
        h.update(klass.__qualname__.encode())
        for name, attr in sorted(vars(klass).items()):
            if isinstance(attr, property):
                for f in (attr.fget, attr.fset):
                    if f is not None:
                        _hash_function(h, f)
            else:
                _hash_function(h, attr)


def _plain_attributes(module: "nn.Module") -> dict:
    """A module's public attributes that are plain values (``interpolate_pos_encoding``,
    ``drop_rate``): settings its ``extra_repr`` may not show. Not ``training`` (fit sets it),
    nor ``name_or_path`` (where a checkpoint was read from; its weights are hashed instead)."""
    out = {}
    for k, v in vars(module).items():
        if k.startswith("_") or k in ("training", "name_or_path"):
            continue
        if isinstance(v, _SIMPLE) or (isinstance(v, (tuple, list)) and all(isinstance(x, _SIMPLE) for x in v)):
            out[k] = v
    return out


def model_signature(model: "nn.Module") -> str:
    """A hash of what the model computes besides its weights: every module's class, its
    ``extra_repr`` (``Dropout(p=0.5)``, ``Linear(in_features=1280, out_features=256)``,
    ``GELU(approximate='none')``), its plain attributes, and, for module classes defined in the
    notebook or script (``__main__``, e.g. 04's ``FrozenBNDetector``), their methods' code. A
    dropout rate edited in a notebook (0.5 -> 0.0) changes no parameter shape, so the
    architecture alone would reload the old run."""
    h = hashlib.sha256()
    seen: set[type] = set()
    for name, m in model.named_modules():
        cls = type(m)
        h.update(_ADDRESS.sub("", f"{name} {cls.__module__}.{cls.__qualname__}({m.extra_repr()}) "
                                  f"{_stable_repr(_plain_attributes(m))}\n").encode())
        if cls not in seen:
            seen.add(cls)
            _class_code(h, cls)
    return h.hexdigest()[:16]


def code_signature(skip: int = 1) -> str | None:
    """A hash of the training code on the call stack that lives in the running notebook or
    script: the functions defined there (``__main__``) that led to this call, e.g. 04's
    ``train_two_phase``, so an edited recipe never reloads. None when training is called from
    a cell's top level or from a package (a cell's own top-level code is not covered: any
    cosmetic edit to it would retrain; its settings reach the fingerprint as arguments)."""
    h, found = hashlib.sha256(), False
    frame = sys._getframe(skip)
    while frame is not None:
        if frame.f_globals.get("__name__") == "__main__" and frame.f_code.co_name != "<module>":
            h.update(frame.f_code.co_name.encode())
            _hash_code(h, frame.f_code)
            found = True
        frame = frame.f_back
    return h.hexdigest()[:16] if found else None


def describe_callable(fn) -> str:
    """A function as the fingerprint names it: its module and name (a ``functools.partial``
    with its arguments), and its code's hash when it is written in the notebook or script."""
    if fn is None:
        return "None"
    inner = getattr(fn, "func", None)   # functools.partial
    if inner is not None:
        return f"partial({describe_callable(inner)}, {_stable_repr(fn.args)}, {_stable_repr(fn.keywords)})"
    text = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"
    if _is_local_code(fn) or _is_local_code(type(fn)):   # a loss written in the notebook: its code too
        h = hashlib.sha256()
        _hash_function(h, fn) if hasattr(fn, "__code__") else _class_code(h, type(fn))
        text += f" code {h.hexdigest()[:16]}"
    return text


def run_fingerprint(model: "nn.Module", config, optimizer, train_loader: "DataLoader", val_loader: "DataLoader",
                    scheduler=None, loss_fn: Callable | None = None, extra=None) -> dict:
    """Everything that determines the result of ``engine.fit``, as a JSON-able dict whose hash
    is the run's fingerprint. ``config``: its ``TrainConfig``. Includes the model's initial
    weights, so pretrained and random weights, or phase 2 started from two different phase-1
    results, never share a checkpoint; its modules' hyper-parameters (:func:`model_signature`:
    a changed dropout rate is "changed: model"); and the notebook's training functions on the
    call stack (:func:`code_signature`: "changed: code")."""
    sched = None
    if scheduler is not None:
        sched = {"type": type(scheduler).__name__,
                 "state": {k: v for k, v in scheduler.state_dict().items() if k != "optimizer"}}
    return {
        "config": asdict(config),
        "architecture": [(n, tuple(p.shape), p.requires_grad) for n, p in model.named_parameters()],
        "initial_weights": weights_signature(model),
        "model": model_signature(model),
        "code": code_signature(),
        "optimizer": {"type": type(optimizer).__name__,
                      "groups": [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]},
        "scheduler": sched,
        "loss": describe_callable(loss_fn),
        "train_data": data_signature(train_loader.dataset),
        "val_data": data_signature(val_loader.dataset),
        "batch_size": train_loader.batch_size,
        "shuffle": type(train_loader.sampler).__name__,
        "extra": extra,
    }


def fingerprint_hash(fp: dict) -> str:
    """A fingerprint (or any JSON-able settings) as 16 hex digits, independent of key order."""
    return hashlib.sha256(json.dumps(fp, default=str, sort_keys=True).encode()).hexdigest()[:16]


def json_ready(x):
    """``x`` as it reads back from JSON (tuples as lists, anything else JSON cannot hold as text),
    the form a saved fingerprint is compared in."""
    return json.loads(json.dumps(x, default=str))


def changed(saved: dict | None, now: dict) -> str:
    """Why a run on disk is not this one, in a few words: "changed: " and the fingerprint's
    entries that differ ("changed: train data, val data"), or "settings changed" when the saved
    fingerprint says nothing comparable."""
    if not isinstance(saved, dict):
        return "settings changed"
    keys = [k for k in now if saved.get(k) != json_ready(now[k])]
    return "changed: " + ", ".join(k.replace("_", " ") for k in keys) if keys else "settings changed"


# ------------------------------------------------------------------------------ writing safely
def write_beside_then_rename(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Write the file ``path`` whole or not at all: ``write(tmp)`` writes a temporary file beside
    it (a hidden name in the same folder, so the rename is atomic), which is then renamed over
    ``path``. A failure inside ``write`` removes the temporary file and leaves ``path`` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return path


def write_dir(path: Path, fill: Callable[[Path], object], tmp: Path | None = None) -> Path:
    """Write the folder ``path`` whole or not at all: ``fill(tmp)`` writes the new folder beside
    it (``path.tmp`` unless ``tmp`` names another place; its marker file last), then
    :func:`replace_dir` swaps it in. A failure inside ``fill`` removes the half-written folder
    and leaves ``path`` as it was."""
    tmp = tmp or path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        fill(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, path)
    return path


def replace_dir(tmp: Path, path: Path) -> None:
    """Put the complete folder ``tmp`` in the place of ``path`` so that a kill at any moment
    leaves one of the two whole: the old folder is renamed aside (``path.old``) before the new
    one is renamed in, and removed only after. :func:`recover_dir` finishes an interrupted swap."""
    old = path.with_name(path.name + ".old")
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def recover_dir(path: Path, marker: str = "state.json") -> None:
    """After a kill inside :func:`replace_dir`: if ``path`` is missing, the complete new folder
    (``path.tmp`` with its ``marker`` file, written last) or else the old one (``path.old``)
    takes its place. Nothing is lost and nothing restarts silently."""
    if path.exists():
        return
    tmp, old = path.with_name(path.name + ".tmp"), path.with_name(path.name + ".old")
    for cand in (tmp, old):
        if (cand / marker).exists():
            os.replace(cand, path)
            return


# ------------------------------------------------------------------------------ checkpoints
class CheckpointError(RuntimeError):
    """A training checkpoint that cannot be read back; ``str(err)`` is one line naming the file
    and the folder to delete to train afresh."""


def checkpoint_damaged(file: Path, ckpt_dir: Path, desc: str, exc: BaseException) -> CheckpointError:
    """The one-line :class:`CheckpointError` for ``file`` of the checkpoints in ``ckpt_dir``."""
    return CheckpointError(f"{display_name(file)}: damaged training checkpoint ({type(exc).__name__}: "
                           f"{one_line(exc, 160)}); delete the folder {display_name(ckpt_dir)} to train "
                           f"{desc} afresh (its finished epochs are lost)")


def save_checkpoint(path: Path, model, optimizer, scheduler, history: History, state: dict) -> None:
    """The folder ``path`` (``checkpoints/last``), written whole: the weights, the optimizer's and
    scheduler's states, and ``state.json`` (``state`` and the history), last: it marks completeness."""
    import torch
    from safetensors.torch import save_model

    def fill(tmp: Path) -> None:
        save_model(model, str(tmp / "model.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        if scheduler is not None:
            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        (tmp / "state.json").write_text(json.dumps({**state, "history": asdict(history)}, default=float))
    write_dir(path, fill)


def save_weights(model: "nn.Module", file: Path) -> None:
    """safetensors written beside ``file`` and renamed over it (a kill never leaves half a file)."""
    from safetensors.torch import save_model
    write_beside_then_rename(file, lambda tmp: save_model(model, str(tmp)))


def restore_weights(model: "nn.Module", file: Path, ckpt_dir: Path, desc: str) -> None:
    """Load the weights ``file`` (e.g. ``checkpoints/best``) into ``model``; a damaged file is a
    :class:`CheckpointError`."""
    from safetensors.torch import load_model
    try:
        load_model(model, str(file))
    except Exception as exc:  # noqa: BLE001 - SafetensorError, a truncated file
        raise checkpoint_damaged(file, ckpt_dir, desc, exc) from None


def read_state(state_file: Path, ckpt_dir: Path, desc: str) -> dict:
    """A checkpoint's ``state.json`` (a :class:`CheckpointError` when it is not a JSON object)."""
    try:
        saved = json.loads(state_file.read_text())
        if not isinstance(saved, dict):
            raise ValueError("not a JSON object")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise checkpoint_damaged(state_file, ckpt_dir, desc, exc) from None
    return saved


def load_checkpoint(model, optimizer, scheduler, ckpt_last: Path, ckpt_dir: Path, saved: dict,
                    desc: str) -> tuple[History, int, int]:
    """The history, last epoch and bad-epoch count of a checkpoint with this run's fingerprint,
    its weights and optimizer/scheduler states loaded. Every file is read and checked before
    anything is loaded into the model, so a damaged one (:class:`CheckpointError`) changes nothing."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_model
    state_file = ckpt_last / "state.json"
    try:
        history = History(**{k: v for k, v in saved["history"].items()})
        epoch, bad_epochs = int(saved["epoch"]), int(saved["bad_epochs"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise checkpoint_damaged(state_file, ckpt_dir, desc, exc) from None
    states = {}
    for name in ("optimizer.pt", "scheduler.pt"):
        file = ckpt_last / name
        if name == "scheduler.pt" and (scheduler is None or not file.exists()):
            continue
        try:
            states[name] = torch.load(file, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - truncated zip, bad pickle opcodes, missing file
            raise checkpoint_damaged(file, ckpt_dir, desc, exc) from None
    weights = ckpt_last / "model.safetensors"
    try:
        load_model(model, str(weights))   # reads and checks the whole file before copying into the model
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise checkpoint_damaged(weights, ckpt_dir, desc, exc) from None
    for name, target in (("optimizer.pt", optimizer), ("scheduler.pt", scheduler)):
        if name in states:
            try:
                target.load_state_dict(states[name])
            except (KeyError, ValueError, RuntimeError, TypeError, IndexError) as exc:
                raise checkpoint_damaged(ckpt_last / name, ckpt_dir, desc, exc) from None
    return history, epoch, bad_epochs


def plan_resume(ckpt_dir: Path, resume: bool, desc: str, fp: str, fp_full: dict) -> tuple[dict | None, str | None]:
    """What a run starts from: (the saved state of a checkpoint with this run's fingerprint
    ``fp``, or None; why not, when a checkpoint was there). Checkpoints of other settings are
    removed, so only one process may call it (the main one)."""
    ckpt_last = ckpt_dir / "last"
    recover_dir(ckpt_last)
    state_file = ckpt_last / "state.json"
    if not resume and ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
        return None, "resume=False"
    if state_file.exists():
        saved = read_state(state_file, ckpt_dir, desc)
        if saved.get("fingerprint") == fp:
            return saved, None
        reason = changed(saved.get("fingerprint_detail"), fp_full)
        print(f"[engine] the checkpoint in {ckpt_dir} is from other settings "
              f"({reason}): it is removed and {desc} trains afresh")
        shutil.rmtree(ckpt_dir)
        return None, reason
    if ckpt_dir.exists():   # best weights without a finished epoch's state: from an unknown run
        shutil.rmtree(ckpt_dir)
    return None, None


def start_from(saved: dict | None, reason: str | None, model, optimizer, scheduler, ckpt_dir: Path, desc: str,
               epochs: int) -> tuple[History, int, int]:
    """(history, first epoch to train, bad epochs so far) for a run of ``epochs`` epochs that
    :func:`plan_resume` planned: a fresh history (saying ``reason``), or the checkpoint's,
    with its weights and optimizer/scheduler states loaded; a finished run is reloaded."""
    if saved is None:
        return History(fresh_reason=reason), 1, 0
    history, last_epoch, bad_epochs = load_checkpoint(model, optimizer, scheduler, ckpt_dir / "last", ckpt_dir,
                                                      saved, desc)
    finished = saved.get("finished", False)
    history.resumed_from, history.reloaded = (None, True) if finished else (saved["epoch"], False)
    return history, (epochs + 1 if finished else last_epoch + 1), bad_epochs
