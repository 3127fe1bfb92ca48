"""Every figure the notebooks show, so they look the same from one method to the next.

Each function draws on a new figure (or given axes), saves it when ``save`` is a path, and
returns the figure; the notebooks end plotting cells with ``plt.show()``.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay

from . import CLASS_NAMES
from .metrics import summary_line


def save_figure(fig, save):
    """Write ``fig`` to ``save`` (a path; folders made) when given, at the resolution every figure of
    the series uses; return the figure."""
    if save:
        Path(save).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(save, dpi=110, bbox_inches="tight")
    return fig


def sample_grid(images: np.ndarray, labels: np.ndarray, n_per_class: int = 8, seed: int = 0,
                captions=None, save=None):
    """Rows of REAL and FAKE examples side by side."""
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(2, n_per_class, figsize=(1.4 * n_per_class, 3.3))
    for row, label in enumerate((0, 1)):
        idx = np.flatnonzero(labels == label)
        pick = rng.choice(idx, size=min(n_per_class, len(idx)), replace=False)
        for col, ax in enumerate(axes[row]):
            ax.axis("off")
            if col < len(pick):
                ax.imshow(images[pick[col]], interpolation="nearest")
                if captions is not None:
                    ax.set_title(str(captions[pick[col]]), fontsize=7)
        axes[row, 0].set_title(CLASS_NAMES[label], loc="left", fontsize=10, fontweight="bold")
    fig.tight_layout()
    return save_figure(fig, save)


def mean_log_spectrum(images: np.ndarray) -> np.ndarray:
    """Mean log-magnitude 2-D Fourier spectrum (centred) of the grayscale images."""
    gray = images.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    gray -= gray.mean(axis=(1, 2), keepdims=True)
    spec = np.abs(np.fft.fftshift(np.fft.fft2(gray), axes=(1, 2)))
    return np.log1p(spec).mean(axis=0)


def spectra(images: np.ndarray, labels: np.ndarray, save=None):
    """Mean spectrum of REAL, of FAKE, and their difference (what a detector can see)."""
    real, fake = mean_log_spectrum(images[labels == 0]), mean_log_spectrum(images[labels == 1])
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    vmin, vmax = min(real.min(), fake.min()), max(real.max(), fake.max())
    for ax, img, title in ((axes[0], real, "REAL: mean log spectrum"),
                           (axes[1], fake, "FAKE: mean log spectrum")):
        im = ax.imshow(img, cmap="magma", vmin=vmin, vmax=vmax)
        ax.set_title(title)
        fig.colorbar(im, ax=ax, fraction=0.046)
    diff = fake - real
    lim = np.abs(diff).max()
    im = axes[2].imshow(diff, cmap="coolwarm", vmin=-lim, vmax=lim)
    axes[2].set_title("FAKE - REAL")
    fig.colorbar(im, ax=axes[2], fraction=0.046)
    for ax in axes:
        ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    return save_figure(fig, save)


def training_curves(history: pd.DataFrame | list, batches: pd.DataFrame | None = None, title: str = "",
                    save=None):
    """Loss and accuracy per epoch (train vs validation), and the per-batch loss if given."""
    h = pd.DataFrame(history)
    ncols = 3 if batches is not None and len(batches) else 2
    fig, axes = plt.subplots(1, ncols, figsize=(4.4 * ncols, 3.4))
    axes[0].plot(h["epoch"], h["train_loss"], "o-", label="train")
    axes[0].plot(h["epoch"], h["val_loss"], "o-", label="validation")
    axes[0].set(xlabel="epoch", ylabel="loss", title="loss per epoch")
    axes[1].plot(h["epoch"], h["train_acc"], "o-", label="train")
    axes[1].plot(h["epoch"], h["val_acc"], "o-", label="validation")
    axes[1].set(xlabel="epoch", ylabel="accuracy", title="accuracy per epoch")
    for ax in axes[:2]:
        ax.legend()
        ax.xaxis.get_major_locator().set_params(integer=True)
    if ncols == 3:
        b = pd.DataFrame(batches)
        axes[2].plot(np.arange(len(b)), b["loss"], lw=0.6, alpha=0.5, label="batch")
        axes[2].plot(np.arange(len(b)), b["loss"].rolling(20, min_periods=1).mean(), label="rolling mean (20)")
        axes[2].set(xlabel="batch", ylabel="loss", title="loss per batch")
        axes[2].legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, save)


def evaluation_panel(y_true, prob_fake, threshold: float = 0.5, title: str = "", save=None):
    """Confusion matrix, ROC curve and precision-recall curve side by side."""
    y, p = np.asarray(y_true), np.asarray(prob_fake)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.9))
    ConfusionMatrixDisplay.from_predictions(y, (p >= threshold).astype(int), labels=[0, 1],
                                            display_labels=CLASS_NAMES, ax=axes[0], colorbar=False,
                                            cmap="Blues")
    axes[0].set_title("confusion matrix")
    RocCurveDisplay.from_predictions(y, p, pos_label=1, ax=axes[1], name="model", plot_chance_level=True)
    axes[1].set_title("ROC (positive = FAKE)")
    PrecisionRecallDisplay.from_predictions(y, p, pos_label=1, ax=axes[2], name="model",
                                            plot_chance_level=True)
    axes[2].set_title("precision-recall (positive = FAKE)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, save)


def test_report(record: dict, out_dir, title: str, y_true=None, prob_fake=None, detail: str = ""):
    """A method's test results as every method notebook shows them: the metrics on one line, where
    the time went (``detail`` adds to the training part), and :func:`evaluation_panel`, saved as
    ``out_dir/evaluation.png``. ``y_true``/``prob_fake`` default to ``out_dir/predictions.csv``."""
    import pandas as pd

    if y_true is None or prob_fake is None:
        pred = pd.read_csv(Path(out_dir) / "predictions.csv", keep_default_na=False)
        y_true, prob_fake = pred["label"].to_numpy(), pred["prob_fake"].to_numpy()
    print(summary_line(record["metrics"]))
    print(f"train {record['train_seconds']} s{detail} | inference {record['inference_images_per_second']} "
          f"images/s on {record['device']}")
    return evaluation_panel(y_true, prob_fake, title=title, save=Path(out_dir) / "evaluation.png")


def step_loss(history: pd.DataFrame, title: str = "", save=None):
    """Training loss (and learning rate) per logged optimiser step, e.g. ``vlm.loss_history``."""
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    ax.plot(history["step"], history["loss"], "o-", ms=3, label="training loss")
    ax.set(xlabel="optimiser step", ylabel="loss (answer tokens)", title=title)
    if "lr" in history and history["lr"].notna().any():
        ax2 = ax.twinx()
        ax2.plot(history["step"], history["lr"], color="grey", alpha=0.6, lw=1)
        ax2.set_ylabel("learning rate", color="grey")
    fig.tight_layout()
    return save_figure(fig, save)


def augmentation_rows(rows: dict[str, list[np.ndarray]], captions: dict[str, list[str]] | None = None,
                      title: str = "", save=None):
    """One row of images per named step (e.g. original / JPEG q=50 / augmented)."""
    n = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(rows), n, figsize=(1.7 * n, 1.9 * len(rows)), squeeze=False)
    for r, (name, imgs) in enumerate(rows.items()):
        for c, ax in enumerate(axes[r]):
            ax.axis("off")
            if c < len(imgs):
                ax.imshow(imgs[c], interpolation="nearest")
                if captions and name in captions:
                    ax.set_title(captions[name][c], fontsize=7)
        axes[r, 0].text(-0.1, 0.5, name, transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, save)


# ------------------------------------------------------------------------------ notebook 07
def roc_pr_overlay(y_true, probs: pd.DataFrame, save=None):
    """ROC and precision-recall curves of every method (columns of ``probs``) on one figure each."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.3))
    for name in probs.columns:
        RocCurveDisplay.from_predictions(y_true, probs[name], name=name, ax=a1, pos_label=1)
        PrecisionRecallDisplay.from_predictions(y_true, probs[name], name=name, ax=a2, pos_label=1)
    a1.plot([0, 1], [0, 1], ls=":", c="grey")
    a1.set_title("ROC (positive class: FAKE)")
    a2.set_title("precision-recall (FAKE)")
    for a in (a1, a2):
        a.legend(fontsize=7, loc="lower right" if a is a1 else "lower left")
    fig.tight_layout()
    return save_figure(fig, save)


def _grid(n: int, width: float, height: float, max_cols: int = 4):
    """A figure of ``n`` panels, at most ``max_cols`` a row; the unused panels are switched off."""
    cols = min(n, max_cols)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return fig, axes


def confusion_grid(y_true, probs: pd.DataFrame, threshold: float = 0.5, save=None):
    n = len(probs.columns)
    fig, axes = _grid(n, 3.1, 2.9)
    for ax, name in zip(axes.flat, probs.columns):
        ConfusionMatrixDisplay.from_predictions(y_true, (probs[name] >= threshold).astype(int), labels=[0, 1],
                                                display_labels=CLASS_NAMES, ax=ax, colorbar=False)
        ax.set_title(name, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, save)


def heatmap(table: pd.DataFrame, title: str = "", fmt: str = ".2f", cmap: str = "RdYlGn", save=None, vmin=None, vmax=None):
    fig, ax = plt.subplots(figsize=(1.3 * len(table.columns) + 2.5, 0.38 * len(table) + 1.4))
    sns.heatmap(table, annot=True, fmt=fmt, cmap=cmap, ax=ax, vmin=vmin, vmax=vmax, cbar=False)
    ax.set_title(title)
    fig.tight_layout()
    return save_figure(fig, save)


def image_rows(rows: dict[str, list[tuple[np.ndarray, str]]], title: str = "", save=None, overlays=None):
    """One row per name of (image, caption) pairs; ``overlays``: same shape, heat maps drawn on top."""
    n = max([len(v) for v in rows.values()] + [1])
    fig, axes = plt.subplots(len(rows), n, figsize=(1.6 * n + 1.2, 1.85 * len(rows)), squeeze=False)
    for r, (name, items) in enumerate(rows.items()):
        for c, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if c < len(items):
                img, caption = items[c]
                ax.imshow(img, interpolation="nearest")
                if overlays is not None:
                    ax.imshow(overlays[name][c], cmap="jet", alpha=0.45, interpolation="bilinear",
                              extent=(-0.5, img.shape[1] - 0.5, img.shape[0] - 0.5, -0.5))
                ax.set_title(caption, fontsize=7)
        axes[r, 0].set_ylabel(name, fontsize=8, rotation=0, ha="right", va="center")
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, save)


def robustness_lines(df: pd.DataFrame, metric: str = "accuracy", save=None):
    """``metric`` against corruption strength, one panel per corruption, one line per method;
    the clean score is drawn as the first point of every panel."""
    kinds = [k for k in df["corruption"].unique() if k != "clean"]
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.4 * len(kinds), 3.3), squeeze=False, sharey=True)
    labels = {"jpeg": "JPEG quality", "resize": "downscale factor", "blur": "blur sigma (px)", "noise": "noise std (0-255)"}
    for ax, kind in zip(axes[0], kinds):
        for name, g in df.groupby("method", sort=False):
            clean = g[g["corruption"] == "clean"][metric].iloc[0]
            sub = g[g["corruption"] == kind]
            xs = ["clean"] + [f"{s:g}" for s in sub["strength"]]
            ax.plot(xs, [clean] + sub[metric].tolist(), "o-", ms=3, label=name)
        ax.set(title=kind, xlabel=labels.get(kind, "strength"))
        ax.axhline(0.5, ls=":", c="grey")
    axes[0, 0].set_ylabel(metric)
    axes[0, -1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return save_figure(fig, save)


def reliability_grid(curves: dict[str, tuple[pd.DataFrame, pd.DataFrame]], save=None):
    """Reliability diagrams per method: before and after temperature scaling."""
    n = len(curves)
    fig, axes = _grid(n, 3.1, 3.0)
    for ax, (name, (before, after)) in zip(axes.flat, curves.items()):
        ax.plot([0.5, 1], [0.5, 1], ls=":", c="grey")
        ax.plot(before["confidence"], before["accuracy"], "o-", ms=3, label="raw")
        ax.plot(after["confidence"], after["accuracy"], "s-", ms=3, label="temperature-scaled")
        ax.set(title=name, xlabel="confidence", ylabel="accuracy", xlim=(0.5, 1.0), ylim=(0.0, 1.02))
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, save)


def coverage_curves(curves: dict[str, pd.DataFrame], title: str = "", save=None):
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for name, c in curves.items():
        ax.plot(c["coverage"], c["accuracy"], "o-", ms=3, label=name)
    ax.set(xlabel="coverage (share of images the model keeps)", ylabel="accuracy on kept images", title=title)
    ax.invert_xaxis()
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, save)


def domain_histogram(scores: dict[str, np.ndarray], threshold: float, title: str = "", bins: int = 30, save=None):
    """Histograms of domain scores, one per named set of images (e.g. the CIFAKE test split and
    realworld100), on shared bins, with the check's threshold as a vertical line: scores to its
    right are flagged out of domain."""
    fig, ax = plt.subplots(figsize=(6.8, 3.6))
    finite = [np.asarray(s, float)[np.isfinite(s)] for s in scores.values()]
    values = np.concatenate(finite + [np.array([threshold], float)])
    edges = np.histogram_bin_edges(values, bins=bins)
    for (name, _), s in zip(scores.items(), finite):
        ax.hist(s, bins=edges, alpha=0.55, density=True, label=f"{name} ({len(s)})")
    ax.axvline(threshold, c="k", ls="--", lw=1.2, label=f"threshold {threshold:.2f}")
    ax.set(xlabel="domain score (higher: less like the training images)", ylabel="density", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, save)


# ---- notebook 03
def dropout_masks(passes: list, title: str = "", summary: str = "", save=None):
    """The keep-masks each MC-dropout pass drew, one column per pass and one row per dropout layer
    (dark: unit kept, light: dropped; the units laid out on a grid only to fit the page), and the
    P(FAKE) of each pass as a bar beside them. ``passes``: per pass ``(masks, p)`` with ``masks``
    one 0/1 vector per dropout layer; ``summary`` is added to the bar chart's title."""
    def as_grid(m):
        return m.reshape(max(d for d in range(1, int(len(m) ** 0.5) + 1) if len(m) % d == 0), -1)
    T, L = len(passes), len(passes[0][0])
    fig, ax = plt.subplot_mosaic([[f"{r},{t}" for t in range(T)] + ["p"] for r in range(L)],
                                 figsize=(2 * T + 4, 2.2 * L + 1), width_ratios=[1] * T + [2.5], layout="constrained")
    for t, (masks, p) in enumerate(passes):
        for r, m in enumerate(masks):
            a = ax[f"{r},{t}"]
            a.imshow(as_grid(np.asarray(m)), cmap="Greys", vmin=0, vmax=1)
            a.set(xticks=[], yticks=[],
                  ylabel=f"dropout {r + 1}:\n{len(m)} {'features' if r == 0 else 'hidden units'}" if t == 0 else "")
            a.set_xlabel(f"kept {int(np.sum(m))}/{len(m)}", fontsize=8)
        ax[f"0,{t}"].set_title(f"pass {t + 1}\nP(FAKE) = {p:.2f}", fontsize=9)
    ps = np.array([p for _, p in passes])
    ax["p"].bar(range(1, T + 1), ps, color="tab:orange")
    ax["p"].axhline(ps.mean(), color="k", label=f"mean {ps.mean():.2f} ± {ps.std():.2f}")
    ax["p"].axhspan(ps.mean() - ps.std(), ps.mean() + ps.std(), color="k", alpha=0.1)
    ax["p"].set(ylim=(0, 1), xlabel="pass", ylabel="P(FAKE)", title=summary)
    ax["p"].legend(fontsize=8)
    fig.suptitle(title)
    return save_figure(fig, save)


# ---- notebooks 00/04
def two_phase_schedule(n_head: int, n_phase2: int, phase1_epochs: int, phase2_epochs: int,
                       phase1_lr: float, phase2_lr: float, phase2_layers: int, save=None):
    """Trainable parameters per epoch of a two-phase fine-tune, on a linear axis: phase 1 (head
    only) in blue, phase 2 (head and ``phase2_layers`` backbone layers) in orange, each bar
    labelled with its count, a dashed line at the phase boundary."""
    epochs = np.arange(1, phase1_epochs + phase2_epochs + 1)
    counts = [n_head] * phase1_epochs + [n_phase2] * phase2_epochs
    fig, ax = plt.subplots(figsize=(7, 3.0))
    bars = ax.bar(epochs, counts, color=["tab:blue"] * phase1_epochs + ["tab:orange"] * phase2_epochs)
    ax.bar_label(bars, labels=[f"{c / 1e6:.2f}M" for c in counts], fontsize=8)
    ax.axvline(phase1_epochs + 0.5, c="k", ls="--", lw=1)
    ax.set(xlabel="epoch", ylabel="trainable parameters", xticks=epochs, ylim=(0, 1.15 * max(counts)))
    ax.set_title(f"phase 1: head only (lr {phase1_lr:g})  |  phase 2: last {phase2_layers} layers + head "
                 f"(lr {phase2_lr:g}, lowered on plateaus)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, save)
