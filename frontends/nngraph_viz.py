"""Pictures of nngraph gModules at the module level: nngraph's ``graph.dot(g.fg)`` and
``g.bg``, and the debug mode's picture of the module a failing IR node came from.

``gModule.module_dot`` and ``gModule.debug_dot`` call these; ``graphrnn.viz.dot`` and
``graphrnn.viz.debug_forward`` reach them through those two methods, so the core's drawing
module knows nothing of nngraph's nodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from graphrnn.ir import Node as IRNode
from graphrnn.ir import site_of
from graphrnn.viz import COLORS, add_node, need_graphviz


def gmodule_dot(gm: Any, title: str = "", stage: str = "forward",
                mark: Sequence[Any] = ()) -> Any:
    """nngraph's ``g.fg`` / ``g.bg`` pictures of a gModule at the module level: one node per
    module application, labelled ``Node<k>``, the annotate name, ``module = nn.Linear(8 -> 64)``
    and the description, graphAttributes applied, the creation site as tooltip. ``stage=
    "backward"`` draws the gradient flow (every edge reversed), as nngraph's ``g.bg``. Nodes in
    ``mark`` are drawn in red (debug mode)."""
    if stage not in ("forward", "backward"):
        raise ValueError(f"stage must be 'forward' or 'backward', got {stage!r}")
    gv = need_graphviz()
    title = title or ("gModule" if stage == "forward" else "gModule (backward)")
    g = gv.Digraph(name=title)
    g.attr(rankdir="TB", fontname="Helvetica", labelloc="t", label=title)
    g.attr("node", fontname="Helvetica", fontsize="11")
    g.attr("edge", arrowsize="0.7", fontname="Helvetica", fontsize="9")
    marked = {id(n) for n in mark}
    input_index = {id(n): k for k, n in enumerate(gm.inputs)}
    # numbered 1.. in creation order, as nngraph numbers its nodes
    order = sorted(gm.nodes, key=lambda n: n.serial)
    ids = {id(n): f"node{k + 1}" for k, n in enumerate(order)}
    for n in order:
        ann = dict(getattr(n, "annotations", {}) or {})
        lines = [f"Node{ids[id(n)][4:]}"]
        if ann.get("name"):
            lines.append(str(ann["name"]))
        if id(n) in input_index:
            lines.append(f"input {input_index[id(n)] + 1}")
            attrs = {"shape": "invhouse", "style": "filled", "fillcolor": COLORS["input"]}
        else:
            lines.append(f"module = {n.module!r}")
            attrs = {"shape": "ellipse", "style": "filled", "fillcolor": COLORS["op"]}
        if getattr(n, "size", None):
            lines.append(f"size {n.size}")
        if ann.get("description"):
            lines.append(str(ann["description"]))
        attrs.update({str(k): str(v) for k, v in dict(ann.get("graphAttributes") or {}).items()})
        if id(n) in marked:
            attrs.update(fillcolor=COLORS["failed"], fontcolor="white", color="#b71c1c",
                         penwidth="3", style="filled")
            lines.append("(failed here)")
        site = getattr(n, "site", None)
        add_node(g, ids[id(n)], label="\n".join(lines),
                  tooltip=f"{site} (nngraph)" if site else "", **attrs)
        for j, parent in enumerate(n.parents):
            lab = str(j + 1) if len(n.parents) > 1 else ""
            if stage == "forward":
                g.edge(ids[id(parent)], ids[id(n)], label=lab)
            else:
                g.edge(ids[id(n)], ids[id(parent)], label=lab, color="#1565c0")
    for k, n in enumerate(gm.outputs):
        rid = f"output{k + 1}"
        add_node(g, rid, label=f"output {k + 1}", shape="box", style="filled,bold",
                  fillcolor=COLORS["output"])
        if stage == "forward":
            g.edge(ids[id(n)], rid)
        else:
            g.edge(rid, ids[id(n)], label="gradOutput", color="#1565c0")
    return g


def debug_dot(gm: Any, bad: IRNode, title: str) -> Any:
    """The module-level picture with the gModule nodes that made ``bad`` (matched by creation
    site) in red; None when no node of ``gm`` was created there."""
    s = site_of(bad)
    if s is None:
        return None
    hits = [n for n in gm.nodes if getattr(n, "site", None) is not None
            and (n.site.file, n.site.line) == (s.file, s.line)]
    return gmodule_dot(gm, title, mark=hits) if hits else None
