"""Training throughput of the EfficientNet-Lite0 detector on this CPU, per input size, thread
count and memory layout (NCHW, and channels-last as ``engine.TrainConfig(channels_last=True)``
trains), measured in one run so the ratios are comparable (machines here are noisy).

    python benchmarks/train_throughput.py --sizes 32 64 --threads 2 --layouts nchw nhwc

Random tensors stand in for images: throughput does not depend on pixel values.
"""
import argparse
import time

import torch

from aidetect_utils import engine, models


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--layouts", nargs="+", choices=["nchw", "nhwc"], default=["nchw", "nhwc"])
    args = ap.parse_args()
    print(f"{'size':>5} {'threads':>7} {'layout':>6} {'train images/s':>15}")
    for layout in args.layouts:
        torch.manual_seed(0)
        model = models.EfficientNetDetector()
        models.load_lite0_imagenet(model.backbone)
        if layout == "nhwc":
            engine.to_channels_last(model)
        opt = torch.optim.Adam(model.parameters(), 1e-4)
        for size in args.sizes:
            x = engine.match_memory_format(torch.randn(args.batch, 3, size, size), layout == "nhwc")
            y = torch.randint(0, 2, (args.batch,)).float()
            for threads in args.threads:
                torch.set_num_threads(threads)
                for step in range(args.steps + 1):  # step 0 warms up
                    if step == 1:
                        t0 = time.perf_counter()
                    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x).reshape(-1), y)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                rate = args.steps * args.batch / (time.perf_counter() - t0)
                print(f"{size:>5} {threads:>7} {layout:>6} {rate:>15.0f}", flush=True)

if __name__ == "__main__":
    main()
