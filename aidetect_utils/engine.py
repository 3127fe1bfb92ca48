"""One training loop for every method: 🤗 Accelerate underneath, so the same code runs on a
CPU, one GPU (bf16 autocast where the GPU has native bf16, fp16 with a gradient scaler on an
older one such as a T4: ``gpu.autocast_precision``) or several processes: N GPUs (or N CPU
processes) with ``AIDETECT_NUM_PROCESSES=N`` set before :func:`fit` is called (a notebook
cell, or ``python -m aidetect_utils.pipeline --processes N``), which starts N processes that
train together and waits for them (:func:`launch`), or in a script started by
``accelerate launch --multi_gpu --num_processes N`` (GPUs) or ``torchrun --nproc_per_node N``
(which also runs CPU processes). Each batch is split between the processes and their
gradients averaged, so N processes train the recipe one process trains (to float rounding);
metrics are gathered from all of them; only the main process writes.

What :func:`fit` adds to a plain loop, and why:

- progress bars (``tqdm.auto``: a widget in Jupyter; off in headless runs, see ``progress``);
- early stopping on a monitored validation metric, with patience;
- the best weights by that metric saved to ``checkpoints/best`` and restored at the end;
- the last epoch saved to ``checkpoints/last`` (weights, optimizer, scheduler, history), so an
  interrupted run resumes where it stopped, and a finished run re-run is a no-op that reloads
  its result (nothing is trained twice for the same configuration). "The same" is decided by a
  fingerprint of everything that determines the result (``runs.run_fingerprint``): the
  training settings, the optimizer and scheduler, the loss, the model's architecture, its
  modules' hyper-parameters and its *initial weights*, the code defined in the notebook or
  script that trains, and a hash of the training and validation data. Any change trains
  afresh; the old checkpoints are removed first. Checkpoints are replaced atomically, and a
  damaged one stops the run with one line (``runs.CheckpointError``). How runs are recognised
  and their files written is ``runs``' concept; this module only calls it;
- one run per output folder at a time: :func:`fit` holds ``out_dir`` (``paths.hold``: for a
  folder inside ``results/<method>/``, that method's lock, which ``paths.method_dir`` takes for
  the notebook's life), so a second run on it is refused at once with one line naming the holder;
- one line per run saying "trained", "resumed at epoch N" or "reloaded (same settings)"
  (``runlog``: the headless runner prints it on its console);
- per-epoch history (``history.json``) and per-batch losses (``history_batches.csv``);
- seeding per epoch, so a resumed run reproduces the uninterrupted one on a CPU.
"""
from __future__ import annotations

import json
import numbers
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader, Dataset

from . import runlog
from .gpu import autocast_precision, compute_dtype
from .images import one_line
from .paths import holding
from .progress import progress
# run identity and checkpoints live in runs; these names are also engine's (notebooks and tests use them)
from .runs import (CheckpointError, History, code_signature, data_signature, fingerprint_hash,  # noqa: F401
                   hash_array, load_checkpoint, model_signature, plan_resume, read_state, recover_dir, replace_dir,
                   restore_weights, run_fingerprint, save_checkpoint, save_weights, start_from, weights_signature)


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


def default_device() -> torch.device:
    """Where models run by default: the GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_workers() -> int:
    """Loader worker processes: none on a CPU-only machine (the cores are busy training, and a
    worker would only compete with them), up to 8 beside a GPU, where per-image resizing and
    augmentation in one process cannot keep up (Lite0 at 224 px on an H100: one process
    prepares ~1,600 images/s, eight ~3,500, the GPU trains ~1,200-1,900;
    gpu_kit/loader_throughput.py)."""
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
    from accelerate.utils import DataLoaderConfiguration
    # Several processes: each batch is split between them, so the recipe's batch size and
    # learning rate keep their meaning. Accelerate runs several CPU processes (gloo) only when
    # told they are on the CPU.
    cpu = world_size() > 1 and not torch.cuda.is_available()
    return Accelerator(mixed_precision=mixed_precision, cpu=cpu,
                       dataloader_config=DataLoaderConfiguration(split_batches=True))


def to_channels_last(model: nn.Module) -> nn.Module:
    """Store a conv net's weights channels-last (NHWC). oneDNN's convolutions on a CPU, and
    tensor-core convolutions on a GPU, are fastest in that layout; with NCHW they reorder every
    tensor on every call. Measured on the 2-core reference CPU, EfficientNet-Lite0 training
    steps run ~3x faster at 32 px and ~1.9x at 64 px (``benchmarks/train_throughput.py``).
    Batches must be channels-last too (:func:`match_memory_format`), else the gain is lost."""
    return model.to(memory_format=torch.channels_last)


def is_channels_last(model: nn.Module) -> bool:
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
    value. ``on_epoch_end(epoch, row)`` is called after each epoch's checkpoint is written (by
    the main process only, when several train).

    Several processes (``AIDETECT_NUM_PROCESSES=N``, or a script started by ``accelerate
    launch`` or ``torchrun``): see :func:`processes_to_start`. Every batch of ``train_loader`` and
    ``val_loader`` is split between the processes (their batch sizes must be multiples of N),
    so the recipe's batch size and learning rate stay what they are; the metrics are gathered
    from all of them; only the main process writes. Started from here, the processes are new
    ones and this process waits: when they end, ``model``, ``optimizer`` and ``scheduler`` are
    loaded with their result (``model`` stays on the device it was on), and ``on_epoch_end``
    ran in the main one of them (what it changes in this process's memory is not seen here).

    Raises ``paths.FolderInUse`` at once when another live process holds ``out_dir`` (or the
    ``results/<method>/`` it is in), and :class:`CheckpointError` for a damaged checkpoint.
    """
    config = config or TrainConfig()
    if config.monitor not in ("val_loss", "val_acc"):
        raise ValueError(f"monitor must be 'val_loss' or 'val_acc', got {config.monitor!r}")
    out_dir = Path(out_dir)
    fp_full = run_fingerprint(model, config, optimizer, train_loader, val_loader, scheduler, loss_fn,
                              fingerprint_extra)
    n = processes_to_start(desc)
    if n > 1:
        _check_split(n, train_loader, val_loader)
    with holding(out_dir):
        if n > 1:
            return _fit_launched(model, train_loader, val_loader, optimizer, out_dir, config, scheduler, loss_fn,
                                 resume, desc, on_epoch_end, fp_full, n)
        return _fit(model, train_loader, val_loader, optimizer, out_dir, config, scheduler, loss_fn, resume,
                    desc, on_epoch_end, fp_full)


def _start(model, optimizer, scheduler, out_dir: Path, config: TrainConfig, resume: bool, desc: str, fp: str,
           fp_full: dict, accelerator: Accelerator | None = None) -> tuple[History, int, int]:
    """(history, first epoch to train, bad epochs so far); a resumed checkpoint's weights and
    optimizer/scheduler states loaded. With several processes the main one decides (and removes
    what is stale) while the others wait, then every process loads the same checkpoint."""
    ckpt_dir = out_dir / "checkpoints"
    if accelerator is None or accelerator.num_processes == 1:
        saved, reason = plan_resume(ckpt_dir, resume, desc, fp, fp_full)
    else:
        from accelerate.utils import broadcast_object_list
        box: list = [None]
        saved, reason = None, None
        if accelerator.is_main_process:
            try:
                saved, reason = plan_resume(ckpt_dir, resume, desc, fp, fp_full)
                box = [("resume" if saved is not None else "fresh", reason, None)]
            except CheckpointError as exc:
                box = [("error", None, str(exc))]
        broadcast_object_list(box, from_process=0)     # also the barrier after the main process's removals
        kind, reason, error = box[0]
        if error:
            raise CheckpointError(error)
        if kind == "resume" and saved is None:
            saved = read_state(ckpt_dir / "last" / "state.json", ckpt_dir, desc)
    return start_from(saved, reason, model, optimizer, scheduler, ckpt_dir, desc, config.epochs)


def _fit(model, train_loader, val_loader, optimizer, out_dir: Path, config: TrainConfig, scheduler, loss_fn,
         resume: bool, desc: str, on_epoch_end, fp_full: dict) -> History:
    """:func:`fit` in this process (alone, or as one of a run started by ``accelerate launch``),
    once ``out_dir`` is held."""
    accelerator = make_accelerator(config.mixed_precision)
    fp = fingerprint_hash(fp_full)
    history, start_epoch, bad_epochs = _start(model, optimizer, scheduler, out_dir, config, resume, desc, fp,
                                              fp_full, accelerator)
    if config.channels_last:
        to_channels_last(model)   # in place, so the optimizer keeps the same parameters
    model, optimizer, train_loader, val_loader = accelerator.prepare(model, optimizer, train_loader, val_loader)
    _train_epochs(accelerator, model, optimizer, train_loader, val_loader, scheduler, loss_fn, out_dir, config,
                  desc, on_epoch_end, history, start_epoch, bad_epochs, fp, fp_full)
    accelerator.wait_for_everyone()      # the main process's last checkpoint is complete before others read it
    return _finish(accelerator.unwrap_model(model), history, out_dir, config, desc,
                   main=accelerator.is_main_process)


def _train_epochs(accelerator: Accelerator, model, optimizer, train_loader, val_loader, scheduler, loss_fn,
                  out_dir: Path, config: TrainConfig, desc: str, on_epoch_end, history: History, start_epoch: int,
                  bad_epochs: int, fp: str, fp_full: dict) -> History:
    """The epochs from ``start_epoch`` on, in every process of the run; the main process writes
    the checkpoints and prints."""
    ckpt_last, ckpt_best = out_dir / "checkpoints" / "last", out_dir / "checkpoints" / "best"
    plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    several, main = accelerator.num_processes > 1, accelerator.is_main_process
    if start_epoch <= config.epochs:
        history.processes = accelerator.num_processes

    for epoch in range(start_epoch, config.epochs + 1):
        set_seed(config.seed + epoch)  # shuffling, dropout and augmentation of this epoch
        if several:
            _seed_processes(train_loader, config.seed + epoch, accelerator.process_index)
        t0 = time.perf_counter()
        model.train()
        tot_loss = tot_correct = tot_n = 0.0
        steps = []    # (loss x images, correct, images) of each step in this process
        bar = progress(train_loader, desc=f"{desc} epoch {epoch}/{config.epochs}", leave=False, disable=not main)
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
            pred = (prob_fake_from_logits(logits.detach()) >= 0.5).long()
            tot_loss += loss.item() * n
            tot_correct += (pred == y).sum().item()
            tot_n += n
            if several:
                steps.append((loss.item() * n, (pred == y).sum().item(), n))
            else:
                history.batches.append({"epoch": epoch, "step": step, "loss": loss.item()})
            bar.set_postfix(loss=f"{tot_loss / tot_n:.4f}")
        if several:   # every step's loss over the whole batch (all processes' shares), and the epoch's totals
            per_step = accelerator.gather(torch.tensor(steps, dtype=torch.float64, device=accelerator.device))
            per_step = per_step.reshape(accelerator.num_processes, len(steps), 3).sum(0).cpu()
            for step, (loss_sum, _, n) in enumerate(per_step.tolist()):
                history.batches.append({"epoch": epoch, "step": step, "loss": loss_sum / n})
            tot_loss, tot_correct, tot_n = per_step.sum(0).tolist()
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
            if main:
                save_weights(accelerator.unwrap_model(model), ckpt_best / "model.safetensors")
        else:
            bad_epochs += 1
        stop = config.patience is not None and bad_epochs >= config.patience
        history.stopped_early = stop and epoch < config.epochs
        finished = stop or epoch == config.epochs
        if main:
            save_checkpoint(ckpt_last, accelerator.unwrap_model(model), optimizer, scheduler, history,
                        {"epoch": epoch, "bad_epochs": bad_epochs, "fingerprint": fp, "finished": finished,
                         "fingerprint_detail": fp_full})
            print(_epoch_line(desc, config, row, history.best_epoch == epoch), flush=True)
            if on_epoch_end is not None:
                on_epoch_end(epoch, row)
        if stop:
            if main:
                print(f"{desc}: early stop after epoch {epoch} (no {config.monitor} improvement "
                      f"for {config.patience} epochs)")
            break
    return history


def _epoch_line(desc: str, config: TrainConfig, row: dict, best: bool) -> str:
    return (f"{desc} epoch {row['epoch']}/{config.epochs}: train_loss {row['train_loss']:.4f} "
            f"acc {row['train_acc']:.4f} | val_loss {row['val_loss']:.4f} acc {row['val_acc']:.4f} "
            f"| lr {row['lr']:.2e} | {row['seconds']:.1f}s" + ("  *best*" if best else ""))


def _finish(model: nn.Module, history: History, out_dir: Path, config: TrainConfig, desc: str,
            main: bool = True) -> History:
    """After the epochs: history files and the run-log line (main process), the best weights
    restored (every process)."""
    ckpt_dir = out_dir / "checkpoints"
    ckpt_best = ckpt_dir / "best"
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "history.json").write_text(json.dumps(history.epochs, indent=1))
        pd.DataFrame(history.batches).to_csv(out_dir / "history_batches.csv", index=False)
    if config.restore_best and (ckpt_best / "model.safetensors").exists():
        restore_weights(model, ckpt_best / "model.safetensors", ckpt_dir, desc)
    if main:
        extra = {"processes": history.processes} if history.processes > 1 and not history.reloaded else {}
        runlog.record(desc, history.status, out_dir, epochs=len(history.epochs),
                      seconds=round(history.train_seconds, 1), **extra)
    return history


# ------------------------------------------------------------------------------ several processes
PROCESSES_VAR = "AIDETECT_NUM_PROCESSES"


def requested_processes() -> int:
    """The number of training processes asked for with ``AIDETECT_NUM_PROCESSES`` (1 when it
    is unset or empty; ValueError with one line naming the variable for anything but a whole
    number >= 1)."""
    raw = os.environ.get(PROCESSES_VAR, "").strip()
    if not raw:
        return 1
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{PROCESSES_VAR}={raw!r}: the number of training processes must be a whole number >= 1")
    return n


def world_size() -> int:
    """How many processes this one already trains with: more than 1 in a script started by
    ``accelerate launch`` or ``torchrun`` (``WORLD_SIZE``), and in the processes :func:`launch`
    starts; else 1."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))
    except ValueError:
        return 1


def processes_to_start(what: str = "training") -> int:
    """How many processes :func:`fit` (and ``vlm.train_lora``) start for ``what``: the
    ``AIDETECT_NUM_PROCESSES`` asked for, or 1 (train here) when it is 1 or when this process
    is already one of several (``accelerate launch``). With GPUs, one process per GPU: asking
    for more than the machine has is a ValueError naming both numbers. On a CPU, N processes
    share its cores (each gets its share of torch's threads) and talk through gloo: what CI
    tests; it is rarely faster than one process."""
    n = requested_processes()
    if n == 1 or world_size() > 1:
        return 1
    if torch.cuda.is_available():
        have = torch.cuda.device_count()
        if n > have:
            raise ValueError(f"{PROCESSES_VAR}={n}: this machine has {have} GPU(s), and each training process "
                             f"uses one; ask for at most {have}")
    return n


def _check_split(n: int, *loaders: DataLoader) -> None:
    """Every batch is split between the processes: its size must be a multiple of ``n``."""
    for name, loader in zip(("training", "validation"), loaders):
        b = loader.batch_size
        if b is None:
            raise ValueError(f"fit on {n} processes needs a {name} DataLoader with a batch_size "
                             f"(not a batch_sampler); or set {PROCESSES_VAR}=1")
        if b % n:
            raise ValueError(f"fit on {n} processes splits every batch between them: the {name} loader's batch "
                             f"size {b} is not a multiple of {n}; use a multiple of {n} or set {PROCESSES_VAR}=1")


def _seed_processes(train_loader, seed: int, rank: int) -> None:
    """Each epoch of a run on several processes: the shuffled order is the one a single process
    would draw after ``set_seed(seed)`` (the DataLoader draws its base seed from torch's RNG,
    then its RandomSampler the seed of the permutation), and the same in every process (it is
    rank 0's, which Accelerate also broadcasts); dropout and augmentation get a stream of their
    own in each process (the same in all of them would draw equal masks for their shares)."""
    generator = getattr(train_loader, "synchronized_generator", None)
    if generator is not None:
        state = torch.get_rng_state()
        torch.empty((), dtype=torch.int64).random_()                           # the loader's base seed
        generator.manual_seed(int(torch.empty((), dtype=torch.int64).random_().item()))
        torch.set_rng_state(state)
    if rank > 0:
        set_seed(seed + 1_000_003 * rank)


def _loader_spec(loader: DataLoader) -> dict:
    """What rebuilds ``loader`` in another process: its dataset and settings, not its running
    worker processes (a DataLoader with persistent workers cannot be pickled once iterated)."""
    from torch.utils.data import RandomSampler, SequentialSampler
    sampler = loader.sampler
    return {"dataset": loader.dataset, "batch_size": loader.batch_size,
            "shuffle": isinstance(sampler, RandomSampler),
            "sampler": None if isinstance(sampler, (RandomSampler, SequentialSampler)) else sampler,
            "num_workers": loader.num_workers, "collate_fn": loader.collate_fn, "pin_memory": loader.pin_memory,
            "drop_last": loader.drop_last, "persistent_workers": loader.persistent_workers,
            "worker_init_fn": loader.worker_init_fn}


def _rebuild_loader(spec: dict) -> DataLoader:
    spec = dict(spec)
    if spec["sampler"] is not None:
        spec["shuffle"] = False
    return DataLoader(**spec)


def _fit_launched(model, train_loader, val_loader, optimizer, out_dir: Path, config: TrainConfig, scheduler, loss_fn,
                  resume: bool, desc: str, on_epoch_end, fp_full: dict, n: int) -> History:
    """:func:`fit` on ``n`` new processes (:func:`launch`), once ``out_dir`` is held. This
    process reads and checks the checkpoint first (a resumed state is loaded here, and the new
    processes start from it), then waits, then loads what the main one of them saved."""
    fp = fingerprint_hash(fp_full)
    history, start_epoch, bad_epochs = _start(model, optimizer, scheduler, out_dir, config, resume, desc, fp, fp_full)
    if config.channels_last:
        to_channels_last(model)
    if start_epoch <= config.epochs:
        method = launch(_fit_worker, (model, _loader_spec(train_loader), _loader_spec(val_loader), optimizer,
                                      scheduler, loss_fn, out_dir, config, desc, on_epoch_end, history, start_epoch,
                                      bad_epochs, fp, fp_full), n)
        _to_training_device(model, optimizer)
        ckpt_dir = out_dir / "checkpoints"
        saved = read_state(ckpt_dir / "last" / "state.json", ckpt_dir, desc)
        history, _, _ = load_checkpoint(model, optimizer, scheduler, ckpt_dir / "last", ckpt_dir, saved, desc)
        if method == "spawn":   # a spawned process prints to the terminal, not into a notebook: said here too
            for row in history.epochs[start_epoch - 1:]:
                print(_epoch_line(desc, config, row, history.best_epoch == row["epoch"]))
    else:
        _to_training_device(model, optimizer)
    return _finish(model, history, out_dir, config, desc)


def _to_training_device(model: nn.Module, optimizer) -> None:
    """Where one process's fit leaves the model (Accelerate moves it to the GPU): there too
    after a run on several processes, with the optimizer's state beside its parameters."""
    if torch.cuda.is_available() and device_of(model) != default_device():
        model.to(default_device())
        optimizer.load_state_dict(optimizer.state_dict())     # moves its state to its parameters' device


def _fit_worker(model, train_spec: dict, val_spec: dict, optimizer, scheduler, loss_fn, out_dir: Path,
                config: TrainConfig, desc: str, on_epoch_end, history: History, start_epoch: int, bad_epochs: int,
                fp: str, fp_full: dict) -> None:
    """One of the processes :func:`_fit_launched` starts: the epochs, with the batches split."""
    accelerator = make_accelerator(config.mixed_precision)
    model, optimizer, train_loader, val_loader = accelerator.prepare(
        model, optimizer, _rebuild_loader(train_spec), _rebuild_loader(val_spec))
    _train_epochs(accelerator, model, optimizer, train_loader, val_loader, scheduler, loss_fn, out_dir, config,
                  desc, on_epoch_end, history, start_epoch, bad_epochs, fp, fp_full)
    accelerator.wait_for_everyone()


class TrainingProcessError(RuntimeError):
    """A process of a run started by :func:`launch` failed; ``str(err)`` names it and its error."""


def start_method() -> str:
    """How :func:`launch` starts its processes: "fork" (a copy of this process: the notebook's
    model, data and functions as they are; nothing is pickled) unless CUDA is already in use
    here, which a forked process cannot use again: then "spawn" (fresh interpreters, given
    everything pickled by value with cloudpickle, so classes and functions defined in the
    notebook travel too). In a Jupyter notebook on a GPU the setup cell's
    ``torch.cuda.get_device_name`` already starts CUDA, so it is spawn there. A spawned process
    imports the script that started it again (Python's rule): a plain script needs its
    training under ``if __name__ == "__main__":`` (notebooks and papermill do not)."""
    return "spawn" if torch.cuda.is_available() and torch.cuda.is_initialized() else "fork"


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pickler():
    """cloudpickle, else dill (a dependency of datasets), else pickle (by reference only)."""
    for name in ("cloudpickle", "dill"):
        try:
            return __import__(name)
        except ImportError:
            continue
    import pickle
    return pickle


def _dumps_by_value(obj) -> bytes:
    pickler = _pickler()
    try:
        return pickler.dumps(obj)
    except Exception as exc:  # noqa: BLE001 - PicklingError, TypeError, AttributeError
        raise TrainingProcessError(f"the training processes are spawned (CUDA is in use in this process) and get "
                                   f"the model, data and functions pickled, which failed with {pickler.__name__} "
                                   f"({type(exc).__name__}: {one_line(exc, 160)}); pip install cloudpickle, or "
                                   f"set {PROCESSES_VAR}=1") from None


def _loads(data: bytes):
    return _pickler().loads(data)


def launch(fn: Callable, args: tuple, num_processes: int) -> str:
    """Run ``fn(*args)`` in ``num_processes`` new processes that train together and wait for
    them: torch.distributed's elastic launcher (what ``accelerate.notebook_launcher`` and
    ``torchrun`` use), one machine, ranks 0..N-1 on a free local port; each process finds the
    others through the environment (``RANK``, ``WORLD_SIZE``, ``MASTER_PORT``), so an
    ``Accelerator`` or a Hugging Face ``Trainer`` made there runs distributed: gloo on CPUs,
    NCCL on GPUs (one process per GPU). Started by :func:`start_method`. Any state of
    Accelerate in this process is not carried over. A process that fails stops the others;
    its error is raised here as one line (:class:`TrainingProcessError`; the original type for
    :class:`CheckpointError` and KeyboardInterrupt). Returns the start method."""
    import tempfile

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch
    method = start_method()
    err_dir = tempfile.mkdtemp(prefix="aidetect-launch-")
    payload = (fn, args, torch.get_num_threads(), num_processes, err_dir)
    if method == "spawn":
        payload = _dumps_by_value(payload)
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=num_processes,
                          run_id=f"aidetect-{os.getpid()}-{time.time_ns()}", rdzv_backend="static",
                          rdzv_endpoint=f"127.0.0.1:{_free_port()}", rdzv_configs={"rank": 0}, max_restarts=0,
                          monitor_interval=0.1, start_method=method)
    import logging
    import signal

    from torch.distributed.elastic.multiprocessing.api import SignalException
    elastic = logging.getLogger("torch.distributed.elastic")   # its own report of a failure: said below instead
    level = elastic.level
    elastic.setLevel(logging.CRITICAL)
    # the launcher installs its own handlers (Ctrl-C stops the processes), and leaves them installed
    signals = [getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT") if hasattr(signal, name)]
    handlers = {sig: signal.getsignal(sig) for sig in signals}
    try:
        elastic_launch(config, _launched)(method, payload)
        return method
    except ChildFailedError as exc:
        raise _child_error(err_dir, exc, num_processes) from None
    except SignalException as exc:      # the processes are stopped; say it as Python would
        if exc.sigval == signal.SIGINT:
            raise KeyboardInterrupt from None
        raise
    finally:
        elastic.setLevel(level)
        shutil.rmtree(err_dir, ignore_errors=True)
        try:
            for sig, handler in handlers.items():
                if handler is not None:
                    signal.signal(sig, handler)
        except ValueError:              # not the main thread: the launcher installed nothing either
            pass


def _launched(method: str, payload) -> None:
    """The entry point of each process :func:`launch` starts."""
    fn, args, threads, n, err_dir = _loads(payload) if method == "spawn" else payload
    from accelerate.state import AcceleratorState, GradientState
    AcceleratorState._reset_state(reset_partial_state=True)   # a fork copies the parent's one-process state
    GradientState._reset_state()
    if not torch.cuda.is_available():                          # the cores are shared (Accelerate reads the variable)
        os.environ["OMP_NUM_THREADS"] = str(max(1, threads // n))
        torch.set_num_threads(max(1, threads // n))
    try:
        fn(*args)
    except BaseException as exc:
        import traceback
        with open(Path(err_dir) / f"{os.environ.get('RANK', '0')}.json", "w", encoding="utf-8") as f:
            json.dump({"type": type(exc).__name__, "message": str(exc), "time": time.time(),
                       "traceback": traceback.format_exc()}, f)
        raise
    finally:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception:  # noqa: BLE001 - a peer already gone
                pass


def _child_error(err_dir: str, exc, n: int) -> BaseException:
    """The first error of a failed launch, as one line (or its own type)."""
    errors = []
    for f in Path(err_dir).glob("*.json"):
        try:
            errors.append((json.loads(f.read_text()), f.stem))
        except (OSError, ValueError):
            continue
    if not errors:   # killed (a signal, out of memory) before it could say why
        rank, failure = exc.get_first_failure()
        why = one_line(failure.message or "", 160) or f"exit code {failure.exitcode}"
        return TrainingProcessError(f"training process {rank} of {n} died ({why}); what it saved is kept: "
                                    "run again to resume")
    err, rank = min(errors, key=lambda e: e[0]["time"])
    if err["type"] == "KeyboardInterrupt":
        return KeyboardInterrupt()
    if err["type"] == "CheckpointError":
        return CheckpointError(err["message"])
    error = TrainingProcessError(f"training process {rank} of {n} failed: {err['type']}: "
                                 f"{one_line(err['message'], 300)}")
    if hasattr(error, "add_note"):   # Python 3.11+: shown under the traceback, not in the one line
        error.add_note(f"in training process {rank}:\n{err.get('traceback', '').rstrip()}")
    return error


@torch.no_grad()
def evaluate_loss(model: nn.Module, loader: DataLoader, loss_fn: Callable = default_loss,
                  accelerator: Accelerator | None = None) -> dict:
    """Mean loss and accuracy over ``loader`` (model in eval mode)."""
    model.eval()
    tot_loss = tot_correct = tot_n = 0.0
    channels_last = is_channels_last(model)
    for x, y in loader:
        if accelerator is None:
            x, y = x.to(device_of(model)), y.to(device_of(model))
        x = match_memory_format(x, channels_last)
        logits = logits_of(model(x))
        if accelerator is not None:
            logits, y = accelerator.gather_for_metrics((logits, y))
        tot_loss += loss_fn(logits, y).item() * len(y)
        tot_correct += ((prob_fake_from_logits(logits) >= 0.5).long() == y).sum().item()
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
    channels_last = is_channels_last(model)
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

