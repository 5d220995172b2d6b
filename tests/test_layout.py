"""The package's layout: every import of one of our modules, read from the source with ``ast``
(inside functions and ``TYPE_CHECKING`` blocks too), points down the layers below, and no module
imports itself through others (no cycle). docs/architecture.md draws the same layers."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# lowest first: a module may import its own layer and the ones before it, never a later one
LAYERS = [
    {"errors"},
    {"layers"},
    {"models"},
    {"summary", "plots"},
    {"system"},
    {"ranges", "recipes"},
    {"config"},
    {"data"},
    {"formats"},
    {"training"},
    {"inference"},
    {"analysis"},
    {"bench"},
    {"cli", "__main__"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / "alexnet").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Our modules that ``name`` imports (``from pkg import mod`` counts as ``pkg.mod``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "alexnet"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            if base.split(".")[0] != "alexnet":
                continue
            for a in node.names:
                out.add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base)
    return {m for m in out if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # the package's own __init__ has no layer


def test_every_module_has_a_layer():
    assert {_layer(m) for m in _graph()} - {None} <= set(RANK)


def test_imports_point_down_the_layers():
    wrong = []
    for module, targets in _graph().items():
        if _layer(module) is None:
            continue
        for target in targets:
            if _layer(target) is not None and RANK[_layer(target)] > RANK[_layer(module)]:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports of a higher layer: " + ", ".join(sorted(wrong))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_the_public_names_come_from_the_package():
    import alexnet
    from alexnet.config import TrainConfig
    from alexnet.inference.evaluate import evaluate_checkpoint
    from alexnet.inference.predict import Predictor
    from alexnet.summary import summarize
    from alexnet.training.loop import train

    assert (alexnet.TrainConfig, alexnet.train, alexnet.Predictor) == (TrainConfig, train, Predictor)
    assert (alexnet.evaluate_checkpoint, alexnet.summarize) == (evaluate_checkpoint, summarize)
    assert set(alexnet.__all__) >= {
        "build_model",
        "TrainConfig",
        "train",
        "Predictor",
        "evaluate_checkpoint",
        "summarize",
    }
