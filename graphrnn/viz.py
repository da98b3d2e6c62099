"""Pictures of graphs: a cell, its backward graph and the optimized plan, as DOT, SVG or PNG.

    from graphrnn import viz
    viz.render(viz.cell_dot(cell), "lstm.svg")          # the forward step
    viz.render(viz.backward_dot(cell), "lstm_bw.png")   # its backward step
    viz.render(viz.plan_dot(program), "plan.svg")       # the three phases and the kernels
    viz.dot(gmodule, "LSTM", "lstm")                     # nngraph's graph.dot(g.fg, ...)
    viz.debug_forward(cell, params, xs, svg_path="failed.svg")   # nngraph's debug mode

The plan view draws a ``graphrnn.program.Program``: per sweep (forward, backward) the phases
before, in and after the time loop as clusters, each fused kernel as a colored cluster holding
the elementwise ops of its scalar program, GEMMs as bold boxes with their shapes (T·B rows
outside the loop, B inside), data flowing along the buffers between steps, and reads of what the
previous iteration wrote as recurrent edges. ``cell_svg``/``plan_svg`` are the Jupyter views.

Nodes are labelled the way nngraph users expect: the annotate name or the module/op name, the
shape, the description, graphAttributes applied as Graphviz attributes, and the creation site as
tooltip. Inputs, states and parameters have their own shapes and colors; a recurrent edge
(next state -> state) is drawn dashed, in red, and does not constrain the layout.

DOT text is plain text: built with the ``graphviz`` Python package when it is installed, else with
``PlainDigraph`` (the subset of ``graphviz.Digraph`` this module uses); neither needs a binary.
SVG and PNG need the ``dot`` program (called through the package, or directly without it).
Without ``dot``, ``render`` still writes the DOT text and raises ``DotNotFoundError`` naming the
package to install. ``debug_forward`` is nngraph's debug mode: when a forward fails it
writes an SVG with the failing node in red and says where that node was created.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BackendError, GraphRNNError
from .ir import Cell, Node, annotations, short_type, site_of, toposort
from .ops import GroupOp, Ops
from .safefile import atomic_write, umask_mode

try:  # the graphviz package is an optional extra ("viz"); DOT text is produced without it
    import graphviz
except ImportError:  # pragma: no cover - exercised only where the package is absent
    graphviz = None  # type: ignore[assignment]

INSTALL_HINT = ("install Graphviz's `dot` program (Debian/Ubuntu: apt-get install graphviz; "
                "macOS: brew install graphviz; conda: conda install graphviz)")

# fill colors by role; parameters, inputs and states must be told apart at a glance
COLORS = {
    "input": "#c8e6c9",
    "state": "#bbdefb",
    "param": "#fff3b0",
    "const": "#eeeeee",
    "matmul": "#ffcc80",
    "reduce": "#d1c4e9",
    "layout": "#f5f5f5",
    "op": "#ffffff",
    "output": "#e1bee7",
    "failed": "#e53935",
}
RECURRENT = {"style": "dashed", "color": "#d32f2f", "fontcolor": "#d32f2f", "penwidth": "2",
             "constraint": "false"}
# one color per fused kernel, cycled
KERNEL_COLORS = ("#e3f2fd", "#fce4ec", "#e8f5e9", "#fff8e1", "#f3e5f5", "#e0f7fa", "#fbe9e7",
                 "#f1f8e9")


class DotNotFoundError(GraphRNNError, RuntimeError):
    """The Graphviz ``dot`` program is missing, so only DOT text could be written."""


_ID = re.compile(r"^[A-Za-z_\x80-\uffff][A-Za-z_0-9\x80-\uffff]*$"
                 r"|^-?(\.[0-9]+|[0-9]+(\.[0-9]*)?)$")
_KEYWORDS = {"node", "edge", "graph", "digraph", "subgraph", "strict"}


def _quote(text: str) -> str:
    """A DOT ID: bare when it can be, else double-quoted. Backslashes are kept (labels carry
    DOT's own escapes such as ``\\n``, as with the graphviz package); quotes are escaped."""
    if _ID.match(text) and text.lower() not in _KEYWORDS:
        return text
    return '"' + re.sub(r'(?<!\\)"', '\\"', text) + '"'


def _attr_list(attrs: dict[str, Any]) -> str:
    items = [f"{k}={_quote(str(v))}" for k, v in attrs.items() if v is not None]
    return f" [{' '.join(items)}]" if items else ""


class PlainDigraph:
    """The part of ``graphviz.Digraph`` this module and nngraph_viz use, written as plain DOT
    text, so that DOT output needs no graphviz package (it is only needed, with ``dot``, to
    render pictures)."""

    def __init__(self, name: str = "", _subgraph: bool = False) -> None:
        self.name = name
        self._subgraph = _subgraph
        self.body: list[str] = []

    def attr(self, kw: str | None = None, **attrs: Any) -> None:
        if kw is None:
            self.body += [f"\t{k}={_quote(str(v))}" for k, v in attrs.items() if v is not None]
        else:
            self.body.append(f"\t{kw}{_attr_list(attrs)}")

    def node(self, name: str, label: str | None = None, **attrs: Any) -> None:
        self.body.append(f"\t{_quote(name)}{_attr_list({'label': label, **attrs})}")

    def edge(self, tail: str, head: str, label: str | None = None, **attrs: Any) -> None:
        attrs = _attr_list({"label": label, **attrs})
        self.body.append(f"\t{_quote(tail)} -> {_quote(head)}{attrs}")

    @contextmanager
    def subgraph(self, name: str = "") -> Iterator[PlainDigraph]:
        sub = PlainDigraph(name, _subgraph=True)
        yield sub
        self.body += ["\t" + line for line in sub.source.splitlines()]

    @property
    def source(self) -> str:
        head = "subgraph" if self._subgraph else "digraph"
        head += f" {_quote(self.name)}" if self.name else ""
        return "\n".join([head + " {", *self.body, "}"]) + "\n"

    def __str__(self) -> str:
        return self.source


class _Plain:
    """``need_graphviz()`` without the package: the plain-text Digraph, no renderer."""

    Digraph = PlainDigraph


def need_graphviz() -> Any:
    """What builds DOT graphs: the graphviz package, or the plain-text fallback without it."""
    return graphviz if graphviz is not None else _Plain


# ---- labels ----

def _op_name(n: Node) -> str:
    ann = annotations(n) if _has_annotations(n) else {}
    if "module" in ann:
        return str(ann["module"])
    return n.op.name.lower()


def _has_annotations(n: Node) -> bool:
    from .ir import _annotations
    return n in _annotations


def _arg_text(n: Node) -> str:
    if n.op is Ops.MATMUL:
        ta, tb = n.arg
        return ("Aᵀ" if ta else "A") + " @ " + ("Bᵀ" if tb else "B") if (ta or tb) else ""
    if n.op is Ops.SLICE:
        return f"[{n.arg[0]}:{n.arg[1]}]"
    if n.op is Ops.REDUCE:
        return f"{n.arg[0]} over axis {n.arg[1]}"
    if n.op is Ops.GET:
        return f"#{n.arg}"
    return ""


def _role(n: Node) -> str:
    if n.op is Ops.INPUT:
        return "input"
    if n.op is Ops.STATE:
        return "state"
    if n.op is Ops.PARAM:
        return "param"
    if n.op is Ops.CONST:
        return "const"
    if n.op is Ops.MATMUL:
        return "matmul"
    if n.op is Ops.REDUCE:
        return "reduce"
    if n.op in GroupOp.Layout:
        return "layout"
    return "op"


def tooltip(n: Node) -> str:
    """Where the node was created (file:line and frontend), for hovering in an SVG viewer."""
    s = site_of(n)
    if s is None:
        return f"{n.op.name.lower()} {short_type(n)}"
    return f"{s.file}:{s.line} ({s.frontend})"


def node_label(n: Node) -> str:
    """Label lines: name (annotate or leaf name), op/module, extra arg, shape, description."""
    ann = dict(annotations(n)) if _has_annotations(n) else {}
    lines: list[str] = []
    role = _role(n)
    if n.op is Ops.CONST:
        return f"{n.arg:g}"
    if role in ("input", "state", "param"):
        lines += [str(n.arg), role]
    else:
        if ann.get("name"):
            lines.append(str(ann["name"]))
        lines.append(_op_name(n) + (f" {_arg_text(n)}" if _arg_text(n) else ""))
    lines.append(short_type(n))
    if ann.get("description"):
        lines.append(str(ann["description"]))
    return "\n".join(lines)


def node_attrs(n: Node) -> dict[str, str]:
    role = _role(n)
    attrs = {"label": node_label(n), "tooltip": tooltip(n), "style": "filled",
             "fillcolor": COLORS[role]}
    if role == "input":
        attrs["shape"] = "invhouse"
    elif role == "state":
        attrs["shape"] = "box"
        attrs["style"] = "filled,rounded"
    elif role == "param":
        attrs["shape"] = "note"
    elif role == "const":
        attrs.update(shape="plaintext", style="", fontsize="10")
    elif role == "matmul":
        attrs["shape"] = "box"
        attrs["penwidth"] = "2"
    else:
        attrs["shape"] = "ellipse"
    if _has_annotations(n):
        ga = annotations(n).get("graphAttributes") or {}
        for k, v in dict(ga).items():
            # nngraph passes Graphviz attributes through (color, style, fillcolor, ...)
            attrs[str(k)] = str(v)
    return attrs


# ---- graphs of nodes ----

def add_node(g: Any, nid: str, **attrs: str) -> None:
    """``g.node`` with line breaks written as DOT's centered ``\\n`` escape."""
    for k in ("label", "tooltip"):
        if k in attrs:
            attrs[k] = attrs[k].replace("\\", "\\\\").replace("\n", "\\n")
    g.node(nid, **attrs)


def graph_dot(roots: Sequence[Node], results: Sequence[tuple[str, Node]] = (),
              recurrent: Sequence[tuple[Node, Node, str]] = (), title: str = "",
              mark: Node | None = None) -> Any:
    """A ``graphviz.Digraph`` of everything reachable from roots. ``results`` adds an output box
    per (label, node); ``recurrent`` draws (from, to, label) edges the recurrent way; ``mark``
    is drawn in red (a failing node)."""
    gv = need_graphviz()
    g = gv.Digraph(name=title or "graph")
    g.attr(rankdir="TB", fontname="Helvetica", labelloc="t", label=title, tooltip=title)
    g.attr("node", fontname="Helvetica", fontsize="11")
    g.attr("edge", arrowsize="0.7", fontname="Helvetica", fontsize="9")
    ids: dict[Node, str] = {}
    for i, n in enumerate(toposort(roots)):
        ids[n] = f"n{i}"
        attrs = node_attrs(n)
        if n is mark:
            attrs.update(fillcolor=COLORS["failed"], fontcolor="white", color="#b71c1c",
                         penwidth="3", style="filled")
            attrs["label"] += "\n(failed here)"
        add_node(g, ids[n], **attrs)
        for j, s in enumerate(n.src):
            # operand index on edges into non-commutative ops: nngraph shows argument order
            lab = str(j + 1) if len(n.src) > 1 and n.op not in GroupOp.Commutative else ""
            g.edge(ids[s], ids[n], label=lab, fontsize="9")
    for k, (label, n) in enumerate(results):
        rid = f"r{k}"
        add_node(g, rid, label=label, shape="box", style="filled,bold",
                  fillcolor=COLORS["output"], tooltip=label)
        g.edge(ids[n], rid)
    for src, dst, label in recurrent:
        if src in ids and dst in ids:
            g.edge(ids[src], ids[dst], label=label, **RECURRENT)
    return g


def cell_dot(cell: Cell, title: str | None = None, mark: Node | None = None) -> Any:
    """The forward step of a cell: outputs as boxes, next_state -> state edges recurrent."""
    from .autodiff import output_name
    results = [(f"output {output_name(cell, i)}\n{short_type(o)}", o)
               for i, o in enumerate(cell.outputs)]
    results += [(f"next {s.arg}\n{short_type(ns)}", ns)
                for s, ns in zip(cell.states, cell.next_states, strict=True)]
    # the recurrent edge runs from the value to the state it becomes at t+1
    recurrent = [(ns, s, f"{s.arg} at t+1")
                 for s, ns in zip(cell.states, cell.next_states, strict=True)]
    roots = list(cell.roots) + [s for s in cell.states]
    return graph_dot(roots, results, recurrent, title or f"cell {cell.name}", mark)


def backward_dot(cell_or_bw: Any, title: str | None = None, mark: Node | None = None) -> Any:
    """The backward step: cotangents of states (carried to t-1), of inputs and of params."""
    from .autodiff import BackwardCell, backward_cell
    bw = cell_or_bw if isinstance(cell_or_bw, BackwardCell) else backward_cell(cell_or_bw)
    cell = bw.cell
    results = [(f"d {s.arg} (to t-1)\n{short_type(d)}", d)
               for s, d in zip(cell.states, bw.d_states, strict=True)]
    results += [(f"d {x.arg}\n{short_type(d)}", d)
                for x, d in zip(cell.inputs, bw.d_inputs, strict=True) if x.dtype != "int64"]
    results += [(f"d {p.arg}\n{short_type(d)}", d)
                for p, d in zip(cell.params, bw.d_params, strict=True)]
    recurrent = [(d, dn, f"{dn.arg} at t-1") for d, dn in zip(bw.d_states, bw.d_next, strict=True)]
    roots = list(bw.roots) + list(bw.d_next)
    return graph_dot(roots, results, recurrent, title or f"backward of cell {cell.name}", mark)


# ---- rendering ----

def _write_picture(path: Path, data: bytes) -> None:
    """Atomically, so a reader never sees half a picture, with the usual umask permissions."""
    atomic_write(path, data, fsync=False, mode=umask_mode())


def dot_source(g: Any) -> str:
    return g if isinstance(g, str) else str(g.source)


def _dot_missing(fmt: str) -> DotNotFoundError:
    return DotNotFoundError(f"cannot render {fmt.upper()}: the Graphviz `dot` program was not "
                            f"found on PATH; {INSTALL_HINT}")


def pipe(g: Any, fmt: str) -> bytes:
    """Render DOT to bytes in ``fmt`` (svg, png, pdf); DotNotFoundError without ``dot``. The
    graphviz package runs ``dot`` when installed; without it ``dot`` is run here."""
    if graphviz is None:
        exe = shutil.which("dot")
        if exe is None:
            raise _dot_missing(fmt)
        r = subprocess.run([exe, f"-T{fmt}"], input=dot_source(g).encode(), capture_output=True,
                           timeout=120)
        if r.returncode != 0:
            raise subprocess.CalledProcessError(r.returncode, [exe, f"-T{fmt}"], r.stdout,
                                                r.stderr)
        return r.stdout
    src = graphviz.Source(dot_source(g))
    try:
        return bytes(src.pipe(format=fmt))
    except graphviz.ExecutableNotFound as e:
        raise _dot_missing(fmt) from e


FORMATS = ("dot", "gv", "svg", "png", "pdf")


def render(g: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``g`` (a Digraph or DOT text) to ``path``; the suffix picks the format (.dot, .gv,
    .svg, .png, .pdf). Without the ``dot`` program the DOT text goes to ``path`` with a .dot
    suffix and DotNotFoundError says so. Writes are atomic."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(f"cannot write {path}: unknown picture format {path.suffix!r}; use one "
                         f"of {', '.join('.' + f for f in FORMATS)}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: directory {path.parent} does not exist")
    text = dot_source(g).encode()
    if fmt in ("dot", "gv"):
        _write_picture(path, text)
        return path
    try:
        data = pipe(g, fmt)
    except DotNotFoundError as e:
        dot_path = path.with_suffix(".dot")
        _write_picture(dot_path, text)
        raise DotNotFoundError(f"cannot write {path}: the Graphviz `dot` program was not found "
                               f"on PATH; {INSTALL_HINT}. The DOT text was written to "
                               f"{dot_path}") from e
    _write_picture(path, data)
    return path


def svg(g: Any) -> str | None:
    """SVG text, or None when it cannot be rendered (no ``dot`` program)."""
    try:
        return pipe(g, "svg").decode()
    except (DotNotFoundError, *gv_errors()):
        return None


def gv_errors() -> tuple[type[BaseException], ...]:
    if graphviz is None:
        return (subprocess.CalledProcessError, subprocess.TimeoutExpired)
    return (graphviz.CalledProcessError, graphviz.ExecutableNotFound)


def cell_svg(cell: Cell) -> str | None:
    """What Jupyter shows for a Cell (``Cell._repr_svg_``); None if it cannot be rendered."""
    try:
        return svg(cell_dot(cell))
    except Exception:  # a notebook repr must never raise
        return None


def plan_svg(program: Any) -> str | None:
    """What Jupyter shows for a Program; None if it cannot be rendered."""
    try:
        return svg(plan_dot(program))
    except Exception:
        return None


# ---- objects that draw themselves (a frontend's graphs: nngraph's gModule) ----

def draws_itself(obj: Any) -> bool:
    """Whether obj draws its own picture (``obj.module_dot(title, stage, mark)``, as nngraph's
    gModule does at the module level): viz knows no frontend, only this method."""
    return callable(getattr(obj, "module_dot", None))


def _as_cell(obj: Any) -> Cell:
    if isinstance(obj, Cell):
        return obj
    to_cell = getattr(obj, "to_cell", None)
    if to_cell is not None:
        return to_cell()  # type: ignore[no-any-return]
    raise TypeError(f"expected a Cell or an nngraph gModule, got {type(obj).__name__}")


def dot(obj: Any, title: str = "", filename: str | os.PathLike[str] | None = None,
        stage: str = "forward") -> Any:
    """nngraph's ``graph.dot(g.fg, title, filename)``: the forward (or ``stage="backward"``)
    graph of a gModule (module level, as nngraph draws it), a Cell or a BackwardCell (IR level).
    With ``filename`` writes ``filename.dot`` and, when the ``dot`` program exists,
    ``filename.svg`` (skipped with a warning otherwise). Returns the Digraph."""
    from .autodiff import BackwardCell
    if stage not in ("forward", "backward"):
        raise ValueError(f"stage must be 'forward' or 'backward', got {stage!r}")
    if isinstance(obj, BackwardCell):
        g = backward_dot(obj, title or None)
    elif draws_itself(obj):
        g = obj.module_dot(title, stage)
    else:
        cell = _as_cell(obj)
        g = cell_dot(cell, title or None) if stage == "forward" else \
            backward_dot(cell, title or None)
    if filename is not None:
        base = Path(filename)
        render(g, base.with_name(base.name + ".dot"))
        try:
            render(g, base.with_name(base.name + ".svg"))
        except DotNotFoundError as e:
            import warnings
            warnings.warn(str(e), stacklevel=2)
    return g


# ---- debug mode: the failing node in red ----

class _Recorder:
    def __init__(self) -> None:
        self.done: set[Node] = set()
        self.bad: Node | None = None

    def __call__(self, n: Node, v: Any) -> None:
        self.done.add(n)


def _failing_node(roots: Sequence[Node], env: dict[Node, Any], done: set[Node],
                  batch: int) -> Node | None:
    """The node evaluate() stopped at: it walks toposort(roots) in order, so the first node that
    is neither evaluated nor a well-shaped given leaf is where it failed."""
    from .interp import _dims
    for n in toposort(roots):
        if n in env:
            if tuple(np.shape(env[n])) != _dims(n.shape, batch):
                return n
            continue
        if n not in done:
            return n
    return None


def debug_forward(cell: Any, params: dict[str, np.ndarray], xs: Any, h0: Any = None,
                  svg_path: str | os.PathLike[str] = "graphrnn_debug.svg",
                  check_finite: bool = True,
                  gmodule: Any = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """nngraph's debug mode. Run the forward step by step on the reference interpreter; when it
    fails (an exception, or with ``check_finite`` a NaN/Inf value) write the graph with the
    failing node in red to ``svg_path`` (``.dot`` beside it without the ``dot`` program) and
    raise an error naming the node, the step and where the node was created. ``cell`` is a Cell
    or a gModule without states; pass ``gmodule=`` with a Cell made by ``gmodule.to_cell(...)``
    to get the module-level picture. Returns (outputs, final states) like forward."""
    from .interp import evaluate
    if draws_itself(cell):
        gmodule = cell
    cell = _as_cell(cell)
    cc_inputs = _coerce_inputs(cell, xs)
    T, batch = cc_inputs[0].shape[:2]
    hs = ([np.zeros((batch, int(s.shape[1])), cell.dtype) for s in cell.states] if h0 is None
          else [np.asarray(h) for h in (h0 if isinstance(h0, (list, tuple)) else [h0])])
    penv = {p: np.asarray(params[p.arg]) if p.arg in params else None for p in cell.params}
    ys: list[list[np.ndarray]] = [[] for _ in cell.outputs]
    for t in range(T):
        env = {k: v for k, v in penv.items() if v is not None}
        env.update(zip(cell.inputs, [x[t] for x in cc_inputs], strict=True))
        env.update(zip(cell.states, hs, strict=True))
        rec = _Recorder()
        hook: Callable[[Node, Any], None] = rec
        if check_finite:
            def hook(n: Node, v: Any, rec: _Recorder = rec) -> None:
                rec(n, v)
                arr = np.asarray(v)
                if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                    rec.bad = n
                    raise FloatingPointError(f"non-finite value (NaN or Inf) in {short_type(n)}")
        try:
            res = evaluate(cell.roots, env, batch=batch, trace=hook)
        except Exception as e:
            bad = rec.bad or _failing_node(cell.roots, env, rec.done, batch)
            raise _debug_error(cell, bad, t, e, svg_path, gmodule) from e
        for i in range(len(cell.outputs)):
            ys[i].append(res[i])
        hs = res[len(cell.outputs):]
    return [np.stack(y) for y in ys], hs


def _coerce_inputs(cell: Cell, xs: Any) -> list[np.ndarray]:
    if isinstance(xs, np.ndarray):
        xs = [xs]
    out = [np.asarray(x) for x in xs]
    if len(out) != len(cell.inputs) or any(x.ndim != 3 for x in out):
        raise ValueError(f"cell {cell.name} takes {len(cell.inputs)} inputs of shape (T, B, n), "
                         f"got {[x.shape for x in out]}")
    return out


def _debug_picture(cell: Cell, bad: Node | None, gmodule: Any) -> Any:
    """The gModule's own picture of where the failing IR node came from
    (``gmodule.debug_dot(bad, title)``, None when it has no node there), else the cell's IR
    graph with the node marked."""
    if gmodule is not None and bad is not None:
        g = gmodule.debug_dot(bad, f"gModule: forward failed in cell {cell.name}")
        if g is not None:
            return g
    return cell_dot(cell, mark=bad)


def _debug_error(cell: Cell, bad: Node | None, t: int, e: BaseException,
                 svg_path: str | os.PathLike[str], gmodule: Any = None) -> BaseException:
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    path = Path(svg_path)
    try:
        written = str(render(_debug_picture(cell, bad, gmodule), path))
    except DotNotFoundError:
        written = str(path.with_suffix(".dot"))
    except OSError as oe:
        written = f"(picture not written: {oe})"
    if bad is None:
        where_txt = "before any node ran"
    else:
        s = site_of(bad)
        name = bad.name or bad.op.name.lower()
        where_txt = f"node {name} {short_type(bad)}" + (f" created at {s}" if s else "")
    msg = (f"forward of cell {cell.name} failed at step t={t} in {where_txt}: {first}; the "
           f"graph with the failing node in red is in {written}")
    cls = type(e) if isinstance(e, GraphRNNError) and not hasattr(e, "msg") else BackendError
    try:
        err = cls(msg)
    except TypeError:
        err = BackendError(msg)
    err.node = bad  # type: ignore[attr-defined]
    return err


# ---- the optimized plan ----

PHASE_TITLES = {"pre": "before the loop (all T steps at once)",
                "step": "in the loop (one step t)",
                "post": "after the loop (all T steps at once)"}


class _PlanDrawer:
    """Draws one Program. Data flows between steps through buffers: a read is drawn as an edge
    from the step that last wrote an overlapping part of the same buffer; reads with no writer
    come from a leaf (a parameter, an input, a state, a value saved by the forward). In the loop
    a read of what a later step writes for the next iteration is a recurrent edge."""

    def __init__(self, program: Any, g: Any) -> None:
        self.p = program
        self.g = g
        self.bufs = program.buffer_map
        self.leaves: dict[tuple[str, str], str] = {}
        self.n = 0
        self.kernel_count = 0
        self.forward_written: set[str] = set()
        self.recurrent_drawn: set[tuple[str, str]] = set()
        pieces: dict[str, list[str]] = {}
        for pc in program.param_pieces:
            pieces.setdefault(pc.ref.buf, []).append(pc.name)
        self.param_names = {b: list(dict.fromkeys(ns)) for b, ns in pieces.items()}

    def new_id(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    # -- shapes --
    def shape(self, r: Any, in_loop: bool) -> tuple[str, int]:
        b = self.bufs[r.buf]
        c0, c1 = r.cols if r.cols is not None else (0, b.cols)
        if b.fixed:
            r0, r1 = r.rows if r.rows is not None else (0, b.rows)
            return str(r1 - r0), c1 - c0
        return ("B" if in_loop or b.kind != "seq" else "T·B"), c1 - c0

    def shape_text(self, r: Any, in_loop: bool, trans: bool = False) -> str:
        rows, cols = self.shape(r, in_loop)
        return f"({rows}×{cols})" + ("ᵀ" if trans else "")

    # -- leaves --
    def leaf(self, sweep: str, r: Any) -> str:
        b = self.bufs[r.buf]
        key = (sweep, r.buf)
        if key in self.leaves:
            return self.leaves[key]
        nid = self.new_id("leaf")
        p = self.p
        state_names = {buf: n for n, buf in p.states}
        input_names = {buf: n for n, buf in p.inputs}
        d_output_names = {buf: n for n, buf in p.d_outputs}
        carry_names = {buf: f"d_{n}" for n, buf in p.d_final}
        size = f"{b.cols} cols"
        if b.kind == "param":
            names = self.param_names.get(b.name, [b.name])
            label = f"{' | '.join(names)}\nparam ({b.rows}×{b.cols})"
            attrs = {"shape": "note", "fillcolor": COLORS["param"]}
        elif b.name in state_names and sweep == "backward":
            label = f"{state_names[b.name]}\nstates saved by forward ((T+1)×B×{b.cols})"
            attrs = {"shape": "cylinder", "fillcolor": COLORS["state"]}
        elif b.name in state_names:
            label = f"{state_names[b.name]}\nstate (B×{b.cols})"
            attrs = {"shape": "box", "style": "filled,rounded", "fillcolor": COLORS["state"]}
        elif b.name in carry_names:
            label = f"{carry_names[b.name]}\ncarried (B×{b.cols})"
            attrs = {"shape": "box", "style": "filled,rounded", "fillcolor": COLORS["state"]}
        elif b.name in d_output_names:
            label = f"d {d_output_names[b.name]}\ngradient of output (T×B×{b.cols})"
            attrs = {"shape": "invhouse", "fillcolor": COLORS["input"]}
        elif b.name in input_names:
            label = f"{input_names[b.name]}\ninput (T×B×{b.cols})"
            attrs = {"shape": "invhouse", "fillcolor": COLORS["input"]}
        elif sweep == "backward" and b.name in self.forward_written:
            label = f"{b.name}\nsaved by forward ({size})"
            attrs = {"shape": "cylinder", "fillcolor": COLORS["layout"]}
        else:
            label = f"{b.name}\n{b.kind} ({size})"
            attrs = {"shape": "box", "fillcolor": COLORS["layout"]}
        attrs.setdefault("style", "filled")
        add_node(self.g, nid, label=label, tooltip=f"buffer {b.name}: {b.kind}, {b.dtype}",
                  **attrs)
        self.leaves[key] = nid
        return nid

    # -- one sweep --
    def sweep(self, name: str, sw: Any) -> dict[str, list[tuple[Any, str]]]:
        """Draw a sweep; returns the writers by buffer, in order (for the bindings)."""
        from .program import flat_steps
        d = -1 if sw.reverse else 1
        writers: dict[str, list[tuple[Any, str]]] = {}   # buffer -> [(ref, node id)]
        order = " (t = T-1 down to 0)" if sw.reverse else " (t = 0 to T-1)"
        with self.g.subgraph(name=f"cluster_{name}") as sg:
            sg.attr(label=f"{name} sweep{order}", style="rounded", color="#616161",
                    fontsize="14")
            for phase, steps in sw.phases():
                if not steps:
                    continue
                in_loop = phase == "step"
                this_iter: dict[str, list[tuple[Any, str]]] = {}
                with sg.subgraph(name=f"cluster_{name}_{phase}") as pg:
                    pg.attr(label=PHASE_TITLES[phase], style="dashed,rounded",
                            color="#d32f2f" if in_loop else "#9e9e9e", fontsize="12")
                    # a row kernel is drawn as its parts (what it means)
                    placed = [self.place(pg, name, phase, i, s, in_loop)
                              for i, s in enumerate(flat_steps(steps))]
                # every write of the loop body, to recognise reads of the previous iteration
                loop_writes = [w for _ins, outs in placed for w in outs] if in_loop else []
                for ins, outs in placed:
                    for r, target, label in ins:
                        src, recurrent = self.producer(name, r, writers, this_iter,
                                                       loop_writes, in_loop, d)
                        if recurrent is not None:
                            self.recurrent_edge(recurrent, src, r)
                        self.g.edge(src, target, label=label, fontsize="8")
                    for r, nid in outs:
                        this_iter.setdefault(r.buf, []).append((r, nid))
                for r, nid in [w for _ins, outs in placed for w in outs]:
                    writers.setdefault(r.buf, []).append((r, nid))
        return writers

    def recurrent_edge(self, writer: str, leaf: str, r: Any) -> None:
        key = (writer, leaf)
        if key in self.recurrent_drawn:
            return
        self.recurrent_drawn.add(key)
        self.g.edge(writer, leaf, label="next step", **RECURRENT)

    @staticmethod
    def _overlaps(a: Any, b: Any, bufs: dict[str, Any]) -> bool:
        ca = a.cols if a.cols is not None else (0, bufs[a.buf].cols)
        cb = b.cols if b.cols is not None else (0, bufs[b.buf].cols)
        ra = a.rows if a.rows is not None else (0, 1 << 30)
        rb = b.rows if b.rows is not None else (0, 1 << 30)
        return ca[0] < cb[1] and cb[0] < ca[1] and ra[0] < rb[1] and rb[0] < ra[1]

    def producer(self, sweep: str, r: Any, writers: dict[str, list[tuple[Any, str]]],
                 this_iter: dict[str, list[tuple[Any, str]]],
                 loop_writes: list[tuple[Any, str]], in_loop: bool,
                 d: int) -> tuple[str, str | None]:
        """(node the value comes from, node writing it for the next iteration or None)."""
        b = self.bufs[r.buf]
        same_t = [w for w in this_iter.get(r.buf, []) if self._overlaps(w[0], r, self.bufs)
                  and (b.kind != "seq" or w[0].t == r.t)]
        if same_t:
            return same_t[-1][1], None
        if in_loop:
            nxt = [w for w in loop_writes if w[0].buf == r.buf
                   and self._overlaps(w[0], r, self.bufs)
                   and (b.kind != "seq" and b.kind in ("carry", "temp")
                        or b.kind == "seq" and w[0].t == r.t + d)]
            if nxt:
                # the value of the previous iteration: drawn through the state/carry leaf
                return self.leaf(sweep, r), nxt[-1][1]
        before = [w for w in writers.get(r.buf, []) if self._overlaps(w[0], r, self.bufs)]
        if before:
            return before[-1][1], None
        return self.leaf(sweep, r), None

    def place(self, pg: Any, sweep: str, phase: str, i: int, s: Any,
              in_loop: bool) -> tuple[list[tuple[Any, str, str]], list[tuple[Any, str]]]:
        """Draw one step; returns (reads as (ref, target node, edge label), writes as
        (ref, node))."""
        from .program import Gather, Gemm, Kernel, Reduce, Scatter
        tip = f"{sweep}.{phase} step {i}: {type(s).__name__}"
        if isinstance(s, Gemm):
            nid = self.new_id("gemm")
            acc = "+=" if s.accumulate else "="
            a = self.shape_text(s.a, in_loop, s.trans_a)
            b = self.shape_text(s.b, in_loop, s.trans_b)
            out_rows, out_cols = self.shape(s.out, in_loop)
            add_node(pg, nid, label=f"GEMM\n{s.out} {acc} {s.a}{'ᵀ' if s.trans_a else ''} @ "
                    f"{s.b}{'ᵀ' if s.trans_b else ''}\n{a} @ {b} → ({out_rows}×{out_cols})",
                    shape="box", style="filled,bold", fillcolor=COLORS["matmul"],
                    penwidth="2", tooltip=tip)
            reads = [(s.a, nid, ""), (s.b, nid, "")] + ([(s.out, nid, "")] if s.accumulate
                                                      else [])
            return reads, [(s.out, nid)]
        if isinstance(s, Kernel):
            return self.place_kernel(pg, s, in_loop, tip)
        if isinstance(s, Reduce):
            nid = self.new_id("reduce")
            rows, cols = self.shape(s.src, in_loop)
            orow, ocol = self.shape(s.out, in_loop)
            add_node(pg, nid, label=f"reduce {s.op} axis {s.axis}\n{s.out} "
                    f"{'+=' if s.accumulate else '='} {s.op}({s.src})\n({rows}×{cols}) → "
                    f"({orow}×{ocol})", shape="box", style="filled",
                    fillcolor=COLORS["reduce"], tooltip=tip)
            return [(s.src, nid, "")], [(s.out, nid)]
        if isinstance(s, Gather):
            nid = self.new_id("gather")
            add_node(pg, nid, label=f"gather\n{s.out} = {s.table}[{s.ids}]", shape="box",
                    style="filled", fillcolor=COLORS["layout"], tooltip=tip)
            return [(s.table, nid, ""), (s.ids, nid, "")], [(s.out, nid)]
        if isinstance(s, Scatter):
            nid = self.new_id("scatter")
            add_node(pg, nid, label=f"scatter-add\n{s.out}[{s.ids}] += {s.src}", shape="box",
                    style="filled", fillcolor=COLORS["layout"], tooltip=tip)
            return [(s.ids, nid, ""), (s.src, nid, "")], [(s.out, nid)]
        raise TypeError(f"plan_dot: unknown step {s!r}")

    def place_kernel(self, pg: Any, s: Any, in_loop: bool,
                     tip: str) -> tuple[list[tuple[Any, str, str]], list[tuple[Any, str]]]:
        k = s.kernel
        prog = k.program
        color = KERNEL_COLORS[self.kernel_count % len(KERNEL_COLORS)]
        self.kernel_count += 1
        cid = self.new_id("cluster_kernel_")
        rows, cols = self.shape(s.outs[0], in_loop)
        n_ops = sum(op is not Ops.CONST for op, _a, _c in prog.instrs)
        reads: list[tuple[Any, str, str]] = []
        writes: list[tuple[Any, str]] = []
        with pg.subgraph(name=cid) as kg:
            kg.attr(label=f"kernel {k.name}: {n_ops} fused ops over ({rows}×{cols})",
                    style="filled,rounded", fillcolor=color, color="#455a64", fontsize="11",
                    tooltip=tip)
            val_node: dict[int, str] = {}
            users: dict[int, list[str]] = {}
            for j, (op, args, c) in enumerate(prog.instrs):
                v = prog.n_inputs + j
                nid = self.new_id("op")
                if op is Ops.CONST:
                    add_node(kg, nid, label=f"{c:g}", shape="plaintext", fontsize="10")
                else:
                    add_node(kg, nid, label=op.name.lower(), shape="ellipse", style="filled",
                            fillcolor="white", fontsize="10", tooltip=tip)
                val_node[v] = nid
                for a in args:
                    if a in val_node:
                        kg.edge(val_node[a], nid)
                    else:
                        users.setdefault(a, []).append(nid)
            for o_idx, o in enumerate(prog.outputs):
                if o not in val_node:   # an output that is an input: a copy
                    nid = self.new_id("op")
                    add_node(kg, nid, label="copy", shape="ellipse", style="filled",
                            fillcolor="white", fontsize="10")
                    val_node[o] = nid
                    users.setdefault(o, []).append(nid)
                writes.append((s.outs[o_idx], val_node[o]))
            for i, r in enumerate(s.ins):
                bc = k.bcast[i]
                label = str(r) + ("" if bc == "full" else f" ({bc})")
                for target in users.get(i, []):
                    reads.append((r, target, label))
        return reads, writes

    def bindings(self, sweep: str, writers: dict[str, list[tuple[Any, str]]],
                 results: Sequence[tuple[str, Any]]) -> None:
        for label, r in results:
            if r is None:
                continue
            src = [w for w in writers.get(r.buf, []) if self._overlaps(w[0], r, self.bufs)]
            if not src:
                continue
            rid = self.new_id("result")
            add_node(self.g, rid, label=label, shape="box", style="filled,bold",
                        fillcolor=COLORS["output"])
            self.g.edge(src[-1][1], rid, label=str(r), fontsize="8")


def plan_dot(program: Any, title: str | None = None, sweeps: Sequence[str] = ("forward",
             "backward")) -> Any:
    """The optimized plan: each sweep (forward, backward) with its three phases (before, in and
    after the time loop) as clusters, each fused kernel a colored cluster of the elementwise ops
    it fused, GEMMs as bold boxes with their shapes (T·B rows before/after the loop, B in it)."""
    gv = need_graphviz()
    g = gv.Digraph(name=f"plan_{program.cell_name}")
    drawn = [name for name in ("forward", "backward") if name in sweeps]
    if title is None:
        # count the kernels of the sweeps drawn, not of the whole program: a one-sweep picture
        # titled with both sweeps' count shows fewer kernels than it claims
        n = len(_sweep_kernels(program, drawn))
        where = "" if len(drawn) == 2 else f" in the {drawn[0]} sweep" if drawn else ""
        title = (f"plan of cell {program.cell_name} ({program.dtype}): {n} "
                 f"kernel{'' if n == 1 else 's'}{where}")
    g.attr(rankdir="TB", fontname="Helvetica", labelloc="t", label=title, compound="true",
           newrank="true")
    g.attr("node", fontname="Helvetica", fontsize="11")
    g.attr("edge", arrowsize="0.6", fontname="Helvetica", fontsize="8")
    dr = _PlanDrawer(program, g)
    if "forward" in sweeps:
        w = dr.sweep("forward", program.forward)
        dr.forward_written = set(w)
        dr.bindings("forward", w, [(f"output {n}", r) for n, r in program.outputs])
    if "backward" in sweeps:
        if "forward" not in sweeps:
            dr.forward_written = {r.buf for sw in [program.forward] for _ph, st in sw.phases()
                                  for s in st for r in _step_writes(s)}
        w = dr.sweep("backward", program.backward)
        res = [(f"d {n} (initial state)", r) for n, r in program.d_states]
        res += [(f"d {n}", r) for n, r in program.d_inputs if r is not None]
        res += [(f"d {pc.name}", pc.ref) for pc in program.grad_pieces]
        dr.bindings("backward", w, res)
    return g


def _sweep_kernels(program: Any, sweeps: Sequence[str]) -> list[str]:
    """The distinct kernel names the given sweeps launch, in first-use order."""
    from .program import Kernel, flat_steps
    seen: dict[str, None] = {}
    for name in sweeps:
        for _ph, steps in getattr(program, name).phases():
            for s in flat_steps(steps):
                if isinstance(s, Kernel):
                    seen.setdefault(s.kernel.name)
    return list(seen)


def _step_writes(s: Any) -> list[Any]:
    from .program import Kernel, RowKernel
    if isinstance(s, RowKernel):
        return [w for p in s.parts for w in _step_writes(p)]
    if isinstance(s, Kernel):
        return list(s.outs)
    return [s.out]


def stage_dot(cell: Cell, stage: str, sweeps: Sequence[str] = ("forward", "backward"),
              **options: Any) -> Any:
    """The picture for one of the CLI's stages: forward, backward or plan (of ``sweeps``)."""
    if stage == "forward":
        return cell_dot(cell)
    if stage == "backward":
        return backward_dot(cell)
    if stage == "plan":
        from .pipeline import build_program  # the optimizer loads only for a plan picture
        return plan_dot(build_program(cell, **options), sweeps=sweeps)
    raise ValueError(f"unknown stage {stage!r}; use forward, backward or plan")
