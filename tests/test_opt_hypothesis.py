"""Property tests: random cells (random elementwise trees over inputs and states, random matmul
placement) give the same forward values and gradients before and after optimization; every
kernel group is convex; every Program validates (build_plan runs validate).

The generator also writes Linears (``a @ W + b``, so biases on the blocks of packed GEMMs get
packed), weights on the left (``a @ Wᵀ``, the equations' form) and states read both by a matmul
and elementwise (carried cotangents that the schedule builds by accumulating GEMMs)."""

from __future__ import annotations

import os

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from test_opt_plan import compare  # noqa: E402

from frontends.trace import CellBuilder, concat, sigmoid, tanh  # noqa: E402
from graphrnn.fuse import is_convex  # noqa: E402
from graphrnn.ir import Node, apply  # noqa: E402
from graphrnn.ops import Ops  # noqa: E402
from graphrnn.pipeline import build_plan  # noqa: E402

W = 3
# a local soak: GRAPHRNN_HYPOTHESIS_EXAMPLES=600 pytest tests/test_opt_hypothesis.py
MAX_EXAMPLES = int(os.environ.get("GRAPHRNN_HYPOTHESIS_EXAMPLES", "30"))
UNARY = [tanh, sigmoid, lambda a: -a, lambda a: apply(Ops.SOFTPLUS, a)]
BINARY = [lambda a, b: a + b, lambda a, b: a - b, lambda a, b: a * b]


@st.composite
def random_cell(draw: st.DrawFn) -> object:
    cb = CellBuilder("rand", "float64")
    n_states = draw(st.integers(1, 2))
    pool: list[Node] = [cb.input("x", W)] + [cb.state(f"h{i}", W) for i in range(n_states)]
    n_params = [0]

    def matmul(a: Node) -> Node:
        n_params[0] += 1
        return a @ cb.param(f"W{n_params[0]}", (W, W))

    for _ in range(draw(st.integers(2, 7))):
        kind = draw(st.sampled_from(["unary", "binary", "matmul", "matmul_concat", "bias",
                                     "linear", "matmul_t", "gates"]))
        a = draw(st.sampled_from(pool))
        if kind == "unary":
            pool.append(draw(st.sampled_from(UNARY))(a))
        elif kind == "binary":
            pool.append(draw(st.sampled_from(BINARY))(a, draw(st.sampled_from(pool))))
        elif kind == "matmul":
            pool.append(matmul(a))
        elif kind == "matmul_concat":
            b = draw(st.sampled_from(pool))
            n_params[0] += 1
            pool.append(concat([a, b]) @ cb.param(f"W{n_params[0]}", (2 * W, W)))
        elif kind == "linear":
            pool.append(matmul(a) + cb.param(f"b{n_params[0]}", (1, W)))
        elif kind == "gates":
            # per-gate Linears on one operand, as the lecture writes them (W on the left or
            # the right): they pack into one GEMM and their biases into one bias
            t = draw(st.booleans())
            for _g in range(draw(st.integers(2, 3))):
                n_params[0] += 1
                w = cb.param(f"W{n_params[0]}", (W, W))
                prod = apply(Ops.MATMUL, a, w, arg=(False, t))
                pool.append(prod + cb.param(f"b{n_params[0]}", (1, W)))
        elif kind == "matmul_t":
            n_params[0] += 1
            pool.append(apply(Ops.MATMUL, a, cb.param(f"W{n_params[0]}", (W, W)),
                              arg=(False, True)))
        else:
            n_params[0] += 1
            pool.append(a + cb.param(f"b{n_params[0]}", (1, W)))
    nxt = [tanh(draw(st.sampled_from(pool[1:])) + pool[0]) for _ in range(n_states)]
    out = draw(st.sampled_from(pool[1:] + nxt))
    return cb.build([out], nxt)


@settings(max_examples=MAX_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(random_cell())
def test_random_cells_match_reference(cell: object) -> None:
    compare(cell, T=3, B=2, tol=1e-9)  # type: ignore[arg-type]
    plan = build_plan(cell)  # type: ignore[arg-type]
    for groups, deps in ((plan.forward_groups, plan.forward_deps),
                         (plan.backward_groups, plan.backward_deps)):
        for g in groups:
            assert is_convex(g, deps)
