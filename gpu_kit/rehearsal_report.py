"""results/gpu/rehearsal.csv from what gpu_kit/rehearsal.sh left in results/gpu/rehearsal/.

One row per notebook and pass (``main``: the rehearsal profile; ``capped15``: the same under a
15 GiB allocator cap, few epochs). Columns:

- ``status`` 0 = ran; ``batch_size``/``grad_accum`` as run (capped pass: halved after an OOM);
- ``wall_s``: the notebook's wall time (papermill, kernel start and imports included);
- ``train_s``, ``train_images`` and ``train_images_per_s`` (01-04: images seen in training, all
  epochs, validation passes included in the time; 02/03: feature extraction + head), or for
  05/06 ``s_per_step`` (one optimiser step of batch x accumulation images);
- ``inference_images_per_s`` (metrics.json; 03 counts MC-dropout passes over cached features);
- ``peak_allocated_gib``/``peak_reserved_gib``: torch's peak in the notebook's process up to
  the moment its results were written; ``device_peak_used_gib``: nvidia-smi's largest
  ``memory.used`` while the notebook ran (the whole card: CUDA context and later cells such
  as 05/06's reload of the saved model included);
- ``full_wall_s_extrapolated`` (main pass): the full profile's wall time, linear in the number
  of images: wall_s + (full / rehearsal - 1) x the data-proportional seconds (training,
  test inference, the 01-03 comparison runs; 05/06: optimiser steps x s_per_step and
  zero-shot + test images at the measured rate). Per-run overhead (imports, model loading,
  checkpoints per epoch) is counted once. Not included: decoding 12,000 real SID_Set images
  (05/06), and 07, which is scaled by its robustness_n ratio only. An estimate, not a run.

    python gpu_kit/rehearsal_report.py
"""
from __future__ import annotations

import csv
import json
import math
import sys
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from aidetect_utils import params  # noqa: E402

R = ROOT / "results" / "gpu" / "rehearsal"
OUT = ROOT / "results" / "gpu" / "rehearsal.csv"
FULL_CIFAKE = {"train": 79_264, "val": 19_816, "test": 19_584}   # notebook 00 on the whole set (RESULTS.md)
METHODS = {"01": "vit_finetune", "02": "vit_frozen_head", "03": "dino_bayesian_head",
           "04": "efficientnet_two_phase", "05": "qwen_vl_sft", "06": "qwen_vl_robust"}
NAMES = {nb.stem[:2]: nb.name for nb in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")}
FIELDS = ["notebook", "pass", "device", "status", "batch_size", "grad_accum", "wall_s", "train_s", "train_images",
          "train_images_per_s", "s_per_step", "inference_images_per_s", "peak_allocated_gib",
          "peak_reserved_gib", "device_peak_used_gib", "memory_cap_gib", "full_wall_s_extrapolated", "note"]


def _json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def _smi_peak(start: float, end: float) -> float | None:
    f = R / "nvidia_smi.csv"
    if not f.exists():
        return None
    peak = None
    for row in csv.reader(f.open()):
        try:
            t = datetime.strptime(row[0].strip(), "%Y/%m/%d %H:%M:%S.%f").timestamp()
            used = float(row[1]) / 1024       # MiB -> GiB
        except (ValueError, IndexError):
            continue
        if start <= t <= end:
            peak = used if peak is None else max(peak, used)
    return None if peak is None else round(peak, 2)


def _rehearsal_counts() -> dict:
    f = R / "main" / "data" / "prepared" / "cifake" / "splits.csv"
    f = f if f.exists() else ROOT / "data" / "prepared" / "cifake" / "splits.csv"
    counts = {"train": 0, "val": 0, "test": 0}
    if f.exists():
        for row in csv.DictReader(f.open()):
            counts[row["subset"]] = counts.get(row["subset"], 0) + 1
    return counts


def _epoch_images(folder: Path, n_train: int) -> tuple[float, int]:
    """(seconds, images) over every history.json under ``folder`` (engine.fit's epochs)."""
    secs, images = 0.0, 0
    for h in folder.rglob("history.json"):
        if "compare" in h.parts or any(p.startswith("tradeoff") for p in h.parts):
            continue
        epochs = json.loads(h.read_text())
        secs += sum(e["seconds"] for e in epochs)
        images += n_train * len(epochs)
    return secs, images


def row_for(pass_: str, nb: str, run: dict, profiles: dict, counts: dict) -> dict:
    name = NAMES.get(nb, nb)
    wall = float(run["end"]) - float(run["start"])
    row = {"notebook": name, "pass": pass_, "status": run["status"], "batch_size": run["batch_size"],
           "grad_accum": run["grad_accum"], "wall_s": round(wall, 1),
           "device_peak_used_gib": _smi_peak(float(run["start"]), float(run["end"]))}
    method = METHODS.get(nb)
    folder = R / pass_ / "results" / method if method else None
    m = _json(folder / "metrics.json") if folder else None
    if not m:
        return row
    row.update(device=m.get("device"), inference_images_per_s=m.get("inference_images_per_second"),
               train_s=m.get("train_seconds"),
               peak_allocated_gib=m.get("gpu_peak_allocated_gib"), peak_reserved_gib=m.get("gpu_peak_reserved_gib"),
               memory_cap_gib=m.get("gpu_memory_cap_gib"))
    full = params.load("full", name).as_dict()
    reh = params.load("rehearsal", name).as_dict()
    ips = m.get("inference_images_per_second") or 0
    extra_full = 0.0
    if nb in ("05", "06"):
        steps = m["extra"].get("steps") or 0
        spp = m["train_seconds"] / steps if steps else None
        row.update(s_per_step=None if spp is None else round(spp, 2), train_images=m["extra"].get("n_train"))
        if spp and ips:
            full_steps = math.ceil(full["n_train"] / (full["batch_size"] * full["grad_accum"])) * full["epochs"]
            extra_full = (full_steps - steps) * spp + 2 * (full["n_test"] - m["n_test"]) / ips
    else:
        secs, images = _epoch_images(folder, counts["train"])
        if nb in ("02", "03"):
            secs, images = m["train_seconds"], counts["train"]      # extraction + head
        row.update(train_images=images, train_images_per_s=round(images / secs, 1) if secs else None)
        ratio = FULL_CIFAKE["train"] / counts["train"] if counts["train"] else None
        if ratio and ips:
            extra_full = (ratio - 1) * m["train_seconds"] + (FULL_CIFAKE["test"] - m["n_test"]) / ips
            side = {"01": "resolution_tradeoff.json", "02": "cached_vs_uncached.json",
                    "03": "cached_vs_uncached.json"}.get(nb)
            side_json = _json(folder / side) if side else None
            if side_json and reh.get("compare_n") and full.get("compare_n"):
                side_s = (sum(r["train s"] for r in side_json) if isinstance(side_json, list)
                          else side_json["uncached_seconds"] + side_json["cached_seconds"])
                extra_full += (full["compare_n"] / reh["compare_n"] - 1) * side_s
    if pass_ == "main" and str(run["status"]) == "0":
        row["full_wall_s_extrapolated"] = round(wall + extra_full)
    return row


def main() -> int:
    runs_file = R / "runs.csv"
    if not runs_file.exists():
        print(f"no {runs_file}: run gpu_kit/rehearsal.sh first", file=sys.stderr)
        return 1
    profiles = params.load_profiles()
    counts = _rehearsal_counts()
    latest = {}
    for run in csv.DictReader(runs_file.open()):
        if run["pass"] != "build":
            latest.setdefault((run["pass"], run["notebook"]), []).append(run)
    rows = []
    for (pass_, nb), tries in sorted(latest.items(), key=lambda kv: (kv[0][0] != "main", kv[0][1])):
        for run in tries if pass_ == "capped15" else tries[-1:]:   # every batch size tried under the cap
            rows.append(row_for(pass_, nb, run, profiles, counts))
    for row in rows:
        if row["notebook"].startswith("07") and row["pass"] == "main" and str(row["status"]) == "0":
            f, r = (params.load(p, row["notebook"]).robustness_n for p in ("full", "rehearsal"))
            row["full_wall_s_extrapolated"] = round(row["wall_s"] * f / r)
            row["note"] = "scaled by robustness_n only"
        if row["pass"] == "capped15" and str(row["status"]) != "0":
            out = R / f"capped15.{row['notebook'][:2]}.out"
            row["note"] = "out of memory" if out.exists() and "out of memory" in out.read_text().lower() else "failed"
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w", newline="") as fh:
        w = csv.DictWriter(fh, FIELDS)
        w.writeheader()
        w.writerows(rows)
    for row in rows:
        print(" | ".join(f"{k}={row.get(k)}" for k in FIELDS if row.get(k) not in (None, "")))
    print(f"wrote {OUT} ({len(rows)} rows); rehearsal CIFAKE split {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
