"""The package's shape: no import circle between its modules, at module level or inside functions;
the registry's promise; and every registered model builder surviving its model folder."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import networkx as nx
import pytest
import torch

from aidetect_utils import registry

PKG = Path(__file__).resolve().parents[1] / "aidetect_utils"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> nx.DiGraph:
    """Every import of one package module by another, wherever it is written (lazy imports
    inside functions included); ``registry``'s providers are named as strings, not imported."""
    g = nx.DiGraph()
    modules = {_module_name(p): p for p in PKG.rglob("*.py")}
    for name, path in modules.items():
        g.add_node(name)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                candidates = [target] + [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            else:
                continue
            for c in candidates:
                if c in modules and c != name and c != "aidetect_utils":
                    g.add_edge(name, c)
    return g


def test_no_import_circle():
    g = import_graph()
    assert g.number_of_edges() > 40                      # the walk really saw the package's imports
    assert ("aidetect_utils.artifacts", "aidetect_utils.registry") in g.edges
    assert list(nx.simple_cycles(g)) == []


def test_artifacts_never_import_a_model_family_module():
    g = import_graph()
    reach = nx.descendants(g, "aidetect_utils.artifacts")
    assert not any(m.startswith("aidetect_utils.vlm") for m in reach)


# ------------------------------------------------------------------ models declare themselves
for _provider in registry.PROVIDERS:      # every builder registered, as the first folder load does
    importlib.import_module(_provider)


def test_artifacts_never_import_a_model_module():
    """registry's promise: ``artifacts`` reaches the modules that register builders only through
    the registry, by name, so a model module may use ``artifacts`` freely."""
    reach = nx.descendants(import_graph(), "aidetect_utils.artifacts")
    assert [m for m in registry.PROVIDERS if m in reach] == []


def test_domain_explain_and_app_ask_the_model_instead_of_knowing_its_class():
    g = import_graph()
    for asker in ("aidetect_utils.domain", "aidetect_utils.explain", "aidetect_utils.app"):
        assert [m for m in registry.PROVIDERS if g.has_edge(asker, m)] == [], asker


def _tiny_vit_config() -> dict:
    return {"image_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 64}


def _efficientnet_detector():
    from aidetect_utils.models import EfficientNetDetector
    kwargs = {"backbone": "tf_efficientnet_lite0", "hidden": 16, "dropout": 0.5}
    return EfficientNetDetector(**kwargs), {"builder": "efficientnet_detector", "kwargs": kwargs}


def _vit_classifier():
    from aidetect_utils.models import ViTClassifier
    m = ViTClassifier(_tiny_vit_config())
    return m, m.spec()


def _feature_classifier():
    from aidetect_utils.models import FeatureClassifier
    m = FeatureClassifier({"kind": "vit", "config": _tiny_vit_config()}, {"kind": "mlp", "hidden": [16, 8], "dropout": 0.5})
    return m, m.spec()


def _hf_image_classification():
    from transformers import ViTConfig, ViTForImageClassification
    cfg = ViTConfig(**_tiny_vit_config(), num_labels=2, id2label={0: "REAL", 1: "FAKE"}, label2id={"REAL": 0, "FAKE": 1})
    return ViTForImageClassification(cfg), {"builder": "hf_image_classification"}


def _qwen_vl_lora():
    from aidetect_utils import vlm
    model, processor, _ = vlm.build_lora_model(vlm.TINY, lora_r=8, seed=0)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():                  # LoRA starts as a no-op (B = 0): give the adapter something to carry
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    m = vlm.VLMDetector(model, processor, vlm.TINY, "transformers")
    return m, m.spec()


#: builder -> (a small instance and its architecture spec, its declarations: feature_layer,
#: has a Grad-CAM target, supports_mc_dropout (None: declares nothing))
SMALL_MODELS = {
    "efficientnet_detector": (_efficientnet_detector, ("head.1", True, False)),
    "vit_classifier": (_vit_classifier, ("vit.vit.layernorm", True, False)),
    "feature_classifier": (_feature_classifier, ("head.5", True, True)),
    "hf_image_classification": (_hf_image_classification, (None, False, None)),
    "qwen_vl_lora": (_qwen_vl_lora, (None, False, False)),
}


@pytest.mark.parametrize("builder", sorted(registry._BUILDERS))
def test_every_registered_builder_survives_its_model_folder(builder, tmp_path):
    """Saved with ``artifacts.save_model_folder`` and loaded with ``load_model_folder``, a small
    model of every registered builder gives the same logits on the same input, and says the same
    about itself (feature layer, Grad-CAM, MC dropout). A builder added without a small model
    here fails: add one to :data:`SMALL_MODELS`."""
    from aidetect_utils import artifacts, explain, transforms
    from aidetect_utils.engine import logits_of
    assert builder in SMALL_MODELS, f"no small {builder!r} model in SMALL_MODELS"
    make, (feature_layer, gradcam, mc) = SMALL_MODELS[builder]
    torch.manual_seed(0)
    model, architecture = make()
    model.eval()
    prep = transforms.preprocessing(32, mean=(0.0,) * 3, std=(1.0,) * 3)
    folder = artifacts.save_model_folder(tmp_path / builder, model, method="roundtrip", architecture=architecture,
                                         preprocessing=prep)
    loaded, spec = artifacts.load_model_folder(folder)
    assert spec["architecture"]["builder"] == builder and type(loaded) is type(model)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before, after = logits_of(model(x)), logits_of(loaded(x))
    assert before.shape[0] == 2
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    for m in (model, loaded):
        assert getattr(m, "feature_layer", None) == feature_layer
        assert explain.supports_explanations(m) is gradcam
        assert getattr(m, "supports_mc_dropout", None) is mc
