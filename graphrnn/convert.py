"""Weight converters: LSTM gate orders, and PyTorch ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` state
dicts to and from the zoo cells' parameters (``graphrnn.cells``).

Everything takes and returns plain dicts of numpy arrays; torch tensors are accepted (they are
read with ``.detach().cpu().numpy()``), and torch is never imported here.

Weight layouts: the zoo cells' weights (the ones these converters read and write) are (in, out)
for ``x @ W``; PyTorch's are (out, in) for ``W @ x``, hence the transposes below. An equations
cell's weights are (out, in) like PyTorch's (``Cell.weight_layouts()`` says, per weight, which
layout a cell uses). ``relayout`` converts a parameter dict between two cells that compute the
same thing with the same names in different layouts (a zoo cell and its equations twin).

Gate orders of a fused LSTM weight (column blocks of W_x (I, 4H), W_h (H, 4H), b (1, 4H)):
PyTorch "ifgo", char-rnn "ifog", Zaremba et al. "igfo". ``reorder_gates`` moves blocks between
any two of them; ``convert_lstm_gate_order`` does it for a whole parameter dict.

Why the lecture GRU is a different function from PyTorch's GRU
---------------------------------------------------------------
The lectures (and Cho et al. 2014) apply the reset gate *before* the recurrent matrix,
``h~ = tanh(W_h (r * h) + W_x x + b)``; PyTorch and cuDNN apply it *after* ("reset after"):
``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``. ``r * (W h)`` equals ``W (r * h)`` for every
r and h only when W is diagonal, and ``r * b_hn`` is a constant only when b_hn = 0, so the two
cells compute the same function exactly when W_hn is diagonal and b_hn = 0. The other
difference is a relabeling: the lectures write ``h' = (1 - z) * h + z * h~`` while PyTorch
writes ``h' = (1 - z) * n + z * h``; since ``sigmoid(-a) = 1 - sigmoid(a)``, negating the update
gate's weights and bias turns one z into the other. ``gru_from_torch`` / ``gru_to_torch`` map
the weights when that is exact and raise ``ValueError`` otherwise (``exact=False`` maps the
closest weights anyway, giving a different function).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .cells import canonical_gate_order
from .errors import ShapeError

Params = dict[str, np.ndarray]


def _np(v: Any) -> np.ndarray:
    """A numpy array from a numpy array, a list, or a torch tensor (without importing torch)."""
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    return np.asarray(v)


def _get(sd: Mapping[str, Any], key: str, what: str) -> np.ndarray:
    if key not in sd:
        raise KeyError(f"{what}: state dict has no {key!r}; keys are {sorted(sd)}")
    return _np(sd[key])


def _blocks(a: np.ndarray, n: int, axis: int, what: str) -> list[np.ndarray]:
    size = a.shape[axis]
    if size % n:
        raise ShapeError(f"{what}: axis {axis} of shape {a.shape} is not {n} equal gate blocks")
    return np.split(a, n, axis=axis)


# ---- weight layouts ----

def relayout(params: Mapping[str, Any], src: Any, dst: Any) -> Params:
    """``params`` of the cell ``src`` for the cell ``dst``: every weight the two cells store in
    different layouts (``Cell.weight_layouts()``: "(in, out)" for ``x @ W``, "(out, in)" for
    ``W @ x``) is transposed, everything else is copied. The cells must have the same
    parameter names; each result is checked against ``dst``'s shape."""
    want, have = dst.param_shapes(), src.param_shapes()
    if set(want) != set(have):
        raise KeyError(f"relayout: the cells' parameters differ: only {src.name}: "
                       f"{sorted(set(have) - set(want))}, only {dst.name}: "
                       f"{sorted(set(want) - set(have))}")
    sl, dl = src.weight_layouts(), dst.weight_layouts()
    out: Params = {}
    for name, shape in want.items():
        v = _get(params, name, "relayout")
        if sl.get(name) != dl.get(name) and "mixed" not in (sl.get(name), dl.get(name)):
            v = v.T
        if tuple(v.shape) != tuple(shape):
            raise ShapeError(f"relayout: {name} of {src.name} ({sl.get(name, 'not a weight')})"
                             f" becomes {v.shape} but {dst.name} needs {tuple(shape)} "
                             f"({dl.get(name, 'not a weight')})")
        out[name] = np.ascontiguousarray(v)
    return out


# ---- LSTM gate orders ----

def reorder_gates(a: Any, src_order: str, dst_order: str, axis: int = -1) -> np.ndarray:
    """The gate blocks of a fused LSTM array (4H along ``axis``) moved from ``src_order`` to
    ``dst_order`` (letters such as "ifgo" or the names "pytorch", "char-rnn", "zaremba")."""
    src, dst = canonical_gate_order(src_order), canonical_gate_order(dst_order)
    arr = _np(a)
    parts = dict(zip(src, _blocks(arr, 4, axis, "reorder_gates"), strict=True))
    return np.concatenate([parts[g] for g in dst], axis=axis)


def convert_lstm_gate_order(params: Mapping[str, Any], src_order: str, dst_order: str) -> Params:
    """``lstm`` parameters (W_x, W_h, b) of one gate order as parameters of another; the two
    cells then compute the same function. Other entries (e.g. peepholes) are copied."""
    out = {k: _np(v).copy() for k, v in params.items()}
    for k in ("W_x", "W_h", "b"):
        if k not in params:
            raise KeyError(f"convert_lstm_gate_order: no {k!r} in params {sorted(params)}")
        out[k] = reorder_gates(params[k], src_order, dst_order, axis=1)
    return out


# ---- PyTorch state dicts ----

def _torch_keys(prefix: str, layer: int, suffix: str = "") -> dict[str, str]:
    return {k: f"{prefix}{k}_l{layer}{suffix}"
            for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}


def _torch_weights(sd: Mapping[str, Any], gates: int, what: str, prefix: str, layer: int,
                   suffix: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """weight_ih (G*H, I), weight_hh (G*H, H) and the two biases (zeros where bias=False)."""
    keys = _torch_keys(prefix, layer, suffix)
    w_ih = _get(sd, keys["weight_ih"], what)
    w_hh = _get(sd, keys["weight_hh"], what)
    if w_hh.ndim != 2 or w_hh.shape[0] != gates * w_hh.shape[1]:
        raise ShapeError(f"{what}: {keys['weight_hh']} must be ({gates}*H, H), got "
                         f"{w_hh.shape}" + (" (a projection size, proj_size > 0, is not "
                                            "supported)" if w_hh.ndim == 2 else ""))
    H = w_hh.shape[1]
    if w_ih.ndim != 2 or w_ih.shape[0] != gates * H:
        raise ShapeError(f"{what}: {keys['weight_ih']} must be ({gates * H}, input_size), got "
                         f"{w_ih.shape}")
    zeros = np.zeros(gates * H, dtype=w_hh.dtype)
    has_bias = keys["bias_ih"] in sd or keys["bias_hh"] in sd
    b_ih = _get(sd, keys["bias_ih"], what) if has_bias else zeros
    b_hh = _get(sd, keys["bias_hh"], what) if has_bias else zeros
    for k, b in (("bias_ih", b_ih), ("bias_hh", b_hh)):
        if b.shape != (gates * H,):
            raise ShapeError(f"{what}: {keys[k]} must be ({gates * H},), got {b.shape}")
    return w_ih, w_hh, b_ih, b_hh, H


def _forget_shift(H: int, order: str, forget_bias: float, dtype: Any) -> np.ndarray:
    """(1, 4H) with forget_bias in the f block: what the cell adds as a constant."""
    shift = np.zeros((1, 4 * H), dtype=dtype)
    k = order.index("f")
    shift[:, k * H:(k + 1) * H] = forget_bias
    return shift


def lstm_from_torch(state_dict: Mapping[str, Any], gate_order: str = "ifgo",
                    forget_bias: float = 0.0, layer: int = 0, prefix: str = "",
                    suffix: str = "") -> Params:
    """Parameters of ``cells.lstm(gate_order=..., forget_bias=...)`` computing the same function
    as layer ``layer`` of a ``torch.nn.LSTM`` state dict (``prefix`` for a submodule such as
    "rnn.", ``suffix="_reverse"`` for the backward direction):
    W_x = weight_ih.T, W_h = weight_hh.T, b = bias_ih + bias_hh - forget_bias (on f)."""
    order = canonical_gate_order(gate_order)
    w_ih, w_hh, b_ih, b_hh, H = _torch_weights(state_dict, 4, "lstm_from_torch", prefix, layer,
                                               suffix)
    b = (b_ih + b_hh)[None, :]
    params = {"W_x": reorder_gates(w_ih.T, "ifgo", order), "W_h": reorder_gates(w_hh.T, "ifgo",
                                                                                order),
              "b": reorder_gates(b, "ifgo", order)}
    if forget_bias:
        params["b"] = params["b"] - _forget_shift(H, order, forget_bias, b.dtype)
    return params


def lstm_to_torch(params: Mapping[str, Any], gate_order: str = "ifgo", forget_bias: float = 0.0,
                  layer: int = 0, prefix: str = "", suffix: str = "") -> Params:
    """A ``torch.nn.LSTM`` state dict (one layer) computing the same function as
    ``cells.lstm(gate_order=..., forget_bias=...)`` with ``params``. The sum of the two torch
    biases is what matters; all of it goes to bias_ih and bias_hh is zero."""
    order = canonical_gate_order(gate_order)
    W_x, W_h, b = (_np(params[k]) for k in ("W_x", "W_h", "b"))
    H = W_h.shape[0]
    if W_h.shape != (H, 4 * H) or W_x.shape[1] != 4 * H or b.shape != (1, 4 * H):
        raise ShapeError(f"lstm_to_torch: expected W_x (I, 4H), W_h (H, 4H), b (1, 4H), got "
                         f"{W_x.shape}, {W_h.shape}, {b.shape}")
    if forget_bias:
        b = b + _forget_shift(H, order, forget_bias, b.dtype)
    keys = _torch_keys(prefix, layer, suffix)
    return {keys["weight_ih"]: np.ascontiguousarray(reorder_gates(W_x, order, "ifgo").T),
            keys["weight_hh"]: np.ascontiguousarray(reorder_gates(W_h, order, "ifgo").T),
            keys["bias_ih"]: reorder_gates(b, order, "ifgo")[0].copy(),
            keys["bias_hh"]: np.zeros(4 * H, dtype=b.dtype)}


def rnn_from_torch(state_dict: Mapping[str, Any], layer: int = 0, prefix: str = "",
                   suffix: str = "") -> Params:
    """Parameters of ``cells.rnn_tanh`` from a ``torch.nn.RNN(nonlinearity="tanh")`` state dict."""
    w_ih, w_hh, b_ih, b_hh, _ = _torch_weights(state_dict, 1, "rnn_from_torch", prefix, layer,
                                               suffix)
    return {"W_x": w_ih.T.copy(), "W_h": w_hh.T.copy(), "b": (b_ih + b_hh)[None, :]}


def rnn_to_torch(params: Mapping[str, Any], layer: int = 0, prefix: str = "",
                 suffix: str = "") -> Params:
    """A ``torch.nn.RNN(nonlinearity="tanh")`` state dict (one layer) from ``cells.rnn_tanh``
    parameters; all of the bias goes to bias_ih and bias_hh is zero."""
    W_x, W_h, b = (_np(params[k]) for k in ("W_x", "W_h", "b"))
    H = W_h.shape[0]
    if W_h.shape != (H, H) or W_x.shape[1] != H or b.shape != (1, H):
        raise ShapeError(f"rnn_to_torch: expected W_x (I, H), W_h (H, H), b (1, H), got "
                         f"{W_x.shape}, {W_h.shape}, {b.shape}")
    keys = _torch_keys(prefix, layer, suffix)
    return {keys["weight_ih"]: np.ascontiguousarray(W_x.T),
            keys["weight_hh"]: np.ascontiguousarray(W_h.T),
            keys["bias_ih"]: b[0].copy(), keys["bias_hh"]: np.zeros(H, dtype=b.dtype)}


def gru_torch_from_torch(state_dict: Mapping[str, Any], layer: int = 0, prefix: str = "",
                         suffix: str = "") -> Params:
    """Parameters of ``cells.gru_torch`` (blocks r, z, n, like PyTorch) from a
    ``torch.nn.GRU`` state dict. Both biases are kept: b_hn sits inside ``r * (...)``."""
    w_ih, w_hh, b_ih, b_hh, _ = _torch_weights(state_dict, 3, "gru_torch_from_torch", prefix,
                                               layer, suffix)
    return {"W_x": w_ih.T.copy(), "W_h": w_hh.T.copy(), "b_x": b_ih[None, :].copy(),
            "b_h": b_hh[None, :].copy()}


def gru_torch_to_torch(params: Mapping[str, Any], layer: int = 0, prefix: str = "",
                       suffix: str = "") -> Params:
    """A ``torch.nn.GRU`` state dict (one layer) from ``cells.gru_torch`` parameters."""
    W_x, W_h, b_x, b_h = (_np(params[k]) for k in ("W_x", "W_h", "b_x", "b_h"))
    H = W_h.shape[0]
    if W_h.shape != (H, 3 * H) or W_x.shape[1] != 3 * H or b_x.shape != (1, 3 * H) \
            or b_h.shape != (1, 3 * H):
        raise ShapeError(f"gru_torch_to_torch: expected W_x (I, 3H), W_h (H, 3H), b_x and b_h "
                         f"(1, 3H), got {W_x.shape}, {W_h.shape}, {b_x.shape}, {b_h.shape}")
    keys = _torch_keys(prefix, layer, suffix)
    return {keys["weight_ih"]: np.ascontiguousarray(W_x.T),
            keys["weight_hh"]: np.ascontiguousarray(W_h.T),
            keys["bias_ih"]: b_x[0].copy(), keys["bias_hh"]: b_h[0].copy()}


def _off_diagonal(a: np.ndarray) -> float:
    return float(np.max(np.abs(a - np.diag(np.diag(a))))) if a.size else 0.0


def gru_from_torch(state_dict: Mapping[str, Any], layer: int = 0, prefix: str = "",
                   suffix: str = "", exact: bool = True, atol: float = 0.0) -> Params:
    """Parameters of the lecture ``cells.gru`` from a ``torch.nn.GRU`` state dict.

    Exact only when weight_hh's candidate block W_hn is diagonal and b_hn = 0 (see the module
    docstring); otherwise a ``ValueError`` says why, unless ``exact=False``, which maps the
    weights anyway (the cells then differ). The update gate is negated (z_lecture = 1 - z_torch).
    """
    w_ih, w_hh, b_ih, b_hh, H = _torch_weights(state_dict, 3, "gru_from_torch", prefix, layer,
                                               suffix)
    W_ir, W_iz, W_in = _blocks(w_ih, 3, 0, "weight_ih")
    W_hr, W_hz, W_hn = _blocks(w_hh, 3, 0, "weight_hh")
    b_ir, b_iz, b_in = _blocks(b_ih, 3, 0, "bias_ih")
    b_hr, b_hz, b_hn = _blocks(b_hh, 3, 0, "bias_hh")
    if exact:
        off, bias = _off_diagonal(W_hn), float(np.max(np.abs(b_hn)))
        if off > atol or bias > atol:
            raise ValueError(
                "gru_from_torch: PyTorch's GRU applies the reset gate after the matrix, "
                "r * (W_hn h + b_hn), the lecture GRU before it, W (r * h); they are the same "
                "function only when W_hn is diagonal and b_hn = 0, but here the largest "
                f"off-diagonal |W_hn| is {off:.3g} and the largest |b_hn| is {bias:.3g}. Use "
                "cells.gru_torch with gru_torch_from_torch, or pass exact=False to map the "
                "weights into a different function")
    # rows of W_g / W_c follow the concatenation [h, x]; columns of W_g are blocks z, r
    W_g = np.block([[-W_hz.T, W_hr.T], [-W_iz.T, W_ir.T]])
    b_g = np.concatenate([-(b_iz + b_hz), b_ir + b_hr])[None, :]
    W_c = np.concatenate([W_hn.T, W_in.T], axis=0)
    b_c = (b_in + b_hn)[None, :]
    return {"W_g": W_g, "b_g": b_g, "W_c": W_c, "b_c": b_c}


def gru_to_torch(params: Mapping[str, Any], layer: int = 0, prefix: str = "", suffix: str = "",
                 exact: bool = True, atol: float = 0.0) -> Params:
    """A ``torch.nn.GRU`` state dict from the lecture ``cells.gru`` parameters; exact only when
    the h-rows of W_c (the first H rows) form a diagonal matrix (see the module docstring)."""
    W_g, b_g, W_c, b_c = (_np(params[k]) for k in ("W_g", "b_g", "W_c", "b_c"))
    H = W_c.shape[1]
    I = W_c.shape[0] - H  # noqa: E741
    if I <= 0 or W_g.shape != (H + I, 2 * H) or b_g.shape != (1, 2 * H) or b_c.shape != (1, H):
        raise ShapeError(f"gru_to_torch: expected W_g (H+I, 2H), b_g (1, 2H), W_c (H+I, H), "
                         f"b_c (1, H), got {W_g.shape}, {b_g.shape}, {W_c.shape}, {b_c.shape}")
    W_ch, W_cx = W_c[:H], W_c[H:]
    if exact:
        off = _off_diagonal(W_ch)
        if off > atol:
            raise ValueError(
                "gru_to_torch: the lecture GRU applies the reset gate before the matrix, "
                "W (r * h), PyTorch's after it, r * (W h); they are the same function only when "
                f"that matrix (the first {H} rows of W_c) is diagonal, but its largest "
                f"off-diagonal entry is {off:.3g}. Pass exact=False to map the weights into a "
                "different function")
    z_h, r_h = W_g[:H, :H], W_g[:H, H:]
    z_x, r_x = W_g[H:, :H], W_g[H:, H:]
    keys = _torch_keys(prefix, layer, suffix)
    zeros = np.zeros(H, dtype=b_c.dtype)
    return {keys["weight_ih"]: np.concatenate([r_x.T, -z_x.T, W_cx.T], axis=0),
            keys["weight_hh"]: np.concatenate([r_h.T, -z_h.T, W_ch.T], axis=0),
            keys["bias_ih"]: np.concatenate([b_g[0, H:], -b_g[0, :H], b_c[0]]),
            keys["bias_hh"]: np.concatenate([zeros, zeros, zeros])}
