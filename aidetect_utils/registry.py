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
    large: Callable[[dict], bool] | None = None   # kwargs -> a model held in memory one at a time (see is_large)


_BUILDERS: dict[str, Builder] = {}


def register(name: str, self_loading: bool = False, large: Callable[[dict], bool] | None = None):
    """Decorator: ``fn(folder, **kwargs)`` builds the architecture ``name`` (weights loaded by the
    caller from ``model.safetensors`` unless ``self_loading``). ``large(kwargs)``: whether such a
    model is too big to hold beside another of its kind (see :func:`is_large`)."""
    def deco(fn):
        _BUILDERS[name] = Builder(fn, self_loading, large)
        return fn
    return deco


def is_large(architecture: dict) -> bool:
    """Whether the model an ``architecture`` spec describes is one that is held in memory one at
    a time (a vision-language detector on a 7B base: two of them do not fit a 15 GB GPU); its
    builder says so from its arguments."""
    builder = get(architecture.get("builder"))
    return bool(builder.large and builder.large(architecture.get("kwargs", {})))


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
