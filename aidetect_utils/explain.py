"""Why a model decides: Grad-CAM maps for the FAKE decision (notebook 07 and the web demo).

:func:`explain_maps` runs Grad-CAM (``pytorch-grad-cam``) on the layer the model names with its
``gradcam_target(x)`` method: each model class knows its own architecture, so a new detector
family adds that method and nothing here changes. Two targets cover this project's models:
:func:`cnn_target`, the deepest convolutional stage of a timm CNN whose map is still at least 4x4
at the input size (at CIFAKE's 32 px, EfficientNet's last stages are 1x1), and :func:`vit_target`,
the patch tokens of a ViT's last block (reshaped to a grid). Grad-CAM weights a layer's feature
maps by the gradient of the FAKE decision and keeps the positive part: bright regions raised
P(FAKE). A model without ``gradcam_target`` (or whose target is None, as for vision-language
models) is not covered.
"""
from __future__ import annotations

import numpy as np
import torch

from .engine import device_of, logits_of

MIN_SIDE = 4     # the smallest feature map (pixels on a side) a CNN stage may have to be explained


def cnn_target(backbone: torch.nn.Module, x: torch.Tensor | None = None, min_side: int = MIN_SIDE):
    """(layer, None): the deepest stage of a timm CNN ``backbone`` (its ``blocks`` and ``conv_head``)
    whose feature map is at least ``min_side`` pixels on a side for input ``x`` (at 224 px the last
    one; at CIFAKE's 32 px the last stages are 1x1, where a map would say nothing); without ``x``
    the last one, unmeasured."""
    candidates = list(backbone.blocks) + [backbone.conv_head]
    if x is None:
        return candidates[-1], None
    sizes = {}
    hooks = [m.register_forward_hook(lambda m, i, o, k=k: sizes.__setitem__(k, o.shape[-1]))
             for k, m in enumerate(candidates)]
    try:
        with torch.no_grad():
            backbone(x[:1])
    finally:
        for h in hooks:
            h.remove()
    ok = [k for k in range(len(candidates)) if sizes.get(k, 0) >= min_side]
    return candidates[ok[-1] if ok else 0], None


def _tokens_to_grid(t: torch.Tensor) -> torch.Tensor:
    """(N, 1 + S*S, D) ViT tokens -> (N, D, S, S): the patch tokens as a map, class token dropped."""
    tokens = t[:, 1:, :]
    side = int(round(tokens.shape[1] ** 0.5))
    return tokens.reshape(t.shape[0], side, side, t.shape[-1]).permute(0, 3, 1, 2)


def vit_target(vit: torch.nn.Module):
    """(layer, reshape) for a Hugging Face ``ViTModel``: the last encoder block's input norm, its
    patch tokens reshaped to a square grid."""
    blocks = vit.layers if hasattr(vit, "layers") else vit.encoder.layer   # transformers 5.x / 4.x
    return blocks[-1].layernorm_before, _tokens_to_grid


def _target_layer(model, x: torch.Tensor | None = None):
    """(layer, reshape_transform) for Grad-CAM, as the model declares it (``gradcam_target``);
    TypeError for a model that declares none."""
    target = model.gradcam_target(x) if hasattr(model, "gradcam_target") else None
    if target is None:
        raise TypeError(f"no Grad-CAM target for {type(model).__name__}")
    return target


def explain_maps(model, x: torch.Tensor) -> np.ndarray:
    """Grad-CAM maps (N, H, W) in [0, 1] for the FAKE decision of ``model`` on preprocessed ``x``."""
    from pytorch_grad_cam import GradCAM
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
    """Whether the model declares a Grad-CAM target (the web page shows a map only then)."""
    try:
        _target_layer(model)
        return True
    except TypeError:
        return False
