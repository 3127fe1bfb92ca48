"""LoRA fine-tuning with Hugging Face's ``Trainer``, scoring only the answer tokens.

:class:`AnswerLossTrainer` computes cross-entropy (method 1) or focal loss (method 2, see
``losses``) on the answer tokens. TRL's ``SFTTrainer``, which Unsloth's notebooks use, is a
``Trainer`` subclass whose extra work (formatting a text dataset) is done here by
``prompt.VLMCollator``; the custom loss is the reason to stay on the base class. A run resumes
after an interruption and is reloaded when finished, only for the same settings.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..losses import answer_cross_entropy, answer_focal_loss
from ..progress import enabled as progress_enabled
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
    """
    from transformers import TrainingArguments
    from transformers.trainer_utils import get_last_checkpoint

    from .. import runlog
    from ..gpu import autocast_precision
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = dict(loss=loss, focal_alpha=focal_alpha, focal_gamma=focal_gamma, epochs=epochs, lr=lr,
                    batch_size=batch_size, grad_accum=grad_accum, scheduler=scheduler, warmup_ratio=warmup_ratio,
                    weight_decay=weight_decay, optim=optim, seed=seed, save_steps=save_steps)
    fingerprint = _run_fingerprint(model, train_dataset, settings)
    fresh_reason = _forget_other_runs(out_dir, fingerprint)
    steps = int(np.ceil(len(train_dataset) / (batch_size * grad_accum)) * epochs)
    cuda = torch.cuda.is_available()
    precision = autocast_precision()   # bf16 where native, fp16 (+ Trainer's gradient scaler) on a T4, CPU: no
    args = TrainingArguments(
        output_dir=str(out_dir), num_train_epochs=epochs, per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=grad_accum, learning_rate=lr, lr_scheduler_type=scheduler,
        warmup_steps=int(round(warmup_ratio * steps)), weight_decay=weight_decay, optim=optim,
        logging_steps=logging_steps, save_strategy="steps", save_steps=save_steps, save_total_limit=1,
        report_to="none", seed=seed, data_seed=seed, bf16=precision == "bf16", fp16=precision == "fp16",
        use_cpu=not cuda, remove_unused_columns=False, dataloader_num_workers=0,
        disable_tqdm=not progress_enabled())
    trainer = _trainer_class()(model=model, args=args, train_dataset=train_dataset,
                               data_collator=VLMCollator(processor), loss=loss,
                               focal_alpha=focal_alpha, focal_gamma=focal_gamma)
    last = get_last_checkpoint(str(out_dir)) if any(out_dir.glob("checkpoint-*")) else None
    timing = out_dir / "train_seconds.json"
    before = json.loads(timing.read_text())["seconds"] if (timing.exists() and last) else 0.0
    done = int(last.rsplit("-", 1)[1]) if last else 0
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=last)
    trainer.train_seconds = before + time.perf_counter() - t0   # summed over interrupted runs
    timing.write_text(json.dumps({"seconds": trainer.train_seconds}))
    if last is None:
        status = "trained" + (f" ({fresh_reason})" if fresh_reason else "")
    elif done >= trainer.state.max_steps:
        status = "reloaded (same settings)"
    else:
        status = f"resumed at step {done + 1} of {trainer.state.max_steps}"
    runlog.record("LoRA fine-tune", status, out_dir, steps=trainer.state.global_step)
    return trainer


def _run_fingerprint(model, train_dataset, settings: dict) -> dict:
    """What determines a LoRA run's result (see :func:`train_lora`)."""
    from ..engine import data_signature, hash_array
    trainable = hashlib.sha256()
    for name, p in model.named_parameters():
        if p.requires_grad:
            trainable.update(name.encode())
            hash_array(trainable, p)
    base = getattr(model, "get_base_model", lambda: model)()
    n_params = sum(p.numel() for p in base.parameters())
    ident = {"name": getattr(base.config, "_name_or_path", ""), "config": base.config.to_json_string(use_diff=True)}
    if n_params < 100_000_000:
        whole = hashlib.sha256()
        for name, t in base.state_dict().items():
            whole.update(name.encode())
            hash_array(whole, t)
        ident["weights"] = whole.hexdigest()[:16]
    return {"settings": settings, "train_data": data_signature(train_dataset),
            "initial_trainable": trainable.hexdigest()[:16], "base": ident}


def _forget_other_runs(out_dir: Path, fingerprint: dict) -> str | None:
    """Remove checkpoints of a run with other settings; write this run's fingerprint. Returns
    what changed (None when nothing was there or nothing changed)."""
    file = out_dir / "fingerprint.json"
    now = json.loads(json.dumps(fingerprint, default=str))
    saved = json.loads(file.read_text()) if file.exists() else None
    checkpoints = list(out_dir.glob("checkpoint-*"))
    reason = None
    if checkpoints and saved != now:
        changed = [k for k in now if not isinstance(saved, dict) or saved.get(k) != now[k]]
        reason = "changed: " + ", ".join(k.replace("_", " ") for k in changed)
        print(f"[vlm] the checkpoints in {out_dir} are from other settings ({reason}): removed, training afresh")
        for c in checkpoints:
            shutil.rmtree(c)
        (out_dir / "train_seconds.json").unlink(missing_ok=True)
    file.write_text(json.dumps(now, indent=1))
    return reason


def loss_history(trainer) -> "pd.DataFrame":
    """Training loss per logged step, from ``trainer.state.log_history``."""
    import pandas as pd
    rows = [{"step": h["step"], "epoch": h.get("epoch"), "loss": h["loss"], "lr": h.get("learning_rate")}
            for h in trainer.state.log_history if "loss" in h]
    return pd.DataFrame(rows, columns=["step", "epoch", "loss", "lr"])


# ------------------------------------------------------------------------------ the whole recipe
@dataclass
class RecipeRun:
    """What :func:`run_recipe` made: the data, the model, the trainer, the losses, the zero-shot
    P(FAKE) (None when ``P.zero_shot`` is off) and the metrics record it saved."""

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


def run_recipe(P, *, train_transform=None, loss: str = "ce", data=None, model=None, domain_check=None,
               out_dir: str | Path | None = None, extra: dict | None = None) -> RecipeRun:
    """Method 1's whole recipe, the steps notebook 05 shows one by one, in one call:

    data (:func:`~.data.recipe_data`), base model + LoRA (:func:`~.backends.recipe_model`),
    P(FAKE) before fine-tuning when ``P.zero_shot``, fine-tuning with :func:`train_lora` on the
    answer tokens (``P.epochs``, ``P.lr``, ``P.batch_size``, ``P.grad_accum``, ``P.scheduler``,
    ``P.warmup_ratio``, ``P.optim``, ``P.seed``, ``P.logging_steps``), the loss history in
    ``loss_history.csv``, and scoring and saving with :func:`~.detector.evaluate_and_save`
    into results/``P.method``/.

    What a variant changes is passed in: ``train_transform`` (None: method 1's evaluation
    transform, no augmentation), ``loss`` ("ce" or "focal", with ``P.focal_alpha`` and
    ``P.focal_gamma``), ``domain_check`` (saved in the model folder). ``data`` (train, test,
    prep) and ``model`` (model, processor, info) may be given when the notebook already built
    them.
    """
    from torch.utils.data import DataLoader

    from ..metrics import classification_metrics, summary_line
    from ..paths import method_dir
    from ..transforms import ArrayDataset, eval_transform
    from .backends import describe_model, recipe_model
    from .data import recipe_data
    from .detector import evaluate_and_save, score

    out_dir = Path(out_dir) if out_dir else method_dir(P.method)
    train, test, prep = data if data is not None else recipe_data(P)
    model, processor, info = model if model is not None else recipe_model(P)
    print(describe_model(info))
    eval_tf = eval_transform(prep)
    p0 = None
    if P.zero_shot:   # LoRA starts as the identity (its B matrices are zero): this is the base model
        loader = DataLoader(ArrayDataset(test.images, test.labels, eval_tf), batch_size=P.eval_batch_size)
        p0, _ = score(model, processor, info, loader, desc="zero-shot")
        print("before fine-tuning:", summary_line(classification_metrics(test.labels, p0)))
    train_ds = ArrayDataset(train.images, train.labels, train_transform or eval_tf)
    focal = {"focal_alpha": P.focal_alpha, "focal_gamma": P.focal_gamma} if loss == "focal" else {}
    model.train()
    trainer = train_lora(model, processor, train_ds, out_dir / "trainer", loss=loss, epochs=P.epochs, lr=P.lr,
                         batch_size=P.batch_size, grad_accum=P.grad_accum, scheduler=P.scheduler,
                         warmup_ratio=P.warmup_ratio, optim=P.optim, seed=P.seed, logging_steps=P.logging_steps,
                         **focal)
    losses = loss_history(trainer)
    losses.to_csv(out_dir / "loss_history.csv", index=False)
    print(f"trained {trainer.state.global_step} steps in {trainer.train_seconds:.1f} s")
    names = {"ce": "cross-entropy", "focal": "focal"}
    record = evaluate_and_save(trainer, processor, info, test, method=P.method, profile=P.profile,
                               preprocessing=prep, dataset=P.dataset, batch_size=P.eval_batch_size,
                               extra={"n_train": len(train), "lora_r": P.lora_r, "loss": names[loss], **(extra or {})},
                               domain_check=domain_check, out_dir=out_dir)
    return RecipeRun(train, test, prep, model, processor, info, trainer, losses, record, p0)
