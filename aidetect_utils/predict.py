"""Is this image AI-generated?  ``python -m aidetect_utils.predict --model DIR PATH...``

Takes image files and folders (searched recursively) of any size and mode, prints one line per
image (or writes ``--output x.csv|x.json``) with prob_fake and the label, and lists the paths it
could not find or read. Nothing finished is lost: ``--output`` is checked before any work, and
should writing it still fail, the predictions go to a temporary file that is named. Exit
status: 0 when every image was scored, 1 when some path was missing or unreadable (the others
are scored and written), 2 when nothing could start (model folder, ``--output``).

Each image is brought to the model's training resolution first (``source_size``: 32 px for
CIFAKE models, so a large photo is judged downscaled, as the model never saw anything else),
then preprocessed exactly as in training (see ``transforms.eval_transform``). Every image also
gets the model folder's domain check (``domain``): ``in_domain``, ``domain_score`` and, when out
of domain, a ``domain_note`` saying why; a one-line warning counts the images out of domain,
whose verdicts the model cannot back.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import stat
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .artifacts import ModelFolderError, load_domain_check, load_model_folder, read_model_spec
from .domain import recording, stacked
from .engine import predict_proba
from .images import decode_files, display_name, iter_image_files
from .registry import is_large
from .transforms import ArrayDataset, eval_transform


COLUMNS = ["path", "prob_fake", "label", "in_domain", "domain_score", "domain_note"]


class Predictor:
    """A loaded model folder that scores decoded images.

    A large model (``registry.is_large``: a vision-language detector on a 7B base) is held in
    memory one at a time: loading one releases the large model loaded before it, which is loaded
    again when it is next used. So notebook 07, which keeps a predictor per method, peaks at one
    7B model instead of two (about 16.6 GB each in 16 bits): what a 15 GB T4 allows."""

    _resident: "Predictor | None" = None      # the large model in memory now, if any

    def __init__(self, folder: str | Path, device: str | None = None):
        self.folder = Path(folder)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self._model = None
        self.large = _is_large(self.folder)
        if self.large and Predictor._resident is not None:
            Predictor._resident.release()      # free the large model held now before this one loads
        self.spec = self._load()               # loaded now, so a broken folder fails here, in one line
        self.prep = self.spec["preprocessing"]
        self.threshold = float(self.spec.get("threshold", 0.5))
        self.transform = eval_transform(self.prep)
        self.domain = load_domain_check(folder, self.spec)
        if self.large:
            self._hold()

    def _load(self) -> dict:
        self._model, spec = load_model_folder(self.folder)
        self._model.to(self.device)
        return spec

    def _hold(self) -> None:
        """Make this the one large model in memory: release the one held before it."""
        held = Predictor._resident
        if held is not None and held is not self:
            held.release()
        Predictor._resident = self

    def release(self) -> None:
        """Free this model's memory; it is loaded again from its folder when next used."""
        self._model = None
        if Predictor._resident is self:
            Predictor._resident = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    @property
    def model(self) -> torch.nn.Module:
        """The model, loaded again (releasing another large one first) if it was released."""
        if self._model is None:
            if self.large and Predictor._resident is not None:
                Predictor._resident.release()      # free the other one before this one loads
            self._load()
        if self.large:
            self._hold()
        return self._model

    def prob_fake(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """P(FAKE) for an (N, S, S, 3) uint8 array already at ``source_size``."""
        ds = ArrayDataset(images, np.zeros(len(images), dtype=int), self.transform)
        loader = torch.utils.data.DataLoader(ds, batch_size=batch_size)
        return predict_proba(self.model, loader)[0]

    def in_domain(self, images: np.ndarray, sizes: list[tuple[int, int]]) -> pd.DataFrame:
        """The domain check of images at ``source_size`` whose files were ``sizes`` (width, height)."""
        return self.domain.judge(self.model, self.transform, images, sizes)

    def score(self, images: np.ndarray, sizes: list[tuple[int, int]]) -> tuple[np.ndarray, pd.DataFrame]:
        """:meth:`prob_fake` and :meth:`in_domain` from one forward pass per image: the features the
        domain check reads are recorded while the model computes P(FAKE)."""
        layer = self.domain.feature_layer
        if layer is None:
            return self.prob_fake(images), self.in_domain(images, sizes)
        with recording(self.model, layer) as feats:
            probs = self.prob_fake(images)
        return probs, self.domain.judge(self.model, self.transform, images, sizes, feats=stacked(feats))

    def table(self, images: np.ndarray, sizes: list[tuple[int, int]], names: list[str]) -> pd.DataFrame:
        """One row per image (decoded at ``source_size`` from a file of ``sizes``, shown as
        ``names``): path, prob_fake, label, in_domain, domain_score, domain_note."""
        if not len(names):
            return pd.DataFrame(columns=COLUMNS)
        probs, dom = self.score(images, sizes)
        labels = np.where(probs >= self.threshold, "FAKE", "REAL")
        return pd.DataFrame({"path": names, "prob_fake": probs.round(6), "label": labels,
                             "in_domain": dom["in_domain"].to_numpy(), "domain_score": dom["domain_score"].round(3).to_numpy(),
                             "domain_note": dom["domain_note"].to_numpy()})

    def predict_files(self, paths: list[Path]) -> tuple[pd.DataFrame, list[dict]]:
        """:meth:`table` of every readable file, and the unreadable files with their one-line errors."""
        images, sizes, names, errors = decode_files(paths, self.prep["source_size"])
        return self.table(images, sizes, names), errors


def _is_large(folder: Path) -> bool:
    """``registry.is_large`` of a folder's architecture; False when the folder cannot say (its
    loading then raises the one-line ``ModelFolderError``)."""
    try:
        return is_large(read_model_spec(folder)["architecture"])
    except (ModelFolderError, ValueError, KeyError):
        return False


def check_output(path: str | os.PathLike) -> Path:
    """``--output`` checked before any work: a .csv or .json file that can be created or
    overwritten. Raises OSError/ValueError with one line naming the problem. A named pipe (or
    a socket) is refused: opening a pipe waits for a reader, so the command would hang."""
    out = Path(path)
    if out.suffix.lower() not in (".csv", ".json"):
        raise ValueError(f"--output {display_name(out)}: the name must end in .csv or .json")
    try:
        mode = out.stat().st_mode
    except OSError:
        mode = 0
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        what = "a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket"
        raise ValueError(f"--output {display_name(out)}: is {what}, not a file; name a .csv or .json file")
    if out.is_dir():
        raise IsADirectoryError(f"--output {display_name(out)}: is a folder; name a file inside it")
    existed = out.exists()
    try:
        with open(out, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise OSError(f"--output {display_name(out)}: cannot be written ({exc.strerror or exc})") from None
    if not existed:
        out.unlink(missing_ok=True)
    return out


def write_output(out: Path, table: pd.DataFrame, model: str, skipped: list[dict]) -> None:
    if out.suffix.lower() == ".json":
        out.write_text(json.dumps({"model": display_name(model), "predictions": table.to_dict("records"),
                                   "skipped": skipped}, indent=1), encoding="utf-8")
    else:
        table.to_csv(out, index=False, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m aidetect_utils.predict", description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="a model folder (results/<method>/model)")
    ap.add_argument("paths", nargs="+", help="image files or folders")
    ap.add_argument("--output", help="write results to this .csv or .json file instead of printing")
    ap.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    args = ap.parse_args(argv)
    try:
        out = check_output(args.output) if args.output else None
        predictor = Predictor(args.model, args.device)
    except (ModelFolderError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    missing: list[str] = []
    files = iter_image_files(args.paths, missing=missing)
    table, errors = predictor.predict_files(files)
    skipped = [{"path": m.split(": ", 1)[0], "error": m} for m in missing] + errors
    for e in skipped:
        print(f"skipped: {e['error']}", file=sys.stderr)
    if table.empty:
        print(f"error: no readable image among {len(files) + len(missing)} path(s)", file=sys.stderr)
        return 1
    status = 1 if skipped else 0
    outside = int((~table["in_domain"].astype(bool)).sum())
    if outside:
        print(f"warning: {outside} of {len(table)} images are out of domain for this model ({predictor.domain.describe()}): "
              "its verdicts on them are not backed by its training data", file=sys.stderr)
    if out is None:
        for r in table.itertuples():
            note = "" if r.in_domain else f"\tOUT OF DOMAIN: {r.domain_note}"
            print(f"{r.label}\tprob_fake={r.prob_fake:.4f}\t{r.path}{note}")
        return status
    try:
        write_output(out, table, args.model, skipped)
    except OSError as exc:   # the disk filled up or the folder went away after the check
        fd, rescue = tempfile.mkstemp(prefix="aidetect-predictions-", suffix=out.suffix.lower())
        os.close(fd)
        write_output(Path(rescue), table, args.model, skipped)
        print(f"error: could not write {display_name(out)} ({exc.strerror or exc}); the {len(table)} "
              f"predictions were saved to {rescue} instead", file=sys.stderr)
        return 2
    print(f"wrote {len(table)} predictions to {display_name(out)} ({len(skipped)} skipped)")
    return status


if __name__ == "__main__":
    sys.exit(main())
