"""One training loop for every method: 🤗 Accelerate underneath, so the same code runs on a
CPU, one GPU (bf16 autocast where the GPU has native bf16, fp16 with a gradient scaler on an
older one such as a T4: ``gpu.autocast_precision``) or several GPUs with ``accelerate launch``.

What :func:`fit` adds to a plain loop, and why:

- progress bars (``tqdm.auto``: a widget in Jupyter; off in headless runs, see ``progress``);
- early stopping on a monitored validation metric, with patience;
- the best weights by that metric saved to ``checkpoints/best`` and restored at the end;
- the last epoch saved to ``checkpoints/last`` (weights, optimizer, scheduler, history), so an
  interrupted run resumes where it stopped, and a finished run re-run is a no-op that reloads
  its result (nothing is trained twice for the same configuration). "The same" is decided by a
  fingerprint of everything that determines the result (:func:`run_fingerprint`): the training
  settings, the optimizer and scheduler, the loss, the model's architecture, its modules'
  hyper-parameters (dropout rates, activations, layer sizes: :func:`model_signature`) and its
  *initial weights* (so pretrained vs random weights, or a later phase started from another
  earlier phase, never match), the code defined in the notebook or script that trains
  (:func:`code_signature`), and a hash of the training and validation data. Any change trains
  afresh; the old checkpoints are removed first. Checkpoints are replaced atomically, so a kill
  at any moment leaves either the old or the new one, never none; a checkpoint damaged anyway
  (a disk fault, an edited file) stops the run with one line naming the file and the folder to
  delete (:class:`CheckpointError`), never with a library's traceback;
- one run per output folder at a time: :func:`fit` holds ``out_dir`` (``paths.hold``: for a
  folder inside ``results/<method>/``, that method's lock, which ``paths.method_dir`` takes for
  the notebook's life), so a second run on it is refused at once with one line naming the holder;
- one line per run saying "trained", "resumed at epoch N" or "reloaded (same settings)"
  (``runlog``: the headless runner prints it on its console);
- per-epoch history (``history.json``) and per-batch losses (``history_batches.csv``);
- seeding per epoch, so a resumed run reproduces the uninterrupted one on a CPU.

Weights are written with safetensors; optimizer/scheduler states with ``torch.save`` and read
back with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import hashlib
import json
import numbers
import os
import re
import shutil
import sys
import time
import types
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import load_model, save_model
from torch import nn
from torch.utils.data import DataLoader, Dataset

from . import runlog
from .gpu import autocast_precision, compute_dtype
from .progress import progress


@dataclass
class TrainConfig:
    """How :func:`fit` trains. ``epochs`` must be a whole number >= 1 and ``patience`` None or
    >= 1: 0 or -1 epochs would "train" nothing and report it trained, and patience 0 would
    stop after the first epoch whatever happened (ValueError with one line naming the value)."""
    epochs: int = 3
    patience: int | None = None       # epochs without improvement before stopping (None: never)
    monitor: str = "val_loss"         # "val_loss" (lower is better) or "val_acc" (higher)
    seed: int = 42
    grad_clip: float | None = None
    mixed_precision: str = "auto"     # "auto": gpu.autocast_precision (bf16 native, fp16 on a T4, CPU: none)
    restore_best: bool = True
    channels_last: bool = False       # conv nets: NHWC weights and batches (see to_channels_last)

    def __post_init__(self):
        def whole(v):
            return isinstance(v, numbers.Integral) and not isinstance(v, bool)
        if not whole(self.epochs) or self.epochs < 1:
            raise ValueError(f"TrainConfig: epochs must be a whole number >= 1, got {self.epochs!r}")
        if self.patience is not None and (not whole(self.patience) or self.patience < 1):
            raise ValueError(f"TrainConfig: patience must be None (never stop early) or a whole number >= 1, "
                             f"got {self.patience!r}")
        if self.monitor not in ("val_loss", "val_acc"):
            raise ValueError(f"monitor must be 'val_loss' or 'val_acc', got {self.monitor!r}")


class CheckpointError(RuntimeError):
    """A training checkpoint that cannot be read back; ``str(err)`` is one line naming the file
    and the folder to delete to train afresh."""


@dataclass
class History:
    epochs: list[dict] = field(default_factory=list)
    batches: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    best_value: float | None = None
    stopped_early: bool = False
    resumed_from: int | None = None   # epoch a run was resumed after (None: fresh or reloaded)
    reloaded: bool = False            # True: a finished run with this configuration was reloaded

    fresh_reason: str | None = None   # why a fresh run did not reuse a checkpoint (None: there was none)

    @property
    def train_seconds(self) -> float:
        return float(sum(e["seconds"] for e in self.epochs))

    @property
    def status(self) -> str:
        """"trained", "resumed at epoch N" or "reloaded (same settings)"."""
        if self.reloaded:
            return "reloaded (same settings)"
        if self.resumed_from is not None:
            return f"resumed at epoch {self.resumed_from + 1}"
        return "trained" + (f" ({self.fresh_reason})" if self.fresh_reason else "")

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.epochs)


def default_device() -> torch.device:
    """Where models run by default: the GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_workers() -> int:
    """Loader worker processes: none on a CPU-only machine (the cores are busy training, and a
    worker would only compete with them), up to 8 beside a GPU, where per-image resizing and
    augmentation in one process cannot keep up (Lite0 at 224 px on an H100: one process
    prepares ~1,600 images/s, eight ~3,500, the GPU trains ~1,200-1,900;
    benchmarks/gpu_loader_throughput.py)."""
    if not torch.cuda.is_available():
        return 0
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool = False, num_workers: int | None = None) -> DataLoader:
    """A DataLoader whose shuffling follows torch's global RNG (seeded per epoch by :func:`fit`).
    ``num_workers=None`` picks :func:`default_workers`."""
    num_workers = default_workers() if num_workers is None else num_workers
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      drop_last=False, persistent_workers=num_workers > 0,
                      pin_memory=num_workers > 0 and torch.cuda.is_available())


def make_accelerator(mixed_precision: str = "auto") -> Accelerator:
    """The ``Accelerator`` :func:`fit` trains with. ``"auto"``: :func:`gpu.autocast_precision`
    decides: bf16 on a GPU that computes in bf16 natively, fp16 (with Accelerate's gradient
    scaler) on an older GPU such as a T4, "no" (float32) on a CPU. Any other value
    ("no", "fp16", "bf16") is passed to Accelerate as it is."""
    if mixed_precision == "auto":
        mixed_precision = autocast_precision()
    return Accelerator(mixed_precision=mixed_precision)


def to_channels_last(model: nn.Module) -> nn.Module:
    """Store a conv net's weights channels-last (NHWC). oneDNN's convolutions on a CPU, and
    tensor-core convolutions on a GPU, are fastest in that layout; with NCHW they reorder every
    tensor on every call. Measured on the 2-core reference CPU, EfficientNet-Lite0 training
    steps run ~3x faster at 32 px and ~1.9x at 64 px (``benchmarks/train_throughput.py``).
    Batches must be channels-last too (:func:`match_memory_format`), else the gain is lost."""
    return model.to(memory_format=torch.channels_last)


def _is_channels_last(model: nn.Module) -> bool:
    for p in model.parameters():
        if p.ndim == 4 and p.shape[1] > 1 and p.shape[2] * p.shape[3] > 1:  # a real 2-D conv kernel
            return not p.is_contiguous() and p.is_contiguous(memory_format=torch.channels_last)
    return False


def match_memory_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """An image batch in the layout of the model that reads it (no copy when it already is)."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.ndim == 4 else x


def logits_of(output) -> torch.Tensor:
    """Logits from a plain tensor or a Hugging Face ``ModelOutput``."""
    return output.logits if hasattr(output, "logits") else output


def prob_fake_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """P(FAKE) from one logit per image (sigmoid) or two logits [REAL, FAKE] (softmax)."""
    logits = logits.float()
    if logits.ndim == 1 or logits.shape[-1] == 1:
        return torch.sigmoid(logits.reshape(-1))
    return torch.softmax(logits, dim=-1)[:, 1]


def default_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for two logits, binary cross-entropy (with logits) for one."""
    if logits.ndim == 1 or logits.shape[-1] == 1:
        return nn.functional.binary_cross_entropy_with_logits(logits.reshape(-1).float(), labels.float())
    return nn.functional.cross_entropy(logits.float(), labels)


def hash_array(h, a) -> None:
    """Feed a whole array (numpy or torch, any dtype and memory layout) to ``h``, in row chunks."""
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


def data_signature(dataset: Dataset) -> str:
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


def weights_signature(module: nn.Module) -> str:
    """A hash of every parameter and buffer of ``module`` (its ``state_dict``): the initial
    weights a run starts from, pretrained, random or an earlier phase's result."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        hash_array(h, t)
    return h.hexdigest()[:16]


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


def _plain_attributes(module: nn.Module) -> dict:
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


def model_signature(model: nn.Module) -> str:
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


def _describe_callable(fn) -> str:
    if fn is None:
        return "None"
    inner = getattr(fn, "func", None)   # functools.partial
    if inner is not None:
        return f"partial({_describe_callable(inner)}, {_stable_repr(fn.args)}, {_stable_repr(fn.keywords)})"
    text = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"
    if _is_local_code(fn) or _is_local_code(type(fn)):   # a loss written in the notebook: its code too
        h = hashlib.sha256()
        _hash_function(h, fn) if hasattr(fn, "__code__") else _class_code(h, type(fn))
        text += f" code {h.hexdigest()[:16]}"
    return text


def run_fingerprint(model: nn.Module, config: TrainConfig, optimizer, train_loader: DataLoader,
                    val_loader: DataLoader, scheduler=None, loss_fn: Callable | None = None, extra=None) -> dict:
    """Everything that determines the result of :func:`fit`, as a JSON-able dict whose hash is
    the run's fingerprint. Includes the model's initial weights, so pretrained and random
    weights, or phase 2 started from two different phase-1 results, never share a checkpoint;
    its modules' hyper-parameters (:func:`model_signature`: a changed dropout rate is
    "changed: model"); and the notebook's training functions on the call stack
    (:func:`code_signature`: "changed: code")."""
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
        "loss": _describe_callable(loss_fn),
        "train_data": data_signature(train_loader.dataset),
        "val_data": data_signature(val_loader.dataset),
        "batch_size": train_loader.batch_size,
        "shuffle": type(train_loader.sampler).__name__,
        "extra": extra,
    }


def _fingerprint_hash(fp: dict) -> str:
    return hashlib.sha256(json.dumps(fp, default=str, sort_keys=True).encode()).hexdigest()[:16]


def _changed(saved: dict | None, now: dict) -> str:
    """What differs between a saved fingerprint and this run's, in a few words."""
    if not isinstance(saved, dict):
        return "settings changed"
    keys = [k for k in now if saved.get(k) != json.loads(json.dumps(now[k], default=str))]
    return "changed: " + ", ".join(k.replace("_", " ") for k in keys) if keys else "settings changed"


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


def recover_dir(path: Path) -> None:
    """After a kill inside :func:`replace_dir`: if ``path`` is missing, the complete new folder
    (``path.tmp`` with its ``state.json``, written last) or else the old one (``path.old``) takes
    its place. Nothing is lost and nothing restarts silently."""
    if path.exists():
        return
    tmp, old = path.with_name(path.name + ".tmp"), path.with_name(path.name + ".old")
    for cand in (tmp, old):
        if (cand / "state.json").exists():
            os.replace(cand, path)
            return


def _save_state(path: Path, model, optimizer, scheduler, history: History, state: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / "model.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    if scheduler is not None:
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    (tmp / "state.json").write_text(json.dumps({**state, "history": asdict(history)}, default=float))  # last: marks completeness
    replace_dir(tmp, path)


def _save_weights(model: nn.Module, file: Path) -> None:
    """safetensors written beside ``file`` and renamed over it (a kill never leaves half a file)."""
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(file.name + ".tmp")
    save_model(model, str(tmp))
    os.replace(tmp, file)


def _improved(value: float, best: float | None, monitor: str) -> bool:
    if best is None:
        return True
    return value < best if monitor == "val_loss" else value > best


def fit(model: nn.Module, train_loader: DataLoader, val_loader: DataLoader, optimizer,
        out_dir: str | Path, config: TrainConfig | None = None, scheduler=None,
        loss_fn: Callable = default_loss, resume: bool = True, desc: str = "train",
        fingerprint_extra=None, on_epoch_end: Callable[[int, dict], None] | None = None) -> History:
    """Train ``model`` and return its :class:`History` (see the module docstring).

    ``scheduler``: stepped once per epoch; a ``ReduceLROnPlateau`` is stepped with the monitored
    value. ``on_epoch_end(epoch, row)`` is called after each epoch's checkpoint is written.

    Raises ``paths.FolderInUse`` at once when another live process holds ``out_dir`` (or the
    ``results/<method>/`` it is in), and :class:`CheckpointError` for a damaged checkpoint.
    """
    from .paths import holding
    config = config or TrainConfig()
    if config.monitor not in ("val_loss", "val_acc"):
        raise ValueError(f"monitor must be 'val_loss' or 'val_acc', got {config.monitor!r}")
    out_dir = Path(out_dir)
    fp_full = run_fingerprint(model, config, optimizer, train_loader, val_loader, scheduler, loss_fn,
                              fingerprint_extra)
    with holding(out_dir):
        return _fit(model, train_loader, val_loader, optimizer, out_dir, config, scheduler, loss_fn, resume,
                    desc, on_epoch_end, fp_full)


def _damaged(file: Path, ckpt_dir: Path, desc: str, exc: BaseException) -> CheckpointError:
    from .images import display_name, one_line
    return CheckpointError(f"{display_name(file)}: damaged training checkpoint ({type(exc).__name__}: "
                           f"{one_line(exc, 160)}); delete the folder {display_name(ckpt_dir)} to train "
                           f"{desc} afresh (its finished epochs are lost)")


def _read_state(state_file: Path, ckpt_dir: Path, desc: str) -> dict:
    try:
        saved = json.loads(state_file.read_text())
        if not isinstance(saved, dict):
            raise ValueError("not a JSON object")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise _damaged(state_file, ckpt_dir, desc, exc) from None
    return saved


def _resume(model, optimizer, scheduler, ckpt_last: Path, ckpt_dir: Path, saved: dict, desc: str):
    """The history, last epoch and bad-epoch count of a checkpoint with this run's fingerprint,
    its weights and optimizer/scheduler states loaded. Every file is read and checked before
    anything is loaded into the model, so a damaged one (:class:`CheckpointError`) changes nothing."""
    from safetensors import SafetensorError
    state_file = ckpt_last / "state.json"
    try:
        history = History(**{k: v for k, v in saved["history"].items()})
        epoch, bad_epochs = int(saved["epoch"]), int(saved["bad_epochs"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _damaged(state_file, ckpt_dir, desc, exc) from None
    states = {}
    for name in ("optimizer.pt", "scheduler.pt"):
        file = ckpt_last / name
        if name == "scheduler.pt" and (scheduler is None or not file.exists()):
            continue
        try:
            states[name] = torch.load(file, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - truncated zip, bad pickle opcodes, missing file
            raise _damaged(file, ckpt_dir, desc, exc) from None
    weights = ckpt_last / "model.safetensors"
    try:
        load_model(model, str(weights))   # reads and checks the whole file before copying into the model
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise _damaged(weights, ckpt_dir, desc, exc) from None
    for name, target in (("optimizer.pt", optimizer), ("scheduler.pt", scheduler)):
        if name in states:
            try:
                target.load_state_dict(states[name])
            except (KeyError, ValueError, RuntimeError, TypeError, IndexError) as exc:
                raise _damaged(ckpt_last / name, ckpt_dir, desc, exc) from None
    return history, epoch, bad_epochs


def _fit(model, train_loader, val_loader, optimizer, out_dir: Path, config: TrainConfig, scheduler, loss_fn,
         resume: bool, desc: str, on_epoch_end, fp_full: dict) -> History:
    """:func:`fit` once ``out_dir`` is held."""
    ckpt_last, ckpt_best = out_dir / "checkpoints" / "last", out_dir / "checkpoints" / "best"
    accelerator = make_accelerator(config.mixed_precision)
    fp = _fingerprint_hash(fp_full)

    history, start_epoch, bad_epochs = History(), 1, 0
    recover_dir(ckpt_last)
    state_file = ckpt_last / "state.json"
    ckpt_dir = out_dir / "checkpoints"
    if not resume and ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
        history.fresh_reason = "resume=False"
    elif state_file.exists():
        saved = _read_state(state_file, ckpt_dir, desc)
        if saved.get("fingerprint") == fp:
            history, last_epoch, bad_epochs = _resume(model, optimizer, scheduler, ckpt_last, ckpt_dir, saved, desc)
            start_epoch = last_epoch + 1
            finished = saved.get("finished", False)
            history.resumed_from, history.reloaded = (None, True) if finished else (saved["epoch"], False)
            if finished:
                start_epoch = config.epochs + 1
        else:
            history.fresh_reason = _changed(saved.get("fingerprint_detail"), fp_full)
            print(f"[engine] the checkpoint in {ckpt_dir} is from other settings "
                  f"({history.fresh_reason}): it is removed and {desc} trains afresh")
            shutil.rmtree(ckpt_dir)
    elif ckpt_dir.exists():   # best weights without a finished epoch's state: from an unknown run
        shutil.rmtree(ckpt_dir)

    if config.channels_last:
        to_channels_last(model)   # in place, so the optimizer keeps the same parameters
    model, optimizer, train_loader, val_loader = accelerator.prepare(model, optimizer, train_loader, val_loader)
    plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)

    for epoch in range(start_epoch, config.epochs + 1):
        set_seed(config.seed + epoch)  # shuffling, dropout and augmentation of this epoch
        t0 = time.perf_counter()
        model.train()
        tot_loss = tot_correct = tot_n = 0.0
        bar = progress(train_loader, desc=f"{desc} epoch {epoch}/{config.epochs}", leave=False)
        for step, (x, y) in enumerate(bar):
            x = match_memory_format(x, config.channels_last)
            with accelerator.autocast():
                logits = logits_of(model(x))
                loss = loss_fn(logits, y)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            if config.grad_clip:
                accelerator.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            n = len(y)
            pred = (prob_fake_from_logits(logits.detach()) > 0.5).long()
            tot_loss += loss.item() * n
            tot_correct += (pred == y).sum().item()
            tot_n += n
            history.batches.append({"epoch": epoch, "step": step, "loss": loss.item()})
            bar.set_postfix(loss=f"{tot_loss / tot_n:.4f}")
        val = evaluate_loss(model, val_loader, loss_fn, accelerator)
        lr = optimizer.param_groups[0]["lr"]
        monitored = val[config.monitor.removeprefix("val_")]
        if scheduler is not None:
            scheduler.step(monitored) if plateau else scheduler.step()
        row = {"epoch": epoch, "train_loss": tot_loss / tot_n, "train_acc": tot_correct / tot_n,
               "val_loss": val["loss"], "val_acc": val["acc"], "lr": lr,
               "seconds": time.perf_counter() - t0}
        history.epochs.append(row)
        if _improved(monitored, history.best_value, config.monitor):
            history.best_epoch, history.best_value, bad_epochs = epoch, float(monitored), 0
            _save_weights(accelerator.unwrap_model(model), ckpt_best / "model.safetensors")
        else:
            bad_epochs += 1
        stop = config.patience is not None and bad_epochs >= config.patience
        history.stopped_early = stop and epoch < config.epochs
        finished = stop or epoch == config.epochs
        _save_state(ckpt_last, accelerator.unwrap_model(model), optimizer, scheduler, history,
                    {"epoch": epoch, "bad_epochs": bad_epochs, "fingerprint": fp, "finished": finished,
                     "fingerprint_detail": fp_full})
        print(f"{desc} epoch {epoch}/{config.epochs}: train_loss {row['train_loss']:.4f} "
              f"acc {row['train_acc']:.4f} | val_loss {row['val_loss']:.4f} acc {row['val_acc']:.4f} "
              f"| lr {lr:.2e} | {row['seconds']:.1f}s" + ("  *best*" if history.best_epoch == epoch else ""))
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
        if stop:
            print(f"{desc}: early stop after epoch {epoch} (no {config.monitor} improvement "
                  f"for {config.patience} epochs)")
            break

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "history.json").write_text(json.dumps(history.epochs, indent=1))
    pd.DataFrame(history.batches).to_csv(out_dir / "history_batches.csv", index=False)
    if config.restore_best and (ckpt_best / "model.safetensors").exists():
        try:
            load_model(accelerator.unwrap_model(model), str(ckpt_best / "model.safetensors"))
        except Exception as exc:  # noqa: BLE001 - SafetensorError, a truncated file
            raise _damaged(ckpt_best / "model.safetensors", ckpt_dir, desc, exc) from None
    runlog.record(desc, history.status, out_dir, epochs=len(history.epochs), seconds=round(history.train_seconds, 1))
    return history


@torch.no_grad()
def evaluate_loss(model: nn.Module, loader: DataLoader, loss_fn: Callable = default_loss,
                  accelerator: Accelerator | None = None) -> dict:
    """Mean loss and accuracy over ``loader`` (model in eval mode)."""
    model.eval()
    tot_loss = tot_correct = tot_n = 0.0
    channels_last = _is_channels_last(model)
    for x, y in loader:
        if accelerator is None:
            x, y = x.to(device_of(model)), y.to(device_of(model))
        x = match_memory_format(x, channels_last)
        logits = logits_of(model(x))
        if accelerator is not None:
            logits, y = accelerator.gather_for_metrics((logits, y))
        tot_loss += loss_fn(logits, y).item() * len(y)
        tot_correct += ((prob_fake_from_logits(logits) > 0.5).long() == y).sum().item()
        tot_n += len(y)
    return {"loss": tot_loss / max(tot_n, 1), "acc": tot_correct / max(tot_n, 1)}


def device_of(model: nn.Module) -> torch.device:
    """The device a model's parameters are on (the CPU for a model without parameters): where
    its inputs must go."""
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


@torch.no_grad()
def predict_proba(model: nn.Module, loader: DataLoader, desc: str = "predict") -> tuple[np.ndarray, float]:
    """P(FAKE) for every image of ``loader`` in order, and the wall seconds it took."""
    model.eval()
    device = device_of(model)
    channels_last = _is_channels_last(model)
    out = []
    t0 = time.perf_counter()
    for batch in progress(loader, desc=desc, leave=False):
        x = match_memory_format((batch[0] if isinstance(batch, (list, tuple)) else batch).to(device), channels_last)
        with torch.autocast(device.type, dtype=compute_dtype(device), enabled=device.type == "cuda"):
            out.append(prob_fake_from_logits(logits_of(model(x))).cpu())
    seconds = time.perf_counter() - t0
    probs = torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)
    if not np.all(np.isfinite(probs)):
        raise FloatingPointError("model produced non-finite probabilities")
    return probs, seconds

