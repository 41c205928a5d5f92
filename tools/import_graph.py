"""The package-level import graph of cion_fast, read from the sources (docs/ARCHITECTURE.md,
"Import graph"): every ``import`` of the package, the lazy ones inside functions included.

A unit is a sub-package or a top-level module of ``cion_fast`` (``demo.py`` and ``_demo/`` are one
unit, ``demo``); the top-level private modules (``_checks``, ``_arrays``, ``_io``, ``_C``) appear only
as targets. Run ``python tools/import_graph.py`` and paste its output into the document;
``python_tests/test_architecture.py`` checks that the two agree.
"""

from __future__ import annotations

import ast
import collections
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "cion_fast"
# Top-down: a unit imports only units below it.
ORDER = ("cli", "demo", "finetune", "pretrain", "evaluate", "features", "training", "denoise", "data", "models",
         "integrations", "reference", "ops")


def _unit(name: str) -> str:
    name = name[:-3] if name.endswith(".py") else name
    return "demo" if name == "_demo" else name


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """{unit: the units and private modules it imports}."""
    graph: dict[str, set[str]] = collections.defaultdict(set)
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if parts == ("__init__.py",) or "__pycache__" in parts:
            continue
        source = _unit(parts[0])
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] == "cion_fast":
                segments = node.module.split(".")
                targets = [segments[1]] if len(segments) > 1 else [alias.name for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [alias.name.split(".")[1] for alias in node.names if alias.name.startswith("cion_fast.")]
            else:
                continue
            graph[source].update(_unit(t) for t in targets if _unit(t) != source)
    return graph


def render(graph: dict[str, set[str]]) -> str:
    """The graph as the document shows it: one line per unit of :data:`ORDER` that imports anything."""
    units = list(ORDER) + sorted(u for u in graph if u not in ORDER and not u.startswith("_"))
    width = max(len(u) for u in units)
    return "\n".join(f"{u:<{width}} -> {', '.join(sorted(graph[u]))}" for u in units if graph.get(u))


if __name__ == "__main__":
    print(render(import_graph()))
