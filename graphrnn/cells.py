"""The cell zoo: well-known RNN cells as ``Cell`` builders, written with ``graphrnn.builder``
(the trace frontend's operator sugar, kept in the core so that the zoo needs no frontend).

Every builder takes ``input_size`` and ``hidden_size`` (plus ``dtype`` and cell-specific options)
and returns a one-step ``Cell`` with the input ``x`` (B, I), the state ``h`` (B, H) (the LSTMs
also ``c``) and the output h'. Weights follow the IR's convention ``x @ W`` with W (in, out);
biases are (1, out). Fused weights (W_x (I, 4H) of an LSTM) hold the gates side by side in a
documented order, so the optimizer sees one GEMM per operand and the converters in
``graphrnn.convert`` can move weights from and to other code bases.

``ZOO`` maps a name to its builder; ``zoo_cell(name, input_size, hidden_size, dtype)`` builds
one. ``SQUARE_INPUT`` names the cells whose published equations add x to a hidden-size vector
(MUT1, MUT2) and therefore need ``input_size == hidden_size``.
"""

from __future__ import annotations

from collections.abc import Callable

from .builder import CellBuilder, concat, relu, sigmoid, tanh
from .errors import ShapeError
from .ir import Cell, Node

# gate orders of the fused LSTM weights: one letter per gate, in column-block order
GATE_ORDERS = {"pytorch": "ifgo", "charrnn": "ifog", "char-rnn": "ifog", "zaremba": "igfo"}


def canonical_gate_order(order: str) -> str:
    """``"ifgo"``/``"pytorch"``, ``"ifog"``/``"char-rnn"``, ``"igfo"``/``"zaremba"`` -> letters.
    Any permutation of the four letters i, f, g, o is accepted."""
    letters = GATE_ORDERS.get(order.lower(), order) if isinstance(order, str) else order
    if not isinstance(letters, str) or sorted(letters) != sorted("ifgo"):
        raise ValueError(f"gate_order must be a permutation of 'ifgo' or one of "
                         f"{sorted(GATE_ORDERS)}, got {order!r}")
    return letters


def gate_meta(gates: str, gate_biases: tuple[str, ...] = ("b",)) -> dict[str, object]:
    """``Cell.meta`` of a cell with fused gates: ``gates`` are the letters of the column blocks
    of its fused pre-activation, in order (i, f, g, o: input, forget, candidate, output), and
    ``gate_biases`` the (1, len(gates) * H) parameters laid out in that order whose sum is each
    gate's bias. Tools (``graphrnn.model.forget_bias_overrides``) read the forget gate's slice
    from it instead of guessing a layout from names and widths."""
    return {"gates": gates, "gate_biases": tuple(gate_biases)}


def _sizes(name: str, input_size: int, hidden_size: int) -> None:
    for arg, v in (("input_size", input_size), ("hidden_size", hidden_size)):
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ShapeError(f"{name}: {arg} must be a positive int, got {v!r}")


def _gates(z: Node, hidden_size: int, order: str) -> dict[str, Node]:
    """Column blocks of a fused pre-activation, by gate letter."""
    H = hidden_size
    return {g: z[:, k * H:(k + 1) * H] for k, g in enumerate(order)}


def rnn_tanh(input_size: int, hidden_size: int, dtype: str = "float32") -> Cell:
    """Vanilla (Elman) RNN: h' = tanh(x W_x + h W_h + b).

    Params: W_x (I, H), W_h (H, H), b (1, H). PyTorch's ``nn.RNN`` with two biases summed."""
    _sizes("rnn_tanh", input_size, hidden_size)
    cb = CellBuilder("rnn_tanh", dtype)
    x, h = cb.input("x", input_size), cb.state("h", hidden_size)
    W_x = cb.param("W_x", (input_size, hidden_size))
    W_h = cb.param("W_h", (hidden_size, hidden_size))
    b = cb.param("b", (1, hidden_size))
    h2 = tanh(x @ W_x + h @ W_h + b)
    return cb.build([h2], {"h": h2}, ["h"])


def lstm(input_size: int, hidden_size: int, dtype: str = "float32", gate_order: str = "ifgo",
         forget_bias: float = 0.0) -> Cell:
    """LSTM with a forget gate (Gers, Schmidhuber, Cummins 2000), fused weights:

        z = x W_x + h W_h + b                  W_x (I, 4H), W_h (H, 4H), b (1, 4H)
        i = sigmoid(z_i)   f = sigmoid(z_f + forget_bias)   g = tanh(z_g)   o = sigmoid(z_o)
        c' = f * c + i * g
        h' = o * tanh(c')

    The four column blocks of z are in ``gate_order``: "ifgo" (PyTorch, the default), "ifog"
    (char-rnn), "igfo" (Zaremba et al. 2014). ``forget_bias`` is a constant added to the forget
    gate's pre-activation, as TensorFlow's BasicLSTMCell does (1.0 keeps the memory open early in
    training); the converters subtract it from b so that a converted cell stays the same
    function. States: h, c; output: h'."""
    _sizes("lstm", input_size, hidden_size)
    order = canonical_gate_order(gate_order)
    H = hidden_size
    cb = CellBuilder("lstm", dtype)
    x, h, c = cb.input("x", input_size), cb.state("h", H), cb.state("c", H)
    W_x = cb.param("W_x", (input_size, 4 * H))
    W_h = cb.param("W_h", (H, 4 * H))
    b = cb.param("b", (1, 4 * H))
    z = _gates(x @ W_x + h @ W_h + b, H, order)
    zf = z["f"] + float(forget_bias) if forget_bias else z["f"]
    i, f, g, o = sigmoid(z["i"]), sigmoid(zf), tanh(z["g"]), sigmoid(z["o"])
    c2 = f * c + i * g
    h2 = o * tanh(c2)
    return cb.build([h2], {"h": h2, "c": c2}, ["h"]).with_meta(**gate_meta(order))


def lstm_no_forget(input_size: int, hidden_size: int, dtype: str = "float32") -> Cell:
    """The original LSTM without a forget gate (Hochreiter & Schmidhuber 1997):

        z = x W_x + h W_h + b                  W_x (I, 3H), W_h (H, 3H), b (1, 3H), blocks i, g, o
        i = sigmoid(z_i)   g = tanh(z_g)   o = sigmoid(z_o)
        c' = c + i * g                         (the constant error carousel)
        h' = o * tanh(c')
    """
    _sizes("lstm_no_forget", input_size, hidden_size)
    H = hidden_size
    cb = CellBuilder("lstm_no_forget", dtype)
    x, h, c = cb.input("x", input_size), cb.state("h", H), cb.state("c", H)
    W_x = cb.param("W_x", (input_size, 3 * H))
    W_h = cb.param("W_h", (H, 3 * H))
    b = cb.param("b", (1, 3 * H))
    z = _gates(x @ W_x + h @ W_h + b, H, "igo")
    i, g, o = sigmoid(z["i"]), tanh(z["g"]), sigmoid(z["o"])
    c2 = c + i * g
    h2 = o * tanh(c2)
    return cb.build([h2], {"h": h2, "c": c2}, ["h"]).with_meta(**gate_meta("igo"))


def peephole_lstm(input_size: int, hidden_size: int, dtype: str = "float32") -> Cell:
    """LSTM with peephole connections (Gers & Schmidhuber 2000; Gers, Schraudolph,
    Schmidhuber 2002), diagonal peephole weights p_i, p_f, p_o (1, H) multiplied elementwise:

        z = x W_x + h W_h + b                  W_x (I, 4H), W_h (H, 4H), b (1, 4H), blocks i f g o
        i = sigmoid(z_i + p_i * c)
        f = sigmoid(z_f + p_f * c)
        g = tanh(z_g)
        c' = f * c + i * g
        o = sigmoid(z_o + p_o * c')            (the output gate sees the new cell)
        h' = o * tanh(c')
    """
    _sizes("peephole_lstm", input_size, hidden_size)
    H = hidden_size
    cb = CellBuilder("peephole_lstm", dtype)
    x, h, c = cb.input("x", input_size), cb.state("h", H), cb.state("c", H)
    W_x = cb.param("W_x", (input_size, 4 * H))
    W_h = cb.param("W_h", (H, 4 * H))
    b = cb.param("b", (1, 4 * H))
    p_i, p_f, p_o = (cb.param(n, (1, H)) for n in ("p_i", "p_f", "p_o"))
    z = _gates(x @ W_x + h @ W_h + b, H, "ifgo")
    i = sigmoid(z["i"] + p_i * c)
    f = sigmoid(z["f"] + p_f * c)
    g = tanh(z["g"])
    c2 = f * c + i * g
    o = sigmoid(z["o"] + p_o * c2)
    h2 = o * tanh(c2)
    return cb.build([h2], {"h": h2, "c": c2}, ["h"]).with_meta(**gate_meta("ifgo"))


def cifg_lstm(input_size: int, hidden_size: int, dtype: str = "float32") -> Cell:
    """Coupled input-forget gate LSTM (Greff et al. 2017, "LSTM: A Search Space Odyssey"):

        z = x W_x + h W_h + b                  W_x (I, 3H), W_h (H, 3H), b (1, 3H), blocks i g o
        i = sigmoid(z_i)   f = 1 - i   g = tanh(z_g)   o = sigmoid(z_o)
        c' = f * c + i * g
        h' = o * tanh(c')
    """
    _sizes("cifg_lstm", input_size, hidden_size)
    H = hidden_size
    cb = CellBuilder("cifg_lstm", dtype)
    x, h, c = cb.input("x", input_size), cb.state("h", H), cb.state("c", H)
    W_x = cb.param("W_x", (input_size, 3 * H))
    W_h = cb.param("W_h", (H, 3 * H))
    b = cb.param("b", (1, 3 * H))
    z = _gates(x @ W_x + h @ W_h + b, H, "igo")
    i, g, o = sigmoid(z["i"]), tanh(z["g"]), sigmoid(z["o"])
    f = 1.0 - i
    c2 = f * c + i * g
    h2 = o * tanh(c2)
    # no "f" block: the forget gate is 1 - i and has no bias of its own
    return cb.build([h2], {"h": h2, "c": c2}, ["h"]).with_meta(**gate_meta("igo"))


def gru(input_size: int, hidden_size: int, dtype: str = "float32") -> Cell:
    """GRU as the lectures write it (Cho et al. 2014, with the reset gate applied before the
    matrix), on concatenations ``[h, x]``:

        [z, r] = sigmoid([h, x] W_g + b_g)     W_g (H+I, 2H), b_g (1, 2H), blocks z r
        h~ = tanh([r * h, x] W_c + b_c)        W_c (H+I, H), b_c (1, H)
        h' = (1 - z) * h + z * h~

    This is not PyTorch's GRU (see ``gru_torch`` and ``graphrnn.convert``): the reset gate
    scales h before the matrix, and z weighs the candidate rather than the old state."""
    _sizes("gru", input_size, hidden_size)
    H = hidden_size
    cb = CellBuilder("gru", dtype)
    x, h = cb.input("x", input_size), cb.state("h", H)
    W_g = cb.param("W_g", (H + input_size, 2 * H))
    b_g = cb.param("b_g", (1, 2 * H))
    W_c = cb.param("W_c", (H + input_size, H))
    b_c = cb.param("b_c", (1, H))
    zr = sigmoid(concat([h, x]) @ W_g + b_g)
    z, r = zr[:, 0:H], zr[:, H:2 * H]
    h_cand = tanh(concat([r * h, x]) @ W_c + b_c)
    h2 = (1.0 - z) * h + z * h_cand
    return cb.build([h2], {"h": h2}, ["h"])


def gru_torch(input_size: int, hidden_size: int, dtype: str = "float32") -> Cell:
    """PyTorch's ``nn.GRU`` (the "reset after" variant of cuDNN), gate blocks r, z, n:

        a = x W_x + b_x                        W_x (I, 3H), b_x (1, 3H)   (weight_ih.T, bias_ih)
        u = h W_h + b_h                        W_h (H, 3H), b_h (1, 3H)   (weight_hh.T, bias_hh)
        r = sigmoid(a_r + u_r)   z = sigmoid(a_z + u_z)
        n = tanh(a_n + r * u_n)                (= tanh(W_in x + b_in + r * (W_hn h + b_hn)))
        h' = (1 - z) * n + z * h
    """
    _sizes("gru_torch", input_size, hidden_size)
    H = hidden_size
    cb = CellBuilder("gru_torch", dtype)
    x, h = cb.input("x", input_size), cb.state("h", H)
    W_x = cb.param("W_x", (input_size, 3 * H))
    W_h = cb.param("W_h", (H, 3 * H))
    b_x = cb.param("b_x", (1, 3 * H))
    b_h = cb.param("b_h", (1, 3 * H))
    a = _gates(x @ W_x + b_x, H, "rzn")
    u = _gates(h @ W_h + b_h, H, "rzn")
    r = sigmoid(a["r"] + u["r"])
    z = sigmoid(a["z"] + u["z"])
    n = tanh(a["n"] + r * u["n"])
    h2 = (1.0 - z) * n + z * h
    return cb.build([h2], {"h": h2}, ["h"])


def _square(name: str, input_size: int, hidden_size: int) -> None:
    if input_size != hidden_size:
        raise ShapeError(f"{name}: the paper's equations add x to a hidden-size vector, so "
                         f"input_size must equal hidden_size; got input_size={input_size}, "
                         f"hidden_size={hidden_size} (project the input to the hidden size "
                         "first, as Jozefowicz et al. do with an embedding)")


def mut1(input_size: int, hidden_size: int, dtype: str = "float32") -> Cell:
    """MUT1 of Jozefowicz, Zaremba, Sutskever 2015 ("An Empirical Exploration of Recurrent
    Network Architectures", ICML), in the paper's notation with ``W x`` written ``x W``:

        z = sigm(W_xz x + b_z)
        r = sigm(W_xr x + W_hr h + b_r)
        h' = tanh(W_hh (r * h) + tanh(x) + b_h) * z + h * (1 - z)

    ``tanh(x)`` is added to a hidden-size vector: input_size must equal hidden_size."""
    _sizes("mut1", input_size, hidden_size)
    _square("mut1", input_size, hidden_size)
    H = hidden_size
    cb = CellBuilder("mut1", dtype)
    x, h = cb.input("x", input_size), cb.state("h", H)
    W_xz, W_xr = cb.param("W_xz", (input_size, H)), cb.param("W_xr", (input_size, H))
    W_hr, W_hh = cb.param("W_hr", (H, H)), cb.param("W_hh", (H, H))
    b_z, b_r, b_h = (cb.param(n, (1, H)) for n in ("b_z", "b_r", "b_h"))
    z = sigmoid(x @ W_xz + b_z)
    r = sigmoid(x @ W_xr + h @ W_hr + b_r)
    h2 = tanh((r * h) @ W_hh + tanh(x) + b_h) * z + h * (1.0 - z)
    return cb.build([h2], {"h": h2}, ["h"])


def mut2(input_size: int, hidden_size: int, dtype: str = "float32") -> Cell:
    """MUT2 of Jozefowicz, Zaremba, Sutskever 2015:

        z = sigm(W_xz x + W_hz h + b_z)
        r = sigm(x + W_hr h + b_r)
        h' = tanh(W_hh (r * h) + W_xh x + b_h) * z + h * (1 - z)

    ``x`` is added to a hidden-size vector: input_size must equal hidden_size."""
    _sizes("mut2", input_size, hidden_size)
    _square("mut2", input_size, hidden_size)
    H = hidden_size
    cb = CellBuilder("mut2", dtype)
    x, h = cb.input("x", input_size), cb.state("h", H)
    W_xz, W_xh = cb.param("W_xz", (input_size, H)), cb.param("W_xh", (input_size, H))
    W_hz, W_hr, W_hh = (cb.param(n, (H, H)) for n in ("W_hz", "W_hr", "W_hh"))
    b_z, b_r, b_h = (cb.param(n, (1, H)) for n in ("b_z", "b_r", "b_h"))
    z = sigmoid(x @ W_xz + h @ W_hz + b_z)
    r = sigmoid(x + h @ W_hr + b_r)
    h2 = tanh((r * h) @ W_hh + x @ W_xh + b_h) * z + h * (1.0 - z)
    return cb.build([h2], {"h": h2}, ["h"])


def mut3(input_size: int, hidden_size: int, dtype: str = "float32") -> Cell:
    """MUT3 of Jozefowicz, Zaremba, Sutskever 2015:

        z = sigm(W_xz x + W_hz tanh(h) + b_z)
        r = sigm(W_xr x + W_hr h + b_r)
        h' = tanh(W_hh (r * h) + W_xh x + b_h) * z + h * (1 - z)
    """
    _sizes("mut3", input_size, hidden_size)
    H = hidden_size
    cb = CellBuilder("mut3", dtype)
    x, h = cb.input("x", input_size), cb.state("h", H)
    W_xz, W_xr, W_xh = (cb.param(n, (input_size, H)) for n in ("W_xz", "W_xr", "W_xh"))
    W_hz, W_hr, W_hh = (cb.param(n, (H, H)) for n in ("W_hz", "W_hr", "W_hh"))
    b_z, b_r, b_h = (cb.param(n, (1, H)) for n in ("b_z", "b_r", "b_h"))
    z = sigmoid(x @ W_xz + tanh(h) @ W_hz + b_z)
    r = sigmoid(x @ W_xr + h @ W_hr + b_r)
    h2 = tanh((r * h) @ W_hh + x @ W_xh + b_h) * z + h * (1.0 - z)
    return cb.build([h2], {"h": h2}, ["h"])


def mrnn(input_size: int, hidden_size: int, dtype: str = "float32",
         factor_size: int | None = None) -> Cell:
    """Multiplicative RNN (Sutskever, Martens, Hinton 2011, "Generating Text with Recurrent
    Neural Networks"): the input chooses the recurrent matrix through a factorization
    W_hh(x) = W_hm diag(W_mx x) W_mh.

        m = (x W_mx) * (h W_mh)                W_mx (I, F), W_mh (H, F), F = factor_size (H)
        h' = tanh(m W_hm + x W_hx + b)         W_hm (F, H), W_hx (I, H), b (1, H)
    """
    _sizes("mrnn", input_size, hidden_size)
    H = hidden_size
    F = H if factor_size is None else factor_size
    _sizes("mrnn", input_size, F)
    cb = CellBuilder("mrnn", dtype)
    x, h = cb.input("x", input_size), cb.state("h", H)
    W_mx, W_mh = cb.param("W_mx", (input_size, F)), cb.param("W_mh", (H, F))
    W_hm, W_hx = cb.param("W_hm", (F, H)), cb.param("W_hx", (input_size, H))
    b = cb.param("b", (1, H))
    m = (x @ W_mx) * (h @ W_mh)
    h2 = tanh(m @ W_hm + x @ W_hx + b)
    return cb.build([h2], {"h": h2}, ["h"])


def indrnn(input_size: int, hidden_size: int, dtype: str = "float32",
           activation: str = "relu") -> Cell:
    """Independently recurrent network (Li et al. 2018, "IndRNN"): a diagonal recurrence, no
    matmul on the state.

        h' = act(x W + u * h + b)              W (I, H), u (1, H), b (1, H); act relu or tanh

    Only the input projection is a GEMM (hoisted out of the time loop); the recurrence is
    elementwise, so an optimizer can run the whole time loop in one kernel."""
    _sizes("indrnn", input_size, hidden_size)
    acts = {"relu": relu, "tanh": tanh}
    if activation not in acts:
        raise ValueError(f"indrnn: activation must be 'relu' or 'tanh', got {activation!r}")
    H = hidden_size
    cb = CellBuilder("indrnn", dtype)
    x, h = cb.input("x", input_size), cb.state("h", H)
    W = cb.param("W", (input_size, H))
    u = cb.param("u", (1, H))
    b = cb.param("b", (1, H))
    h2 = acts[activation](x @ W + u * h + b)
    return cb.build([h2], {"h": h2}, ["h"])


ZOO: dict[str, Callable[..., Cell]] = {
    "rnn_tanh": rnn_tanh,
    "lstm": lstm,
    "lstm_no_forget": lstm_no_forget,
    "peephole_lstm": peephole_lstm,
    "cifg_lstm": cifg_lstm,
    "gru": gru,
    "gru_torch": gru_torch,
    "mut1": mut1,
    "mut2": mut2,
    "mut3": mut3,
    "mrnn": mrnn,
    "indrnn": indrnn,
}

# cells whose equations need input_size == hidden_size
SQUARE_INPUT = frozenset({"mut1", "mut2"})


def zoo_cell(name: str, input_size: int, hidden_size: int, dtype: str = "float32") -> Cell:
    """Build the zoo cell ``name`` (a key of ``ZOO``) with the given sizes and dtype."""
    if name not in ZOO:
        raise KeyError(f"no zoo cell named {name!r}; choose one of {sorted(ZOO)}")
    return ZOO[name](input_size=input_size, hidden_size=hidden_size, dtype=dtype)
