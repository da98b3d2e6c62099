"""Import layering: the core knows no frontend and no backend, and no modules import each other.

The core is every module of ``graphrnn/`` except ``graphrnn.tools`` (the command line and the
main job, which read equations files and nngraph cells and name backends), ``graphrnn.cli``
(the entry point's shim onto it) and the frontends' doors ``graphrnn.nn``/``.equations``/
``.trace`` (each is its frontend under a second name, so that ``import graphrnn.equations``
works). Frontends and backends import the core, the tools import all
three; ``graphrnn.nn``/``.equations``/``.trace`` and ``compile(backend=...)`` reach frontends and
backends by name at run time, which is what keeps the core free of them at import time.

Imports are read with ``ast``, those inside functions (lazy ones) included, since a lazy import
is still a dependency: it only moves the cycle from import time to call time.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("graphrnn", "codegen", "frontends")
# outside the core: it may import frontends and codegen
TOOLS = ("graphrnn.tools", "graphrnn.cli")
# the frontends' doors (``import graphrnn.equations``): each is its frontend under a second
# name, so it imports frontends and is not core; ``import graphrnn`` reaches them only lazily
DOORS = ("graphrnn.nn", "graphrnn.equations", "graphrnn.trace")


def _modules() -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is a package's __init__) for every module of the three packages."""
    out = {}
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(f.relative_to(ROOT).with_suffix("").parts)
            is_pkg = parts[-1] == "__init__"
            out[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    return out


MODULES = _modules()


def _group(mod: str) -> str:
    if mod in DOORS:
        return "doors"
    if any(mod == t or mod.startswith(t + ".") for t in TOOLS):
        return "graphrnn.tools"
    return mod.split(".")[0]


CORE = sorted(m for m in MODULES if _group(m) == "graphrnn")
# core modules that bridge to an optional library: imported below only where it is installed
OPTIONAL = {"graphrnn.torch": "torch", "graphrnn.jax": "jax"}


def _imported(mod: str, f: Path, is_pkg: bool) -> set[str]:
    """The modules of the three packages that ``mod`` imports anywhere in its file."""
    package = mod.split(".") if is_pkg else mod.split(".")[:-1]
    names: list[str] = []
    for node in ast.walk(ast.parse(f.read_text(), str(f))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            # ``from pkg import sub`` imports the submodule; ``from mod import name`` the module
            names += [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                      for a in node.names]
    out = set()
    for name in names:
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        # a module's own packages are imported before it anyway: not an edge
        if name and name != mod and not mod.startswith(name + "."):
            out.add(name)
    return out


def module_graph() -> nx.DiGraph:
    g = nx.DiGraph()
    for mod, (f, is_pkg) in MODULES.items():
        g.add_node(mod)
        g.add_edges_from((mod, dep) for dep in _imported(mod, f, is_pkg))
    return g


def _installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def test_the_core_list_is_what_it_should_be() -> None:
    assert {"graphrnn", "graphrnn.ir", "graphrnn.cells", "graphrnn.builder", "graphrnn.viz",
            "graphrnn.model", "graphrnn.train", "graphrnn.display"} <= set(CORE)
    assert not [m for m in CORE if m.startswith(("graphrnn.tools", "graphrnn.cli"))]
    assert not set(DOORS) & set(CORE) and set(DOORS) <= set(MODULES)
    assert "graphrnn.tools.cli" in MODULES and "graphrnn.tools.train_charlm" in MODULES


def test_every_core_module_imports_without_frontends_or_codegen() -> None:
    """Each core module in turn, in one fresh interpreter; the first one after which a module of
    ``frontends`` or ``codegen`` is loaded is named with what it loaded."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {[m for m in CORE if m not in OPTIONAL or _installed(OPTIONAL[m])]!r}:\n"
        "    importlib.import_module(name)\n"
        "    leaked = sorted(m for m in sys.modules\n"
        "                    if m.split('.')[0] in ('frontends', 'codegen'))\n"
        "    if leaked:\n"
        "        print(json.dumps([name, leaked]))\n"
        "        break\n"
        "else:\n"
        "    print(json.dumps(None))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    found = json.loads(r.stdout.splitlines()[-1])
    assert found is None, f"importing {found[0]} loads {found[1]}"


def test_the_core_imports_no_frontend_no_backend_and_no_tool_even_lazily() -> None:
    g = module_graph()
    bad = sorted((a, b) for a, b in g.edges if _group(a) == "graphrnn" != _group(b))
    assert bad == [], f"core modules import outside the core: {bad}"


def test_the_packages_import_each_other_in_one_direction() -> None:
    """tools -> frontends, codegen -> core; never back."""
    g = module_graph()
    groups = nx.DiGraph()
    groups.add_edges_from((_group(a), _group(b)) for a, b in g.edges if _group(a) != _group(b))
    assert nx.is_directed_acyclic_graph(groups), sorted(groups.edges)
    assert not list(groups.successors("graphrnn"))


def _cycles(g: nx.DiGraph) -> list[list[str]]:
    return sorted(sorted(c) for c in nx.simple_cycles(g))


def test_no_import_cycles_in_the_core_the_tools_and_the_frontends() -> None:
    g = module_graph()
    cycles = [c for c in _cycles(g) if not any(m.startswith("codegen.") for m in c)]
    assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_import_cycles_in_codegen() -> None:
    cycles = _cycles(module_graph())
    assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_cycle_finder_sees_lazy_and_relative_imports() -> None:
    """The graph has the edges this file's reading must find: a relative import at the top, a
    lazy one inside a function, and ``from . import module``."""
    g = module_graph()
    assert g.has_edge("graphrnn.cells", "graphrnn.builder")          # from .builder import
    assert g.has_edge("graphrnn.viz", "graphrnn.pipeline")           # lazy, in stage_dot
    assert g.has_edge("graphrnn.display", "graphrnn.viz")            # from . import viz, lazy
    assert g.has_edge("frontends.trace", "graphrnn.builder")         # absolute
    assert not g.has_edge("graphrnn.ir", "graphrnn")                 # own package: no edge


def test_cells_and_programs_show_themselves() -> None:
    """``str``/``_repr_svg_`` come from graphrnn/display.py, not from ir.py or program.py."""
    from graphrnn.cells import lstm
    from graphrnn.explain import explain_program
    from graphrnn.pipeline import build_program
    from graphrnn.printer import format_cell
    cell = lstm(2, 3)
    prog = build_program(cell)
    assert str(cell) == format_cell(cell) and str(prog) == explain_program(prog)
    assert callable(type(cell)._repr_svg_) and callable(type(prog)._repr_svg_)
