"""The package's shape: no import circle between its modules, at module level or inside functions."""
from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

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
