"""Sequence models built from compiled cells: the numpy glue around the compiled time loops.

``RNNModel`` stacks layers of any compiled cell (each layer may be a different cell), optionally
bidirectional, with an embedding (lookup table), one-hot or dense input, dropout on the
non-recurrent connections only (Zaremba et al. 2014: on each layer's input and before the head,
never on h_{t-1} -> h_t), and a softmax head trained with cross-entropy whose gradient is the
fused ``softmax(z) - onehot``. Everything here is backend-agnostic numpy around the
``CompiledCell`` API (``forward_train``/``backward``/``step``); the time loops run in the backend.

Padded variable-length batches: a ``mask`` (T, B) of 1s and 0s. The state must stop updating past
a sequence's end, and that happens inside the compiled time loop, so the model compiles a
*masked* variant of each cell (``masked_cell``): one more input ``mask`` (B, 1) and
``next = m * next + (1 - m) * state``. Built from ordinary IR ops, it differentiates, hoists and
fuses like any cell. The backward direction of a bidirectional layer reverses each sequence within
its own length, so its padding stays at the end.

Heads: ``head="classify"`` (softmax + cross-entropy) or ``"regress"`` (linear + mean squared
error), read at every step (``pool="step"``, the language model's head: targets (T, B)) or once
per sequence from the top layer's outputs over its valid steps (``pool="last"``: the output at
the last valid step, for a bidirectional top layer the forward half there and the reverse half
at step 0, as PyTorch's h_n; ``"mean"``; ``"max"``: per feature, the gradient goes to the
arg-max step). ``batch_first=True`` reads ids/features, masks, weights and per-step targets as
(B, T, ...) and returns per-step outputs that way, like PyTorch's ``batch_first``.

Parameters are one flat ``dict[str, ndarray]``: ``embed``, ``l{i}.{name}`` (forward cell of
layer i), ``l{i}r.{name}`` (its reverse cell), ``head.W``, ``head.b``.
"""

from __future__ import annotations

import fnmatch
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .api import CompiledCell, compile
from .errors import GraphError, RuntimeInputError
from .ir import Cell, input_

Arrays = dict[str, np.ndarray]
State = list[list[np.ndarray]]  # per layer, the forward cell's states

DEFAULT_BACKEND = "auto"  # llvm when it exists, else ref with a warning


# ---- compiling cells ----

def compile_cell(cell: Cell, backend: str = DEFAULT_BACKEND, dtype: str | None = None,
                 **options: Any) -> CompiledCell:
    """``graphrnn.compile`` with ``backend="auto"``: try llvm, fall back to ref with a warning."""
    if backend != "auto":
        return compile(cell, backend, dtype, **options)
    try:
        return compile(cell, "llvm", dtype, **options)
    except Exception as e:  # noqa: BLE001 - any failure of the fast path falls back, loudly
        # on stderr through warnings; it names the cell and how to get the error instead
        warnings.warn(f"cell {cell.name!r}: llvm backend unavailable ({type(e).__name__}: {e});"
                      " using the slow 'ref' backend (pass backend='llvm', or --backend llvm, "
                      "to get the error instead)", RuntimeWarning, stacklevel=2)
        return compile(cell, "ref", dtype, **options)


def masked_cell(cell: Cell) -> Cell:
    """The cell with one more input ``mask`` (B, 1): where the mask is 0 the states keep their
    value (``next = m * next + (1 - m) * state``). Outputs are unchanged; the loss is masked."""
    names = {n.arg for n in cell.inputs + cell.states}
    name = "mask"
    while name in names:
        name += "_"
    m = input_(name, 1, cell.dtype)
    nxt = [m * ns + (1.0 - m) * s for s, ns in zip(cell.states, cell.next_states, strict=True)]
    return Cell.make(list(cell.inputs) + [m], cell.states, cell.outputs, nxt,
                     cell.name + "_masked", cell.output_names, cell.meta, cell.frozen)


# ---- cells by name ----

def make_cell(name: str, input_size: int, hidden_size: int, dtype: str = "float32") -> Cell:
    """A cell from the zoo (``graphrnn.cells``) by name."""
    from . import cells
    return cells.zoo_cell(name, input_size, hidden_size, dtype)


# char-rnn's LSTM.lua as the nngraph frontend names it (the CLI's ``nngraph_lstm`` and
# ``frontends.nngraph.charrnn_lstm``): Linears annotated i2h / h2h, or i2h_L / h2h_L per layer,
# each (1, 4H), gates i, f, o, g (Reshape(4, H) + SplitTable(2): in, forget, out, in_transform)
_CHARRNN_BIAS = re.compile(r"^i2h(?P<layer>_\w+)?_b$")
CHARRNN_GATES = "ifog"


def forget_gate_biases(cell: Cell, gate_order: str | None = None
                       ) -> list[tuple[tuple[str, ...], int, int]]:
    """Where the forget gate's bias lives: ``[(bias params, start, stop), ...]``, one entry per
    LSTM in the cell (char-rnn's multi-layer cell has several): the forget gate's columns
    ``start:stop`` in each of the (1, gates * H) ``bias params``, whose sum is the gate's bias.

    Read from ``cell.meta`` (``gates``, ``gate_biases``: the zoo LSTMs record theirs); else, for
    cells with no metadata, char-rnn's nngraph naming (``i2h_b`` + ``h2h_b``, gates i, f, o, g);
    else, when ``gate_order`` is given, a fused bias ``b`` of width 4H in that order. Raises
    ``ValueError`` naming the cell when it has no forget gate (``lstm_no_forget``,
    ``cifg_lstm``) or its layout is unknown."""
    from .cells import canonical_gate_order
    want = canonical_gate_order(gate_order) if gate_order is not None else None
    shapes = cell.param_shapes()
    gates, biases = cell.meta.get("gates"), cell.meta.get("gate_biases")
    if gates is not None and biases:
        if want is not None and want != gates:
            raise ValueError(f"cell {cell.name}: gate_order={gate_order!r} contradicts the "
                             f"cell's own gate order {gates!r}")
        if "f" not in gates:
            raise ValueError(f"cell {cell.name} has no forget gate with a bias of its own "
                             f"(its gate blocks are {gates!r}); --forget-bias needs an LSTM "
                             "with a forget gate")
        missing = [b for b in biases if b not in shapes]
        if missing:
            raise ValueError(f"cell {cell.name}: its gate_biases {missing} are not parameters "
                             f"of the cell ({sorted(shapes)})")
        widths = {shapes[b][1] for b in biases}
        if len(widths) != 1 or widths.pop() % len(gates):
            raise ValueError(f"cell {cell.name}: gate biases {list(biases)} do not hold "
                             f"{len(gates)} equal gate blocks ({[shapes[b] for b in biases]})")
        H = shapes[biases[0]][1] // len(gates)
        k = gates.index("f")
        return [(tuple(biases), k * H, (k + 1) * H)]
    state_widths = {int(s.shape[1]) for s in cell.states}
    found = []
    for name, shape in shapes.items():
        m = _CHARRNN_BIAS.match(name)
        partner = f"h2h{m['layer'] or ''}_b" if m else ""
        if m and shapes.get(partner) == shape and shape[0] == 1 and shape[1] % 4 == 0 \
                and shape[1] // 4 in state_widths:
            H = shape[1] // 4
            k = CHARRNN_GATES.index("f")
            found.append(((name, partner), k * H, (k + 1) * H))
    if found:
        if want is not None and want != CHARRNN_GATES:
            raise ValueError(f"cell {cell.name}: gate_order={gate_order!r}, but its i2h/h2h "
                             f"biases are char-rnn's (gates {CHARRNN_GATES!r})")
        return found
    b = shapes.get("b")
    if want is not None and b is not None and len(cell.states) == 2 \
            and b[1] == 4 * int(cell.states[0].shape[1]):
        H = b[1] // 4
        k = want.index("f")
        return [(("b",), k * H, (k + 1) * H)]
    raise ValueError(f"cell {cell.name}: no LSTM forget gate found: it records no gate layout "
                     "(Cell.meta gates/gate_biases) and has no char-rnn i2h_b/h2h_b biases. For "
                     "an LSTM of your own, record its layout, e.g. cell.with_meta(gates='ifgo', "
                     "gate_biases=('b',)), or set the bias with init overrides such as "
                     "{'l*.b[H:2H]': 1.0}")


def forget_bias_overrides(model: RNNModel, value: float, gate_order: str | None = None
                          ) -> dict[str, float]:
    """Overrides (for ``init_params``) that make the forget gate's bias of every LSTM layer
    equal ``value``. Where the bias is the sum of several parameters (char-rnn's i2h_b + h2h_b),
    the first gets ``value`` in its forget block and the others 0 there, so the total is exactly
    ``value``; every other column keeps its initial value. A constant the cell adds itself
    (``cells.lstm(forget_bias=...)``) comes on top. The layout comes from
    ``forget_gate_biases`` (``gate_order`` only for cells that do not record theirs); a layer
    without a forget gate is an error."""
    out: dict[str, float] = {}
    for i, lay in enumerate(model.layers):
        for pre, cc in ((f"l{i}.", lay.fwd), (f"l{i}r.", lay.rev)):
            if cc is None:
                continue
            try:
                where = forget_gate_biases(cc.cell, gate_order)
            except ValueError as e:
                raise ValueError(f"layer {i}: {e}") from None
            for biases, a, b in where:
                for j, name in enumerate(biases):
                    out[f"{pre}{name}[{a}:{b}]"] = float(value) if j == 0 else 0.0
    return out


# ---- initialization ----

_SLICE = re.compile(r"^(?P<pat>[^\[\]]+)(\[(?P<a>\d*):(?P<b>\d*)\])?$")


def apply_overrides(params: Arrays, overrides: dict[str, float]) -> None:
    """Set constants by parameter name, in place. A key is a glob over the model's names,
    optionally with a column slice: ``{"l*.b_f": 1.0}`` or ``{"l*.b_h[128:256]": 1.0}`` (a
    forget-gate bias inside a fused bias). A key that matches nothing is an error."""
    for key, value in overrides.items():
        m = _SLICE.match(key.replace(" ", ""))
        if not m:
            raise ValueError(f"bad override {key!r}; expected name, glob or name[a:b]")
        hits = [n for n in params if fnmatch.fnmatchcase(n, m["pat"])]
        if not hits:
            raise KeyError(f"override {key!r} matches no parameter; names are {sorted(params)}")
        for n in hits:
            if m["a"] is None and m["b"] is None:
                params[n][...] = value
            else:
                a = int(m["a"]) if m["a"] else None
                b = int(m["b"]) if m["b"] else None
                params[n][..., a:b] = value


# ---- the model ----

@dataclass
class Layer:
    """One layer: a forward compiled cell and, when bidirectional, a reverse one."""
    fwd: CompiledCell
    rev: CompiledCell | None = None
    masked: dict[str, CompiledCell] = field(default_factory=dict)

    @property
    def in_size(self) -> int:
        return int(self.fwd.cell.inputs[0].shape[1])

    @property
    def out_size(self) -> int:
        n = int(self.fwd.cell.outputs[0].shape[1])
        return 2 * n if self.rev is not None else n


@dataclass
class Result:
    """What ``loss_and_grads`` returns."""
    loss: float                 # mean cross-entropy per weighted token (nats)
    grads: Arrays
    state: State                # final forward states, to carry into the next chunk
    tokens: float               # total weight of the tokens the loss averaged over
    d_state0: State | None = None  # cotangent of the initial state (for chaining chunks)
    logits: np.ndarray | None = None


def _rev_index(T: int, lengths: np.ndarray) -> np.ndarray:
    """(T, B) time indices that reverse each sequence within its length; an involution."""
    t = np.arange(T)[:, None]
    L = lengths[None, :]
    return np.where(t < L, L - 1 - t, t)


def _reverse(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return x[idx, np.arange(x.shape[1])[None, :]]


HEADS = ("classify", "regress")
POOLS = ("step", "last", "mean", "max")


class RNNModel:
    """Stacked (optionally bidirectional) recurrent layers with a classification or regression
    head, per step or pooled over each sequence (see the module docstring).

    ``cells``: one Cell per layer (or per direction: a pair ``(fwd, rev)``), each with one float
    input and its first output as the layer's output. ``input``: ``"embedding"`` (ids (T, B),
    table ``embed`` (vocab, embed_size)), ``"onehot"`` (ids) or ``"dense"`` (features (T, B, F)).
    ``n_classes``: the head's width (classes, or regression outputs).
    """

    def __init__(self, cells: Sequence[Cell | CompiledCell | tuple[Any, Any]], n_classes: int,
                 vocab_size: int | None = None, input: str = "embedding",  # noqa: A002
                 embed_size: int | None = None, dropout: float = 0.0,
                 backend: str = DEFAULT_BACKEND, dtype: str = "float32",
                 head: str = "classify", pool: str = "step", batch_first: bool = False) -> None:
        if input not in ("embedding", "onehot", "dense"):
            raise ValueError(f"input must be embedding, onehot or dense, got {input!r}")
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        if int(n_classes) < 1:
            raise ValueError(f"n_classes (the head's width) must be >= 1, got {n_classes}")
        self.head, self.pool, self.batch_first = head, pool, bool(batch_first)
        if input != "dense" and not vocab_size:
            raise ValueError(f"input={input!r} needs vocab_size")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if not cells:
            raise ValueError("a model needs at least one layer")
        self.input, self.vocab_size, self.n_classes = input, vocab_size, int(n_classes)
        self.dropout, self.backend, self.dtype = float(dropout), backend, dtype
        self.training = False
        self.layers: list[Layer] = []
        for i, c in enumerate(cells):
            if isinstance(c, tuple):
                lay = Layer(self._compile(c[0], i), self._compile(c[1], i))
            else:
                lay = Layer(self._compile(c, i))
            self.layers.append(lay)
        first = self.layers[0].in_size
        if input == "embedding":
            self.embed_size = int(embed_size or first)
        elif input == "onehot":
            self.embed_size = int(vocab_size)  # type: ignore[arg-type]
        else:
            self.embed_size = first
        self._check_sizes()

    def _compile(self, c: Cell | CompiledCell, i: int) -> CompiledCell:
        cc = c if isinstance(c, CompiledCell) else compile_cell(c, self.backend, self.dtype)
        cell = cc.cell
        floats = [n for n in cell.inputs if n.dtype != "int64"]
        if len(cell.inputs) != 1 or len(floats) != 1:
            raise GraphError(f"layer {i}: cell {cell.name} must take exactly one float input "
                             f"(x_t), it takes {[n.arg for n in cell.inputs]}")
        if not cell.outputs:
            raise GraphError(f"layer {i}: cell {cell.name} has no output to feed the next layer")
        if cc.dtype != self.dtype:
            raise RuntimeInputError(f"layer {i}: cell compiled at {cc.dtype}, model is "
                                    f"{self.dtype}")
        return cc

    def _check_sizes(self) -> None:
        want = self.embed_size
        for i, lay in enumerate(self.layers):
            for cc in (lay.fwd, lay.rev):
                if cc is not None and int(cc.cell.inputs[0].shape[1]) != want:
                    raise GraphError(f"layer {i}: cell {cc.cell.name} takes inputs of size "
                                     f"{cc.cell.inputs[0].shape[1]}, but the layer below gives "
                                     f"{want}")
            if lay.rev is not None and lay.rev.cell.outputs[0].shape != \
                    lay.fwd.cell.outputs[0].shape:
                raise GraphError(f"layer {i}: the two directions have different output sizes")
            want = lay.out_size

    @property
    def hidden_out(self) -> int:
        return self.layers[-1].out_size

    @property
    def bidirectional(self) -> bool:
        return any(lay.rev is not None for lay in self.layers)

    def train(self, mode: bool = True) -> RNNModel:
        self.training = mode
        return self

    def eval(self) -> RNNModel:
        return self.train(False)

    # ---- parameters ----
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        out: dict[str, tuple[int, ...]] = {}
        if self.input == "embedding":
            out["embed"] = (int(self.vocab_size), self.embed_size)  # type: ignore[arg-type]
        for i, lay in enumerate(self.layers):
            for pre, cc in ((f"l{i}.", lay.fwd), (f"l{i}r.", lay.rev)):
                if cc is not None:
                    for k, s in cc.cell.param_shapes().items():
                        out[pre + k] = tuple(int(d) for d in s)
        out["head.W"] = (self.hidden_out, self.n_classes)
        out["head.b"] = (self.n_classes,)
        return out

    def init_params(self, seed: int = 0, scheme: str = "uniform", scale: float = 0.08,
                    overrides: dict[str, float] | None = None) -> Arrays:
        """Seeded parameters. ``scheme``: ``uniform`` (±scale: char-rnn 0.08, Zaremba 0.1) for
        everything, or ``orthogonal`` for the cells' 2-D weights (uniform elsewhere).
        ``overrides``: constants by name/glob/slice, e.g. a forget-gate bias (see
        ``apply_overrides``)."""
        rng = np.random.default_rng(seed)
        dt = np.dtype(self.dtype)
        params: Arrays = {}
        if self.input == "embedding":
            params["embed"] = rng.uniform(-scale, scale, self.param_shapes()["embed"]).astype(dt)
        for i, lay in enumerate(self.layers):
            for pre, cc in ((f"l{i}.", lay.fwd), (f"l{i}r.", lay.rev)):
                if cc is not None:
                    sub = cc.init_params(seed=int(rng.integers(2**31)), scheme=scheme,
                                         scale=scale)
                    params.update({pre + k: v for k, v in sub.items()})
        params["head.W"] = rng.uniform(-scale, scale, (self.hidden_out, self.n_classes)) \
            .astype(dt)
        params["head.b"] = np.zeros(self.n_classes, dt)
        if overrides:
            apply_overrides(params, overrides)
        return params

    def check_params(self, params: Arrays) -> None:
        want = self.param_shapes()
        missing = sorted(set(want) - set(params))
        extra = sorted(set(params) - set(want))
        if missing or extra:
            raise RuntimeInputError(f"parameters do not fit this model: missing {missing}, "
                                    f"unexpected {extra}")
        for k, s in want.items():
            if tuple(params[k].shape) != s:
                raise RuntimeInputError(f"parameter {k!r}: expected shape {s}, got "
                                        f"{params[k].shape}")

    def _head_mm(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``a @ b`` for the head's GEMMs, asked of the top layer's compiled cell: the llvm
        backend splits it over the threads that hold the cores once they are its own."""
        return self.layers[-1].fwd.matmul(a, b)

    @staticmethod
    def _sub(params: Arrays, prefix: str) -> Arrays:
        n = len(prefix)
        return {k[n:]: v for k, v in params.items() if k.startswith(prefix)}

    def zero_state(self, batch: int) -> State:
        return [[np.zeros((batch, int(s.shape[1])), self.dtype) for s in lay.fwd.cell.states]
                for lay in self.layers]

    # ---- pieces ----
    def _embed(self, params: Arrays, ids: np.ndarray) -> np.ndarray:
        if self.input == "dense":
            x = np.asarray(ids, self.dtype)
            if x.ndim != 3 or x.shape[2] != self.embed_size:
                raise RuntimeInputError(f"dense input: expected (T, B, {self.embed_size}), got "
                                        f"{x.shape}")
            return x
        ids = np.asarray(ids)
        if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
            raise RuntimeInputError(f"token ids: expected an integer array (T, B), got "
                                    f"{ids.dtype} {ids.shape}")
        V = int(self.vocab_size)  # type: ignore[arg-type]
        if ids.size and (ids.min() < 0 or ids.max() >= V):
            raise RuntimeInputError(f"token ids must be in [0, {V}), got {ids.min()}..{ids.max()}")
        if self.input == "embedding":
            return params["embed"][ids]
        return np.eye(V, dtype=self.dtype)[ids]

    def _dropout_mask(self, shape: tuple[int, ...], rng: np.random.Generator | None
                      ) -> np.ndarray | None:
        if not self.training or self.dropout == 0:
            return None
        if rng is None:
            raise ValueError("training with dropout needs an rng (np.random.Generator)")
        keep = 1.0 - self.dropout
        return ((rng.random(shape) < keep) / keep).astype(self.dtype)

    def _cell_for(self, lay: Layer, which: str, masked: bool) -> CompiledCell:
        cc = lay.fwd if which == "fwd" else lay.rev
        assert cc is not None
        if not masked:
            return cc
        if which not in lay.masked:
            lay.masked[which] = compile_cell(masked_cell(cc.cell), cc.backend_name
                                             if cc.backend_name != "?" else self.backend,
                                             self.dtype)
        return lay.masked[which]

    # ---- forward and backward over a chunk ----
    # ---- layouts, lengths and pooling ----
    def _tm(self, a: Any) -> Any:
        """Time-major view of a (B, T, ...) array when the model is batch_first."""
        if a is None or not self.batch_first:
            return a
        a = np.asarray(a)
        if a.ndim < 2:
            raise RuntimeInputError(f"batch_first: expected an array (B, T, ...), got shape "
                                    f"{a.shape}")
        return np.swapaxes(a, 0, 1)

    def _user(self, out: np.ndarray) -> np.ndarray:
        """Per-step outputs in the user's layout (pooled ones are (B, C) either way)."""
        return np.swapaxes(out, 0, 1) if self.batch_first and self.pool == "step" else out

    @staticmethod
    def _lengths(mask: np.ndarray | None, T: int, Bn: int) -> np.ndarray:
        """Each sequence's length from a (T, B) prefix mask: 1s up to its end, then 0s."""
        if mask is None:
            return np.full(Bn, T, np.int64)
        lengths = (mask > 0).sum(0).astype(np.int64)
        if not np.array_equal(mask > 0, np.arange(T)[:, None] < lengths[None, :]):
            bad = int(np.nonzero((mask > 0) != (np.arange(T)[:, None] < lengths))[1][0])
            raise RuntimeInputError(f"mask: sequence {bad} is not 1s followed by 0s; pooled "
                                    "heads and bidirectional layers need each sequence's valid "
                                    "steps first (pad at the end, e.g. with data.pad_batch)")
        if lengths.size and lengths.min() == 0:
            raise RuntimeInputError(f"mask: sequence {int(np.argmin(lengths))} has no valid "
                                    "step; a pooled head needs at least one")
        return lengths

    def _pool_fwd(self, top: np.ndarray, lengths: np.ndarray, m3: np.ndarray | None
                  ) -> tuple[np.ndarray, Any]:
        T, Bn, H = top.shape
        b = np.arange(Bn)
        if self.pool == "last":
            nf = int(self.layers[-1].fwd.cell.outputs[0].shape[1])
            out = top[lengths - 1, b].copy()
            if self.layers[-1].rev is not None:  # the reverse direction ends at step 0
                out[:, nf:] = top[0, :, nf:]
            return out, nf
        if self.pool == "mean":
            w = (np.ones((T, Bn, 1), top.dtype) if m3 is None else m3) \
                / lengths[None, :, None].astype(top.dtype)
            return (top * w).sum(0), w
        masked = top if m3 is None else np.where(m3 > 0, top, -np.inf)
        arg = masked.argmax(0)  # (B, H)
        return np.take_along_axis(top, arg[None], axis=0)[0], arg

    def _pool_bwd(self, d: np.ndarray, shape: tuple[int, ...], lengths: np.ndarray,
                  aux: Any) -> np.ndarray:
        d_top = np.zeros(shape, d.dtype)
        b = np.arange(shape[1])
        if self.pool == "last":
            nf = aux
            d_top[lengths - 1, b, :nf] = d[:, :nf]
            if self.layers[-1].rev is not None:
                d_top[0, :, nf:] += d[:, nf:]
            return d_top
        if self.pool == "mean":
            return aux * d[None]
        np.put_along_axis(d_top, aux[None], d[None], axis=0)
        return d_top

    # ---- forward and backward over a chunk ----
    def forward(self, params: Arrays, ids: np.ndarray, state: State | None = None,
                mask: np.ndarray | None = None, rng: np.random.Generator | None = None,
                save: bool = True) -> tuple[np.ndarray, State, dict[str, Any]]:
        """Head outputs (logits or predictions): (T, B, C) per step ((B, T, C) when
        batch_first), or (B, C) for a pooled head; final forward states; what backward needs.
        """
        return self._forward_tm(params, self._tm(ids), state, self._tm(mask), rng, save)

    def _forward_tm(self, params: Arrays, ids: np.ndarray, state: State | None,
                    mask: np.ndarray | None, rng: np.random.Generator | None,
                    save: bool) -> tuple[np.ndarray, State, dict[str, Any]]:
        x = self._embed(params, ids)
        T, Bn = x.shape[:2]
        if state is None:
            state = self.zero_state(Bn)
        if len(state) != len(self.layers):
            raise RuntimeInputError(f"state has {len(state)} layers, the model {len(self.layers)}")
        m3 = None
        idx = None
        if mask is not None:
            mask = np.asarray(mask, self.dtype)
            if mask.shape != (T, Bn):
                raise RuntimeInputError(f"mask: expected (T, B) = {(T, Bn)}, got {mask.shape}")
            m3 = mask[:, :, None]
        lengths = None
        if self.pool != "step":
            lengths = self._lengths(mask, T, Bn)
        if self.bidirectional:
            lengths = (mask.sum(0).astype(np.int64) if mask is not None
                       else np.full(Bn, T, np.int64)) if lengths is None else lengths
            idx = _rev_index(T, lengths)
        cache: dict[str, Any] = {"ids": ids, "layers": [], "drops": [], "T": T, "B": Bn,
                                 "m3": m3, "idx": idx, "lengths": lengths}
        new_state: State = []
        for i, lay in enumerate(self.layers):
            drop = self._dropout_mask(x.shape, rng)
            cache["drops"].append(drop)
            xin = x * drop if drop is not None else x
            sub = self._sub(params, f"l{i}.")
            cc = self._cell_for(lay, "fwd", m3 is not None)
            xs = [xin] if m3 is None else [xin, m3]
            ys, hT, res = cc.forward_train(sub, xs, state[i], save=save)
            new_state.append(hT)
            out = ys[0]
            rres = None
            if lay.rev is not None:
                rsub = self._sub(params, f"l{i}r.")
                rcc = self._cell_for(lay, "rev", m3 is not None)
                rx = _reverse(xin, idx)  # type: ignore[arg-type]
                rys, _, rres = rcc.forward_train(rsub, [rx] if m3 is None else [rx, m3], None,
                                                 save=save)
                out = np.concatenate([out, _reverse(rys[0], idx)], axis=2)  # type: ignore
            cache["layers"].append((res, rres))
            x = out
        drop = self._dropout_mask(x.shape, rng)
        cache["drops"].append(drop)
        top = x * drop if drop is not None else x
        cache["top"] = top
        if self.pool != "step":
            pooled, cache["pool_aux"] = self._pool_fwd(top, lengths, m3)  # type: ignore
            cache["pooled"] = pooled
            return (self._head_mm(pooled, params["head.W"]) + params["head.b"], new_state,
                    cache)
        logits = self._head_mm(top.reshape(-1, top.shape[2]), params["head.W"]).reshape(
            top.shape[:2] + (-1,)) + params["head.b"]
        return self._user(logits), new_state, cache

    def backward(self, params: Arrays, cache: dict[str, Any], d_logits: np.ndarray,
                 d_final: State | None = None,
                 grad_ready: Callable[[Arrays], None] | None = None) -> tuple[Arrays, State]:
        """Gradients of every parameter and of the initial forward states, given the cotangent
        of the head's outputs (the layout ``forward`` returned) and (optionally) of the final
        forward states. ``grad_ready`` is called with each group of gradients as soon as it is
        final (the head, then each layer from the top, then the embedding), in the same order on
        every call: data-parallel training starts reducing a group while the layers below are
        still running backward."""
        grads: Arrays = {}
        T, Bn, top = cache["T"], cache["B"], cache["top"]
        H = top.shape[2]
        if self.pool != "step":
            d2 = np.asarray(d_logits)
            grads["head.W"] = self._head_mm(cache["pooled"].T, d2)
            grads["head.b"] = d2.sum(0)
            d_x = self._pool_bwd(self._head_mm(d2, params["head.W"].T), top.shape,
                                 cache["lengths"], cache["pool_aux"])
        else:
            d2 = np.swapaxes(d_logits, 0, 1) if self.batch_first else d_logits
            d2 = np.ascontiguousarray(d2).reshape(T * Bn, -1)
            grads["head.W"] = self._head_mm(top.reshape(T * Bn, H).T, d2)
            grads["head.b"] = d2.sum(0)
            d_x = self._head_mm(d2, params["head.W"].T).reshape(T, Bn, H)
        if grad_ready is not None:
            grad_ready({"head.W": grads["head.W"], "head.b": grads["head.b"]})
        m3, idx = cache["m3"], cache["idx"]
        d_state0: State = [[] for _ in self.layers]
        for i in reversed(range(len(self.layers))):
            drop = cache["drops"][i + 1]
            if drop is not None:
                d_x = d_x * drop
            lay = self.layers[i]
            res, rres = cache["layers"][i]
            n_out = int(lay.fwd.cell.outputs[0].shape[1])
            sub = self._sub(params, f"l{i}.")
            cc = self._cell_for(lay, "fwd", m3 is not None)
            d_ys = [d_x[:, :, :n_out]] + [None] * (len(cc.cell.outputs) - 1)
            g = cc.backward(sub, res, d_ys, d_final[i] if d_final is not None else None)
            grads.update({f"l{i}.{k}": v for k, v in g.params.items()})
            d_state0[i] = g.states
            d_in = g.inputs[0]
            if lay.rev is not None:
                rcc = self._cell_for(lay, "rev", m3 is not None)
                d_r = _reverse(d_x[:, :, n_out:], idx)
                rg = rcc.backward(self._sub(params, f"l{i}r."), rres,
                                  [d_r] + [None] * (len(rcc.cell.outputs) - 1), None)
                grads.update({f"l{i}r.{k}": v for k, v in rg.params.items()})
                d_in = d_in + _reverse(rg.inputs[0], idx)
            if grad_ready is not None:
                grad_ready({k: v for k, v in grads.items()
                            if k.startswith((f"l{i}.", f"l{i}r."))})
            d_x = d_in
        drop = cache["drops"][0]
        if drop is not None:
            d_x = d_x * drop
        if self.input == "embedding":
            dE = np.zeros_like(params["embed"])
            np.add.at(dE, np.asarray(cache["ids"]).reshape(-1),
                      d_x.reshape(T * Bn, -1))
            grads["embed"] = dE
            if grad_ready is not None:
                grad_ready({"embed": dE})
        return grads, d_state0

    # ---- losses ----
    @staticmethod
    def _softmax_ce(logits: np.ndarray, targets: np.ndarray, w: np.ndarray
                    ) -> tuple[float, np.ndarray, float]:
        """Summed weighted cross-entropy and the fused gradient ``(softmax - onehot) * w``."""
        z = logits - logits.max(axis=-1, keepdims=True)
        ez = np.exp(z)
        s = ez.sum(axis=-1, keepdims=True)
        logp_t = np.take_along_axis(z, targets[..., None], axis=-1)[..., 0] - np.log(s[..., 0])
        loss = -float(np.sum(w * logp_t, dtype=np.float64))
        d = ez / s
        np.put_along_axis(d, targets[..., None],
                          np.take_along_axis(d, targets[..., None], axis=-1) - 1, axis=-1)
        d *= w[..., None]
        return loss, d, float(np.sum(w, dtype=np.float64))

    @staticmethod
    def _mse(out: np.ndarray, targets: np.ndarray, w: np.ndarray
             ) -> tuple[float, np.ndarray, float]:
        """Summed weighted squared error, its gradient ``2 (y - t) w`` and the element count
        (weight x outputs: the mean is torch's ``MSELoss``)."""
        diff = out - targets
        wd = w[..., None]
        loss = float(np.sum(wd * diff * diff, dtype=np.float64))
        return loss, 2 * diff * wd, float(np.sum(w, dtype=np.float64)) * out.shape[-1]

    def _targets(self, targets: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """Class ids of ``shape`` (T, B) or (B,), or regression targets ``shape + (C,)``."""
        targets = np.asarray(targets)
        if self.head == "regress":
            want = tuple(shape) + (self.n_classes,)
            if targets.shape == tuple(shape) and self.n_classes == 1:
                targets = targets[..., None]
            if targets.shape != want or not np.issubdtype(targets.dtype, np.number):
                raise RuntimeInputError(f"regression targets: expected numbers of shape {want}"
                                        f", got {targets.dtype} {targets.shape}")
            return targets.astype(self.dtype, copy=False)
        if targets.shape != tuple(shape) or not np.issubdtype(targets.dtype, np.integer):
            raise RuntimeInputError(f"targets: expected integers of shape {tuple(shape)}, got "
                                    f"{targets.dtype} {targets.shape}")
        if targets.size and (targets.min() < 0 or targets.max() >= self.n_classes):
            raise RuntimeInputError(f"targets must be in [0, {self.n_classes})")
        return targets

    def _loss(self, out: np.ndarray, targets: np.ndarray, mask: np.ndarray | None,
              weights: np.ndarray | None) -> tuple[float, np.ndarray, float]:
        """(summed loss, its gradient w.r.t. ``out``, the weight it sums over), all in the
        user's layout. Per step the weights default to the mask; pooled, to one per sequence.
        """
        shape = out.shape[:-1]
        targets = self._targets(targets, shape)
        w = weights if weights is not None else (mask if self.pool == "step" else None)
        w = np.ones(shape, self.dtype) if w is None else np.asarray(w, self.dtype)
        if w.shape != shape:
            what = "(B,) per sequence" if self.pool != "step" else "like the targets"
            raise RuntimeInputError(f"weights: expected shape {shape} ({what}), got {w.shape}")
        if self.head == "regress":
            return self._mse(out, targets, w)
        return self._softmax_ce(out, targets, w)

    def loss_and_grads(self, params: Arrays, ids: np.ndarray, targets: np.ndarray,
                       state: State | None = None, mask: np.ndarray | None = None,
                       weights: np.ndarray | None = None, rng: np.random.Generator | None = None,
                       d_final: State | None = None, grad_scale: float | None = None,
                       grad_ready: Callable[[Arrays], None] | None = None) -> Result:
        """Mean loss (cross-entropy per weighted token or sequence, or squared error per
        weighted element) and its gradients.

        ``mask`` (T, B) stops the states past each sequence's end and, for a per-step head
        unless ``weights`` is given, also weights the loss. Pooled heads take targets (B,) (or
        (B, C) for regression) and optional ``weights`` (B,). The gradient is of
        ``loss_sum * grad_scale`` where grad_scale defaults to 1/weight (the mean).
        ``grad_ready``: see ``backward``."""
        out, new_state, cache = self.forward(params, ids, state, mask, rng)
        loss_sum, d_out, tokens = self._loss(out, targets, mask, weights)
        scale = grad_scale if grad_scale is not None else 1.0 / max(tokens, 1e-12)
        d_out *= np.asarray(scale, self.dtype)
        grads, d0 = self.backward(params, cache, d_out, d_final, grad_ready)
        return Result(loss_sum / max(tokens, 1e-12), grads, new_state, tokens, d0, out)

    def evaluate(self, params: Arrays, ids: np.ndarray, targets: np.ndarray,
                 state: State | None = None, mask: np.ndarray | None = None,
                 weights: np.ndarray | None = None) -> tuple[float, float, State, np.ndarray]:
        """(summed loss, weight, final state, head outputs) without dropout or gradients."""
        out, new_state = self.predict(params, ids, state, mask)
        loss_sum, _, tokens = self._loss(out, targets, mask, weights)
        return loss_sum, tokens, new_state, out

    def predict(self, params: Arrays, ids: np.ndarray, state: State | None = None,
                mask: np.ndarray | None = None) -> tuple[np.ndarray, State]:
        """Head outputs (logits, or regression predictions) and final states, in eval mode."""
        was = self.training
        self.training = False
        try:
            out, new_state, _ = self.forward(params, ids, state, mask, save=False)
        finally:
            self.training = was
        return out, new_state

    # ---- one step, for sampling ----
    def step(self, params: Arrays, ids: np.ndarray, state: State | None = None
             ) -> tuple[np.ndarray, State]:
        """Logits (B, C) for one time step of ids (B,), using each cell's single-step entry."""
        if self.bidirectional:
            raise GraphError("a bidirectional model reads the whole sequence; it cannot step")
        if self.pool in ("mean", "max"):
            raise GraphError(f"a {self.pool}-pooled head reads the whole sequence; step() "
                             "gives per-step (pool='step') or running (pool='last') outputs")
        x = self._embed(params, np.asarray(ids).reshape(1, -1))[0]
        if state is None:
            state = self.zero_state(x.shape[0])
        new_state: State = []
        for i, lay in enumerate(self.layers):
            ys, h = lay.fwd.step(self._sub(params, f"l{i}."), x, state[i])
            new_state.append(h)
            x = ys[0]
        return x @ params["head.W"] + params["head.b"], new_state


# ---- building stacks ----

def stack(make: Callable[[int, int], Cell] | str, n_layers: int, input_size: int,
          hidden_size: int, bidirectional: bool = False,
          dtype: str = "float32") -> list[Cell | tuple[Cell, Cell]]:
    """The cells of an n-layer stack: ``make(input_size, hidden_size)`` (or a zoo name) per
    layer; layer i > 0 reads the layer below (twice as wide when bidirectional)."""
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers}")
    out: list[Cell | tuple[Cell, Cell]] = []
    size = input_size
    for _ in range(n_layers):
        c = make_cell(make, size, hidden_size, dtype) if isinstance(make, str) \
            else make(size, hidden_size)
        if bidirectional:
            r = make_cell(make, size, hidden_size, dtype) if isinstance(make, str) \
                else make(size, hidden_size)
            out.append((c, r))
            size = 2 * int(c.outputs[0].shape[1])
        else:
            out.append(c)
            size = int(c.outputs[0].shape[1])
    return out
