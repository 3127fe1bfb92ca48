"""Concept figures drawn by code: each notebook shows its idea as a picture before the code of it.

- :func:`vit_patches`     an image cut into patches, as tokens, into a Transformer (notebooks 01, 02)
- :func:`two_phase`       frozen backbone + new head, then the last blocks unfrozen (notebook 04)
- :func:`mc_dropout`      one input, T dropout masks, a spread of P(FAKE) (notebook 03)
- :func:`lora`            h = W x + (alpha/r) B A x, the matrices to scale (notebooks 05, 06)
- :func:`vlm_classifier`  a vision-language model read as a two-answer classifier (notebooks 05, 06)

Like :mod:`aidetect_utils.plots`, each function draws a new figure, saves it when ``save`` is a
path, and returns it. The drawings are matplotlib patches and text on one canvas whose data
units are inches, so sizes on the page are the sizes in the code; they are deterministic.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Arc, FancyArrowPatch, FancyBboxPatch, Rectangle

from .plots import save_figure

FROZEN, TRAINABLE, IMAGE_TOKEN, TEXT_TOKEN, SPECIAL = "0.78", "tab:orange", "tab:blue", "tab:green", "tab:purple"

# the question and the two answers of aidetect_utils.vlm.prompt (not imported: that loads transformers)
QUESTION = "Is this image real or AI-generated?"
ANSWERS = ("Real", "Fake")


# ----------------------------------------------------------------------------- drawing helpers
def _canvas(width: float, height: float):
    """A figure whose one axes spans it, in inches: (0, 0) bottom left, (width, height) top right."""
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set(xlim=(0, width), ylim=(0, height))
    ax.axis("off")
    return fig, ax


def _box(ax, x, y, w, h, text="", fc="white", ec="0.25", fontsize=9, gid=None, ls="-", **text_kw):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0,rounding_size=0.06", fc=fc, ec=ec,
                                lw=1.0, ls=ls, gid=gid))
    if text:
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize, **text_kw)


def _arrow(ax, start, end, color="0.2", **kw):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=11, color=color, lw=1.1,
                                 shrinkA=0, shrinkB=0, **kw))


def _lock(ax, x, y, s=0.16, color="0.35"):
    """A padlock of height ``1.4 s`` whose body's bottom-left corner is (x, y): "frozen"."""
    ax.add_patch(Rectangle((x, y), s, 0.75 * s, fc=color, ec=color))
    ax.add_patch(Arc((x + s / 2, y + 0.75 * s), 0.7 * s, 1.2 * s, theta1=0, theta2=180, color=color, lw=1.4))


def _matrix(ax, x, y, rows, cols, cell, values, cmap, label, gid, vmax=1.0):
    """A rows x cols matrix drawn to scale (``cell`` inches a cell), bottom-left at (x, y)."""
    ax.imshow(values, cmap=cmap, vmin=0, vmax=vmax, extent=(x, x + cols * cell, y, y + rows * cell),
              interpolation="nearest", gid=gid, zorder=2)
    for i in range(rows + 1):
        ax.plot([x, x + cols * cell], [y + i * cell] * 2, c="white", lw=0.6, zorder=3)
    for j in range(cols + 1):
        ax.plot([x + j * cell] * 2, [y, y + rows * cell], c="white", lw=0.6, zorder=3)
    ax.add_patch(Rectangle((x, y), cols * cell, rows * cell, fill=False, ec="0.2", lw=1.0, zorder=4))
    ax.text(x + cols * cell / 2, y - 0.12, label, ha="center", va="top", fontsize=8.5)


def _lr(lr: float) -> str:
    return f"{lr:.0e}".replace("e-0", "e-") if lr < 0.01 else f"{lr:g}"


def _entropy(p):
    p = np.clip(np.asarray(p, float), 1e-12, 1 - 1e-12)
    return -(p * np.log(p) + (1 - p) * np.log(1 - p))


# ----------------------------------------------------------------------------------- ViT
def vit_patches(image: np.ndarray, patch: int = 4, shown: int = 5, save=None):
    """A Vision Transformer's view of ``image`` (uint8 H x W x 3, e.g. a 32 x 32 CIFAKE image): cut
    into ``patch`` x ``patch`` patches (every one drawn, tagged ``gid="patch"``), the patches as a
    sequence of tokens (the first ``shown`` and the last) after a [CLS] token, each plus its
    position embedding, through a Transformer encoder; a head on [CLS] says REAL or FAKE
    (Dosovitskiy et al., 2021)."""
    image = np.asarray(image)
    H, W = image.shape[:2]
    if H % patch or W % patch:
        raise ValueError(f"a {H}x{W} image does not split into {patch}x{patch} patches")
    nr, nc = H // patch, W // patch
    n = nr * nc
    fig, ax = _canvas(10, 4.3)
    ax.imshow(image, extent=(0.3, 1.8, 2.55, 4.05), interpolation="nearest")
    ax.text(1.05, 4.12, f"input {H}x{W}", ha="center", va="bottom", fontsize=9)
    _arrow(ax, (1.05, 2.5), (1.05, 2.3))
    gap, size = 0.04, 2.0
    t = (size - gap * (nc - 1)) / nc                        # one patch tile, the grid spans `size` inches
    for i in range(nr):
        for j in range(nc):
            x, y = 0.05 + j * (t + gap), 2.2 - (i + 1) * t - i * gap
            ax.imshow(image[i * patch:(i + 1) * patch, j * patch:(j + 1) * patch], extent=(x, x + t, y, y + t),
                      interpolation="nearest", gid="patch")
    ax.text(1.05, 0.05, f"{nr}x{nc} = {n} patches of {patch}x{patch}", ha="center", va="bottom", fontsize=9)
    # the sequence: [CLS], patches 1..shown, ..., n; each a position embedding + a patch embedding
    idx = list(range(1, min(shown, n) + 1)) + ([n] if n > shown else [])
    step, x0 = 0.66, 3.0
    xs = [x0 + k * step for k in range(len(idx) + 1)]
    if n > shown + 1:
        xs[-1] += 0.35                                      # room for the ellipsis
        for y in (0.4, 1.53):
            ax.text(xs[-2] + step - 0.08, y, "...", ha="center", va="center", fontsize=12)
    _arrow(ax, (2.15, 1.2), (2.85, 0.5))
    ax.text(xs[0] + 0.24, 0.98, "[CLS]\nlearned", ha="center", va="center", fontsize=7, color=SPECIAL)
    for x, k in zip(xs[1:], idx):
        i, j = divmod(k - 1, nc)
        ax.imshow(image[i * patch:(i + 1) * patch, j * patch:(j + 1) * patch], extent=(x + 0.06, x + 0.42, 0.22, 0.58),
                  interpolation="nearest", gid="token")
    right = xs[-1] + 0.5
    _box(ax, xs[1] - 0.05, 0.8, right - xs[1] + 0.1, 0.36, f"flatten ({patch}x{patch}x3 = {patch * patch * 3} values) "
         "and project linearly to D", fc="0.95", fontsize=8)
    for x, k in zip(xs, [0] + idx):
        if k:                                               # [CLS] is learned, not a projected patch
            _arrow(ax, (x + 0.24, 0.62), (x + 0.24, 0.8))
            _arrow(ax, (x + 0.24, 1.16), (x + 0.24, 1.35))
        _box(ax, x, 1.35, 0.2, 0.36, str(k), fc=SPECIAL, ec=SPECIAL, fontsize=7, color="white")
        ax.text(x + 0.24, 1.53, "+", ha="center", va="center", fontsize=8)
        _box(ax, x + 0.28, 1.35, 0.2, 0.36, fc=SPECIAL if k == 0 else IMAGE_TOKEN, ec="none")
        _arrow(ax, (x + 0.24, 1.71), (x + 0.24, 1.95))
    ax.text(right + 0.1, 1.53, f"position embedding (0..{n})\n+ token embedding", ha="left", va="center",
            fontsize=8)
    _box(ax, x0 - 0.05, 1.95, right - x0 + 0.1, 0.75, "Transformer encoder  x L layers\n"
         "(self-attention: every token attends to every other; MLP)", fc="0.92", fontsize=9)
    _arrow(ax, (xs[0] + 0.24, 2.7), (xs[0] + 0.24, 3.1))
    _box(ax, x0 - 0.05, 3.1, 1.5, 0.42, "head on [CLS]", fc=TRAINABLE, ec=TRAINABLE, fontsize=9)
    _arrow(ax, (x0 + 1.45, 3.31), (x0 + 1.95, 3.31))
    ax.text(x0 + 2.05, 3.31, "REAL / FAKE", ha="left", va="center", fontsize=11, fontweight="bold")
    ax.text(x0 - 0.05, 4.1, f"ViT: a {H}x{W} image is a sentence of {n} patch tokens", ha="left", va="center",
            fontsize=11)
    return save_figure(fig, save)


# ------------------------------------------------------------------------ two-phase fine-tuning
def two_phase(n_blocks: int = 7, unfreeze_last: int = 3, phase1_lr: float = 1e-4, phase2_lr: float = 1e-5,
              save=None):
    """Two-phase transfer learning on a backbone drawn as ``n_blocks`` blocks: phase 1 trains only
    the new head (every block frozen: grey, padlock); phase 2 also trains the last
    ``unfreeze_last`` blocks (orange), at a smaller learning rate. Blocks are tagged
    ``gid="frozen"`` or ``"trainable"``, the head ``"head"``."""
    if not 0 <= unfreeze_last <= n_blocks:
        raise ValueError(f"unfreeze_last={unfreeze_last} must be between 0 and n_blocks={n_blocks}")
    step, h = 0.42, 0.34
    height = 0.25 + (n_blocks + 2) * step + 0.85
    fig, ax = _canvas(10, height)
    panels = ((0.3, 0, phase1_lr, "phase 1: train the new head only"),
              (5.3, unfreeze_last, phase2_lr, f"phase 2: fine-tune the last {unfreeze_last} blocks + head"))
    for px, n_train, lr, title in panels:
        bx, bw = px + 0.55, 2.5
        _box(ax, bx, 0.25, bw, h, "input image", fc="white", fontsize=8)
        for b in range(n_blocks):
            y = 0.25 + (b + 1) * step
            trainable = b >= n_blocks - n_train
            _box(ax, bx, y, bw, h, f"block {b + 1}", fc=TRAINABLE if trainable else FROZEN,
                 ec=TRAINABLE if trainable else "0.55", fontsize=8, gid="trainable" if trainable else "frozen")
            if trainable:
                ax.text(bx + bw + 0.12, y + h / 2, "trainable", ha="left", va="center", fontsize=8,
                        color=TRAINABLE)
            else:
                _lock(ax, bx + bw + 0.12, y + 0.07)
        y = 0.25 + (n_blocks + 1) * step
        _box(ax, bx, y, bw, h, "new head -> REAL / FAKE", fc=TRAINABLE, ec=TRAINABLE, fontsize=8, gid="head")
        ax.text(bx + bw + 0.12, y + h / 2, "trainable", ha="left", va="center", fontsize=8, color=TRAINABLE)
        _arrow(ax, (bx - 0.15, 0.3), (bx - 0.15, y + h))
        ax.text(bx - 0.28, 0.25 + (n_blocks + 1) * step / 2, "pretrained backbone", rotation=90, ha="center",
                va="center", fontsize=8, color="0.35")
        ax.text(px, height - 0.3, title, ha="left", va="center", fontsize=10.5, fontweight="bold")
        frozen = n_blocks - n_train
        ax.text(px, height - 0.62, f"learning rate {_lr(lr)}; {frozen} of {n_blocks} blocks frozen", ha="left",
                va="center", fontsize=9)
    ax.plot([4.95, 4.95], [0.2, height - 0.2], c="0.8", lw=1)
    return save_figure(fig, save)


# ------------------------------------------------------------------------------ MC dropout
def _dropout_net(ax, x, y, rng, sizes=(3, 5, 5, 1), drop=0.3, w=1.7, h=0.95):
    """A small fully connected network at (x, y) with one dropout mask drawn: dropped hidden units
    crossed out in red, their connections gone."""
    keep = [np.ones(sizes[0], bool)] + [rng.random(n) > drop for n in sizes[1:-1]] + [np.ones(1, bool)]
    for m in keep[1:-1]:
        m[rng.integers(len(m))] = True                      # at least one unit kept a layer
    pos = [[(x + w * li / (len(sizes) - 1), y + h * (k + 0.5) / n) for k in range(n)] for li, n in enumerate(sizes)]
    for li in range(len(sizes) - 1):
        for a, ka in zip(pos[li], keep[li]):
            for b, kb in zip(pos[li + 1], keep[li + 1]):
                if ka and kb:
                    ax.plot([a[0], b[0]], [a[1], b[1]], c="0.6", lw=0.5, zorder=1)
    for li, layer in enumerate(pos):
        for (ux, uy), k in zip(layer, keep[li]):
            ax.add_patch(plt.Circle((ux, uy), 0.065, fc=IMAGE_TOKEN if k else "white", ec="0.3", lw=0.8, zorder=2))
            if not k:
                ax.plot([ux - 0.07, ux + 0.07], [uy - 0.07, uy + 0.07], c="tab:red", lw=1.3, zorder=3)
                ax.plot([ux - 0.07, ux + 0.07], [uy + 0.07, uy - 0.07], c="tab:red", lw=1.3, zorder=3)


def mc_dropout(probs=None, T: int = 30, seed: int = 0, shown: int = 3, save=None):
    """Monte Carlo dropout (Gal & Ghahramani, 2016): the same input through the network ``T`` times,
    a different dropout mask each time (``shown`` of them drawn), gives ``T`` values of P(FAKE);
    their histogram, mean (``gid="mean"``), predictive entropy and mutual information. ``probs``:
    the T probabilities to show; if None, T drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    p = np.asarray(probs, float) if probs is not None else np.clip(rng.beta(8, 3, T), 0.01, 0.99)
    T, mean = len(p), float(np.mean(p))
    entropy = float(_entropy(mean))
    mi = entropy - float(_entropy(p).mean())
    fig, ax = _canvas(10, 4.6)
    _box(ax, 0.2, 2.35, 0.8, 0.8, "same\ninput x", fc="0.95", fontsize=9)
    k = min(shown, T)
    ys = [3.45 - i * 1.3 for i in range(k)]
    for i, y in enumerate(ys):
        _arrow(ax, (1.0, 2.75), (1.45, y + 0.47))
        _dropout_net(ax, 1.6, y, rng)
        _arrow(ax, (3.35, y + 0.47), (3.6, y + 0.47))
        ax.text(3.65, y + 0.47, f"$p_{{{i + 1}}}$ = {p[i]:.2f}", ha="left", va="center", fontsize=10)
    ax.text(2.45, 0.45, f"... {T} passes, a new dropout mask each\n(crossed out: units dropped)", ha="center",
            va="center", fontsize=9)
    _arrow(ax, (4.45, 2.75), (5.0, 2.75))
    hx = fig.add_axes((5.6 / 10, 1.45 / 4.6, 4.1 / 10, 2.8 / 4.6))
    hx.hist(p, bins=np.linspace(0, 1, 21), color=TRAINABLE, ec="white", gid="hist")
    hx.axvline(mean, c="k", lw=1.5, gid="mean", label=f"mean P(FAKE) = {mean:.2f}")
    hx.set(xlim=(0, 1), xlabel="P(FAKE) of one pass", ylabel="passes", title=f"the {T} probabilities")
    hx.yaxis.get_major_locator().set_params(integer=True)
    hx.legend(fontsize=8, loc="upper left")
    ax.text(5.05, 0.62, f"predictive entropy  H[mean p] = {entropy:.3f} nats  (total uncertainty)\n"
            f"mutual information  H[mean p] - mean H[p_t] = {mi:.3f} nats  (the model's own doubt)",
            ha="left", va="center", fontsize=8.5, gid="uncertainty")
    return save_figure(fig, save)


# -------------------------------------------------------------------------------------- LoRA
def lora(d: int = 8, r: int = 2, alpha: float | None = None, save=None):
    """LoRA (Hu et al., 2022): h = W x + (alpha/r) B A x. The frozen d x d weight ``W`` (grey,
    padlock) and the trainable ``A`` (r x d, random at start) and ``B`` (d x r, zero at start, so
    training starts from the pretrained model), drawn to scale (tagged ``gid`` "W", "A", "B"),
    with the parameter counts d*d against 2*d*r (texts tagged "count-full", "count-lora")."""
    if not 1 <= r <= d:
        raise ValueError(f"rank r={r} must be between 1 and d={d}")
    cell = min(0.24, 2.2 / d)
    side = d * cell
    rng = np.random.default_rng(0)
    fig, ax = _canvas(10, side + 2.4)
    y0 = 1.45                                               # bottom of every d-tall matrix
    x = 0.3

    values = {"h": rng.uniform(0.3, 0.9, (d, 1)), "x": rng.uniform(0.3, 0.9, (d, 1))}   # the same x twice

    def vector(x, name):
        _matrix(ax, x, y0, d, 1, cell, values[name], "Blues", name, gid=name)
        return x + cell

    def sign(x, text, width=0.45):
        ax.text(x + width / 2, y0 + side / 2, text, ha="center", va="center", fontsize=14)
        return x + width

    x = sign(vector(x, "h"), "=")
    _matrix(ax, x, y0, d, d, cell, rng.uniform(0.25, 0.6, (d, d)), "Greys", f"W  ({d}x{d})\nfrozen", gid="W")
    _lock(ax, x + side / 2 - 0.1, y0 + side + 0.1, s=0.2)
    x = sign(vector(x + side + 0.05, "x"), "+", 0.55)
    scale = "α / r" if alpha is None else f"{alpha:g} / {r}"
    x = sign(x, f"({scale})", 0.3 + 0.09 * len(scale))
    _matrix(ax, x, y0, d, r, cell, np.full((d, r), 0.08), "Oranges", f"B  ({d}x{r})\ntrainable\n= 0 at start",
            gid="B")
    x += r * cell + 0.1
    _matrix(ax, x, y0 + side - r * cell, r, d, cell, rng.uniform(0.25, 0.8, (r, d)), "Oranges",
            f"A  ({r}x{d})\ntrainable, random at start", gid="A")
    vector(x + side + 0.1, "x")
    full, low = d * d, 2 * d * r
    ax.text(0.3, side + 2.1, "LoRA: h = W x + (α / r) B A x  -  W stays frozen, only the low-rank A and B learn",
            fontsize=11, va="center")
    ax.text(0.3, 0.62, f"W: d*d = {d}*{d} = {full} parameters, frozen", fontsize=10, color="0.3", gid="count-full")
    ax.text(0.3, 0.3, f"A and B: 2*d*r = 2*{d}*{r} = {low} parameters trained ({low / full:.0%} of W)", fontsize=10,
            color="tab:red" if low >= full else TRAINABLE, fontweight="bold", gid="count-lora")
    big_d, big_r = 3584, 16                                 # a Qwen2.5-VL-7B attention projection, rank 16
    ax.text(9.7, 0.3, f"at d = {big_d}, r = {big_r}: {big_d * big_d:,} vs {2 * big_d * big_r:,} "
            f"({2 * big_r / big_d:.1%})", ha="right", fontsize=8.5, color="0.3")
    ax.set_xlim(0, 10)
    return save_figure(fig, save)


# ---------------------------------------------------------------------- VLM as a classifier
def _tokens(ax, x, y, labels, color, h=0.36):
    """A row of token boxes (width from the label) from x; returns the x after it and the centres."""
    centres = []
    for label in labels:
        w = max(0.3, 0.1 + 0.085 * len(label))
        _box(ax, x, y, w, h, label, fc=color, ec=color, fontsize=8, color="white", gid="token")
        centres.append(x + w / 2)
        x += w + 0.06
    return x, centres


def vlm_classifier(image: np.ndarray | None = None, question: str = QUESTION, answers=ANSWERS,
                   logits=(1.2, 2.8), save=None):
    """A vision-language model (Qwen2.5-VL; Bai et al., 2025) read as a classifier: the image
    through the vision encoder into image tokens, followed by the question's text tokens, through
    the language model; of the next-token logits over the whole vocabulary only the two answer
    tokens are kept (bars tagged ``gid="answer"``), and their softmax is P(FAKE) (text tagged
    ``"p_fake"``). ``logits``: the example's two answer logits (REAL's, FAKE's)."""
    z = np.asarray(logits, float)
    p_fake = float(np.exp(z[1]) / np.exp(z).sum())
    fig, ax = _canvas(10, 4.7)
    if image is not None:
        ax.imshow(np.asarray(image), extent=(0.3, 1.2, 3.55, 4.45), interpolation="nearest")
    else:
        _box(ax, 0.3, 3.55, 0.9, 0.9, "image", fc="0.9")
    _arrow(ax, (1.25, 4.0), (1.55, 4.0))
    _box(ax, 1.6, 3.7, 1.9, 0.6, "vision encoder\n(ViT + patch merger)", fc="0.92", fontsize=8.5)
    _box(ax, 4.3, 3.8, 5.4, 0.4, f'"{question}"', fc="white", fontsize=9)
    ax.text(4.3, 4.4, "the prompt (the same for every image)", fontsize=8.5, color="0.3", va="center")
    x, img = _tokens(ax, 0.3, 2.75, [""] * 6, IMAGE_TOKEN)
    x, txt = _tokens(ax, x + 0.1, 2.75, question.replace("?", " ?").split(), TEXT_TOKEN)
    _box(ax, x + 0.1, 2.75, 0.55, 0.36, fc="white", ec="0.3", ls="--")
    slot = x + 0.375
    ax.text(slot, 3.2, "the answer\n(next token)", ha="center", va="bottom", fontsize=8)
    _arrow(ax, (2.55, 3.7), (2.0, 3.11))
    _arrow(ax, (7.0, 3.8), (txt[len(txt) // 2], 3.11))
    ax.text(img[len(img) // 2], 2.62, "image tokens", ha="center", va="top", fontsize=8, color=IMAGE_TOKEN)
    ax.text(txt[len(txt) // 2], 2.62, "text tokens", ha="center", va="top", fontsize=8, color=TEXT_TOKEN)
    _box(ax, 0.3, 1.75, slot + 0.5 - 0.3, 0.55, "language model (Qwen2.5 decoder; LoRA adapters in notebooks 05-06)",
         fc="0.92", fontsize=9)
    _arrow(ax, (slot, 1.75), (5.4, 1.4))
    ax.text(slot - 0.2, 1.5, "at the answer's position", ha="left", va="center", fontsize=8, color="0.3")
    # the logits over the vocabulary at the answer position; only the two answer tokens kept
    lx = fig.add_axes((0.45 / 10, 0.3 / 4.7, 5.0 / 10, 1.0 / 4.7))
    vocab = np.clip(np.random.default_rng(0).normal(-1.0, 1.0, 60), -3, 0.6)
    where = (17, 41)
    colors = ["0.75"] * len(vocab)
    for k, zi, c in zip(where, z, (IMAGE_TOKEN, TRAINABLE)):
        vocab[k], colors[k] = zi, c
    bars = lx.bar(np.arange(len(vocab)), vocab, color=colors, width=0.8)
    for k, name in zip(where, answers):
        bars[k].set_gid("answer")
        lx.text(k, vocab[k] + 0.2, f'"{name}"', ha="center", va="bottom", fontsize=8)
    lx.set(xticks=[], ylim=(-3.3, z.max() + 1.4), ylabel="logit")
    lx.set_title("next-token logits over the vocabulary (~152k tokens; 60 drawn)", fontsize=8.5)
    for s in ("top", "right"):
        lx.spines[s].set_visible(False)
    _arrow(ax, (5.6, 0.8), (6.0, 0.8))
    ax.text(6.1, 0.8, f'keep "{answers[0]}" and "{answers[1]}":\nz = ({z[0]:g}, {z[1]:g})', ha="left",
            va="center", fontsize=9)
    _arrow(ax, (7.85, 0.8), (8.2, 0.8))
    ax.text(8.3, 0.8, f"softmax\nP(FAKE) = {p_fake:.2f}", ha="left", va="center", fontsize=10, fontweight="bold",
            gid="p_fake")
    return save_figure(fig, save)


# ----------------------------------------------------------------------------- the course
COURSE = {   # notebook: (title, what must have run before it in the same results folder)
    "00": ("data preparation", ()),
    "01": ("ViT fine-tuning", ("00",)),
    "02": ("frozen ViT + linear head", ("00",)),
    "03": ("DINO features + MC-dropout head", ("00",)),
    "04": ("EfficientNet two-phase + robust", ("00",)),
    "05": ("Qwen2.5-VL + LoRA, method 1", ("00",)),
    "06": ("method 2: JPEG, augmentation, focal", ("00", "05")),
    "07": ("every method side by side", ("01", "02", "03", "04", "05", "06")),
}


def course_graph(times: dict[str, str] | None = None, save=None):
    """The notebooks and what each needs first (:data:`COURSE`): 00 prepares the data every
    method notebook reads; 06 is taught as a change of 05; 07 compares whichever of 01-06 have
    results. ``times``: a line under each notebook (e.g. its measured ``cpu`` time)."""
    times = times or {}
    fig, ax = _canvas(10, 5.3)
    w, h = 2.6, 0.58
    pos = {"00": (0.1, 2.4), "07": (7.3, 2.4), "06": (4.4, 0.2)}
    pos.update({nb: (3.6, 4.3 - 0.78 * i) for i, nb in enumerate(["01", "02", "03", "04", "05"])})
    for nb, (x, y) in pos.items():
        title, _ = COURSE[nb]
        _box(ax, x, y, w, h, fc="0.94" if nb not in ("00", "07") else "white", gid=f"notebook-{nb}")
        ax.text(x + w / 2, y + h - 0.2, f"{nb} · {title}", ha="center", va="center", fontsize=8, weight="bold")
        if nb in times:
            ax.text(x + w / 2, y + 0.18, times[nb], ha="center", va="center", fontsize=7.5, color="0.3")
    for nb, (_, needs) in COURSE.items():
        for before in needs:
            (x0, y0), (x1, y1) = pos[before], pos[nb]
            beside = x1 >= x0 + w                      # to the right, else straight below
            start = (x0 + w, y0 + h / 2) if beside else (x1 + 0.4, y0)
            end = (x1, y1 + h / 2) if beside else (x1 + 0.4, y1 + h)
            _arrow(ax, start, end, color="0.45", gid=f"needs-{before}-{nb}")
    ax.text(5, 5.28, "what each notebook needs first (an arrow: run the left one before the right one)",
            ha="center", va="top", fontsize=9)
    return save_figure(fig, save)


if __name__ == "__main__":      # python -m aidetect_utils.diagrams docs/figures/course_graph.png
    import sys
    course_graph(save=sys.argv[1] if len(sys.argv) > 1 else "course_graph.png")
