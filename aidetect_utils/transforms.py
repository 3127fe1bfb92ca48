"""Torch datasets over the uint8 cache, and the torchvision preprocessing every model shares.

A saved model folder records its preprocessing as a dict (``source_size``, ``input_size``,
``mean``, ``std``); :func:`eval_transform` rebuilds exactly that pipeline, so training,
evaluation and the predict command see an image the same way: first brought to the training
data's resolution (``source_size``, 32 for CIFAKE), then resized to the network's input size.

:func:`degradation` is the robust-training augmentation of notebook 04 (in the style of
CNNDetection, Wang et al. 2020, and B-Free, Guillaro et al. 2025): random Gaussian blur,
down-and-up resizing, JPEG re-compression and Gaussian noise, each applied with a probability
and a random strength, at the source resolution, before anything else.

Each of the four is one function of a fixed strength (:func:`gaussian_blur`,
:func:`down_up_resize`, :func:`gaussian_noise`, :func:`jpeg`; :data:`DEGRADATIONS` by name):
``robustness.corrupt`` calls it at the strengths notebook 07 tests, and the training op draws a
strength and calls it (torchvision's ``GaussianBlur`` and ``JPEG`` call the same kernels), so a
model is trained against exactly the corruption it is tested on.
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


def blur_kernel_size(sigma: float) -> int:
    """The odd side of the Gaussian kernel that reaches three ``sigma`` either side of its centre
    (a random blur sizes it for the largest sigma it can draw)."""
    return 2 * int(np.ceil(3 * float(sigma))) + 1


def gaussian_blur(x: torch.Tensor, sigma: float, kernel_size: int | None = None) -> torch.Tensor:
    """Gaussian blur of uint8 (..., C, H, W) images with standard deviation ``sigma`` pixels, over
    a :func:`blur_kernel_size` kernel unless ``kernel_size`` is given."""
    k = blur_kernel_size(sigma) if kernel_size is None else int(kernel_size)
    return v2.functional.gaussian_blur(x, kernel_size=[k, k], sigma=[float(sigma)] * 2)


def down_up_resize(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Shrink uint8 (..., C, H, W) images by ``factor``, then bring them back to their size
    (bicubic, antialiased both ways): the fine detail a thumbnailed, re-posted or rescaled image
    loses. Written out because torchvision has no single op for the round trip."""
    h, w = x.shape[-2:]
    small = (max(1, round(h * factor)), max(1, round(w * factor)))
    mode = v2.InterpolationMode.BICUBIC
    return v2.functional.resize(v2.functional.resize(x, small, interpolation=mode, antialias=True),
                                [h, w], interpolation=mode, antialias=True)


def gaussian_noise(x: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add Gaussian noise of standard deviation ``sigma`` (0-255 units) to uint8 images and round
    back to uint8 (torchvision's ``GaussianNoise`` takes float images). ``generator``: where the
    noise is drawn from (None: torch's global generator, as in training)."""
    return (x.float() + torch.randn(x.shape, generator=generator) * float(sigma)).round().clamp(0, 255).to(torch.uint8)


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """uint8 (..., C, H, W) images encoded as JPEG at ``quality`` and decoded again, in memory."""
    return v2.functional.jpeg(x, quality=int(quality))


#: The degradations by name, each a function of (uint8 images, fixed strength).
DEGRADATIONS = {"blur": gaussian_blur, "resize": down_up_resize, "noise": gaussian_noise, "jpeg": jpeg}


class RandomDownUpResize(torch.nn.Module):
    """:func:`down_up_resize` by a random factor drawn uniformly from ``scale``."""

    def __init__(self, scale: tuple[float, float] = (0.25, 1.0)):
        super().__init__()
        self.scale = (float(scale[0]), float(scale[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return down_up_resize(x, float(torch.empty(1).uniform_(*self.scale)))

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


class RandomGaussianNoise(torch.nn.Module):
    """:func:`gaussian_noise` of a random standard deviation drawn uniformly from ``sigma``
    (torchvision's ``GaussianNoise`` takes float images and one fixed sigma)."""

    def __init__(self, sigma: tuple[float, float] = (0.0, 16.0)):
        super().__init__()
        self.sigma = (float(sigma[0]), float(sigma[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gaussian_noise(x, float(torch.empty(1).uniform_(*self.sigma)))

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"


DEGRADATION_DEFAULTS = {"p": 0.5, "blur_sigma": (0.1, 3.0), "resize_scale": (0.25, 1.0),
                        "jpeg_quality": (30, 100), "noise_sigma": (0.0, 16.0)}


def degradation(p: float | dict = 0.5, blur_sigma=(0.1, 3.0), resize_scale=(0.25, 1.0),
                jpeg_quality=(30, 100), noise_sigma=(0.0, 16.0)) -> v2.Compose:
    """The robust-training augmentation: each of blur, down-and-up resize, JPEG and noise is
    applied with probability ``p`` (one number, or a dict per op name) at a strength drawn
    uniformly from its range; an op whose range is None is left out. uint8 CHW in and out, the
    same size. CNNDetection and UniversalFakeDetect use blur sigma ~ U[0, 3] and JPEG quality ~
    U{30..100} at p = 0.5; AIDE uses p = 0.1."""
    prob = (lambda name: float(p.get(name, 0.0))) if isinstance(p, dict) else (lambda name: float(p))
    ops = []
    if blur_sigma is not None:      # torchvision's GaussianBlur draws sigma and calls the kernel gaussian_blur calls
        ops.append(("blur", v2.GaussianBlur(kernel_size=blur_kernel_size(blur_sigma[1]),
                                            sigma=(max(1e-3, float(blur_sigma[0])), float(blur_sigma[1])))))
    if resize_scale is not None:
        ops.append(("resize", RandomDownUpResize(resize_scale)))
    if noise_sigma is not None:
        ops.append(("noise", RandomGaussianNoise(noise_sigma)))
    if jpeg_quality is not None:    # torchvision's JPEG draws a quality and calls the kernel jpeg calls
        ops.append(("jpeg", v2.JPEG(quality=tuple(int(q) for q in jpeg_quality))))
    steps = [v2.RandomApply([op], p=prob(name)) for name, op in ops if prob(name) > 0]
    return v2.Compose(steps) if steps else v2.Identity()


def train_transform(prep: dict, hflip: bool = True, rotation: float = 0.0,
                    color_jitter: float = 0.0, crop_scale: tuple[float, float] | None = None,
                    jpeg_quality: tuple[int, int] | None = None, degrade: dict | None = None) -> v2.Compose:
    """Augmentations on the training data only, then the same steps as :func:`eval_transform`.

    ``crop_scale``: RandomResizedCrop to ``input_size`` with this area range (else a plain
    resize); ``jpeg_quality``: random in-memory JPEG re-compression (torchvision's ``v2.JPEG``) at
    a quality in the range, applied last, at the network's input size, as a re-posted image
    would have been compressed after any resizing; ``degrade``: keyword arguments of
    :func:`degradation` (None: off), applied first, at the source resolution, as the images a
    detector meets were degraded before anyone resized them for a network.
    """
    steps: list = [degradation(**degrade)] if degrade else []
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
