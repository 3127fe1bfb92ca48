"""The concept figures of ``aidetect_utils.diagrams`` draw what they say: the image's own patches,
the parameter counts of LoRA, the blocks that train, the MC-dropout statistics, the answer tokens."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from aidetect_utils import diagrams  # noqa: E402
from aidetect_utils.images import decode_image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _tagged(fig, gid):
    return [a for ax in fig.axes for a in ax.findobj() if getattr(a, "get_gid", lambda: None)() == gid]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def real_image(cifake_members) -> np.ndarray:
    name = sorted(n for n in cifake_members if "/FAKE/" in n)[0]
    img = decode_image(cifake_members[name], name).array
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8
    return img


@pytest.mark.parametrize("patch", [4, 8])
def test_vit_patches_draws_every_patch_of_the_real_image(real_image, patch):
    fig = diagrams.vit_patches(real_image, patch=patch)
    tiles = _tagged(fig, "patch")
    n = 32 // patch
    assert len(tiles) == n * n
    expected = [real_image[i * patch:(i + 1) * patch, j * patch:(j + 1) * patch] for i in range(n) for j in range(n)]
    for tile, want in zip(tiles, expected):                  # drawn row by row, left to right
        np.testing.assert_array_equal(np.asarray(tile.get_array()), want)
    # the tiles sit where the patches are: left to right within a row, rows top to bottom
    ext = np.array([t.get_extent() for t in tiles]).reshape(n, n, 4)
    assert (np.diff(ext[:, :, 0], axis=1) > 0).all() and (np.diff(ext[:, :, 2], axis=0) < 0).all()
    # the sequence shows real patches too: the first one is the top-left patch
    tokens = _tagged(fig, "token")
    assert 2 <= len(tokens) <= n * n
    np.testing.assert_array_equal(np.asarray(tokens[0].get_array()), expected[0])
    np.testing.assert_array_equal(np.asarray(tokens[-1].get_array()), expected[-1])


def test_vit_patches_refuses_a_patch_size_that_does_not_divide_the_image(real_image):
    with pytest.raises(ValueError, match="does not split"):
        diagrams.vit_patches(real_image, patch=5)


@pytest.mark.parametrize("d,r", [(8, 2), (6, 3), (16, 1)])
def test_lora_prints_the_true_parameter_counts_and_draws_to_scale(d, r):
    fig = diagrams.lora(d=d, r=r)
    full = _tagged(fig, "count-full")[0].get_text()
    low = _tagged(fig, "count-lora")[0].get_text()
    assert re.search(rf"= {d * d} parameters", full) and re.search(rf"= {2 * d * r} parameters", low)
    shapes = {g: np.asarray(_tagged(fig, g)[0].get_array()).shape for g in ("W", "A", "B")}
    assert shapes == {"W": (d, d), "A": (r, d), "B": (d, r)}
    ext = {g: _tagged(fig, g)[0].get_extent() for g in ("W", "A", "B")}          # (x0, x1, y0, y1)
    wh = {g: (e[1] - e[0], e[3] - e[2]) for g, e in ext.items()}
    cell = wh["W"][0] / d                                    # every cell the same size: drawn to scale
    np.testing.assert_allclose([wh["W"], wh["A"], wh["B"]], [(d * cell, d * cell), (d * cell, r * cell),
                                                             (r * cell, d * cell)])
    b = np.asarray(_tagged(fig, "B")[0].get_array())
    assert (b == b[0, 0]).all()                              # B starts at zero: one colour


@pytest.mark.parametrize("n_blocks,unfreeze_last", [(7, 3), (5, 0), (4, 4)])
def test_two_phase_trains_only_the_last_blocks_in_phase_two(n_blocks, unfreeze_last):
    fig = diagrams.two_phase(n_blocks=n_blocks, unfreeze_last=unfreeze_last, phase1_lr=1e-3, phase2_lr=3e-4)
    trainable, frozen = _tagged(fig, "trainable"), _tagged(fig, "frozen")
    assert len(trainable) == unfreeze_last and len(frozen) == 2 * n_blocks - unfreeze_last
    assert len(_tagged(fig, "head")) == 2
    x_mid = 5.0                                              # phase 1 left of it, phase 2 right
    assert all(b.get_x() > x_mid for b in trainable)
    phase2_frozen = [b.get_y() for b in frozen if b.get_x() > x_mid]
    assert all(b.get_y() > max(phase2_frozen, default=-1) for b in trainable)   # the last blocks, on top
    texts = " ".join(t.get_text() for t in fig.axes[0].texts)
    assert "learning rate 1e-3" in texts and "learning rate 3e-4" in texts
    with pytest.raises(ValueError):
        diagrams.two_phase(n_blocks=3, unfreeze_last=4)


def test_mc_dropout_histogram_and_statistics_are_those_of_the_probabilities():
    from aidetect_utils.uncertainty import mutual_information
    probs = np.array([0.9, 0.85, 0.2, 0.55, 0.7, 0.95, 0.6, 0.3, 0.88, 0.5, 0.75])
    fig = diagrams.mc_dropout(probs)
    bars = _tagged(fig, "hist")
    assert sum(b.get_height() for b in bars) == len(probs)
    assert _tagged(fig, "mean")[0].get_xdata()[0] == pytest.approx(probs.mean())
    text = _tagged(fig, "uncertainty")[0].get_text()
    m = probs.mean()
    entropy = -(m * np.log(m) + (1 - m) * np.log(1 - m))
    assert f"{entropy:.3f} nats" in text
    assert f"{float(mutual_information(probs[:, None])[0]):.3f} nats" in text


def test_mc_dropout_without_probabilities_is_deterministic():
    a, b = diagrams.mc_dropout(T=25, seed=3), diagrams.mc_dropout(T=25, seed=3)
    ha = [p.get_height() for p in _tagged(a, "hist")]
    assert sum(ha) == 25 and ha == [p.get_height() for p in _tagged(b, "hist")]


def test_vlm_classifier_keeps_the_project_answer_tokens_and_their_softmax(real_image):
    prompt = ast.parse((ROOT / "aidetect_utils/vlm/prompt.py").read_text())
    consts = {t.id: ast.literal_eval(n.value) for n in prompt.body if isinstance(n, ast.Assign)
              for t in n.targets if isinstance(t, ast.Name) and t.id in ("QUESTION", "ANSWERS")}
    assert (diagrams.QUESTION, diagrams.ANSWERS) == (consts["QUESTION"], consts["ANSWERS"])
    fig = diagrams.vlm_classifier(image=real_image, logits=(0.5, 2.0))
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert all(any(f'"{a}"' == t for t in texts) for a in consts["ANSWERS"])
    assert any(consts["QUESTION"] in t for t in texts)
    z = np.array([b.get_height() for b in _tagged(fig, "answer")])
    np.testing.assert_allclose(z, [0.5, 2.0])
    p = np.exp(z[1]) / np.exp(z).sum()
    assert f"P(FAKE) = {p:.2f}" in _tagged(fig, "p_fake")[0].get_text()


@pytest.mark.parametrize("name", ["vit_patches", "two_phase", "mc_dropout", "lora", "vlm_classifier"])
def test_every_diagram_saves_a_png(name, real_image, tmp_path):
    fn = getattr(diagrams, name)
    args = (real_image,) if name == "vit_patches" else ()
    out = tmp_path / "sub" / f"{name}.png"
    fig = fn(*args, save=out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = fig.get_size_inches()
    assert w == 10 and 2 < h < 8                            # notebook width


def test_course_graph_draws_exactly_the_dependencies_of_the_series(tmp_path):
    """One box per notebook and one arrow per "needs": 00 before every method notebook, 05
    before 06, every method notebook before 07, and nothing else (e.g. no 01 -> 02)."""
    fig = diagrams.course_graph({"04": "cpu 37 min"}, save=tmp_path / "course.png")
    boxes = {nb for nb in diagrams.COURSE if _tagged(fig, f"notebook-{nb}")}
    assert boxes == set(diagrams.COURSE) == {f"{i:02d}" for i in range(8)}
    arrows = {(a, b) for b, (_, needs) in diagrams.COURSE.items() for a in needs if _tagged(fig, f"needs-{a}-{b}")}
    expected = {("00", f"{i:02d}") for i in range(1, 7)} | {("05", "06")} | {(f"{i:02d}", "07") for i in range(1, 7)}
    assert arrows == expected
    drawn = [a for ax in fig.axes for a in ax.findobj() if getattr(a, "get_gid", lambda: None)() or ""]
    assert sum(str(a.get_gid()).startswith("needs-") for a in drawn) == len(expected)
    assert any(t.get_text() == "cpu 37 min" for t in fig.axes[0].texts)
    assert (tmp_path / "course.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
