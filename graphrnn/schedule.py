"""The schedule: the last passes of ``graphrnn.pipeline``, from the merged cell and its
backward to the Program that backends run: residual choice, then for each sweep
``split.place`` -> ``fuse.group_nodes`` -> buffers ("homes") -> ordered steps, then the Program.

**Residuals** (what the forward saves for the backward) are a minimum cut, in the spirit of the
functorch partitioner: every forward node is split into in/out vertices joined by an edge whose
capacity is its width (values per step per row); leaves, states, outputs and parameter-shaped
values cost nothing (they are kept anyway); GEMMs, reductions and gathers cannot be recomputed
(a source edge pins them to the forward side); elementwise nodes and views can. Forward nodes the
backward reads connect to the sink. The cut is the cheapest set of values to save; everything
on the sink side is recomputed by elementwise code fused into the backward kernels (an LSTM
recomputes ``tanh(c_t)`` from the saved state instead of storing it). Ties go to later nodes
(saving a gate activation beats saving its pre-activation: less to recompute).

**Homes**: every materialized node (kernel output, GEMM/reduction result, concatenation) gets a
view: its root's destination (state buffer S[t+1], a carry), a column block of the concatenation
it is part of (so kernels write ``dZ = [d_i|d_f|d_o|d_g]`` in place and no copy runs), or a
fresh buffer: ``seq`` before/after the loop or when a later phase or the backward reads it,
``temp`` otherwise, ``mat``/``grad`` for parameter-shaped values. A carry written while an older
value is still to be read goes through a temp and a copy. Constant-zero blocks of a concatenation
in the loop (the zero padding a slice's cotangent gets) are written once, not every step: one
fill over T·B rows before the loop in a ``seq`` home; a backward ``temp`` home becomes a
``carry``, which the binding zeroes before the sweep (nothing else writes those columns).

**Accumulating GEMMs**: a sum ``a + m`` whose GEMM term ``m = u @ v`` feeds nothing else, where
``a`` is computed in the same phase and read by nothing else, and where no elementwise consumer
would fuse the sum into a kernel anyway, costs no kernel of its own: ``a`` is written where the
sum lives and the GEMM adds into it (``Gemm(accumulate=True)``, BLAS beta = 1). Before
scheduling, the backward's carried cotangents are re-associated by ``gemm_terms_last`` as
``(elementwise terms) + G_1 + .. + G_k``: PyTorch's GRU's ``d_h = z * dh' + dZ @ W_hᵀ`` becomes
one kernel writing ``z * dh'`` into the carry (reading the old carry element for element) and
one GEMM adding ``dZ @ W_hᵀ`` to it: 1 GEMM + 1 kernel per step, like the LSTM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from . import graphs as nx  # networkx's names, without importing networkx (graphs.py)
from .autodiff import BackwardCell, output_name
from .errors import BackendError
from .fuse import build_program, fusable, group_nodes, kernel_spec
from .ir import Cell, Node, apply, short_type, substitute, toposort
from .merge import Layout
from .ops import GroupOp, Ops
from .program import (
    Buffer,
    Gather,
    Gemm,
    Kernel,
    KernelDef,
    ParamPiece,
    Program,
    Reduce,
    Ref,
    RowKernel,
    Scatter,
    Step,
    Sweep,
    fill_kernel,
    identity_kernel,
    overlap,
    reads_writes,
    row_kernel_problem,
)
from .scalar import ScalarProgram
from .split import LOOP, SEQ, STATIC, is_batch, place

NOT_RECOMPUTABLE = frozenset({Ops.MATMUL, Ops.REDUCE, Ops.GATHER, Ops.SCATTER, Ops.FUSED})


def _narrow(r: Ref, a: int, b: int) -> Ref:
    c0 = r.cols[0] if r.cols is not None else 0
    return Ref(r.buf, r.t, (c0 + a, c0 + b), r.rows)


class _Buffers:
    def __init__(self, dtype: str) -> None:
        self.dtype = dtype
        self.items: dict[str, Buffer] = {}

    def new(self, name: str, kind: str, cols: int, rows: int = 0, extra: int = 0,
            dtype: str | None = None) -> str:
        base, k = name, 0
        while name in self.items:
            k += 1
            name = f"{base}_{k}"
        self.items[name] = Buffer(name, kind, dtype or self.dtype, cols, rows, extra)
        return name


@dataclass
class _Unit:
    nodes: list[Node]          # a group (kernel) or one non-fusable node
    phase: str
    kernel: bool


class SweepBuilder:
    """Schedules one sweep (forward or backward) of a graph into pre/step/post steps."""

    def __init__(self, bufs: _Buffers, tag: str, roots: Sequence[Node],
                 bound: dict[Node, tuple[Ref, int]], carry: Sequence[tuple[Node, Ref]],
                 keep: Sequence[Node], reverse: bool, fixed_kind: str,
                 use_sympy: bool = True) -> None:
        self.bufs, self.tag, self.reverse = bufs, tag, reverse
        self.roots = list(roots)
        self.bound = {n: r for n, (r, _lv) in bound.items()}
        self.blevel = {n: lv for n, (_r, lv) in bound.items()}
        self.carry = list(carry)
        self.keep = list(keep)
        self.fixed_kind = fixed_kind
        self.use_sympy = use_sympy
        self.home: dict[Node, Ref] = {}
        self.steps: dict[str, list[Step]] = {"pre": [], "step": [], "post": []}
        self.kernels: list[KernelDef] = []
        self.groups: list[list[Node]] = []
        self.deps = nx.DiGraph()
        self._nk = 0

    # ---- views ----
    def base(self, n: Node) -> Node:
        while n.op is Ops.SLICE and n not in self.bound:
            n = n.src[0]
        return n

    def ref_of(self, n: Node, phase: str = "pre") -> Ref:
        if n in self.bound:
            r = self.bound[n]
            if phase != "step" and self.bufs.items[r.buf].kind in ("carry", "temp"):
                return self._seq_copy(n, r)
            return r
        if n.op is Ops.SLICE:
            return _narrow(self.ref_of(n.src[0], phase), *n.arg)
        if n in self.home:
            return self.home[n]
        if n.op is Ops.CONST:
            self.home[n] = self._fresh(n, phase)
            self._emit_fill(n.arg, self.home[n], phase)
            return self.home[n]
        raise BackendError(f"schedule: {n.op.name.lower()} {short_type(n)} has no value yet")

    def _seq_copy(self, n: Node, r: Ref) -> Ref:
        """A carried value needed outside the loop: copied to a sequence at the start of each
        step, before anything overwrites the carry."""
        if not hasattr(self, "_seq_copies"):
            self._seq_copies: dict[Node, Ref] = {}
        if n not in self._seq_copies:
            out = Ref(self.bufs.new(f"{self.tag}_saved", "seq", int(n.shape[1]), dtype=n.dtype))
            self.steps["step"].insert(0, Kernel(identity_kernel(self.bufs.dtype), (r,), (out,)))
            self._seq_copies[n] = out
        return self._seq_copies[n]

    def _fresh(self, n: Node, phase: str, seq: bool = False) -> Ref:
        cols = int(n.shape[1])
        name = f"{self.tag}_{phase}_{n.op.name.lower()}"
        if not is_batch(n):
            kind = self.fixed_kind
            return Ref(self.bufs.new(name, kind, cols, rows=int(n.shape[0]), dtype=n.dtype))
        kind = "seq" if (phase != "step" or seq) else "temp"
        return Ref(self.bufs.new(name, kind, cols, dtype=n.dtype))

    def _emit_fill(self, value: float, out: Ref, phase: str) -> None:
        self.steps[phase].append(Kernel(fill_kernel(value, self.bufs.dtype), (), (out,)))

    def _emit_copy(self, src: Node, out: Ref, phase: str) -> None:
        if src.op is Ops.CONST:
            self._emit_fill(src.arg, out, phase)
            return
        if src.op is Ops.EXPAND and src not in self.home and src not in self.bound:
            from .fuse import bcast_flag
            flag = bcast_flag(src.src[0], src.shape)
            self.steps[phase].append(Kernel(identity_kernel(self.bufs.dtype, flag),
                                            (self.ref_of(src.src[0], phase),), (out,)))
            return
        r = self.ref_of(src, phase)
        if r == out:
            return
        self.steps[phase].append(Kernel(identity_kernel(self.bufs.dtype), (r,), (out,)))

    # ---- the schedule ----
    def build(self) -> Sweep:
        carry_roots = [r for r, _d in self.carry]
        self.carry_roots = set(carry_roots)
        all_roots = self.roots + carry_roots + self.keep
        order, lv, phase = place(all_roots, self.blevel, carry_roots, self.keep)
        self.order, self.lv, self.phase = order, lv, phase
        self.acc = self._find_accumulations()
        absorbed = {m for _a, m in self.acc.values()}
        placed = [n for n in order if n in phase and n.op is not Ops.SLICE and n not in absorbed]
        # dependency graph with views contracted (an accumulating sum reads its GEMM's operands)
        deps = self.deps
        for n in placed:
            deps.add_node(n)
        for n in placed:
            for s in self.srcs(n):
                b = self.base(s)
                if b in phase and b is not n:
                    deps.add_edge(b, n)
        groups = group_nodes([n for n in placed if n not in self.acc], phase, deps)
        self.groups = groups
        unit_of: dict[Node, int] = {}
        units: list[_Unit] = []
        for g in groups:
            for n in g:
                unit_of[n] = len(units)
            units.append(_Unit(g, phase[g[0]], True))
        for n in placed:
            if n not in unit_of:
                unit_of[n] = len(units)
                units.append(_Unit([n], phase[n], False))
        ug = nx.DiGraph()
        ug.add_nodes_from(range(len(units)))
        for u, v in deps.edges:
            if unit_of[u] != unit_of[v]:
                ug.add_edge(unit_of[u], unit_of[v])
        # consumers through views: which units read each base node
        readers: dict[Node, set[int]] = {}
        for n in placed:
            for s in self.srcs(n):
                readers.setdefault(self.base(s), set()).add(unit_of[n])
        # carried values: write the new value in place only when every reader of the old one
        # runs first and the writer reads it (if at all) element for element
        in_place: dict[Node, Ref] = {}
        for r, d in self.carry:
            if self.bufs.items[d.buf].kind != "carry":
                if r in phase and r.op not in (Ops.SLICE, Ops.CONCAT) and r not in in_place \
                        and self._materialized(r):
                    in_place[r] = d
                continue
            if r not in phase or r.op in (Ops.SLICE, Ops.CONCAT) or r in in_place or \
                    not self._materialized(r) or phase[r] != "step" or r in self.keep or \
                    any(units[x].phase != "step" for x in readers.get(r, ())):
                continue   # (a value read after the loop must live in a sequence)
            leaf = next(n for n, ref in self.bound.items() if ref == d)
            # the units that write the destination: r's own and, for an accumulating sum, the
            # chain down to the unit that writes its first term (which runs first)
            chain, first = [unit_of[r]], r
            while first in self.acc:
                first = self.acc[first][0]
                chain.append(unit_of[first])
            w = chain[-1]
            rd = readers.get(leaf, set())
            if any(x in rd for x in chain[:-1]):
                continue   # a GEMM would read the carry it adds into
            if w in rd and not (units[w].kernel and all(
                    s is leaf for m in units[w].nodes for s in m.src if self.base(s) is leaf)):
                continue
            if w in rd and not self._reads_only_for(units[w].nodes, first, leaf):
                # the kernel reads the old value for another output: its outputs are noalias
                # (llvm), so this store could move above that load (a swap of states, or a
                # rotated state plus a slice of a product)
                continue
            trial = ug.copy()
            trial.add_edges_from((x, w) for x in rd if x != w)
            if nx.is_directed_acyclic_graph(trial):
                ug = trial
                in_place[r] = d
        self.in_place = in_place
        first = {i: min(order.index(n) for n in u.nodes) for i, u in enumerate(units)}
        topo = list(nx.lexicographical_topological_sort(ug, key=first.__getitem__))
        self._assign_homes(units, unit_of, readers)
        for ph in ("pre", "step", "post"):
            for i in topo:
                if units[i].phase == ph:
                    self._emit(units[i], unit_of)
        # destinations not written in place
        for r, d in self.carry:
            if self.home.get(r) == d:
                continue
            kind = self.bufs.items[d.buf].kind
            if kind == "carry":
                ph = "step"
                src = self.bound.get(r)
                if src is not None and src != d and self.bufs.items[src.buf].kind == "carry":
                    # the old value of another carry (a shift register, next h1 = h2, makes
                    # d_h2 = the carried d_h1): that carry may be overwritten in this step, so
                    # its old value is copied aside before anything else runs
                    old = Ref(self.bufs.new(f"{self.tag}_old", "temp", int(r.shape[1]),
                                            dtype=r.dtype))
                    self.steps["step"].insert(0, Kernel(identity_kernel(self.bufs.dtype),
                                                        (src,), (old,)))
                    self.steps["step"].append(Kernel(identity_kernel(self.bufs.dtype),
                                                     (old,), (d,)))
                    continue
            else:
                ph = self.phase.get(r, "step" if self.lv.get(r, STATIC) == LOOP else "pre")
                if r.op is Ops.CONST or (r in self.bound and self.blevel[r] != LOOP):
                    ph = "pre" if self.blevel.get(r, STATIC) != LOOP else "step"
            self._emit_copy(r, d, ph)
        # kept values that live only in a carry (the old carried value itself)
        self.keep_ref: dict[Node, Ref] = {}
        for k in self.keep:
            r = self.ref_of(k, "step") if k.op is not Ops.CONST else None
            if r is not None and self.bufs.items[r.buf].kind in ("carry", "temp"):
                self.keep_ref[k] = self._seq_copy(k, r)
        bufs = self.bufs.items
        st = self.steps
        diagonal = bool(st["step"]) and all(isinstance(s, Kernel) for s in st["step"])
        return Sweep(tuple(fuse_rows(st["pre"], bufs, False, f"{self.tag}_pre_r")),
                     tuple(st["step"]) if diagonal else
                     tuple(fuse_rows(st["step"], bufs, True, f"{self.tag}_step_r")),
                     tuple(fuse_rows(st["post"], bufs, False, f"{self.tag}_post_r")),
                     self.reverse)

    def _materialized(self, n: Node) -> bool:
        return n in self.phase and n.op is not Ops.SLICE and n not in self.bound

    def srcs(self, n: Node) -> tuple[Node, ...]:
        """n's sources as scheduled: an accumulating sum ``a + u @ v`` reads a, u and v."""
        if n in self.acc:
            a, m = self.acc[n]
            return (a,) + m.src
        return n.src

    def _find_accumulations(self) -> dict[Node, tuple[Node, Node]]:
        """Sums ``n = a + m`` scheduled as "write a where n lives, then GEMM m with
        accumulate": m is a GEMM and a is computed in n's phase, both feed only n, neither is
        kept (output, residual, gradient), and no elementwise consumer in n's phase would fuse
        n into its kernel anyway (there the sum is free). Returns n -> (a, m); a may itself be
        such a sum (a chain of GEMMs adding into one place)."""
        phase = self.phase
        cons: dict[Node, set[Node]] = {}
        for n in self.order:
            if n in phase and n.op is not Ops.SLICE:
                for s in n.src:
                    cons.setdefault(self.base(s), set()).add(n)
        kept = {self.base(k) for k in self.keep + self.roots} | self.carry_roots
        acc: dict[Node, tuple[Node, Node]] = {}
        for n in reversed(self.order):   # consumers first
            if n.op is not Ops.ADD or n not in phase or n in self.bound:
                continue
            ph = phase[n]
            if any(fusable(c) and c not in acc and phase.get(c) == ph for c in cons.get(n, ())):
                continue
            for m, a in ((n.src[1], n.src[0]), (n.src[0], n.src[1])):
                if m is a or m.op is not Ops.MATMUL or \
                        a.op in (Ops.SLICE, Ops.CONCAT, Ops.CONST):
                    continue
                if any(x in self.bound or x in kept or phase.get(x) != ph or
                       cons.get(x) != {n} for x in (a, m)):
                    continue
                acc[n] = (a, m)
                break
        return acc

    def _reads_only_for(self, nodes: Sequence[Node], out: Node, leaf: Node) -> bool:
        """Whether every node of a kernel that reads ``leaf`` computes ``out`` (is among its
        ancestors inside the kernel): then each element of ``leaf`` is loaded before the store
        of ``out`` that depends on it, and ``out`` may overwrite ``leaf`` in place."""
        inside, anc, todo = set(nodes), set(), [out]
        while todo:
            m = todo.pop()
            if m in inside and m not in anc:
                anc.add(m)
                todo.extend(m.src)
        return all(m in anc for m in nodes if any(self.base(s) is leaf for s in m.src))

    def _assign_homes(self, units: list[_Unit], unit_of: dict[Node, int],
                      readers: dict[Node, set[int]]) -> None:
        keep_base = {self.base(k) for k in self.keep + self.roots}

        def needs_seq(n: Node) -> bool:
            if n in keep_base:
                return True
            return any(units[u].phase != self.phase[n] for u in readers.get(n, ()))

        for r, d in self.in_place.items():
            self.home[r] = d
        concats = [n for n in self.order if n.op is Ops.CONCAT and n in self.phase]
        self.elided: set[tuple[Node, int]] = set()   # (concat, part index) written in place
        self.extra: dict[Node, list[Ref]] = {}        # more places a kernel writes a node to
        homed_by_concat: set[Node] = set()
        for k in concats:
            ph = self.phase[k]
            elig = [s for s in k.src if self._materialized(s) and s not in self.home and
                    s.op is not Ops.CONCAT and self.phase[s] == ph]
            if k not in self.home:
                seq = needs_seq(k) or any(needs_seq(s) for s in elig)
                self.home[k] = self._fresh(k, ph, seq)
                name = self.home[k].buf
                if self.reverse and self.bufs.items[name].kind == "temp" and \
                        any(_is_zero(x) for x in k.src):
                    # zero blocks of a per-step concatenation stay zero: as a carry the
                    # binding zeroes it once before the sweep, instead of a fill every step
                    self.bufs.items[name] = replace(self.bufs.items[name], kind="carry")
            hk = self.home[k]
            if self.bufs.items[hk.buf].kind == "temp" and any(needs_seq(s) for s in elig):
                elig = [s for s in elig if not needs_seq(s)]
            off = 0
            for i, s in enumerate(k.src):
                w = int(s.shape[1])
                if s in elig and s not in self.home:
                    self.home[s] = _narrow(hk, off, off + w)
                    self.elided.add((k, i))
                    homed_by_concat.add(s)
                elif s in homed_by_concat and unit_of.get(s) is not None and \
                        units[unit_of[s]].kernel:
                    # a kernel output needed in two concatenations: write it twice
                    self.extra.setdefault(s, []).append(_narrow(hk, off, off + w))
                    self.elided.add((k, i))
                off += w
        # an accumulating sum's first term is written where the sum lives
        for n in reversed(self.order):   # consumers first: a chain shares one home
            if n in self.acc:
                if n not in self.home:
                    self.home[n] = self._fresh(n, self.phase[n], needs_seq(n))
                self.home[self.acc[n][0]] = self.home[n]
        for u in units:
            outs = self._outputs(u, unit_of) if u.kernel else u.nodes
            for n in outs:
                if n not in self.home:
                    self.home[n] = self._fresh(n, u.phase, needs_seq(n))

    def _outputs(self, u: _Unit, unit_of: dict[Node, int]) -> list[Node]:
        gs = set(u.nodes)
        keep_base = {self.base(k) for k in self.keep + self.roots}
        out = []
        for n in u.nodes:
            ext = any(unit_of.get(c) is not None and c not in gs
                      for c in self._consumers(n))
            if ext or n in keep_base or n in self.in_place or n in self.carry_roots:
                out.append(n)
        return out

    def _consumers(self, n: Node) -> list[Node]:
        if not hasattr(self, "_cons"):
            cons: dict[Node, list[Node]] = {}
            absorbed = {m for _a, m in self.acc.values()}
            for m in self.order:
                if m not in self.phase or m.op is Ops.SLICE or m in absorbed:
                    continue
                for s in self.srcs(m):
                    cons.setdefault(self.base(s), []).append(m)
            self._cons = cons
        return self._cons.get(n, [])

    def _emit(self, u: _Unit, unit_of: dict[Node, int]) -> None:
        ph = u.phase
        if u.kernel:
            outs = self._outputs(u, unit_of)
            if not outs:
                return
            spec = kernel_spec(u.nodes, outs)
            prog = build_program(u.nodes, spec, self.use_sympy)
            refs = [self.home[o] for o in outs]
            for j, o in enumerate(outs):
                for r in self.extra.get(o, []):
                    prog = ScalarProgram(prog.n_inputs, prog.instrs,
                                         prog.outputs + (prog.outputs[j],))
                    refs.append(r)
            kd = KernelDef(f"{self.tag}_{ph}_k{self._nk}", prog, self.bufs.dtype,
                           tuple(f for _n, f in spec.inputs))
            self._nk += 1
            self.kernels.append(kd)
            self.groups.append(u.nodes)
            ins = tuple(self.ref_of(n, ph) for n, _f in spec.inputs)
            self.steps[ph].append(Kernel(kd, ins, tuple(refs)))
            return
        (n,) = u.nodes
        out = self.home[n]
        if n in self.acc:
            _a, m = self.acc[n]
            self.steps[ph].append(Gemm(out, self.ref_of(m.src[0], ph), self.ref_of(m.src[1], ph),
                                       *m.arg, accumulate=True))
        elif n.op is Ops.MATMUL:
            a, b = n.src
            self.steps[ph].append(Gemm(out, self.ref_of(a, ph), self.ref_of(b, ph), *n.arg))
        elif n.op is Ops.REDUCE:
            self.steps[ph].append(Reduce(out, self.ref_of(n.src[0], ph), *n.arg))
        elif n.op is Ops.GATHER:
            self.steps[ph].append(Gather(out, self.ref_of(n.src[0], ph),
                                         self.ref_of(n.src[1], ph)))
        elif n.op is Ops.SCATTER:
            self.steps[ph].append(Scatter(out, self.ref_of(n.src[0], ph),
                                          self.ref_of(n.src[1], ph)))
        elif n.op is Ops.CONCAT:
            off = 0
            kind = self.bufs.items[out.buf].kind
            for i, s in enumerate(n.src):
                w = int(s.shape[1])
                if (n, i) in self.elided:
                    pass
                elif _is_zero(s) and ph == "step" and kind == "carry":
                    pass   # zeroed once by the binding (see _assign_homes)
                elif _is_zero(s) and ph == "step" and kind == "seq":
                    # a zero block of every step's slab: one fill over T·B rows before the loop
                    self._emit_fill(0.0, _narrow(out, off, off + w), "pre")
                else:
                    self._emit_copy(s, _narrow(out, off, off + w), ph)
                off += w
        else:
            raise BackendError(f"schedule: cannot schedule {n.op.name}")


# ---- row kernels ----

def _conflict(x: Step, s: Step, bufs: dict[str, Buffer], in_loop: bool) -> bool:
    """Must x and s keep their order (one writes what the other reads or writes)?"""
    xr, xw = reads_writes(x)
    sr, sw = reads_writes(s)
    return any(overlap(a, b, bufs, in_loop) for a in xw for b in sr + sw) or \
        any(overlap(a, b, bufs, in_loop) for a in xr for b in sw)


def fuse_rows(steps: Sequence[Step], bufs: dict[str, Buffer], in_loop: bool,
              name: str) -> list[Step]:
    """Row-local steps (kernels, reductions over columns) grouped into row kernels: each such
    step joins the latest group it can reach by moving up past steps it does not conflict
    with (a layer norm's statistics and the kernels around them, or a fill next to a kernel,
    become one launch); a group of one stays a plain step. See ``program.RowKernel``."""
    out: list[Step | list[Step]] = []
    for s in steps:
        if row_kernel_problem([s], bufs, in_loop) is not None:
            out.append(s)
            continue
        target = None
        for j in range(len(out) - 1, -1, -1):
            x = out[j]
            if isinstance(x, list) and row_kernel_problem(x + [s], bufs, in_loop) is None:
                target = j
                break
            parts = x if isinstance(x, list) else [x]
            if any(_conflict(p, s, bufs, in_loop) for p in parts):
                break
        if target is None:
            out.append([s])
        else:
            out[target].append(s)   # type: ignore[union-attr]
    result: list[Step] = []
    for x in out:
        if isinstance(x, list) and len(x) > 1:
            result.append(RowKernel(f"{name}{len(result)}", tuple(x)))  # type: ignore[arg-type]
        elif isinstance(x, list):
            result.append(x[0])
        else:
            result.append(x)
    return result


# ---- sums of GEMMs ----

def hoist_cotangent_products(roots: Sequence[Node], d_outputs: Sequence[Node],
                             d_next: Sequence[Node]) -> list[Node]:
    """Split ``(d_h + dy) @ W`` as ``d_h @ W + dy @ W`` (W a parameter, dy an output's
    cotangent, d_h depending on a carried cotangent).

    A next state that is itself a GEMM output (a projection, h' = m W_pᵀ) receives the
    cotangent dh' = d_h + dy, and its backward multiplies that sum by W_p: the sum cost a kernel
    of its own every step, between the carry's GEMM and this one. Split, ``dy @ W`` reads no
    carry and becomes one GEMM over T·B rows before the loop, the add moves into the kernel
    that reads the product, and the sum itself (which dW_p = Σ dh'ᵀ m still reads) is computed
    in the row kernel beside it: the step loses a kernel and a barrier, and the backward does
    that product's FLOPs twice (once hoisted, as one large GEMM)."""
    outs, carried = set(d_outputs), set(d_next)
    order = toposort(list(roots))
    reads_carry: set[Node] = set()
    for n in order:
        if n in carried or any(s in reads_carry for s in n.src):
            reads_carry.add(n)
    mapping: dict[Node, Node] = {}
    for n in order:
        if n.op is not Ops.MATMUL or n.src[1].op is not Ops.PARAM or n.arg[0] or \
                n.src[0].op is not Ops.ADD:
            continue
        p, q = n.src[0].src
        for dy, rest in ((p, q), (q, p)):
            if dy in outs and rest in reads_carry and rest not in outs:
                mapping[n] = apply(Ops.ADD, apply(Ops.MATMUL, rest, n.src[1], arg=n.arg),
                                   apply(Ops.MATMUL, dy, n.src[1], arg=n.arg))
                break
    return substitute(list(roots), mapping) if mapping else list(roots)


def gemm_terms_last(roots: Sequence[Node], which: Sequence[int]) -> list[Node]:
    """Re-associate ``roots[i]`` (i in ``which``) as ``(other terms) + G_1 + .. + G_k``.

    The sum tree of a root is flattened through ADD nodes that nothing else reads; its terms
    that are GEMMs read by nothing else are moved to the end, one ADD each, so the schedule can
    run them as GEMMs accumulating into the root's home (see ``SweepBuilder``). A carried
    cotangent is such a sum whenever the state is read both by a matmul and elementwise:
    ``d_h = z * dh' + dZ @ W_hᵀ`` (PyTorch's GRU), ``dh'(1-z) + d(rh) * r + dZ_g @ W_gᵀ`` (the
    lecture GRU). Other roots are returned unchanged."""
    roots = list(roots)
    uses: dict[Node, int] = {}
    for n in toposort(roots):
        for s in set(n.src):
            uses[s] = uses.get(s, 0) + 1
    for r in roots:
        uses[r] = uses.get(r, 0) + 1

    def terms(n: Node, top: bool) -> list[Node]:
        if n.op is Ops.ADD and (top or uses.get(n, 0) == 1):
            return terms(n.src[0], False) + terms(n.src[1], False)
        return [n]

    for i in which:
        r = roots[i]
        ts = terms(r, True)
        gemms = [t for t in ts if t.op is Ops.MATMUL and uses.get(t, 0) == 1]
        rest = [t for t in ts if not (t.op is Ops.MATMUL and uses.get(t, 0) == 1)]
        if not gemms or len(ts) < 2:
            continue
        acc = rest[0] if rest else gemms.pop(0)
        for t in rest[1:] + gemms:
            acc = apply(Ops.ADD, acc, t)
        roots[i] = acc
    return roots


# ---- residuals ----

def choose_residuals(fwd_roots: Sequence[Node], bw_roots: Sequence[Node],
                     free: set[Node]) -> list[Node]:
    """Forward nodes to save for the backward (a minimum cut); see the module docstring."""
    from .ir import toposort
    fwd = toposort(fwd_roots)
    fset = set(fwd)
    needed: set[Node] = set()
    for n in toposort(bw_roots):
        if n in fset:
            continue
        needed.update(s for s in n.src if s in fset)
    needed.update(r for r in bw_roots if r in fset)
    if not needed:
        return []
    g = nx.DiGraph()
    big = 10 ** 6
    total = len(fwd)
    for i, n in enumerate(fwd):
        cost = 0 if (n in free or not is_batch(n) or n.op in GroupOp.Leaf) else \
            int(n.shape[1]) * big + (total - i)
        if n.op in (Ops.SLICE, Ops.EXPAND, Ops.CONCAT) and n not in free:
            g.add_edge(("in", n), ("out", n))   # a view: never the cut itself
        else:
            g.add_edge(("in", n), ("out", n), capacity=cost)
        if n.op in GroupOp.Leaf or n in free or n.op in NOT_RECOMPUTABLE or \
                (n.op not in GroupOp.Elementwise and n.op not in
                 (Ops.SLICE, Ops.EXPAND, Ops.CONCAT)):
            g.add_edge("source", ("in", n))
        for s in n.src:
            g.add_edge(("out", s), ("in", n))
        if n in needed:
            g.add_edge(("out", n), "sink")
    _val, (reach, _rest) = nx.minimum_cut(g, "source", "sink")
    return [n for n in fwd if ("in", n) in reach and ("out", n) not in reach
            and n not in free and n.op not in GroupOp.Leaf]


# ---- the sweeps and the Program (the last passes of graphrnn.pipeline) ----

Bound = dict[Node, tuple[Ref, int]]     # a leaf's view and its level (STATIC, SEQ or LOOP)


@dataclass
class ForwardSchedule:
    """The forward sweep and the buffers it made (what the backward binds its leaves to)."""
    buffers: _Buffers
    bound: Bound                                # the forward cell's leaves
    inputs: list[tuple[str, str]]               # (input name, buffer)
    states: list[tuple[str, str]]               # (state name, buffer S[0..T])
    carry: list[tuple[Node, Ref]]               # (next state, S[t+1])
    builder: SweepBuilder
    sweep: Sweep
    outputs: tuple[tuple[str, Ref], ...]


@dataclass
class BackwardSchedule:
    """The backward sweep and where its leaves and results live."""
    builder: SweepBuilder
    sweep: Sweep
    d_outputs: list[tuple[str, str]]            # (output name, buffer of its cotangent)
    d_final: list[tuple[str, str]]              # (state name, carry buffer of its cotangent)
    d_inputs: tuple[tuple[str, Ref | None], ...]


def _is_zero(n: Node) -> bool:
    return n.op is Ops.CONST and n.arg == 0.0


def schedule_forward(merged: Cell, residual_nodes: Sequence[Node],
                     use_sympy: bool) -> ForwardSchedule:
    """Bind the merged cell's leaves to buffers, then split, fuse and schedule its sweep."""
    buffers = _Buffers(merged.dtype)
    bound: Bound = {}
    inputs, states = [], []
    for x in merged.inputs:
        b = buffers.new(f"x_{x.arg}", "seq", int(x.shape[1]), dtype=x.dtype)
        inputs.append((x.arg, b))
        bound[x] = (Ref(b), SEQ)
    for s in merged.states:
        b = buffers.new(f"s_{s.arg}", "seq", int(s.shape[1]), extra=1, dtype=s.dtype)
        states.append((s.arg, b))
        bound[s] = (Ref(b, 0), LOOP)
    for p in merged.params:
        b = buffers.new(f"p_{p.arg}", "param", int(p.shape[1]), rows=int(p.shape[0]))
        bound[p] = (Ref(b), STATIC)
    carry = [(nxt, Ref(b, 1)) for nxt, (_n, b) in zip(merged.next_states, states, strict=True)]
    builder = SweepBuilder(buffers, "f", merged.outputs, bound, carry,
                           list(merged.outputs) + list(residual_nodes), reverse=False,
                           fixed_kind="mat", use_sympy=use_sympy)
    sweep = builder.build()
    outputs = tuple((output_name(merged, i), builder.ref_of(o))
                    for i, o in enumerate(merged.outputs))
    return ForwardSchedule(buffers, bound, inputs, states, carry, builder, sweep, outputs)


def schedule_backward(merged: Cell, backward: BackwardCell, d_roots: Sequence[Node],
                      fwd: ForwardSchedule, use_sympy: bool) -> BackwardSchedule:
    """Bind the backward's leaves (the forward's values, the cotangents in), then split, fuse
    and schedule its sweep. ``d_roots``: d_states, d_inputs, d_params, simplified."""
    ns, ni = len(backward.d_states), len(backward.d_inputs)
    d_states, d_inputs, d_params = d_roots[:ns], d_roots[ns:ns + ni], d_roots[ns + ni:]
    buffers = fwd.buffers
    bound: Bound = {n: (r, STATIC if n.op is Ops.PARAM else SEQ)
                    for n, (r, _lv) in fwd.bound.items()}
    homes = list(fwd.builder.home.items()) + [(nxt, r) for nxt, r in fwd.carry]
    for n, r in homes:
        kind = buffers.items[r.buf].kind
        if kind in ("seq", "mat"):
            bound.setdefault(n, (r, SEQ if kind == "seq" else STATIC))
    d_outputs = []
    for leaf in backward.d_outputs:
        b = buffers.new(f"dy_{leaf.arg[2:]}", "seq", int(leaf.shape[1]))
        d_outputs.append((leaf.arg[2:], b))
        bound[leaf] = (Ref(b), SEQ)
    d_final, carry = [], []
    for s, leaf, root in zip(merged.states, backward.d_next, d_states, strict=True):
        b = buffers.new(f"d_{s.arg}", "carry", int(s.shape[1]))
        d_final.append((s.arg, b))
        bound[leaf] = (Ref(b), LOOP)
        carry.append((root, Ref(b)))
    keep = [r for r in list(d_inputs) + list(d_params) if r.op is not Ops.CONST]
    builder = SweepBuilder(buffers, "b", [], bound, carry, keep, reverse=True,
                           fixed_kind="grad", use_sympy=use_sympy)
    sweep = builder.build()
    d_inputs_at = tuple((x.arg, None if _is_zero(r) else
                         builder.keep_ref.get(r) or builder.ref_of(r))
                        for x, r in zip(merged.inputs, d_inputs, strict=True))
    for name, ref in d_inputs_at:
        if ref is not None and buffers.items[ref.buf].kind != "seq":
            raise BackendError(f"schedule: gradient of input {name} is not a sequence")
    return BackwardSchedule(builder, sweep, d_outputs, d_final, d_inputs_at)


def assemble_program(cell: Cell, merged: Cell, layout: Layout, d_params: Sequence[Node],
                     fwd: ForwardSchedule, bwd: BackwardSchedule) -> Program:
    """The Program: both sweeps, the buffers, and where each user-facing value lives.
    ``cell``: the user's (its name and parameter shapes); ``merged``: what was scheduled."""
    param_pieces, grad_pieces = [], []
    for p, g in zip(merged.params, d_params, strict=True):
        pref = fwd.bound[p][0]
        gref = None if _is_zero(g) else bwd.builder.ref_of(g)
        for pc in layout[p.arg]:
            view = Ref(pref.buf, 0, pc.pcols, pc.prows)
            param_pieces.append(ParamPiece(pc.user, pc.urows, pc.ucols, view))
            if gref is not None:
                gview = Ref(gref.buf, 0, _sub(gref.cols, pc.pcols), _sub(gref.rows, pc.prows))
                grad_pieces.append(ParamPiece(pc.user, pc.urows, pc.ucols, gview))
    # residuals: buffers the forward wrote that the backward reads, beyond inputs/states/outputs
    fw_written = {r.buf for _ph, steps in fwd.sweep.phases() for s in steps
                  for r in reads_writes(s)[1]}
    bw_read = {r.buf for _ph, steps in bwd.sweep.phases() for s in steps
               for r in reads_writes(s)[0]}
    visible = {b for _n, b in fwd.inputs} | {b for _n, b in fwd.states} | \
        {r.buf for _n, r in fwd.outputs}
    return Program(
        cell_name=cell.name, dtype=merged.dtype, buffers=tuple(fwd.buffers.items.values()),
        forward=fwd.sweep, backward=bwd.sweep, inputs=tuple(fwd.inputs),
        states=tuple(fwd.states), outputs=fwd.outputs, param_pieces=tuple(param_pieces),
        d_outputs=tuple(bwd.d_outputs), d_final=tuple(bwd.d_final),
        d_states=tuple((s.arg, Ref(b)) for s, (_n, b) in zip(merged.states, bwd.d_final,
                                                               strict=True)),
        d_inputs=bwd.d_inputs, grad_pieces=tuple(grad_pieces),
        residuals=tuple(sorted((fw_written & bw_read) - visible)),
        param_shapes=tuple((p.arg, tuple(int(d) for d in p.shape)) for p in cell.params))


def _sub(outer: tuple[int, int] | None, inner: tuple[int, int]) -> tuple[int, int]:
    o = outer[0] if outer is not None else 0
    return (o + inner[0], o + inner[1])


def fusable_node(n: Node) -> bool:  # re-exported for tests
    return fusable(n)
