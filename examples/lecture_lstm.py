"""The main job for now: the LSTM of our user's lecture, declared with the nngraph frontend line
for line as the lecture writes it in Lua, differentiated symbolically, its gradients checked over
T=7 steps against float64 central finite differences, and its forward and backward IR printed.

    python examples/lecture_lstm.py          # exits non-zero if a gradient check fails
"""

from __future__ import annotations

import sys
import time
from types import SimpleNamespace

import numpy as np

import graphrnn
from graphrnn import nn
from graphrnn.printer import format_nodes

INPUT_SIZE, RNN_SIZE, T, BATCH = 8, 16, 7, 3
TOLERANCE = 1e-6


# ---- the lecture's code, in Python (Lua tables are lists) ----
def make_lstm_step(opt, x, prev_h, prev_c):
    def new_input_sum():
        i2h = nn.Linear(opt.input_size, opt.rnn_size)  # input to hidden
        h2h = nn.Linear(opt.rnn_size, opt.rnn_size)    # hidden to hidden
        return nn.CAddTable()([i2h(x), h2h(prev_h)])
    in_gate = nn.Sigmoid()(new_input_sum())
    forget_gate = nn.Sigmoid()(new_input_sum())
    in_gate2 = nn.Tanh()(new_input_sum())
    next_c = nn.CAddTable()([
        nn.CMulTable()([forget_gate, prev_c]),
        nn.CMulTable()([in_gate, in_gate2]),
    ])
    out_gate = nn.Sigmoid()(new_input_sum())
    next_h = nn.CMulTable()([out_gate, nn.Tanh()(next_c)])
    return next_h, next_c


def build_cell() -> graphrnn.Cell:
    opt = SimpleNamespace(input_size=INPUT_SIZE, rnn_size=RNN_SIZE)
    x = nn.Identity()().annotate(name="x")
    prev_h = nn.Identity()().annotate(name="h")
    prev_c = nn.Identity()().annotate(name="c")
    next_h, next_c = make_lstm_step(opt, x, prev_h, prev_c)
    g = nn.gModule([x, prev_h, prev_c], [next_h, next_c])
    # x is read at every step; h and c are carried: next_h -> h, next_c -> c; the output is h
    return g.to_cell(inputs=["x"], states=["h", "c"], next_states=[0, 1], outputs=[0],
                     name="lecture_lstm", dtype="float64")


def print_backward(bw: graphrnn.BackwardCell) -> None:
    cell = bw.cell
    leaves = list(cell.inputs) + list(cell.states) + list(bw.d_outputs) + list(bw.d_next)
    print("backward lecture_lstm(" + ", ".join(str(n.arg) for n in leaves) + ") {")
    lines, names = format_nodes(bw.roots)
    print("\n".join(lines))
    print("  d_states  " + ", ".join(f"d_{s.arg}_prev <- {names[g]}"
                                     for s, g in zip(cell.states, bw.d_states)))
    print("  d_inputs  " + ", ".join(f"d_{x.arg} <- {names[g]}"
                                     for x, g in zip(cell.inputs, bw.d_inputs)))
    print("  d_params  " + ", ".join(f"d_{p.arg} += {names[g]}"
                                     for p, g in zip(cell.params, bw.d_params)))
    print("}")


def check_gradients(cell: graphrnn.Cell, seed: int = 0) -> dict[str, float]:
    """Relative error of <grad, t> against the central difference of the loss in a random
    direction t: one direction per parameter, one for the inputs, one per initial state."""
    cc = graphrnn.compile(cell, backend="ref", dtype="float64")
    rng = np.random.default_rng(seed)
    params = cc.init_params(seed=seed, scale=0.5)
    xs = rng.standard_normal((T, BATCH, INPUT_SIZE))
    h0 = [0.5 * rng.standard_normal((BATCH, RNN_SIZE)) for _ in cell.states]
    r_y = rng.standard_normal((T, BATCH, RNN_SIZE))       # loss = <r_y, ys> + <r_s, final states>
    r_s = [rng.standard_normal((BATCH, RNN_SIZE)) for _ in cell.states]

    def loss(p, x, h):
        ys, hT = cc.forward(p, x, h)
        return float((ys[0] * r_y).sum() + sum((a * b).sum() for a, b in zip(hT, r_s)))

    _, _, res = cc.forward_train(params, xs, h0)
    g = cc.backward(params, res, [r_y], r_s)
    eps = 1e-5
    errors: dict[str, float] = {}

    def record(name: str, analytic: float, plus: float, minus: float) -> None:
        fd = (plus - minus) / (2 * eps)
        errors[name] = abs(fd - analytic) / max(abs(fd), abs(analytic), 1e-300)

    for name, v in params.items():
        t = rng.standard_normal(v.shape)
        shifted = lambda e: loss({**params, name: v + e * t}, xs, h0)  # noqa: E731, B023
        record(name, float((g.params[name] * t).sum()), shifted(eps), shifted(-eps))
    t = rng.standard_normal(xs.shape)
    record("x (all steps)", float((g.inputs[0] * t).sum()),
           loss(params, xs + eps * t, h0), loss(params, xs - eps * t, h0))
    for i, s in enumerate(cell.states):
        t = rng.standard_normal(h0[i].shape)
        hp = [h + eps * t if j == i else h for j, h in enumerate(h0)]
        hm = [h - eps * t if j == i else h for j, h in enumerate(h0)]
        record(f"{s.arg}0", float((g.states[i] * t).sum()), loss(params, xs, hp),
               loss(params, xs, hm))
    return errors


def main() -> int:
    start = time.perf_counter()
    cell = build_cell()
    bw = graphrnn.backward_cell(cell)
    print(f"# forward IR ({len(cell.nodes())} nodes)")
    print(cell)
    print(f"\n# backward IR ({len(graphrnn.ir.toposort(bw.roots))} nodes)")
    print_backward(bw)

    print(f"\n# gradient check: T={T}, batch={BATCH}, input={INPUT_SIZE}, rnn_size={RNN_SIZE}, "
          "float64, central differences, one random direction each")
    errors = check_gradients(cell)
    for name, err in errors.items():
        print(f"  {name:<14} rel err {err:.2e}")
    worst = max(errors.values())
    ok = worst < TOLERANCE
    print(f"max relative error {worst:.2e} (tolerance {TOLERANCE:g}): {'PASS' if ok else 'FAIL'}")
    print(f"({time.perf_counter() - start:.1f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
