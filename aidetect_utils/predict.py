"""Is this image AI-generated?  ``python -m aidetect_utils.predict --model DIR PATH...``

Takes image files and folders (searched recursively) of any size and mode, prints one line per
image (or writes ``--output x.csv|x.json``) with prob_fake and the label, lists files it could
not read, and exits non-zero only when no image at all could be read.

Each image is brought to the model's training resolution first (``source_size``: 32 px for
CIFAKE models, so a large photo is judged downscaled, as the model never saw anything else),
then preprocessed exactly as in training (see ``transforms.eval_transform``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .artifacts import load_model_folder
from .engine import predict_proba
from .images import ImageError, decode_image, iter_image_files
from .transforms import ArrayDataset, eval_transform


class Predictor:
    """A loaded model folder that scores decoded images."""

    def __init__(self, folder: str | Path, device: str | None = None):
        self.model, self.spec = load_model_folder(folder)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device)
        self.prep = self.spec["preprocessing"]
        self.threshold = float(self.spec.get("threshold", 0.5))
        self.transform = eval_transform(self.prep)

    def prob_fake(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """P(FAKE) for an (N, S, S, 3) uint8 array already at ``source_size``."""
        ds = ArrayDataset(images, np.zeros(len(images), dtype=int), self.transform)
        loader = torch.utils.data.DataLoader(ds, batch_size=batch_size)
        return predict_proba(self.model, loader)[0]

    def predict_files(self, paths: list[Path]) -> tuple[pd.DataFrame, list[dict]]:
        arrays, ok, errors = [], [], []
        for p in paths:
            try:
                arrays.append(decode_image(p, size=self.prep["source_size"]).array)
                ok.append(str(p))
            except ImageError as exc:
                errors.append({"path": str(p), "error": str(exc)})
        if not arrays:
            return pd.DataFrame(columns=["path", "prob_fake", "label"]), errors
        probs = self.prob_fake(np.stack(arrays))
        labels = np.where(probs >= self.threshold, "FAKE", "REAL")
        return pd.DataFrame({"path": ok, "prob_fake": probs.round(6), "label": labels}), errors


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m aidetect_utils.predict", description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="a model folder (results/<method>/model)")
    ap.add_argument("paths", nargs="+", help="image files or folders")
    ap.add_argument("--output", help="write results to this .csv or .json file instead of printing")
    ap.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    args = ap.parse_args(argv)
    try:
        predictor = Predictor(args.model, args.device)
        files = iter_image_files(args.paths)
    except (FileNotFoundError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    table, errors = predictor.predict_files(files)
    for e in errors:
        print(f"skipped: {e['error']}", file=sys.stderr)
    if table.empty:
        print(f"error: no readable image among {len(files)} file(s)", file=sys.stderr)
        return 1
    if args.output:
        out = Path(args.output)
        if out.suffix.lower() == ".json":
            out.write_text(json.dumps({"model": str(args.model), "predictions": table.to_dict("records"),
                                       "skipped": errors}, indent=1))
        else:
            table.to_csv(out, index=False)
        print(f"wrote {len(table)} predictions to {out} ({len(errors)} skipped)")
    else:
        for r in table.itertuples():
            print(f"{r.label}\tprob_fake={r.prob_fake:.4f}\t{r.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
