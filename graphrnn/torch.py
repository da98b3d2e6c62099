"""graphrnn from PyTorch: a compiled cell as a differentiable PyTorch op and an ``nn.Module``.

    import graphrnn.torch as gt          # imports torch (``import graphrnn`` alone never does)
    rnn = gt.Module("lstm", input_size=10, hidden_size=20, num_layers=2, bidirectional=True)
    ys, (h_n, c_n) = rnn(x)                            # as torch.nn.LSTM, x (T, B, 10)
    rnn.load_state_dict(torch_lstm.state_dict())       # and back: the same keys and shapes

    ys, hT = gt.run(compiled, params, xs, h0)          # the functional form, graphrnn's layout

The op. ``run`` calls two ``torch.library.custom_op``s, ``graphrnn::forward`` and
``graphrnn::backward``, with a registered autograd formula and fake (meta) kernels, so
``torch.compile`` traces a model through them without a graph break and ``gradcheck`` checks
them like any op. A custom op's outputs can only be tensors, and ``CompiledCell.backward`` needs
the opaque ``Residuals`` token ``forward_train`` made (it owns copies of what the backward reads
and remembers the parameters the forward ran with; see the contract in ``graphrnn.api``). The
forward op therefore returns one more output, a 0-d int64 *handle*: the key of the token in a
table here. The autograd formula saves the handle for the backward (as any saved output), the
backward op looks the token up by it, and the entry dies with the handle tensor (a finalizer on
it), so a graph that is freed without a backward leaks nothing. Returning the residual buffers
themselves as tensors would expose each backend's private buffer layout and lose the token's
checks; the handle keeps them opaque. Double backward (``create_graph=True`` followed by a second
``backward``) raises a ``RuntimeError`` saying so: the backward is native code with no graph.

Zero copy. CPU tensors reach the backend as numpy views (``Tensor.numpy()`` shares memory, any
strides), CUDA tensors as CuPy arrays through DLPack (``backend="cuda"``); what the backend
returns (fresh arrays the caller owns, by the contract) becomes tensors through
``torch.from_numpy`` / ``torch.from_dlpack`` without a copy. A training forward of the llvm
backend copies the parameters and the inputs its backward reads into its own pooled buffers
(the residuals must own them), and nothing else.

The module. ``Module(cell_or_compiled, ...)`` is an ``nn.Module`` over any cell: a zoo name
(``"lstm"``, ``"gru_torch"``, ...; then ``input_size``/``hidden_size``), a ``Cell`` (e.g. from
``graphrnn.equations``), a callable ``make(input_size) -> Cell`` (for stacked layers whose
input size differs), or a ``CompiledCell``. ``num_layers``, ``bidirectional``, ``batch_first``,
``dropout`` (between layers, in training) as ``nn.LSTM``; input a (T, B, I) tensor (B, T, I with
``batch_first``), a ``PackedSequence``, or a padded tensor with ``lengths=``. Variable lengths
run the cell's masked variant (``graphrnn.model.masked_cell``): the states stop at each
sequence's end, so the final state is the one at its last valid step, the reverse direction
reverses each sequence within its own length, and outputs past the end are 0 (as
``pad_packed_sequence`` gives them).

Parameters are ``nn.Parameter``s in PyTorch's layout, one set per layer and direction, named as
``nn.LSTM`` names them: ``{name}_l{k}`` and ``{name}_l{k}_reverse``. The zoo cells ``lstm``
(gate order i, f, g, o, no forget bias), ``gru_torch`` and ``rnn_tanh`` are PyTorch's LSTM,
GRU and tanh RNN, and their parameters are exactly ``nn.LSTM``'s / ``nn.GRU``'s / ``nn.RNN``'s
(``weight_ih_l0`` (G*H, I), ``weight_hh_l0`` (G*H, H), ``bias_ih_l0``, ``bias_hh_l0``), so
``state_dict``s load both ways; the cell's ``W_x``/``W_h`` are their transposes and its ``b`` the
sum of the two biases, computed in the forward by PyTorch ops (views and one add), so the
gradients reach each PyTorch parameter through autograd. Any other cell keeps its parameter
names; a weight the cell uses as ``x @ W`` (the zoo's (in, out) convention) is stored transposed,
(out, in), like ``nn.Linear.weight``; one used as ``W @ x`` (the equations frontend, already
(out, in)) as it is; a (1, n) vector (bias, peephole) as (n,); anything else (an embedding
table) as it is. ``cell_params(layer, reverse)`` and ``load_cell_params`` convert from and to
graphrnn's own layout (``CompiledCell.init_params``, checkpoints). Parameters start as
``nn.LSTM``'s do, uniform in (-1/sqrt(H), 1/sqrt(H)) from torch's generator. ``model.double()``
works: the cell is compiled for each dtype it meets.

Threads. Each native call runs under ``graphrnn.threads.native_call()``, the one policy for who
owns the cores while graphrnn computes (see ``graphrnn/threads.py``).
"""

from __future__ import annotations

import itertools
import math
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from . import threads as _threads
from .api import CompiledCell, Residuals
from .api import compile as _compile
from .errors import RuntimeInputError
from .ir import Cell, Node
from .model import masked_cell
from .ops import Ops

__all__ = ["Module", "run", "torch_layout"]

# ---- the op: compiled cells and residual tokens by integer key ----

_CELLS: weakref.WeakValueDictionary[int, CompiledCell] = weakref.WeakValueDictionary()
# handle -> (residuals, the parameter arrays forward_train was given: backward passes the very
# same objects, so the token's parameter check is an identity test, not a comparison)
_RESIDUALS: dict[int, tuple[Residuals, dict[str, Any]]] = {}
_KEYS = itertools.count(1)


@torch.compiler.assume_constant_result
def _key_of(cc: CompiledCell) -> int:
    """The op's integer name of a compiled cell (registered here; under ``torch.compile`` this
    runs once, when the graph is traced, and the key is a constant of the graph)."""
    key = id(cc)
    if _CELLS.get(key) is not cc:
        _CELLS[key] = cc
    return key


def _cell(key: int) -> CompiledCell:
    cc = _CELLS.get(key)
    if cc is None:
        raise RuntimeError(f"graphrnn: compiled cell {key} no longer exists (a compiled graph "
                           "outlived the module or compiled cell it was traced with)")
    return cc


def _to_backend(t: Tensor) -> Any:
    """A tensor as the backend reads it, sharing memory: a numpy view (CPU) or a CuPy array
    (CUDA, through DLPack)."""
    t = t.detach()
    if t.device.type == "cpu":
        return t.resolve_conj().resolve_neg().numpy()
    if t.device.type == "cuda":
        import cupy
        return cupy.from_dlpack(t)
    raise RuntimeInputError(f"graphrnn.torch: tensors on {t.device} are not supported (cpu "
                            "with the llvm/ref backends, cuda with backend='cuda')")


def _to_tensor(a: Any) -> Tensor:
    if isinstance(a, np.ndarray):
        if not a.flags.writeable:   # torch.from_numpy warns on read-only arrays: copy those
            a = a.copy()
        return torch.from_numpy(a)
    return torch.from_dlpack(a)


def _native_call() -> Any:
    """The thread policy for PyTorch (``graphrnn.threads``; default: on torch's OpenMP pool)."""
    return _threads.native_call("torch", torch.get_num_threads(), torch.set_num_threads)


@torch.library.custom_op("graphrnn::forward", mutates_args=())
def _forward_op(cell: int, train: bool, xs: list[Tensor], h0: list[Tensor],
                params: list[Tensor]) -> list[Tensor]:
    """ys (one per output) + final states (one per state) + a 0-d int64 handle (0 when not
    training) to the residuals."""
    cc = _cell(cell)
    names = [p.arg for p in cc.cell.params]
    p_arrays = {n: _to_backend(t) for n, t in zip(names, params)}
    x_arrays = [_to_backend(t) for t in xs]
    h_arrays = [_to_backend(t) for t in h0]
    with _native_call():
        ys, hT, res = cc.forward_train(p_arrays, x_arrays, h_arrays, save=train)
    out = [_to_tensor(y) for y in ys] + [_to_tensor(h) for h in hT]
    device = xs[0].device
    if res is None:
        return out + [torch.zeros((), dtype=torch.int64, device=device)]
    key = next(_KEYS)
    _RESIDUALS[key] = (res, p_arrays)
    handle = torch.tensor(key, dtype=torch.int64, device=device)
    # the entry lives as long as the handle: the autograd graph holds it until its backward
    # has run (or the graph is dropped)
    weakref.finalize(handle, _RESIDUALS.pop, key, None)
    return out + [handle]


def _out_widths(cc: CompiledCell) -> tuple[list[int], list[int]]:
    return ([int(o.shape[1]) for o in cc.cell.outputs],
            [int(s.shape[1]) for s in cc.cell.states])


@_forward_op.register_fake
def _forward_fake(cell: int, train: bool, xs: list[Tensor], h0: list[Tensor],
                  params: list[Tensor]) -> list[Tensor]:
    cc = _cell(cell)
    T, B = xs[0].shape[0], xs[0].shape[1]
    dt = params[0].dtype if params else _DTYPES[cc.dtype]
    outs, states = _out_widths(cc)
    return ([xs[0].new_empty((T, B, n), dtype=dt) for n in outs]
            + [xs[0].new_empty((B, n), dtype=dt) for n in states]
            + [xs[0].new_empty((), dtype=torch.int64)])


@torch.library.custom_op("graphrnn::backward", mutates_args=())
def _backward_op(cell: int, handle: Tensor, T: int, B: int, d_ys: list[Tensor | None],
                 d_final: list[Tensor | None], primals: list[Tensor]) -> list[Tensor]:
    """Gradients: one per input, one per initial state, one per parameter (cell order).
    ``primals`` (the forward's inputs, states and parameters) are not read: the residuals hold
    what the backward needs. They are arguments so that the gradients depend on them in
    autograd's eyes, and a second derivative reaches ``_no_double_backward`` (an error) rather
    than being silently zero."""
    cc = _cell(cell)
    entry = _RESIDUALS.get(int(handle))
    if entry is None:
        raise RuntimeError("graphrnn: the residuals of this forward are gone (backward ran "
                           "after its graph was freed?)")
    res, p_arrays = entry
    dys = [None if d is None else _to_backend(d) for d in d_ys]
    dfin = [None if d is None else _to_backend(d) for d in d_final]
    with _native_call():
        g = cc.backward(p_arrays, res, dys, dfin)
    return ([_to_tensor(a) for a in g.inputs] + [_to_tensor(a) for a in g.states]
            + [_to_tensor(g.params[p.arg]) for p in cc.cell.params])


@_backward_op.register_fake
def _backward_fake(cell: int, handle: Tensor, T: int, B: int, d_ys: list[Tensor | None],
                   d_final: list[Tensor | None], primals: list[Tensor]) -> list[Tensor]:
    cc = _cell(cell)
    dt = _DTYPES[cc.dtype]
    new = handle.new_empty
    return ([new((T, B, int(n.shape[1])), dtype=dt) for n in cc.cell.inputs]
            + [new((B, int(s.shape[1])), dtype=dt) for s in cc.cell.states]
            + [new(tuple(int(d) for d in p.shape), dtype=dt) for p in cc.cell.params])


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: list[Tensor]) -> None:
    cell, _train, xs, h0, params = inputs
    ctx.cell = cell
    ctx.counts = (len(xs), len(h0), len(params))
    ctx.T, ctx.B = xs[0].shape[0], xs[0].shape[1]
    ctx.float_inputs = [x.is_floating_point() for x in xs]
    ctx.save_for_backward(output[-1], *xs, *h0, *params)


def _backward_formula(ctx: Any, grads: list[Tensor | None]) -> tuple[Any, ...]:
    handle, *primals = ctx.saved_tensors
    cc = _cell(ctx.cell)
    n_out, n_state = len(cc.cell.outputs), len(cc.cell.states)
    d_ys = list(grads[:n_out])
    d_final = list(grads[n_out:n_out + n_state])
    g = _backward_op(ctx.cell, handle, ctx.T, ctx.B, d_ys, d_final, primals)
    nx, nh, _np = ctx.counts
    dx = [gi if f else None for gi, f in zip(g[:nx], ctx.float_inputs)]
    return None, None, dx, list(g[nx:nx + nh]), list(g[nx + nh:])


torch.library.register_autograd("graphrnn::forward", _backward_formula,
                                setup_context=_setup_context)


def _no_double_backward(ctx: Any, grads: list[Tensor | None]) -> tuple[Any, ...]:
    raise RuntimeError("graphrnn: double backward is not supported: the gradients of a "
                       "graphrnn cell come from its compiled native backward, which has no "
                       "graph of its own to differentiate again (create_graph=True works for "
                       "first derivatives only)")


def _setup_nothing(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    pass


torch.library.register_autograd("graphrnn::backward", _no_double_backward,
                                setup_context=_setup_nothing)

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _check_tensor(what: str, t: Any, shape: tuple[Any, ...], dtype: torch.dtype | None,
                  device: torch.device | None = None) -> None:
    if not isinstance(t, Tensor):
        raise RuntimeInputError(f"{what}: expected a torch.Tensor of shape {shape}, got "
                                f"{type(t).__name__}")
    if t.dim() != len(shape) or any(w is not None and int(s) != w
                                    for s, w in zip(t.shape, shape)):
        want = "(" + ", ".join("?" if w is None else str(w) for w in shape) + ")"
        raise RuntimeInputError(f"{what}: expected shape {want}, got {tuple(t.shape)}")
    if dtype is not None and t.dtype != dtype:
        raise RuntimeInputError(f"{what}: expected dtype {dtype} (the compiled cell's), got "
                                f"{t.dtype}")
    if device is not None and t.device != device:
        raise RuntimeInputError(f"{what}: expected a tensor on {device}, got one on {t.device}")


def run(cc: CompiledCell, params: dict[str, Tensor], xs: Tensor | Sequence[Tensor],
        h0: Tensor | Sequence[Tensor] | None = None) -> tuple[list[Tensor], list[Tensor]]:
    """The compiled cell over a whole sequence as a differentiable PyTorch op, in graphrnn's
    layout: ``params`` by the cell's names and shapes ((in, out) weights), ``xs`` (T, B, n), one
    per input, ``h0`` (B, n) per state (None: zeros). Returns ``(ys, final_states)`` as lists.
    Gradients flow to every tensor that requires them; the residuals are saved only then."""
    if not isinstance(cc, CompiledCell):
        raise TypeError(f"run: expected a CompiledCell (graphrnn.compile(...)), got "
                        f"{type(cc).__name__}")
    cell = cc.cell
    xs_l = [xs] if isinstance(xs, Tensor) else list(xs)
    if len(xs_l) != len(cell.inputs):
        raise RuntimeInputError(f"xs: cell {cell.name!r} takes {len(cell.inputs)} inputs "
                                f"{[n.arg for n in cell.inputs]}, got {len(xs_l)}")
    dt = _DTYPES[cc.dtype]
    for n, x in zip(cell.inputs, xs_l):
        _check_tensor(f"input {n.arg!r}", x, (None, None, int(n.shape[1])),
                      torch.int64 if n.dtype == "int64" else dt)
    T, B = int(xs_l[0].shape[0]), int(xs_l[0].shape[1])
    device = xs_l[0].device
    for n, x in zip(cell.inputs, xs_l):
        _check_tensor(f"input {n.arg!r}", x, (T, B, int(n.shape[1])), None, device)
    if h0 is None:
        h_l = [torch.zeros((B, int(s.shape[1])), dtype=dt, device=device) for s in cell.states]
    else:
        h_l = [h0] if isinstance(h0, Tensor) else list(h0)
        if len(h_l) != len(cell.states):
            raise RuntimeInputError(f"h0: cell {cell.name!r} has {len(cell.states)} states "
                                    f"{[s.arg for s in cell.states]}, got {len(h_l)}")
        for s, h in zip(cell.states, h_l):
            _check_tensor(f"state {s.arg!r}", h, (B, int(s.shape[1])), dt, device)
    if not isinstance(params, dict):
        raise RuntimeInputError(f"params: expected a dict name -> tensor, got "
                                f"{type(params).__name__}")
    p_l = []
    for p in cell.params:
        if p.arg not in params:
            raise RuntimeInputError(f"missing parameter {p.arg!r}; expected "
                                    f"{sorted(cell.param_shapes())}")
        _check_tensor(f"parameter {p.arg!r}", params[p.arg], tuple(int(d) for d in p.shape),
                      dt, device)
        p_l.append(params[p.arg])
    return _apply(_key_of(cc), len(cell.states), xs_l, h_l, p_l)


def _apply(key: int, n_states: int, xs: list[Tensor], h0: list[Tensor],
           params: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    """The op on checked arguments; the residuals are kept only when a gradient can flow."""
    train = torch.is_grad_enabled() and any(
        t.requires_grad for t in itertools.chain(xs, h0, params))
    out = _forward_op(key, train, xs, h0, params)
    n_out = len(out) - 1 - n_states
    return list(out[:n_out]), list(out[n_out:n_out + n_states])


# ---- parameter layouts ----

def _uses(cell: Cell) -> dict[Node, set[tuple[Ops, int, Any]]]:
    """Per parameter node, how it is used: (op, operand position, arg) of each consumer."""
    from .ir import toposort
    uses: dict[Node, set[tuple[Ops, int, Any]]] = {p: set() for p in cell.params}
    for n in toposort(cell.roots):
        for i, s in enumerate(n.src):
            if s in uses:
                uses[s].add((n.op, i, n.arg if n.op is Ops.MATMUL else None))
    return uses


# (torch base name, the torch parameter's shape), and the cell's parameters from the torch ones
Layout = tuple[list[tuple[str, tuple[int, ...]]], Callable[[dict[str, Tensor]], dict[str, Tensor]],
               Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]]


def torch_layout(cell: Cell) -> Layout:
    """How a cell's parameters are held as PyTorch parameters: ``(specs, to_cell, from_cell)``.
    ``specs``: (base name, torch shape) of each ``nn.Parameter`` (``nn.LSTM``'s names for the
    zoo's lstm / gru_torch / rnn_tanh, the cell's own otherwise); ``to_cell(torch_params)``: the
    cell's parameter tensors by name, as differentiable views of them (and sums);
    ``from_cell(cell_params)``: torch-layout arrays from graphrnn-layout ones."""
    from . import cells
    I, H = int(cell.inputs[0].shape[1]), int(cell.states[0].shape[1])
    for name, gates in (("lstm", 4), ("gru_torch", 3), ("rnn_tanh", 1)):
        try:
            same = cell == cells.zoo_cell(name, I, H, cell.dtype)
        except Exception:   # noqa: BLE001 - sizes this zoo cell refuses: not it
            same = False
        if same:
            return _torch_rnn_layout(name, I, H, gates)
    uses = _uses(cell)
    specs: list[tuple[str, tuple[int, ...]]] = []
    kinds: list[str] = []
    for p in cell.params:
        rows, cols = (int(d) for d in p.shape)
        u = uses[p]
        if u and all(op is Ops.MATMUL and i == 1 and arg[1] is False for op, i, arg in u):
            kinds.append("T")
            specs.append((p.arg, (cols, rows)))
        elif rows == 1:
            kinds.append("vec")
            specs.append((p.arg, (cols,)))
        else:
            kinds.append("same")
            specs.append((p.arg, (rows, cols)))
    names = [p.arg for p in cell.params]

    def to_cell(tp: dict[str, Tensor]) -> dict[str, Tensor]:
        out = {}
        for n, k in zip(names, kinds):
            t = tp[n]
            out[n] = t.t() if k == "T" else t.unsqueeze(0) if k == "vec" else t
        return out

    def from_cell(cp: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {n: (np.ascontiguousarray(np.asarray(cp[n]).T) if k == "T" else
                    np.asarray(cp[n])[0].copy() if k == "vec" else np.array(cp[n]))
                for n, k in zip(names, kinds)}

    return specs, to_cell, from_cell


def _torch_rnn_layout(name: str, I: int, H: int, gates: int) -> Layout:  # noqa: E741
    G = gates * H
    specs = [("weight_ih", (G, I)), ("weight_hh", (G, H)), ("bias_ih", (G,)),
             ("bias_hh", (G,))]

    def to_cell(tp: dict[str, Tensor]) -> dict[str, Tensor]:
        w_x, w_h = tp["weight_ih"].t(), tp["weight_hh"].t()
        if name == "gru_torch":   # both biases are the cell's
            return {"W_x": w_x, "W_h": w_h, "b_x": tp["bias_ih"].unsqueeze(0),
                    "b_h": tp["bias_hh"].unsqueeze(0)}
        return {"W_x": w_x, "W_h": w_h, "b": (tp["bias_ih"] + tp["bias_hh"]).unsqueeze(0)}

    def from_cell(cp: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from . import convert  # the converters to torch's state dicts, keys without "_l0"
        to_torch = {"lstm": convert.lstm_to_torch, "gru_torch": convert.gru_torch_to_torch,
                    "rnn_tanh": convert.rnn_to_torch}[name]
        return {k.removesuffix("_l0"): v for k, v in to_torch(cp).items()}

    return specs, to_cell, from_cell


# ---- the module ----

def _rev_index(lengths: Tensor, T: int) -> Tensor:
    """(T, B) time indices that reverse each sequence within its own length (padding stays at
    the end); the map is its own inverse."""
    t = torch.arange(T, device=lengths.device)[:, None]
    L = lengths[None, :]
    return torch.where(t < L, L - 1 - t, t)


def _take_time(x: Tensor, idx: Tensor) -> Tensor:
    return x.gather(0, idx[:, :, None].expand(-1, -1, x.shape[2]))


class Module(nn.Module):
    """A graphrnn cell as a PyTorch recurrent layer (see the module docstring)."""

    def __init__(self, cell_or_compiled: Any, input_size: int | None = None,
                 hidden_size: int | None = None, num_layers: int = 1,
                 bidirectional: bool = False, batch_first: bool = False, dropout: float = 0.0,
                 backend: str = "llvm", dtype: str | None = None,
                 **compile_options: Any) -> None:
        super().__init__()
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers must be a positive int, got {num_layers!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.num_layers = num_layers
        self.bidirectional = bool(bidirectional)
        self.batch_first = bool(batch_first)
        self.dropout = float(dropout)
        self.backend = backend
        self._options = compile_options
        self._compiled: dict[tuple[str, int, bool], CompiledCell] = {}
        first, make = self._first_cell(cell_or_compiled, input_size, hidden_size, dtype)
        if len(first.inputs) != 1:
            raise ValueError(f"Module: cell {first.name!r} has {len(first.inputs)} inputs "
                             f"{[n.arg for n in first.inputs]}; a recurrent layer takes one "
                             "per-step input (use graphrnn.torch.run for several)")
        if first.inputs[0].dtype == "int64":
            raise ValueError(f"Module: cell {first.name!r} reads token ids; embed them in "
                             "PyTorch (nn.Embedding) and give the cell a float input")
        self.dtype = first.dtype
        self.input_size = int(first.inputs[0].shape[1])
        self.hidden_size = int(first.states[0].shape[1])
        self.output_size = int(first.outputs[0].shape[1])
        self.state_sizes = [int(s.shape[1]) for s in first.states]
        self.state_names = [s.arg for s in first.states]
        D = 2 if self.bidirectional else 1
        self._cells: list[Cell] = [first]
        for k in range(1, num_layers):
            want = self.output_size * D
            c = make(want) if make is not None else first
            if int(c.inputs[0].shape[1]) != want:
                raise ValueError(f"Module: layer {k} takes the previous layer's output of size "
                                 f"{want}, but cell {c.name!r} takes {int(c.inputs[0].shape[1])}"
                                 "; pass a zoo name or a callable make(input_size) -> Cell")
            self._cells.append(c.with_dtype(first.dtype))
        self._layouts = [torch_layout(c) for c in self._cells]
        # per layer, [plain, masked]: the order the op takes the cell's parameters in
        self._param_order = [[[p.arg for p in c.params], [p.arg for p in masked_cell(c).params]]
                             for c in self._cells]
        # (names of the torch parameters of layer k, direction d) in the layout's order
        self._pnames: list[list[list[str]]] = []
        bound = 1.0 / math.sqrt(self.hidden_size)
        tdt = _DTYPES[self.dtype]
        for k, (specs, _to, _from) in enumerate(self._layouts):
            per_dir = []
            for d in range(D):
                names = []
                for base, shape in specs:
                    pname = f"{base}_l{k}" + ("_reverse" if d else "")
                    p = nn.Parameter(torch.empty(shape, dtype=tdt).uniform_(-bound, bound))
                    self.register_parameter(pname, p)
                    names.append(pname)
                per_dir.append(names)
            self._pnames.append(per_dir)

    def _first_cell(self, c: Any, input_size: int | None, hidden_size: int | None,
                    dtype: str | None) -> tuple[Cell, Callable[[int], Cell] | None]:
        from . import cells
        if isinstance(c, str):
            if input_size is None or hidden_size is None:
                raise ValueError(f"Module({c!r}): a zoo cell needs input_size and hidden_size")
            dt = dtype or "float32"
            return (cells.zoo_cell(c, input_size, hidden_size, dt),
                    lambda n: cells.zoo_cell(c, n, hidden_size, dt))
        if isinstance(c, CompiledCell):
            self.backend = c.backend_name
            self._compiled[(c.dtype, int(c.cell.inputs[0].shape[1]), False)] = c
            return c.cell, None
        if isinstance(c, Cell):
            return c.with_dtype(dtype or c.dtype), None
        if callable(c):
            if input_size is None:
                raise ValueError("Module(make): a cell-making callable needs input_size")
            cell = c(input_size)
            if not isinstance(cell, Cell):
                raise TypeError(f"Module(make): make({input_size}) returned "
                                f"{type(cell).__name__}, expected a graphrnn Cell")
            dt = dtype or cell.dtype
            return cell.with_dtype(dt), lambda n: c(n)
        raise TypeError(f"Module: expected a zoo cell name, a Cell, a CompiledCell or a "
                        f"callable input_size -> Cell, got {type(c).__name__}")

    def extra_repr(self) -> str:
        s = (f"{self._cells[0].name}, {self.input_size}, {self.hidden_size}, "
             f"num_layers={self.num_layers}, backend={self.backend!r}")
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.batch_first:
            s += ", batch_first=True"
        return s

    # ---- compiled cells, per (dtype, layer cell, masked) ----
    def compiled(self, layer: int = 0, dtype: str | None = None,
                 masked: bool = False) -> CompiledCell:
        """The compiled cell layer ``layer`` runs (compiled on first use)."""
        cell = self._cells[layer]
        dt = dtype or self.dtype
        key = (dt, int(cell.inputs[0].shape[1]), masked)
        cc = self._compiled.get(key)
        if cc is None:
            base = masked_cell(cell) if masked else cell
            cc = _compile(base.with_dtype(dt), self.backend, dt, **self._options)
            self._compiled[key] = cc
        return cc

    # ---- parameters in graphrnn's layout ----
    def _cell_tensors(self, layer: int, d: int) -> dict[str, Tensor]:
        tp = {base: getattr(self, n) for (base, _s), n in
              zip(self._layouts[layer][0], self._pnames[layer][d])}
        return self._layouts[layer][1](tp)

    def cell_params(self, layer: int = 0, reverse: bool = False) -> dict[str, np.ndarray]:
        """Layer ``layer``'s parameters (its reverse direction's with ``reverse``) in graphrnn's
        layout, as numpy copies: what ``CompiledCell.forward`` takes."""
        ts = self._cell_tensors(layer, int(reverse))
        return {n: t.detach().cpu().numpy().copy() for n, t in ts.items()}

    @torch.no_grad()
    def load_cell_params(self, params: dict[str, Any], layer: int = 0,
                         reverse: bool = False) -> None:
        """Set layer ``layer``'s parameters from graphrnn-layout arrays (``init_params``)."""
        cell = self._cells[layer]
        shapes = cell.param_shapes()
        for name, shape in shapes.items():
            if name not in params:
                raise KeyError(f"load_cell_params: no {name!r}; expected {sorted(shapes)}")
            if tuple(np.shape(params[name])) != tuple(shape):
                raise RuntimeInputError(f"load_cell_params: {name!r}: expected shape "
                                        f"{tuple(shape)}, got {tuple(np.shape(params[name]))}")
        arrays = self._layouts[layer][2]({k: np.asarray(params[k]) for k in shapes})
        for (base, _s), n in zip(self._layouts[layer][0], self._pnames[layer][int(reverse)]):
            p = getattr(self, n)
            p.copy_(torch.as_tensor(arrays[base], dtype=p.dtype))

    # ---- forward ----
    def forward(self, x: Tensor | PackedSequence, state: Any = None,
                lengths: Tensor | Sequence[int] | None = None) -> tuple[Any, Any]:
        """``(ys, final_state)`` as ``nn.LSTM``: ys (T, B, D*out) (batch first if asked, a
        PackedSequence for one); final_state per state (L*D, B, n): one tensor for a
        one-state cell, a tuple in the cell's state order otherwise (the LSTM: (h, c))."""
        packed = isinstance(x, PackedSequence)
        if packed:
            if lengths is not None:
                raise ValueError("forward: lengths= is for padded input; a PackedSequence "
                                 "carries its own")
            xp, lens = pad_packed_sequence(x, batch_first=False)
            pk = x
            x = xp
        else:
            _check_tensor("input", x, (None, None, self.input_size), None)
            if self.batch_first:
                x = x.transpose(0, 1)
            lens = None
            if lengths is not None:
                lens = torch.as_tensor(lengths, dtype=torch.int64).cpu()
        pdt = getattr(self, self._pnames[0][0][0]).dtype
        if x.dtype != pdt:
            raise RuntimeInputError(f"input: expected dtype {pdt} (the module's parameters), "
                                    f"got {x.dtype}")
        T, B = int(x.shape[0]), int(x.shape[1])
        if lens is not None:
            if tuple(lens.shape) != (B,):
                raise RuntimeInputError(f"lengths: expected ({B},), got {tuple(lens.shape)}")
            # value checks read the data: not while torch.compile traces (no graph break)
            if not torch.compiler.is_compiling():
                if B and (int(lens.min()) < 1 or int(lens.max()) > T):
                    raise RuntimeInputError(f"lengths: expected values in [1, {T}], got "
                                            f"[{int(lens.min())}, {int(lens.max())}]")
                if B and bool((lens == T).all()):
                    lens = None
        dt = {torch.float32: "float32", torch.float64: "float64"}.get(pdt)
        if dt is None:
            raise RuntimeInputError(f"parameters: expected float32 or float64, got {pdt}")
        D = 2 if self.bidirectional else 1
        h0 = self._initial_state(state, B, x)
        masked = lens is not None
        if masked:
            lens_d = lens.to(x.device)
            mask = (torch.arange(T, device=x.device)[:, None] < lens_d[None, :]).to(pdt)
            mask3 = mask[:, :, None]
            rev = _rev_index(lens_d, T)
        finals: list[list[Tensor]] = [[] for _ in self.state_sizes]
        inp = x
        for k in range(self.num_layers):
            key = _prepare_layer(self, k, dt, masked)
            order = self._param_order[k][masked]
            outs = []
            for d in range(D):
                seq = inp
                if d:
                    seq = _take_time(inp, rev) if masked else inp.flip(0)
                xs = [seq, mask3] if masked else [seq]
                tensors = self._cell_tensors(k, d)
                ys, hT = _apply(key, len(self.state_sizes), xs, [h[k * D + d] for h in h0],
                                [tensors[n] for n in order])
                y = ys[0]
                if d:
                    y = _take_time(y, rev) if masked else y.flip(0)
                outs.append(y)
                for i, h in enumerate(hT):
                    finals[i].append(h)
            inp = outs[0] if D == 1 else torch.cat(outs, dim=2)
            if masked:
                inp = inp * mask3
            if self.dropout and self.training and k < self.num_layers - 1:
                inp = nn.functional.dropout(inp, self.dropout, True)
        final = [torch.stack(f, 0) for f in finals]
        final_state: Any = final[0] if len(final) == 1 else tuple(final)
        if packed:
            return _pack_like(inp, pk), final_state
        if self.batch_first:
            inp = inp.transpose(0, 1)
        return inp, final_state

    def _initial_state(self, state: Any, B: int, x: Tensor) -> list[Tensor]:
        LD = self.num_layers * (2 if self.bidirectional else 1)
        if state is None:
            return [x.new_zeros((LD, B, n)) for n in self.state_sizes]
        st = [state] if isinstance(state, Tensor) else list(state)
        if len(st) != len(self.state_sizes):
            raise RuntimeInputError(f"state: cell {self._cells[0].name!r} has "
                                    f"{len(self.state_sizes)} states {self.state_names}, got "
                                    f"{len(st)}")
        for name, n, s in zip(self.state_names, self.state_sizes, st):
            _check_tensor(f"state {name!r}", s, (LD, B, n), x.dtype, x.device)
        return st


@torch.compiler.assume_constant_result
def _prepare_layer(module: Module, layer: int, dtype: str, masked: bool) -> int:
    """Compile (on first use) the cell layer ``layer`` runs and return its key. Under
    ``torch.compile`` this runs when the graph is traced, never inside the graph, so compiling a
    new variant (a dtype, the masked cell for lengths) costs no graph break."""
    return _key_of(module.compiled(layer, dtype, masked))


def _pack_like(padded: Tensor, pk: PackedSequence) -> PackedSequence:
    """The padded (T, B, n) outputs as a PackedSequence with ``pk``'s order and batch sizes."""
    bs = pk.batch_sizes
    order = pk.sorted_indices if pk.sorted_indices is not None else torch.arange(int(bs[0]))
    order = order.to(padded.device)
    t_idx = torch.repeat_interleave(torch.arange(len(bs)), bs).to(padded.device)
    b_idx = torch.cat([order[:int(n)] for n in bs])
    return PackedSequence(padded[t_idx, b_idx], bs, pk.sorted_indices, pk.unsorted_indices)
