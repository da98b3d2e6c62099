"""The IR core: hash-consing, immutability, inference errors at the user's line, EXPAND insertion,
graph walks, retyping, Cell validation and the SSA text form."""

import pickle
import sys

import pytest

from frontends.trace import tanh
from graphrnn.errors import GraphError, ShapeError
from graphrnn.ir import (
    B,
    Cell,
    Node,
    apply,
    const,
    frontend_scope,
    input_,
    param,
    retype,
    site_of,
    state,
    substitute,
    toposort,
)
from graphrnn.ops import GroupOp, Ops


def here() -> int:
    """The line number of the caller."""
    return sys._getframe(1).f_lineno


def rnn(name="rnn", dtype="float32"):
    x, h = input_("x", 2, dtype), state("h", 3, dtype)
    hn = tanh(x @ param("W", (2, 3), dtype) + h @ param("U", (3, 3), dtype)
              + param("b", (1, 3), dtype))
    return Cell.make([x], [h], [hn], [hn], name)


# ---- hash-consing and immutability ----

def test_identical_structure_is_the_identical_object():
    a, b = input_("hc_a", 4), input_("hc_a", 4)
    assert a is b
    assert (a + 1.0) is (b + 1.0)
    assert apply(Ops.TANH, a) is apply(Ops.TANH, b)
    assert input_("hc_a", 4, "float64") is not a          # dtype is part of the key
    assert input_("hc_a", 5) is not a                     # so is the shape
    assert state("hc_a", 4) is not a                      # and the op
    assert const(1.0, (B, 4)) is const(1, (B, 4))


def test_nodes_are_immutable_and_not_pickled():
    x = input_("im_x", 2)
    with pytest.raises(AttributeError, match="immutable; use replace"):
        x.shape = (B, 3)
    with pytest.raises(TypeError, match="nodes are not pickled"):
        pickle.dumps(x)
    y = x.replace(arg="im_y")
    assert y is input_("im_y", 2) and x.arg == "im_x"
    assert x.replace() is x


def test_unhashable_arg_is_a_clear_error():
    with pytest.raises(TypeError, match="node arg must be hashable"):
        Node(Ops.CONST, "float32", (B, 2), (), [1.0])


def test_node_misuse_messages():
    x = input_("mu_x", 4)
    with pytest.raises(TypeError, match="a Node is not iterable.*did you mean node.split"):
        list(x)
    with pytest.raises(ShapeError, match="transposes are not values"):
        _ = x.T
    with pytest.raises(ShapeError, match=r"only the powers 0.5, 1 and 2"):
        _ = x ** 3
    assert (x ** 2).op is Ops.MUL and (x ** 0.5).op is Ops.SQRT and x ** 1 is x
    s = x[:, 1:3]
    assert s.op is Ops.SLICE and s.arg == (1, 3) and s.shape == (B, 2)
    assert x[1:3] is s
    with pytest.raises(ShapeError, match="only feature slices"):
        _ = x[0]
    with pytest.raises(ShapeError, match="expected a Node or a number, got str"):
        _ = x + "a"


# ---- inference errors name the user's file:line ----

def test_shape_mismatch_names_the_users_line():
    line = here() + 1
    a, b = input_("sm_a", 3), state("sm_b", 4)
    with pytest.raises(ShapeError) as ei:
        _ = a + b
    msg = str(ei.value)
    assert "shape mismatch: f32[B,3] vs f32[B,4]" in msg
    assert f"test_ir.py:{line}" in msg


def test_matmul_errors():
    x = input_("mm_x", 3)
    line = here() + 1
    w = param("mm_W", (4, 5))
    with pytest.raises(ShapeError, match=r"matmul: inner sizes differ: f32\[B,3\] @ f32\[4,5\] "
                                         r"\(3 vs 4\)") as ei:
        _ = x @ w
    assert f"test_ir.py:{here() - 3}" in str(ei.value) or "test_ir.py" in str(ei.value)
    assert site_of(w).line == line
    with pytest.raises(ShapeError, match=r"matmul: dtypes differ"):
        apply(Ops.MATMUL, x, param("mm_V", (3, 2), "float64"), arg=(False, False))
    # transpose flags pick the contracted axes
    assert apply(Ops.MATMUL, x, param("mm_T", (5, 3)), arg=(False, True)).shape == (B, 5)
    assert apply(Ops.MATMUL, x, x, arg=(True, False)).shape == (3, 3)


def test_other_inference_errors():
    x, y = input_("ie_x", 3), input_("ie_y", 3, "float64")
    with pytest.raises(ShapeError, match=r"add: operands must share one float dtype"):
        apply(Ops.ADD, x, y)
    with pytest.raises(ShapeError, match=r"add: operands must have one shape"):
        apply(Ops.ADD, x, param("ie_p", (1, 3)))
    with pytest.raises(ShapeError, match=r"tanh: expected 1 operands, got 2"):
        apply(Ops.TANH, x, x)
    with pytest.raises(ShapeError, match=r"slice \[2:5\] out of range for f32\[B,3\]"):
        apply(Ops.SLICE, x, arg=(2, 5))
    with pytest.raises(ShapeError, match=r"concat: operands need the same rows and dtype"):
        apply(Ops.CONCAT, x, y)
    with pytest.raises(ShapeError, match=r"concat: nothing to concatenate"):
        apply(Ops.CONCAT)
    with pytest.raises(ShapeError, match=r"expand: cannot broadcast f32\[B,3\] to \('B', 4\)"):
        apply(Ops.EXPAND, x, arg=(B, 4))
    with pytest.raises(ShapeError, match=r"gather: ids must be i64\[B,1\]"):
        apply(Ops.GATHER, param("ie_E", (5, 2)), x)
    with pytest.raises(ShapeError, match=r"reduce: bad arg"):
        apply(Ops.REDUCE, x, arg=("mean", 1))
    with pytest.raises(ShapeError, match=r"expected Node operands, got int"):
        apply(Ops.NEG, 3)
    with pytest.raises(ShapeError, match=r"get: source must be a multi-output node"):
        apply(Ops.GET, x, arg=0)
    with pytest.raises(ShapeError, match=r"must share one float dtype, got i64\[B,1\]"):
        apply(Ops.TANH, input_("ie_ids", 1, "int64"))


def test_leaf_validation():
    with pytest.raises(ShapeError, match=r"input name must be an identifier, got '1x'"):
        input_("1x", 3)
    with pytest.raises(ShapeError, match=r"state h: shape must be 2-D of positive sizes"):
        state("h", 0)
    with pytest.raises(ShapeError, match=r"param W: dtype must be one of"):
        param("W", (2, 2), "float16")
    with pytest.raises(ShapeError, match=r"parameters cannot have the batch dimension"):
        param("W", (B, 2))


def test_frontend_scope_and_sites():
    with frontend_scope("myfrontend"):
        line = here() + 1
        n = input_("fs_unique_x", 7)
    s = site_of(n)
    assert (s.frontend, s.line) == ("myfrontend", line)
    assert s.file.endswith("test_ir.py") and str(s).endswith(f"test_ir.py:{line}")
    # a second creation of the same node keeps the first site
    m = input_("fs_unique_x", 7)
    assert m is n and site_of(m).line == line


# ---- EXPAND insertion ----

def test_broadcasting_inserts_explicit_expand():
    x, b = input_("bx_x", 3), param("bx_b", (1, 3))
    y = x + b
    assert y.op is Ops.ADD and y.src[0] is x
    assert y.src[1].op is Ops.EXPAND and y.src[1].arg == (B, 3) and y.src[1].src[0] is b
    z = b * x  # either side
    assert z.src[0].op is Ops.EXPAND and z.src[1] is x
    c = 1 - x  # numbers become constants of the full shape
    assert c.src[0].op is Ops.CONST and c.src[0].shape == (B, 3) and c.src[0].arg == 1.0
    col = param("bx_col", (3, 1))
    outer = col * param("bx_row", (1, 4))
    assert outer.shape == (3, 4) and all(s.op is Ops.EXPAND for s in outer.src)
    # the IR itself never broadcasts
    with pytest.raises(ShapeError):
        apply(Ops.ADD, x, b)


# ---- graph walks ----

def test_toposort_orders_sources_first_each_once():
    cell = rnn()
    order = toposort(cell.roots)
    pos = {n: i for i, n in enumerate(order)}
    assert len(order) == len(set(order))
    for n in order:
        for s in n.src:
            assert pos[s] < pos[n]
    assert order[-1] is cell.outputs[0]


def test_toposort_deep_chain_has_no_recursion_limit():
    x = input_("deep_x", 2)
    y = x
    for _ in range(5000):
        y = apply(Ops.NEG, y)
    order = toposort([y])
    assert len(order) == 5001 and order[0] is x


def test_substitute_rebuilds_and_keeps_sharing():
    x, h = input_("sb_x", 2), state("sb_h", 2)
    a = tanh(x)
    y = a * a + h
    (z,) = substitute([y], {x: h})
    assert z.op is Ops.ADD and z.src[0].src[0] is z.src[0].src[1]
    assert z.src[0].src[0] is tanh(h)
    assert substitute([y], {}) == [y]


def test_retype_and_with_dtype():
    cell = rnn("rt")
    c64 = cell.with_dtype("float64")
    assert c64.dtype == "float64" and cell.dtype == "float32"
    assert all(n.dtype == "float64" for n in c64.nodes())
    assert [p.arg for p in c64.params] == [p.arg for p in cell.params]
    assert c64.with_dtype("float64") is c64 and cell.with_dtype("float32") is cell
    assert c64.with_dtype("float32").outputs[0] is cell.outputs[0]  # hash-consed round trip
    with pytest.raises(ShapeError, match="dtype must be one of"):
        cell.with_dtype("float16")
    # int64 ids stay int64; sites carry over
    ids = input_("rt_ids", 1, "int64")
    line = here() + 1
    g = apply(Ops.GATHER, param("rt_E", (5, 2)), ids)
    (g64,) = retype([g], "float64")
    assert g64.dtype == "float64" and g64.src[1] is ids
    assert site_of(g64).line == line


# ---- the Cell ----

def test_cell_collects_params_in_first_use_order():
    cell = rnn()
    assert [p.arg for p in cell.params] == ["W", "U", "b"]
    assert cell.param_shapes() == {"W": (2, 3), "U": (3, 3), "b": (1, 3)}
    assert cell.roots == cell.outputs + cell.next_states
    assert Cell(cell.inputs, cell.states, cell.outputs, cell.next_states,
                cell.params[::-1]).params == cell.params[::-1]


def test_cell_validation_errors():
    x, h, c = input_("cv_x", 2), state("cv_h", 3), state("cv_c", 3)
    hn = tanh(x @ param("cv_W", (2, 3)) + h)
    with pytest.raises(GraphError, match=r"inputs must be INPUT nodes"):
        Cell.make([h], [h], [hn], [hn])
    with pytest.raises(GraphError, match=r"states must be STATE nodes"):
        Cell.make([x], [x], [hn], [hn])
    with pytest.raises(GraphError, match=r"no outputs"):
        Cell.make([x], [], [], [])
    with pytest.raises(GraphError, match=r"1 states but 2 next states"):
        Cell.make([x], [h], [hn], [hn, hn])
    with pytest.raises(GraphError, match=r"next state of cv_h is f32\[B,2\] but the state is "
                                         r"f32\[B,3\]"):
        Cell.make([x], [h], [hn], [x])
    with pytest.raises(GraphError, match=r"next state for cv_h is 3"):
        Cell.make([x], [h], [hn], [3])
    with pytest.raises(GraphError, match=r"state 'cv_c' is used but not declared"):
        Cell.make([x], [h], [hn + c], [hn])
    with pytest.raises(GraphError, match=r"input 'cv_x' is used but not declared"):
        Cell.make([], [h], [hn], [hn])
    dup = input_("cv_h", 3)
    with pytest.raises(GraphError, match=r"duplicate input/state names \['cv_h'\]"):
        Cell.make([dup], [h], [h + dup], [h])
    with pytest.raises(GraphError, match=r"two parameters share the names \['cv_W'\]"):
        Cell.make([x], [h], [hn + x @ param("cv_W", (2, 3)) * 0 + h @ param("cv_W", (3, 3))],
                  [hn])
    with pytest.raises(GraphError, match=r"declared params differ"):
        Cell([x], [h], [hn], [hn], (param("cv_other", (1, 1)),))
    h64 = state("cv_h64", 3, "float64")
    with pytest.raises(GraphError, match=r"mixes float32 and float64"):
        Cell.make([x], [h, h64], [hn], [hn, h64])


# ---- SSA text ----

def test_cell_prints_as_ssa_text():
    text = str(rnn("printed"))
    assert text == "\n".join([
        "cell printed(x: f32[B,2]; h: f32[B,3]) params(W: f32[2,3], U: f32[3,3], b: f32[1,3]) {",
        "  %0 = matmul x, W                           : f32[B,3]",
        "  %1 = matmul h, U                           : f32[B,3]",
        "  %2 = add %0, %1                            : f32[B,3]",
        "  %3 = expand to B,3 b                       : f32[B,3]",
        "  %4 = add %2, %3                            : f32[B,3]",
        "  %5 = tanh %4                               : f32[B,3]",
        "  out  %4".replace("%4", "%5"),
        "  next h <- %5",
        "}",
    ])


def test_printer_context_marks_the_bad_node():
    from graphrnn.printer import context, format_nodes
    cell = rnn()
    bad = cell.outputs[0].src[0]
    ctx = context(cell.roots, bad, radius=1)
    lines = ctx.splitlines()
    assert len(lines) == 3 and "<-- here" in lines[1] and lines[1].lstrip().startswith("%4")
    sl, names = format_nodes([apply(Ops.SLICE, cell.outputs[0], arg=(0, 2))])
    assert "slice [0:2] %5" in sl[-1] and names[cell.inputs[0]] == "x"


def test_ops_groups_are_consistent():
    assert GroupOp.Elementwise == GroupOp.Unary | GroupOp.Binary | GroupOp.Ternary
    assert not (GroupOp.Unary & GroupOp.Binary)
    assert GroupOp.Leaf <= GroupOp.Unfusable
    assert GroupOp.Commutative <= GroupOp.Binary
