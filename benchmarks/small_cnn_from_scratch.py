"""Reference point for the `cpu` profile: a small ResNet trained from scratch on the whole
deduplicated CIFAKE, timed on this machine (not one of the notebook methods).

    python benchmarks/small_cnn_from_scratch.py --width 32 --epochs 4 --threads 2

Reads notebook 00's prepared splits (run `./run.sh --profile cpu --only 00` first). Three stages
(w, 2w, 4w channels; one basic residual block each; 32, 16, 8 px), global pooling, one logit;
SGD with Nesterov momentum and a one-cycle schedule, random horizontal flips, channels-last
tensors. Prints the test accuracy after every epoch and the cumulative training seconds
(evaluation excluded), and writes them to --out as JSON.
"""
from __future__ import annotations

import argparse
import json
import math
import time

import torch
from torch import nn


def block(cin: int, cout: int, stride: int) -> nn.Module:
    class Basic(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                                   nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
                                   nn.BatchNorm2d(cout))
            self.skip = (nn.Identity() if cin == cout and stride == 1 else
                         nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

        def forward(self, x):
            return torch.relu(self.f(x) + self.skip(x))
    return Basic()


def small_resnet(w: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                         block(w, w, 1), block(w, 2 * w, 2), block(2 * w, 4 * w, 2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/small_cnn_from_scratch.json")
    args = ap.parse_args()
    from aidetect_utils.splits import load_prepared
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = load_prepared()

    def tensors(split):
        s = data.split(split)
        x = (torch.from_numpy(s.images.copy()).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
        return x.contiguous(memory_format=torch.channels_last), torch.from_numpy(s.labels).float()

    xtr, ytr = tensors("train")
    xte, yte = tensors("test")
    model = small_resnet(args.width).to(memory_format=torch.channels_last)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps = args.epochs * math.ceil(len(ytr) / args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps, pct_start=0.25)
    log, train_s = [], 0.0
    print(f"{n_params:,} parameters, train {len(ytr):,}, test {len(yte):,}, {args.threads} threads", flush=True)
    for epoch in range(args.epochs):
        model.train()
        t0 = time.perf_counter()
        perm = torch.randperm(len(ytr))
        for i in range(0, len(perm), args.batch_size):
            idx = perm[i:i + args.batch_size]
            x, y = xtr[idx], ytr[idx]
            flip = torch.rand(len(idx)) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
            loss = nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(1), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        train_s += time.perf_counter() - t0
        model.eval()
        with torch.no_grad():
            correct = sum(((model(xte[i:i + 1024]).squeeze(1) > 0).float() == yte[i:i + 1024]).sum().item()
                          for i in range(0, len(yte), 1024))
        log.append({"epoch": epoch + 1, "train_seconds": round(train_s, 1), "test_accuracy": correct / len(yte)})
        print(log[-1], flush=True)
    with open(args.out, "w") as f:
        json.dump({"args": vars(args), "parameters": n_params, "epochs": log}, f, indent=1)


if __name__ == "__main__":
    main()
