"""On a CUDA GPU: EfficientNet-Lite0 training throughput at 224 px (bf16 autocast through
accelerate, as ``engine.fit`` trains) against how fast the data loader prepares images
(32 -> 224 px bicubic resize, flip, normalise), with and without worker processes. It is the
measurement behind ``engine.default_workers``: one loader process cannot feed the GPU.

    python -m gpu_kit.loader_throughput        (from the project root)

Random pixels stand in for images: throughput does not depend on their values.
"""
import time

import numpy as np
import torch

from aidetect_utils import engine, models, transforms


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU (on a CPU see benchmarks/train_throughput.py)")
    torch.backends.cudnn.benchmark = True
    model = models.EfficientNetDetector(backbone="tf_efficientnet_lite0", hidden=256, dropout=0.5)
    print(models.load_pretrained_backbone(model, "efficientnet-lite0-pypi"))
    acc = engine.make_accelerator("auto")
    opt = torch.optim.Adam(model.parameters(), 1e-5)
    model, opt = acc.prepare(model, opt)
    print(torch.cuda.get_device_name(0), "| mixed precision:", acc.mixed_precision)
    for bs in (32, 128):
        x = torch.randn(bs, 3, 224, 224, device="cuda")
        y = torch.randint(0, 2, (bs,), device="cuda")
        for i in range(60):                       # 10 warm-up steps, 50 timed
            if i == 10:
                torch.cuda.synchronize()
                t = time.perf_counter()
            with acc.autocast():
                loss = engine.default_loss(model(x), y)
            opt.zero_grad()
            acc.backward(loss)
            opt.step()
            loss.item()                           # engine.fit reads every loss, as here
        torch.cuda.synchronize()
        print(f"train, batch {bs}: {50 * bs / (time.perf_counter() - t):.0f} images/s")
    tf = transforms.train_transform(transforms.preprocessing(224), hflip=True)
    ds = transforms.ArrayDataset(np.random.default_rng(0).integers(0, 255, (4096, 32, 32, 3), dtype=np.uint8),
                                 np.zeros(4096, int), tf)
    for workers in (0, engine.default_workers()):
        t, n = time.perf_counter(), 0
        for _, yb in engine.make_loader(ds, 32, shuffle=True, num_workers=workers):
            n += len(yb)
        print(f"data loader, {workers} workers: {n / (time.perf_counter() - t):.0f} images/s")


if __name__ == "__main__":
    main()
