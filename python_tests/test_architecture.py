"""docs/ARCHITECTURE.md's import graph is the one the sources have (tools/import_graph.py), and
every package imports only packages below it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _tool():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "tools" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_documented_graph_is_the_sources_graph():
    tool = _tool()
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    section = text.split("## Import graph (package level, generated from the sources)", 1)[1]
    documented = section.split("```", 2)[1].strip("\n")
    assert documented == tool.render(tool.import_graph()), "regenerate it: python tools/import_graph.py"


def test_every_package_imports_only_packages_below_it():
    tool = _tool()
    order = tool.ORDER
    graph = tool.import_graph()
    assert {unit for unit in graph if not unit.startswith("_")} <= set(order), "place a new package in ORDER"
    # the private base modules import nothing of the package but the extension and each other
    assert all(target.startswith("_") for unit, targets in graph.items() if unit.startswith("_") for target in targets)
    upward = [(unit, target) for unit, targets in graph.items() if unit in order
              for target in targets if target in order and order.index(target) <= order.index(unit)]
    assert not upward, upward
