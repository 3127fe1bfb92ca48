"""Why a model decides: Grad-CAM maps for the FAKE decision (notebook 07 and the web demo).

:func:`explain_maps` runs Grad-CAM (``pytorch-grad-cam``) on the deepest convolutional stage of
a CNN whose map is still at least 4x4 at the input size (at CIFAKE's 32 px, EfficientNet's last
stages are 1x1), and on the patch tokens of a ViT's last block (reshaped to a grid). Grad-CAM
weights a layer's feature maps by the gradient of the FAKE decision and keeps the positive
part: bright regions raised P(FAKE). Vision-language models are not covered.
"""
from __future__ import annotations

import numpy as np
import torch

def _target_layer(model, x: torch.Tensor | None = None, min_side: int = 4):
    """(layer, reshape_transform) for Grad-CAM.

    CNNs (timm backbones): the deepest stage whose feature map is at least ``min_side`` pixels
    on a side for input ``x`` (at 224 px the last one; at CIFAKE's 32 px the last stages are
    1x1, where a map would say nothing). ViTs: the last encoder block, its patch tokens reshaped
    to a square grid."""
    from .models import EfficientNetDetector, FeatureClassifier, ViTClassifier
    if isinstance(model, (EfficientNetDetector, FeatureClassifier)) and hasattr(model.backbone, "conv_head"):
        bb = model.backbone
        candidates = list(bb.blocks) + [bb.conv_head]
        if x is None:
            return candidates[-1], None
        sizes = {}
        hooks = [m.register_forward_hook(lambda m, i, o, k=k: sizes.__setitem__(k, o.shape[-1]))
                 for k, m in enumerate(candidates)]
        try:
            with torch.no_grad():
                bb(x[:1])
        finally:
            for h in hooks:
                h.remove()
        ok = [k for k in range(len(candidates)) if sizes.get(k, 0) >= min_side]
        return candidates[ok[-1] if ok else 0], None
    vit = None
    if isinstance(model, ViTClassifier):
        vit = model.vit.vit
    elif isinstance(model, FeatureClassifier) and hasattr(model.backbone, "embeddings"):
        vit = model.backbone
    if vit is not None:
        def reshape(t):
            tokens = t[:, 1:, :]                      # drop the class token
            side = int(round(tokens.shape[1] ** 0.5))
            return tokens.reshape(t.shape[0], side, side, t.shape[-1]).permute(0, 3, 1, 2)
        blocks = vit.layers if hasattr(vit, "layers") else vit.encoder.layer   # transformers 5.x / 4.x
        return blocks[-1].layernorm_before, reshape
    raise TypeError(f"no Grad-CAM target for {type(model).__name__}")


def explain_maps(model, x: torch.Tensor) -> np.ndarray:
    """Grad-CAM maps (N, H, W) in [0, 1] for the FAKE decision of ``model`` on preprocessed ``x``."""
    from pytorch_grad_cam import GradCAM

    from .engine import device_of, logits_of
    from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget, ClassifierOutputTarget

    class _Logits(torch.nn.Module):                       # Grad-CAM wants a plain tensor output
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, inp):
            return logits_of(self.m(inp))

    x = x.to(device_of(model))
    layer, reshape = _target_layer(model, x)
    wrapped = _Logits(model).eval()
    with torch.no_grad():
        n_out = wrapped(x[:1]).shape[-1]
    targets = [BinaryClassifierOutputTarget(1) if n_out == 1 else ClassifierOutputTarget(1) for _ in range(len(x))]
    x = x.detach().clone().requires_grad_(True)   # frozen backbones: gradients flow from the input
    with torch.enable_grad(), GradCAM(model=wrapped, target_layers=[layer], reshape_transform=reshape) as cam:
        return cam(input_tensor=x, targets=targets)


def resize_map(cam: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A Grad-CAM map (at the network's input size) resized bilinearly to an image's (H, W)."""
    return torch.nn.functional.interpolate(torch.from_numpy(cam)[None, None].float(), size=tuple(shape),
                                           mode="bilinear")[0, 0].numpy()


def supports_explanations(model) -> bool:
    try:
        _target_layer(model)
        return True
    except TypeError:
        return False
