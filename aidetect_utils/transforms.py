"""Torch datasets over the uint8 cache, and the torchvision preprocessing every model shares.

A saved model folder records its preprocessing as a dict (``source_size``, ``input_size``,
``mean``, ``std``); :func:`eval_transform` rebuilds exactly that pipeline, so training,
evaluation and the predict command see an image the same way: first brought to the training
data's resolution (``source_size``, 32 for CIFAKE), then resized to the network's input size.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF_MEAN = (0.5, 0.5, 0.5)  # ViT-in21k and DINO-style checkpoints
HALF_STD = (0.5, 0.5, 0.5)


class ArrayDataset(Dataset):
    """(image tensor, label) pairs from an (N, H, W, 3) uint8 array."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform=None):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels, self.transform = images, np.asarray(labels), transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = torch.from_numpy(np.array(self.images[i], copy=True)).permute(2, 0, 1)  # CHW uint8 (the cache is read-only)
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.labels[i])


def preprocessing(input_size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD, source_size: int = 32) -> dict:
    """The preprocessing record stored in model folders and metrics."""
    return {"source_size": int(source_size), "input_size": int(input_size),
            "mean": [float(m) for m in mean], "std": [float(s) for s in std],
            "interpolation": "bicubic"}


def _resize(size: int):
    return v2.Resize((size, size), interpolation=v2.InterpolationMode.BICUBIC, antialias=True)


def eval_transform(prep: dict) -> v2.Compose:
    """uint8 CHW tensor at ``source_size`` -> normalised float tensor at ``input_size``."""
    steps = [] if prep["input_size"] == prep["source_size"] else [_resize(prep["input_size"])]
    return v2.Compose(steps + [v2.ToDtype(torch.float32, scale=True),
                               v2.Normalize(prep["mean"], prep["std"])])


def train_transform(prep: dict, hflip: bool = True, rotation: float = 0.0,
                    color_jitter: float = 0.0, crop_scale: tuple[float, float] | None = None,
                    jpeg_quality: tuple[int, int] | None = None) -> v2.Compose:
    """Augmentations on the training data only, then the same steps as :func:`eval_transform`.

    ``crop_scale``: RandomResizedCrop to ``input_size`` with this area range (else a plain
    resize); ``jpeg_quality``: random in-memory JPEG re-compression (torchvision's ``v2.JPEG``) at
    a quality in the range, applied last, at the network's input size, as a re-posted image
    would have been compressed after any resizing.
    """
    steps: list = []
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    if rotation:
        steps.append(v2.RandomRotation(rotation))
    if color_jitter:
        steps.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter,
                                    saturation=color_jitter))
    if crop_scale is not None:
        steps.append(v2.RandomResizedCrop(prep["input_size"], scale=tuple(crop_scale), antialias=True))
    elif prep["input_size"] != prep["source_size"]:
        steps.append(_resize(prep["input_size"]))
    if jpeg_quality is not None:
        steps.append(jpeg_simulation(jpeg_quality))
    return v2.Compose(steps + [v2.ToDtype(torch.float32, scale=True), v2.Normalize(prep["mean"], prep["std"])])


def jpeg_simulation(quality: int | tuple[int, int] = (50, 95)) -> v2.JPEG:
    """Random JPEG re-compression in memory (uint8 tensors in, uint8 tensors out, same size)."""
    q = (int(quality), int(quality)) if np.isscalar(quality) else tuple(int(v) for v in quality)
    return v2.JPEG(quality=q)


def jpeg_bytes(image: torch.Tensor, quality: int) -> int:
    """Size in bytes of ``image`` (uint8 CHW) encoded as JPEG at ``quality``: what the
    compression simulation throws away, shown in notebook 06."""
    from torchvision.io import encode_jpeg
    return int(encode_jpeg(image, quality=int(quality)).numel())
