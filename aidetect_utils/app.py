"""A local web page that says whether an uploaded image is AI-generated.

    python -m aidetect_utils.app --model results/efficientnet_two_phase/model [--model DIR ...]

Starts a Gradio app on 127.0.0.1 (``--host`` to bind elsewhere; analytics off). Drop one or
several images of any size or format, or click an example taken from the CIFAKE test split.
For each image the page shows every loaded model's verdict side by side, P(FAKE) as a bar, the
Monte Carlo dropout uncertainty where the model has a dropout head on frozen features, and a
Grad-CAM overlay where the model is a CNN or a ViT. Unreadable, oversized or malicious files get
a one-line message on the page; the server keeps serving.

The page says what each model was trained on and how accurate it was on its test split (read
from the model folder), so a 32x32 CIFAKE detector is not mistaken for a universal one; and beside
each verdict, the model folder's domain check (``domain``) warns when the image does not
resemble the model's training data, with the reason (its size, or how it was encoded).

From a notebook: ``demo = build_app(load_detectors([...]), make_examples())``, then
``demo.launch(server_name="127.0.0.1", css=CSS, prevent_thread_lock=True)``.
"""
from __future__ import annotations

import argparse
import base64
import html
import io
import os
import sys
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import CLASS_NAMES
from .explain import explain_maps, resize_map, supports_explanations
from .images import ImageError, decode_image
from .predict import Predictor
from .splits import load_prepared
from .uncertainty import mc_dropout_predict

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

MAX_FILE_MB = 20
MC_SAMPLES = 30


@dataclass
class Detector:
    """A loaded model folder with what the page says about it."""

    name: str
    predictor: object
    spec: dict
    mc_dropout: bool = False
    gradcam: bool = False

    @property
    def source_size(self) -> int:
        return int(self.spec["preprocessing"]["source_size"])

    def about(self) -> str:
        m = self.spec.get("metrics", {})
        size = self.source_size
        trained = f"trained on {m.get('dataset', 'unknown data')} images at {size}x{size} px"
        if "accuracy" in m:
            trained += (f"; test accuracy {m['accuracy']:.1%}, ROC AUC {m.get('roc_auc', float('nan')):.3f} "
                        f"on {m.get('n_test', '?'):,} test images ({m.get('profile', '?')} profile)")
        method = self.spec.get("method", "?")
        return f"{self.name}{'' if method == self.name else f' ({method})'}: {trained}"


def load_detectors(folders: list[str | Path], device: str = "cpu") -> list[Detector]:
    """Load model folders; raise ``artifacts.ModelFolderError`` (one line) on a bad one."""
    out = []
    for f in folders:
        p = Predictor(f, device=device)
        model = p.model
        mc = bool(getattr(model, "supports_mc_dropout", False))     # the model says (see models)
        name = Path(f).resolve().parent.name if Path(f).name == "model" else Path(f).name
        out.append(Detector(name=name, predictor=p, spec=p.spec, mc_dropout=mc, gradcam=supports_explanations(model)))
    if not out:
        raise ValueError("no model folder given")
    return out


@dataclass
class Verdict:
    model: str
    prob_fake: float
    label: str
    std: float | None = None
    cam_png: str | None = None
    in_domain: bool = True
    domain_note: str = ""


@dataclass
class Result:
    name: str
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    thumb_png: str | None = None
    verdicts: list[Verdict] = field(default_factory=list)


def _png_b64(arr: np.ndarray, scale: int = 4) -> str:
    img = Image.fromarray(arr)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _overlay(arr: np.ndarray, cam: np.ndarray) -> np.ndarray:
    import matplotlib

    heat = resize_map(cam, arr.shape[:2])
    colored = (matplotlib.colormaps["jet"](heat)[..., :3] * 255).astype(np.float32)
    return (0.55 * arr + 0.45 * colored).clip(0, 255).astype(np.uint8)


def _score(det: Detector, arr: np.ndarray, size: tuple[int, int]) -> Verdict:
    """One model on one image (decoded at the model's ``source_size`` from a file of ``size``): the
    MC-dropout mean and spread where the model has a dropout head on frozen features (else one
    deterministic pass), the Grad-CAM overlay where supported, and the domain check."""
    pred = det.predictor
    std = cam = None
    x = pred.transform(torch.from_numpy(arr).permute(2, 0, 1))[None].to(pred.device)
    if det.mc_dropout:
        with torch.no_grad():
            feats = pred.model.features(x)
        mc = mc_dropout_predict(pred.model.head, feats, n_samples=MC_SAMPLES, seed=0)
        p, std = float(mc["prob_fake"][0]), float(mc["std"][0])
        dom = pred.in_domain(arr[None], [size]).iloc[0]
    else:
        probs, frame = pred.score(arr[None], [size])
        p, dom = float(probs[0]), frame.iloc[0]
    if det.gradcam:
        cam = _png_b64(_overlay(arr, explain_maps(pred.model, x)[0]))
    return Verdict(det.name, p, CLASS_NAMES[int(p >= pred.threshold)], std, cam,
                   bool(dom["in_domain"]), str(dom["domain_note"]))


def analyse(paths: list[str | Path], detectors: list[Detector], max_bytes: int = MAX_FILE_MB * 2 ** 20) -> list[Result]:
    """Score every file with every detector; any problem becomes ``Result.error``, never an exception."""
    results = []
    src = detectors[0].source_size
    mixed = any(d.source_size != src for d in detectors)
    for path in paths or []:
        path = Path(path)
        res = Result(name=path.name)
        try:
            size = path.stat().st_size
            if size > max_bytes:
                raise ImageError(f"{path.name}: {size / 2 ** 20:.1f} MB is over the {max_bytes / 2 ** 20:.0f} MB limit")
            decoded = decode_image(path, name=path.name, size=src)
            if mixed:
                raise ImageError("the loaded models were trained at different resolutions; load them separately")
            res.notes = decoded.notes
            w, h = decoded.orig_size
            if (w, h) != (src, src):
                res.notes.append(f"the models were trained on {src}x{src} images: they judge this "
                                 f"{w}x{h} image downscaled to {src}x{src}")
            res.thumb_png = _png_b64(decoded.array)
            res.verdicts = [_score(d, decoded.array, (w, h)) for d in detectors]
        except ImageError as exc:
            res.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - the page must keep working; details go to the server log
            traceback.print_exc(file=sys.stderr)
            res.error = f"{path.name}: could not be analysed ({type(exc).__name__}: {exc})"
        results.append(res)
    return results


CSS = """
.verdict-card {border:1px solid #ccc; border-radius:8px; padding:10px; margin:8px 0; display:flex; gap:14px}
.verdict-card img {image-rendering:pixelated; border-radius:4px; align-self:flex-start}
.bar {background:#eee; width:220px; height:14px; border-radius:7px; overflow:hidden; display:inline-block; vertical-align:middle}
.bar > div {height:100%}
.err {color:#b00020; font-weight:600}
.note {color:#555; font-size:90%}
.ood {color:#8a5300; background:#fff4e0; border-radius:4px; padding:1px 6px; font-size:90%}
"""


def render(results: list[Result]) -> str:
    """HTML for the results area (every text escaped)."""
    if not results:
        return "<p>Drop images above, or pick an example.</p>"
    parts = []
    for r in results:
        name = html.escape(r.name)
        if r.error:
            parts.append(f'<div class="verdict-card"><span class="err">Cannot use this file. {html.escape(r.error)}</span></div>')
            continue
        rows = []
        for v in r.verdicts:
            color = "#d9534f" if v.label == "FAKE" else "#2e8b57"
            unc = f" ± {v.std:.3f} (MC dropout, {MC_SAMPLES} passes)" if v.std is not None else ""
            cam = (f'<img src="data:image/png;base64,{v.cam_png}" width="64" title="Grad-CAM for FAKE">'
                   if v.cam_png else "")
            ood = ("" if v.in_domain else
                   f'<div class="ood" title="this model\'s domain check">&#9888; out of domain for this model: '
                   f'{html.escape(v.domain_note)}; its verdict is not backed by its training data</div>')
            rows.append(f'<tr><td><b>{html.escape(v.model)}</b></td><td class="verdict" style="color:{color}">'
                        f'<b>{v.label}</b></td><td><span class="bar"><div style="width:{100 * v.prob_fake:.1f}%;'
                        f'background:{color}"></div></span> P(FAKE) = {v.prob_fake:.3f}{unc}{ood}</td>'
                        f'<td>{cam}</td></tr>')
        notes = "".join(f'<div class="note">{html.escape(n)}</div>' for n in r.notes)
        parts.append(f'<div class="verdict-card"><img src="data:image/png;base64,{r.thumb_png}" width="96" height="96">'
                     f'<div><div><b>{name}</b></div>{notes}<table>{"".join(rows)}</table></div></div>')
    return "\n".join(parts)


def make_examples(n_per_class: int = 2, prepared_dir=None) -> list[str]:
    """PNG files of a few CIFAKE test images, written to a temporary folder at start-up."""
    try:
        test = load_prepared(prepared_dir).split("test")
    except (FileNotFoundError, OSError, KeyError):
        return []
    out = Path(tempfile.mkdtemp(prefix="aidetect_examples_"))
    paths = []
    for label in (0, 1):
        for k, i in enumerate(np.flatnonzero(test.labels == label)[:n_per_class]):
            p = out / f"cifake_test_{CLASS_NAMES[label]}_{k}.png"
            Image.fromarray(test.images[i]).save(p)
            paths.append(str(p))
    return paths


def build_app(detectors: list[Detector], examples: list[str] | None = None, max_file_mb: float = MAX_FILE_MB):
    import gradio as gr
    max_bytes = int(max_file_mb * 2 ** 20)

    def run(files):
        paths = [f if isinstance(f, str) else getattr(f, "name", str(f)) for f in (files or [])]
        return render(analyse(paths, detectors, max_bytes))

    about = "\n".join(f"- {html.escape(d.about())}" for d in detectors)
    with gr.Blocks(title="Is this image AI-generated?", analytics_enabled=False) as demo:
        gr.Markdown("# Is this image AI-generated?\n" + about +
                    "\n\nThese detectors learned the artefacts of one generator at one resolution; "
                    "on other images their answer is a guess, however confident it looks.")
        files = gr.File(label="Images (drop one or several)", file_count="multiple", type="filepath",
                        elem_id="upload")
        button = gr.Button("Analyse", variant="primary", elem_id="analyse")
        out = gr.HTML(render([]), elem_id="results")
        files.upload(run, files, out)
        button.click(run, files, out)
        if examples:
            gr.Examples([[[p]] for p in examples], inputs=files, outputs=out, fn=run, run_on_click=True,
                        label="Examples from the CIFAKE test split", cache_examples=False)
    return demo


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m aidetect_utils.app", description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", required=True, help="a model folder (repeat for several)")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--max-file-mb", type=float, default=MAX_FILE_MB)
    ap.add_argument("--examples", type=int, default=2, help="CIFAKE test images per class offered as examples")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    try:
        detectors = load_detectors(args.model, args.device)
    except (FileNotFoundError, ValueError, OSError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    demo = build_app(detectors, make_examples(args.examples), args.max_file_mb)
    print(f"serving on http://{args.host}:{args.port}", flush=True)
    demo.launch(server_name=args.host, server_port=args.port, share=False, show_error=False,
                max_file_size=f"{args.max_file_mb * 1.5:.0f}mb", css=CSS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
