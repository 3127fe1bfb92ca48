"""Model builders by name: how a saved model folder's ``architecture`` spec becomes a module.

A model folder stores ``{"builder": name, "kwargs": {...}}``; :func:`build` turns it back into
the module. Model modules register their builders here (``@register("efficientnet_detector")``),
so ``artifacts`` (which saves and loads folders) never imports a model module, and a model
module may use ``artifacts`` freely: no import circle. The modules that provide builders are
listed in :data:`PROVIDERS` and imported the first time a name is looked up.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

#: Modules whose import registers builders (imported lazily, on the first lookup).
PROVIDERS = ("aidetect_utils.models", "aidetect_utils.vlm.detector")


@dataclass(frozen=True)
class Builder:
    fn: Callable                # fn(folder, **kwargs) -> nn.Module
    self_loading: bool          # True: fn loads the weights itself (save_pretrained folders, LoRA adapters)


_BUILDERS: dict[str, Builder] = {}


def register(name: str, self_loading: bool = False):
    """Decorator: ``fn(folder, **kwargs)`` builds the architecture ``name`` (weights loaded by the
    caller from ``model.safetensors`` unless ``self_loading``)."""
    def deco(fn):
        _BUILDERS[name] = Builder(fn, self_loading)
        return fn
    return deco


def get(name: str) -> Builder:
    if name not in _BUILDERS:
        for module in PROVIDERS:
            importlib.import_module(module)
    if name not in _BUILDERS:
        raise ValueError(f"unknown architecture builder {name!r}; known: {sorted(_BUILDERS)}")
    return _BUILDERS[name]


def build(spec: dict, folder=None):
    """The module ``spec`` describes (``{"builder": name, "kwargs": {...}}``), without its weights
    unless its builder loads them itself."""
    return get(spec.get("builder")).fn(folder, **spec.get("kwargs", {}))
