"""What the tests share to say "this backend equals ref" and "these gradients are right":
random sequences and cotangents for a cell, every result of a training call as one flat list,
the comparisons, and a directional derivative by finite differences next to the backward's.

Imported by name (``from helpers import ...``): pytest puts this directory on ``sys.path`` for
the test files, and ``conftest.py`` itself cannot be imported by name. Fixtures are in
``conftest.py``.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

# what the CLI tests train on (the ``corpus`` fixture): few distinct characters, repeated
CORPUS_TEXT = "the cat sat on the mat. the dog sat on the log.\n" * 40

# compiled backends against ref, per dtype (the cuda tests' bar: every value of a training call)
TOL = {"float64": dict(rtol=1e-9, atol=1e-9), "float32": dict(rtol=1e-4, atol=1e-4)}


def sequences(cc: Any, T: int, B: int, rng: np.random.Generator,
              h_scale: float = 0.5) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Inputs (T, B, n) and initial states (B, n) for the compiled cell ``cc``: standard normal
    in its dtype (token ids in [0, 5) for an int64 input), states times ``h_scale``."""
    xs = [rng.integers(0, 5, (T, B, 1)) if n.dtype == "int64" else
          rng.standard_normal((T, B, int(n.shape[1]))).astype(cc.dtype) for n in cc.cell.inputs]
    h0 = [rng.standard_normal((B, int(s.shape[1]))).astype(cc.dtype) * h_scale
          for s in cc.cell.states]
    return xs, h0


def cotangents(cc: Any, T: int, B: int, rng: np.random.Generator
               ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Standard normal cotangents of the outputs (T, B, n) and of the final states (B, n)."""
    dys = [rng.standard_normal((T, B, int(o.shape[1]))).astype(cc.dtype)
           for o in cc.cell.outputs]
    dhT = [rng.standard_normal((B, int(s.shape[1]))).astype(cc.dtype) for s in cc.cell.states]
    return dys, dhT


def flat(ys: Sequence[Any], hT: Sequence[Any], g: Any,
         to_numpy: Callable[[Any], np.ndarray] = np.asarray) -> list[np.ndarray]:
    """Every result of forward_train + backward in one list: outputs, final states, parameter
    gradients by name, input and state gradients (``to_numpy`` fetches device arrays)."""
    vals = [*ys, *hT, *(g.params[k] for k in sorted(g.params)), *g.inputs, *g.states]
    return [to_numpy(v) for v in vals]


def assert_all_close(got: Sequence[Any], want: Sequence[np.ndarray], **tol: Any) -> None:
    """As many values as wanted, each ``assert_allclose`` to its counterpart."""
    assert len(got) == len(want), (len(got), len(want))
    for i, (a, b) in enumerate(zip(got, want)):
        np.testing.assert_allclose(np.asarray(a), b, err_msg=f"value {i}", **tol)


def assert_all_equal(got: Sequence[np.ndarray], want: Sequence[np.ndarray], why: str) -> None:
    """Bit for bit (two runs, or two grid walk orders)."""
    assert len(got) == len(want), (len(got), len(want))
    for a, b in zip(got, want):
        assert np.array_equal(a, b), why


def close_to_scale(a: np.ndarray, b: np.ndarray, rtol: float, what: str) -> None:
    """Relative to each value, with an absolute floor relative to the array's scale (gradients
    cancel to near zero in places)."""
    scale = float(np.abs(b).max()) if b.size else 0.0
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * max(scale, 1e-6), err_msg=what)


def fd_and_backward(cc: Any, params: dict[str, np.ndarray], xs: Sequence[np.ndarray],
                    h0: Sequence[np.ndarray], dys: Sequence[np.ndarray],
                    dhT: Sequence[np.ndarray], g: Any, dp: dict[str, np.ndarray] | None = None,
                    dx: Sequence[np.ndarray] | None = None, dh: Sequence[np.ndarray] | None = None,
                    eps: float = 1e-6) -> tuple[float, float]:
    """The derivative of the loss ``<ys, dys> + <h_T, dhT>`` along the direction (dp, dx, dh)
    (None: zero) twice: by central finite differences of ``cc.forward`` and from ``g``, the
    gradients ``cc.backward`` gave for these cotangents. Token-id inputs are never moved.
    ``dp`` may leave parameters out (frozen ones, which have no gradient): they stay put."""
    def loss(s: float) -> float:
        p = {k: v + s * dp[k] if k in dp else v for k, v in params.items()} \
            if dp is not None else params
        x = xs if dx is None else [v if v.dtype == np.int64 else v + s * d
                                   for v, d in zip(xs, dx, strict=True)]
        h = h0 if dh is None else [v + s * d for v, d in zip(h0, dh, strict=True)]
        ys, hT = cc.forward(p, x, h)
        return sum(float(np.vdot(a, b)) for a, b in zip([*ys, *hT], [*dys, *dhT], strict=True))

    fd = (loss(eps) - loss(-eps)) / (2 * eps)
    an = 0.0
    if dp is not None:
        an += sum(float(np.vdot(g.params[k], dp[k])) for k in dp)
    if dx is not None:
        an += sum(float(np.vdot(a, d)) for a, d in zip(g.inputs, dx, strict=True))
    if dh is not None:
        an += sum(float(np.vdot(a, d)) for a, d in zip(g.states, dh, strict=True))
    return fd, an
