"""Split in time: which phase (before the loop, in it, after it) computes each node.

A sweep's leaves are *bound* to known values with a level: ``STATIC`` (parameters, constants:
the same at every step), ``SEQ`` (known for every step before the loop starts: the inputs x_t;
in the backward sweep also the saved forward values and the output cotangents) or ``LOOP`` (the
carried values: h_{t-1} forward, d_h backward). A node's level is the highest of its sources.

Placement (``place``):

* STATIC and SEQ nodes that are not elementwise (GEMMs, gathers, concatenations) go *before the
  loop*: an input projection becomes one GEMM over T·B rows.
* LOOP nodes that the next carried values need stay *in the loop*; the rest go *after the loop*
  if they are GEMMs/reductions (``d_x = dZ @ Wᵀ`` as one GEMM over T·B rows) or depend on
  something after the loop.
* Elementwise nodes follow their consumers (they fuse into the consuming kernels, reading the
  hoisted GEMM results): before the loop when a consumer is there or when the value must be
  stored for all steps anyway; otherwise in the phase of their consumers.
* Parameter-shaped nodes that depend on per-step values are *sums over time*: the backward's
  ``dW = Σ_t x_tᵀ dz_t`` is one GEMM ``Xᵀ DZ`` over T·B rows. They may feed only other
  parameter-shaped nodes (the gradient is linear in the cotangent, so later parameter-shaped
  arithmetic commutes with the sum); a per-step node reading one (a batch statistic inside the
  recurrence) is rejected.
* A recurrence whose loop phase holds no GEMM is *diagonal* (``Sweep.diagonal``): a backend may
  run the whole loop in one kernel.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from .errors import BackendError
from .fuse import fusable
from .ir import B, Node, toposort, where
from .ops import Ops

STATIC, SEQ, LOOP = 0, 1, 2
PHASES = ("pre", "step", "post")


def is_batch(n: Node) -> bool:
    return n.shape[0] == B


def consumers(order: Sequence[Node], bound: Iterable[Node]) -> dict[Node, list[Node]]:
    b = set(bound)
    cons: dict[Node, list[Node]] = defaultdict(list)
    for n in order:
        if n in b:
            continue
        for s in n.src:
            if n not in cons[s]:
                cons[s].append(n)
    return cons


def walk(roots: Sequence[Node], bound: dict[Node, int]) -> list[Node]:
    """Nodes reachable from roots without looking below bound nodes, sources first."""
    return toposort(roots, stop=bound)


def levels(order: Sequence[Node], bound: dict[Node, int]) -> dict[Node, int]:
    lv: dict[Node, int] = {}
    for n in order:
        if n in bound:
            lv[n] = bound[n]
        elif n.op in (Ops.PARAM, Ops.CONST):
            lv[n] = STATIC
        elif n.op in (Ops.INPUT, Ops.STATE):
            raise BackendError(f"{n.op.name.lower()} {n.arg!r} has no binding in this sweep"
                               f"{where(n)}")
        else:
            lv[n] = max((lv[s] for s in n.src), default=STATIC)
    return lv


def place(roots: Sequence[Node], bound: dict[Node, int], carry_roots: Sequence[Node],
          keep: Iterable[Node] = ()) -> tuple[list[Node], dict[Node, int], dict[Node, str]]:
    """(order, levels, phase) for every unbound, non-constant node under roots. ``carry_roots``
    are the next values of the carried leaves; ``keep`` are nodes whose values must be stored
    for all steps (outputs, residuals)."""
    order = walk(roots, bound)
    lv = levels(order, bound)
    cons = consumers(order, bound)
    keep_set = set(keep) | set(roots)
    # nodes the next carried values need
    needed: set[Node] = set()
    for n in reversed(walk(carry_roots, bound)):
        if n in bound:
            continue
        if n in carry_roots or any(c in needed for c in cons.get(n, [])):
            needed.add(n)
    phase: dict[Node, str] = {}
    # loop-level nodes: sources first
    for n in order:
        if n in bound or n.op is Ops.CONST or lv[n] != LOOP:
            continue
        if not is_batch(n):
            if n in needed:
                raise BackendError(f"{n.op.name.lower()} sums over the batch inside the "
                                   f"recurrence; this is not supported{where(n)}")
            phase[n] = "post"
        elif n in needed:
            phase[n] = "step"
        elif fusable(n) or n.op in (Ops.SLICE, Ops.CONCAT):
            post_src = any(phase.get(s) == "post" for s in n.src if lv.get(s) == LOOP)
            phase[n] = "post" if post_src else "step"
        else:
            phase[n] = "post"
    # static and per-step nodes: consumers first
    for n in reversed(order):
        if n in bound or n.op is Ops.CONST or lv[n] == LOOP:
            continue
        if not is_batch(n):
            phase[n] = "pre"   # parameter-shaped: computed once (or a sum over known steps)
            continue
        if not (fusable(n) or n.op in (Ops.SLICE, Ops.CONCAT)) or n in keep_set:
            phase[n] = "pre"
            continue
        used = {phase[c] for c in cons.get(n, []) if c in phase}
        phase[n] = used.pop() if len(used) == 1 else "pre"
    # a parameter-shaped sum over time must not feed a per-step value
    for n in order:
        if n in phase and not is_batch(n) and lv[n] >= SEQ:
            for c in cons.get(n, []):
                if is_batch(c) and c not in bound:
                    raise BackendError(f"{c.op.name.lower()} reads a sum over the batch "
                                       f"({n.op.name.lower()}) inside a step; batch statistics "
                                       f"are not supported{where(c)}")
    return order, lv, phase
