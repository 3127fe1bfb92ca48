"""LoRA fine-tuning with Hugging Face's ``Trainer``, scoring only the answer tokens.

:class:`AnswerLossTrainer` computes cross-entropy (method 1) or focal loss (method 2, see
``losses``) on the answer tokens. TRL's ``SFTTrainer``, which Unsloth's notebooks use, is a
``Trainer`` subclass whose extra work (formatting a text dataset) is done here by
``prompt.VLMCollator``; the custom loss is the reason to stay on the base class. A run resumes
after an interruption and is reloaded when finished, only for the same settings.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from .. import runlog
from ..engine import launch, processes_to_start, world_size
from ..gpu import autocast_precision
from ..losses import answer_cross_entropy, answer_focal_loss
from ..metrics import classification_metrics, summary_line
from ..paths import method_dir
from ..progress import enabled as progress_enabled
from ..runs import (changed, data_signature, json_ready, run_status, tensors_signature, weights_signature,
                    write_beside_then_rename)
from ..transforms import ArrayDataset, eval_transform
from .backends import describe_model, recipe_model
from .data import recipe_data
from .detector import evaluate_and_save, score
from .prompt import VLMCollator


def _trainer_class():
    from transformers import Trainer

    class AnswerLossTrainer(Trainer):
        """``Trainer`` whose loss is computed on the answer tokens only: ``loss="ce"`` or
        ``"focal"`` (with ``focal_alpha``, ``focal_gamma``)."""

        def __init__(self, *args, loss: str = "ce", focal_alpha: float = 0.75, focal_gamma: float = 2.0, **kw):
            if loss not in ("ce", "focal"):
                raise ValueError(f"loss must be 'ce' or 'focal', got {loss!r}")
            super().__init__(*args, **kw)
            self.loss_name, self.focal_alpha, self.focal_gamma = loss, focal_alpha, focal_gamma

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels, is_fake = inputs.pop("labels"), inputs.pop("is_fake")
            out = model(**inputs)
            if self.loss_name == "focal":
                loss = answer_focal_loss(out.logits, labels, is_fake, self.focal_alpha, self.focal_gamma)
            else:
                loss = answer_cross_entropy(out.logits, labels)
            return (loss, out) if return_outputs else loss

    return AnswerLossTrainer


def train_lora(model, processor, train_dataset, out_dir: str | Path, *, loss: str = "ce",
               focal_alpha: float = 0.75, focal_gamma: float = 2.0, epochs: float = 1, lr: float = 2e-4,
               batch_size: int = 8, grad_accum: int = 1, scheduler: str = "linear", warmup_ratio: float = 0.05,
               weight_decay: float = 0.01, optim: str = "adamw_torch", seed: int = 0, logging_steps: int = 5,
               save_steps: int = 50):
    """Fine-tune the LoRA adapters; returns the ``Trainer`` (its ``state.log_history`` holds the losses).

    Checkpoints go to ``out_dir`` every ``save_steps`` (the last one kept); a run that was
    interrupted resumes from there, and a finished one returns at once, but only for the same
    settings: ``out_dir/fingerprint.json`` records every argument, a hash of the training data
    and of the model's initial trainable (LoRA) weights, and the base model's identity (its
    config, and for a model under 100 M parameters all its weights). Anything else removes the
    old checkpoints and trains afresh. The outcome is recorded with ``runlog``.

    Several processes, as ``engine.fit`` (``AIDETECT_NUM_PROCESSES=N``: N new processes, this
    one waits and then loads their final adapter weights and trainer state; or a script under
    ``accelerate launch``): each optimizer step still covers ``batch_size`` x ``grad_accum``
    images, shared out between the processes (:func:`per_process_batch`), so the recipe does
    not change with N; the Trainer saves from the main process only, and the fingerprint, the
    timing file and the run-log line are written once.
    """
    from transformers.trainer_utils import get_last_checkpoint
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = dict(loss=loss, focal_alpha=focal_alpha, focal_gamma=focal_gamma, epochs=epochs, lr=lr,
                    batch_size=batch_size, grad_accum=grad_accum, scheduler=scheduler, warmup_ratio=warmup_ratio,
                    weight_decay=weight_decay, optim=optim, seed=seed, save_steps=save_steps)
    fingerprint = _run_fingerprint(model, train_dataset, settings)
    n, joined = processes_to_start("LoRA fine-tune"), world_size()
    main = joined == 1 or _rank() == 0
    if joined > 1:       # one of the processes of `accelerate launch`: the main one decides, the others wait
        from accelerate import PartialState
        state = PartialState(cpu=not torch.cuda.is_available())
        fresh_reason = _forget_other_runs(out_dir, fingerprint) if state.is_main_process else None
        state.wait_for_everyone()
    else:
        fresh_reason = _forget_other_runs(out_dir, fingerprint)
    recipe = dict(out_dir=out_dir, epochs=epochs, lr=lr, batch_size=batch_size, grad_accum=grad_accum,
                  scheduler=scheduler, warmup_ratio=warmup_ratio, weight_decay=weight_decay, optim=optim, seed=seed,
                  logging_steps=logging_steps, save_steps=save_steps, n_train=len(train_dataset))
    extra = dict(loss=loss, focal_alpha=focal_alpha, focal_gamma=focal_gamma)
    last = get_last_checkpoint(str(out_dir)) if any(out_dir.glob("checkpoint-*")) else None
    timing = out_dir / "train_seconds.json"
    before = json.loads(timing.read_text())["seconds"] if (timing.exists() and last) else 0.0
    done = int(last.rsplit("-", 1)[1]) if last else 0
    t0 = time.perf_counter()
    if _finished(last):      # nothing to train: the adapters and the losses of the finished run
        trainer = _make_trainer(model, processor, train_dataset, recipe, extra, processes=joined)
        _load_finished(trainer, last)
    elif n > 1:              # n new processes train; this one then loads what they saved last
        launch(_lora_worker, (model, processor, train_dataset, recipe, extra, last, n), n)
        trainer = _make_trainer(model, processor, train_dataset, recipe, extra, processes=1)
        _load_finished(trainer, get_last_checkpoint(str(out_dir)))
    else:
        trainer = _make_trainer(model, processor, train_dataset, recipe, extra, processes=joined)
        trainer.train(resume_from_checkpoint=last)
    trainer.train_seconds = before + time.perf_counter() - t0   # summed over interrupted runs
    trainer.processes = 1 if _finished(last) else (n if n > 1 else joined)   # how many processes trained now
    if main:
        timing.write_text(json.dumps({"seconds": trainer.train_seconds}))
    status = run_status(reloaded=last is not None and done >= trainer.state.max_steps,
                        resumed_at=f"step {done + 1} of {trainer.state.max_steps}" if last is not None else None,
                        fresh_reason=fresh_reason)
    if main:
        more = {"processes": trainer.processes} if trainer.processes > 1 else {}
        runlog.record("LoRA fine-tune", status, out_dir, steps=trainer.state.global_step, **more)
    return trainer


def per_process_batch(batch_size: int, grad_accum: int, processes: int) -> tuple[int, int]:
    """(batch size per process, accumulation steps) that make one optimizer step cover the same
    ``batch_size`` x ``grad_accum`` images on ``processes`` processes as on one: fewer
    accumulation steps first, then smaller batches (8 x 1 on 2: 4 x 1; 2 x 4 on 2: 2 x 2).
    ValueError (one line) when that product does not split into equal shares."""
    total = batch_size * grad_accum
    if total % processes:
        raise ValueError(f"LoRA fine-tune on {processes} processes: a step of {batch_size} images x {grad_accum} "
                         f"accumulation steps = {total} does not split into {processes} equal shares; choose a "
                         f"batch_size x grad_accum that is a multiple of {processes}, or set AIDETECT_NUM_PROCESSES=1")
    share = total // processes
    per_device = max(d for d in range(1, batch_size + 1) if share % d == 0)
    return per_device, share // per_device


def _rank() -> int:
    try:
        return int(os.environ.get("RANK", "0") or 0)
    except ValueError:
        return 0


def _make_trainer(model, processor, train_dataset, recipe: dict, extra: dict, processes: int):
    """The Trainer of :func:`train_lora`, for a run on ``processes`` processes."""
    from transformers import TrainingArguments
    r = recipe
    per_device, accum = per_process_batch(r["batch_size"], r["grad_accum"], processes)
    steps = int(np.ceil(r["n_train"] / (r["batch_size"] * r["grad_accum"])) * r["epochs"])
    precision = autocast_precision()   # bf16 where native, fp16 (+ Trainer's gradient scaler) on a T4, CPU: no
    args = TrainingArguments(
        output_dir=str(r["out_dir"]), num_train_epochs=r["epochs"], per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accum, learning_rate=r["lr"], lr_scheduler_type=r["scheduler"],
        warmup_steps=int(round(r["warmup_ratio"] * steps)), weight_decay=r["weight_decay"], optim=r["optim"],
        logging_steps=r["logging_steps"], save_strategy="steps", save_steps=r["save_steps"], save_total_limit=1,
        report_to="none", seed=r["seed"], data_seed=r["seed"], bf16=precision == "bf16", fp16=precision == "fp16",
        use_cpu=not torch.cuda.is_available(), remove_unused_columns=False, dataloader_num_workers=0,
        disable_tqdm=not progress_enabled(),
        # several processes: every LoRA matrix is used in every forward pass, and DDP's search for
        # unused ones would break with gradient checkpointing (4-bit bases, peft's kbit preparation)
        ddp_find_unused_parameters=False)
    trainer = _trainer_class()(model=model, args=args, train_dataset=train_dataset,
                               data_collator=VLMCollator(processor), **extra)
    return _quiet_logs(trainer)


def _quiet_logs(trainer):
    """No log dict printed per ``logging_steps``: the losses stay in ``trainer.state.log_history``
    (:func:`loss_history`, :func:`loss_table` show them as a table after training). Trainer's
    ``PrinterCallback`` (progress bars off) is removed and its terminal progress bar, which
    writes every log dict under the bar, is replaced by one that shows the last loss on the bar;
    Jupyter's progress table (``NotebookProgressCallback``, bars on) is kept."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class LossOnBar(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and self.training_bar is not None and "loss" in (logs or {}):
                self.training_bar.set_postfix(loss=f"{logs['loss']:.4g}", refresh=False)

    trainer.remove_callback(PrinterCallback)
    if any(type(c) is ProgressCallback for c in trainer.callback_handler.callbacks):
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(LossOnBar)
    return trainer


def _finished(checkpoint: str | None) -> bool:
    """Whether ``checkpoint`` is the last step of its run (its trainer_state.json says so)."""
    if checkpoint is None:
        return False
    try:
        state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
        return int(state["global_step"]) >= int(state["max_steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _lora_worker(model, processor, train_dataset, recipe: dict, extra: dict, last: str | None, n: int) -> None:
    """One of the processes :func:`train_lora` starts: the Trainer, distributed over them."""
    trainer = _make_trainer(model, processor, train_dataset, recipe, extra, processes=n)
    trainer.train(resume_from_checkpoint=last)


def _load_finished(trainer, checkpoint: str) -> None:
    """Load the adapter weights and the trainer state (losses, steps) the processes saved last."""
    from transformers.trainer_callback import TrainerState
    trainer._load_from_checkpoint(checkpoint)
    trainer.state = TrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json"))


def _run_fingerprint(model, train_dataset, settings: dict) -> dict:
    """What determines a LoRA run's result (see :func:`train_lora`), from ``runs``' pieces."""
    trainable = tensors_signature((name, p) for name, p in model.named_parameters() if p.requires_grad)
    base = getattr(model, "get_base_model", lambda: model)()
    n_params = sum(p.numel() for p in base.parameters())
    ident = {"name": getattr(base.config, "_name_or_path", ""), "config": base.config.to_json_string(use_diff=True)}
    if n_params < 100_000_000:
        ident["weights"] = weights_signature(base)
    return {"settings": settings, "train_data": data_signature(train_dataset),
            "initial_trainable": trainable, "base": ident}


def _forget_other_runs(out_dir: Path, fingerprint: dict) -> str | None:
    """Remove checkpoints of a run with other settings; write this run's fingerprint (whole or
    not at all). Returns what changed (``runs.changed``; None when nothing was there or nothing
    changed)."""
    file = out_dir / "fingerprint.json"
    now = json_ready(fingerprint)
    saved = json.loads(file.read_text()) if file.exists() else None
    checkpoints = list(out_dir.glob("checkpoint-*"))
    reason = None
    if checkpoints and saved != now:
        reason = changed(saved, now)
        print(f"[vlm] the checkpoints in {out_dir} are from other settings ({reason}): removed, training afresh")
        for c in checkpoints:
            shutil.rmtree(c)
        (out_dir / "train_seconds.json").unlink(missing_ok=True)
    write_beside_then_rename(file, lambda tmp: tmp.write_text(json.dumps(now, indent=1)))
    return reason


def loss_history(trainer) -> "pd.DataFrame":
    """Training loss per logged step, from ``trainer.state.log_history``."""
    import pandas as pd
    rows = [{"step": h["step"], "epoch": h.get("epoch"), "loss": h["loss"], "lr": h.get("learning_rate")}
            for h in trainer.state.log_history if "loss" in h]
    return pd.DataFrame(rows, columns=["step", "epoch", "loss", "lr"])


def loss_table(losses: "pd.DataFrame", rows: int = 10) -> "pd.DataFrame":
    """At most ``rows`` + 1 rows of :func:`loss_history` to print: every k-th logged step and
    the last, loss and epoch rounded."""
    n = len(losses)
    k = max(1, -(-n // rows))
    keep = sorted(set(range(0, n, k)) | ({n - 1} if n else set()))
    return losses.iloc[keep].round({"epoch": 2, "loss": 4}).reset_index(drop=True)


def print_losses(losses: "pd.DataFrame", rows: int = 10) -> None:
    """:func:`loss_table` printed under one line saying how many steps were logged."""
    table = loss_table(losses, rows)
    print(f"training loss at {len(table)} of {len(losses)} logged steps:")
    print(table.to_string(index=False, formatters={"lr": "{:.3g}".format}))


# ------------------------------------------------------------------------------ the whole recipe
@dataclass(frozen=True, kw_only=True)
class Recipe:
    """Notebook 05's recipe: the data, the base model + LoRA, the fine-tuning and the scoring.

    Built in notebook 06 from its parameters in one cell, each field from the parameter of the
    same name (``Recipe.from_params(P)`` does the same in one call). Frozen: a variant is a new
    recipe, ``dataclasses.replace(recipe, epochs=3)``.
    """

    # what is saved, and under which name (results/<method>/)
    method: str
    profile: str
    seed: int = 0
    # data: vlm.detection_data
    dataset: str = "cifake"
    input_size: int
    n_train: int | None
    n_test: int | None
    prepared_dir: str | None = None
    min_width: int = 1024
    sid_set_path: str | None = None
    # base model + LoRA: vlm.build_lora_model
    model_name: str
    backend: str = "auto"
    load_in_4bit: bool = True
    tiny_config: dict | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None
    lora_r: int = 16
    lora_alpha: float = 16
    lora_dropout: float = 0.0
    # fine-tuning on the answer tokens: vlm.train_lora
    epochs: float = 1
    lr: float
    batch_size: int = 8
    grad_accum: int = 1
    scheduler: str = "linear"
    warmup_ratio: float = 0.05
    optim: str = "adamw_torch"
    logging_steps: int = 5
    focal_alpha: float = 0.75       # used by loss="focal" only
    focal_gamma: float = 2.0
    # scoring
    zero_shot: bool = False         # also score the test images before fine-tuning
    eval_batch_size: int = 32

    @classmethod
    def from_params(cls, P) -> "Recipe":
        """Every field from the parameter of the same name (``params.load``'s ``P``); fields
        ``P`` lacks (``focal_*`` in notebook 05) keep their defaults."""
        return cls(**{f.name: getattr(P, f.name) for f in fields(cls) if hasattr(P, f.name)})


@dataclass
class RecipeRun:
    """What :func:`run_recipe` made: the data, the model, the trainer, the losses, the zero-shot
    P(FAKE) (None when ``recipe.zero_shot`` is off) and the metrics record it saved."""

    train: object
    test: object
    prep: dict
    model: object
    processor: object
    info: dict
    trainer: object
    losses: "pd.DataFrame"
    record: dict
    zero_shot: np.ndarray | None = None


def run_recipe(recipe: Recipe, *, train_transform=None, loss: str = "ce", data=None, model=None,
               domain_check=None, out_dir: str | Path | None = None, extra: dict | None = None) -> RecipeRun:
    """Method 1's whole recipe, the steps notebook 05 shows one by one, in one call:

    data (:func:`~.data.recipe_data`), base model + LoRA (:func:`~.backends.recipe_model`),
    P(FAKE) before fine-tuning when ``recipe.zero_shot``, fine-tuning with :func:`train_lora` on
    the answer tokens (the recipe's ``epochs``, ``lr``, ``batch_size``, ``grad_accum``,
    ``scheduler``, ``warmup_ratio``, ``optim``, ``seed``, ``logging_steps``), the loss history
    in ``loss_history.csv`` (printed as a short table), and scoring and saving with
    :func:`~.detector.evaluate_and_save` into results/``recipe.method``/.

    What a variant changes is passed in: ``train_transform`` (None: method 1's evaluation
    transform, no augmentation), ``loss`` ("ce" or "focal", with the recipe's ``focal_alpha``
    and ``focal_gamma``), ``domain_check`` (saved in the model folder). ``data`` (train, test,
    prep) and ``model`` (model, processor, info) may be given when the notebook already built
    them.
    """
    from torch.utils.data import DataLoader

    r = recipe
    out_dir = Path(out_dir) if out_dir else method_dir(r.method)
    train, test, prep = data if data is not None else recipe_data(r)
    model, processor, info = model if model is not None else recipe_model(r)
    print(describe_model(info))
    eval_tf = eval_transform(prep)
    p0 = None
    if r.zero_shot:   # LoRA starts as the identity (its B matrices are zero): this is the base model
        loader = DataLoader(ArrayDataset(test.images, test.labels, eval_tf), batch_size=r.eval_batch_size)
        p0, _ = score(model, processor, info, loader, desc="zero-shot")
        print("before fine-tuning:", summary_line(classification_metrics(test.labels, p0)))
    else:
        print("before fine-tuning: not scored (zero_shot is off)")
    train_ds = ArrayDataset(train.images, train.labels, train_transform or eval_tf)
    focal = {"focal_alpha": r.focal_alpha, "focal_gamma": r.focal_gamma} if loss == "focal" else {}
    model.train()
    trainer = train_lora(model, processor, train_ds, out_dir / "trainer", loss=loss, epochs=r.epochs, lr=r.lr,
                         batch_size=r.batch_size, grad_accum=r.grad_accum, scheduler=r.scheduler,
                         warmup_ratio=r.warmup_ratio, optim=r.optim, seed=r.seed, logging_steps=r.logging_steps,
                         **focal)
    losses = loss_history(trainer)
    losses.to_csv(out_dir / "loss_history.csv", index=False)
    print(f"trained {trainer.state.global_step} steps in {trainer.train_seconds:.1f} s")
    print_losses(losses)
    names = {"ce": "cross-entropy", "focal": "focal"}
    record = evaluate_and_save(trainer, processor, info, test, method=r.method, profile=r.profile,
                               preprocessing=prep, dataset=r.dataset, batch_size=r.eval_batch_size,
                               extra={"n_train": len(train), "lora_r": r.lora_r, "loss": names[loss], **(extra or {})},
                               domain_check=domain_check, out_dir=out_dir)
    return RecipeRun(train, test, prep, model, processor, info, trainer, losses, record, p0)
