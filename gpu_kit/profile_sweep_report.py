"""results/gpu/gpu_sweep.csv and .png from results/gpu/gpu_sweep.<candidate>.metrics.json
(gpu_kit/profile_sweep.sh): test accuracy against training time, one point per candidate,
with the gpu profile's target (>= 98.5% in <= 300 s of training) drawn in."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

GPU = Path(__file__).resolve().parents[1] / "results" / "gpu"
rows = []
for f in sorted(GPU.glob("gpu_sweep.*.metrics.json")):
    m = json.loads(f.read_text())
    rows.append({"candidate": m["extra"]["sweep"]["candidate"], "parameters": m["extra"]["sweep"]["parameters"],
                 "input_px": m["preprocessing"].get("size"), "test_accuracy": round(m["metrics"]["accuracy"], 4),
                 "roc_auc": round(m["metrics"]["roc_auc"], 4), "train_seconds": m["train_seconds"],
                 "inference_images_per_second": m["inference_images_per_second"], "n_test": m["n_test"],
                 "device": m["device"], "gpu_peak_reserved_gib": m.get("gpu_peak_reserved_gib")})
df = pd.DataFrame(rows)
df.to_csv(GPU / "gpu_sweep.csv", index=False)
fig, ax = plt.subplots(figsize=(6, 4))
if len(df):
    ax.scatter(df["train_seconds"], df["test_accuracy"])
    for _, r in df.iterrows():
        ax.annotate(r["candidate"], (r["train_seconds"], r["test_accuracy"]), textcoords="offset points", xytext=(4, 4))
ax.axhline(0.985, ls="--", c="gray", lw=1)
ax.axvline(300, ls="--", c="gray", lw=1)
ax.set(xlabel="training seconds (both phases, validation included)", ylabel="test accuracy (whole CIFAKE test split)",
       title="notebook 04, gpu profile candidates" + (f" ({df['device'].iloc[0]})" if len(df) else ""))
fig.tight_layout()
fig.savefig(GPU / "gpu_sweep.png", dpi=110)
print(df.to_string(index=False) if len(df) else "no candidate results yet")
