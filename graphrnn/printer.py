"""Compact SSA text of a graph, in the spirit of JAX's ``pp_jaxpr``.

    cell lstm(x: f32[B,10]; h: f32[B,20], c: f32[B,20]) params(W: f32[10,80], ...) {
      %0 = matmul x, W                 : f32[B,80]
      ...
      out  %12
      next h <- %12, c <- %10
    }
"""

from __future__ import annotations

from typing import Sequence

from .ir import Cell, Node, annotations, short_type, site_of, toposort
from .ops import Ops


def _arg_text(n: Node) -> str:
    if n.op is Ops.MATMUL:
        ta, tb = n.arg
        return "".join(["ᵀa" if ta else "", "ᵀb" if tb else ""])
    if n.op is Ops.SLICE:
        return f"[{n.arg[0]}:{n.arg[1]}]"
    if n.op is Ops.REDUCE:
        return f"{n.arg[0]} axis={n.arg[1]}"
    if n.op is Ops.EXPAND:
        return "to " + ",".join(str(d) for d in n.arg)
    if n.op in (Ops.GET, Ops.SCATTER):
        return str(n.arg)
    if n.op is Ops.FUSED:
        return getattr(n.arg, "name", "kernel")
    return ""


def format_nodes(roots: Sequence[Node], names: dict[Node, str] | None = None,
                 mark: Node | None = None) -> tuple[list[str], dict[Node, str]]:
    """SSA lines for everything reachable from roots; leaves are named, the rest numbered."""
    names = dict(names or {})
    lines: list[str] = []
    k = 0
    for n in toposort(roots):
        if n in names:
            continue
        if n.op in (Ops.INPUT, Ops.STATE, Ops.PARAM):
            names[n] = str(n.arg)
            continue
        if n.op is Ops.CONST:
            names[n] = f"{n.arg:g}"
            continue
        names[n] = f"%{k}"
        k += 1
        args = " ".join(x for x in [_arg_text(n)] if x)
        rhs = f"{n.op.name.lower()}{' ' + args if args else ''} " + ", ".join(
            names[s] for s in n.src)
        label = annotations(n).get("name") if n in _annotated_set() else None
        comment = f"  # {label}" if label else ""
        text = f"  {names[n]} = {rhs}"
        text = f"{text:<44} : {short_type(n)}{comment}"
        if n is mark:
            s = site_of(n)
            text += f"   <-- here{' (' + str(s) + ')' if s else ''}"
        lines.append(text)
    return lines, names


def _annotated_set() -> object:
    from .ir import _annotations
    return _annotations


def format_cell(cell: Cell, mark: Node | None = None) -> str:
    def decl(ns: Sequence[Node]) -> str:
        return ", ".join(f"{n.arg}: {short_type(n)}"
                         f"{' frozen' if n.op is Ops.PARAM and n.arg in cell.frozen else ''}"
                         for n in ns)
    head = (f"cell {cell.name}({decl(cell.inputs)}; {decl(cell.states)}) "
            f"params({decl(cell.params)}) {{")
    lines, names = format_nodes(cell.roots, mark=mark)
    out = "  out  " + ", ".join(names[o] for o in cell.outputs)
    nxt = "  next " + ", ".join(f"{s.arg} <- {names[n]}"
                                for s, n in zip(cell.states, cell.next_states))
    return "\n".join([head, *lines, out, nxt, "}"])


def context(roots: Sequence[Node], bad: Node, radius: int = 3) -> str:
    """The SSA lines around a bad node, for error messages."""
    lines, _ = format_nodes(roots, mark=bad)
    idx = next((i for i, ln in enumerate(lines) if "<-- here" in ln), None)
    if idx is None:
        return ""
    return "\n".join(lines[max(0, idx - radius): idx + radius + 1])
