"""Print RESULTS.md's results table from results/<method>/metrics.json (what the notebooks wrote).

    python benchmarks/results_table.py            # every method found under results/
"""
import json
import sys
from pathlib import Path

from aidetect_utils.paths import results_dir


def main() -> int:
    rows = []
    for f in sorted(results_dir().glob("*/metrics.json")):
        r = json.loads(f.read_text())
        m = r["metrics"]
        rows.append(f"| {r['method']} | {r['backbone']} | {r['profile']} | {r['n_test']:,} | {m['accuracy']:.4f} "
                    f"| {m['roc_auc']:.4f} | {r['trainable_params']:,} / {r['total_params']:,} "
                    f"| {r['train_seconds'] / 60:.1f} | {r['inference_images_per_second']} | {r['device']} |")
    if not rows:
        print("no results/<method>/metrics.json found", file=sys.stderr)
        return 1
    print("| method | backbone | profile | test images | accuracy | ROC AUC | trainable / total params "
          "| train min | inference img/s | device |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
