"""Optimizers, learning-rate schedules and gradient clipping over dicts of numpy arrays.

Parameters and gradients are ``dict[name, ndarray]``; an optimizer updates the parameters in
place. Every optimizer keeps its state as named arrays (``state_dict``/``load_state_dict``) so a
checkpoint can store it in an npz file and resuming continues bit for bit.

The update rules follow the Torch code bases the field trained with:

- ``SGD``:     v = mu*v + g;  p -= lr*v            (plain SGD when mu = 0; Nesterov optional)
- ``RMSprop``: m = a*m + (1-a)*g^2;  p -= lr*g/(sqrt(m)+eps)       (char-rnn's optim.rmsprop)
- ``Adagrad``: s += g^2;  p -= lr*g/(sqrt(s)+eps)
- ``Adam``:    m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2;
               p -= lr * (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps)
- ``AdamW``:   p *= 1 - lr*wd, then the Adam step (Loshchilov & Hutter's decoupled decay)

``weight_decay`` on the others is torch's L2 form, ``g += wd * p`` before the update. Parameter
groups (``groups=[{"params": ["*.b", "head.b"], "weight_decay": 0}, ...]``, globs over the
parameter names, the first matching group wins) give a per-group ``lr`` and ``weight_decay``;
``frozen: True`` or ``lr: 0`` excludes a group. An excluded parameter, and any parameter
without a gradient (a frozen cell parameter has none), is left untouched and gets no state.
Adam's bias correction counts each parameter's own updates, as torch does.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Arrays = dict[str, np.ndarray]


# ---- clipping ----

def clip_elementwise(grads: Arrays, limit: float) -> Arrays:
    """Clamp every gradient entry to [-limit, limit] in place (char-rnn's ``grad_clip``)."""
    if limit <= 0:
        raise ValueError(f"clip limit must be positive, got {limit}")
    for g in grads.values():
        np.clip(g, -limit, limit, out=g)
    return grads


def global_norm(grads: Arrays) -> float:
    return math.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads.values()))


def clip_global_norm(grads: Arrays, max_norm: float) -> float:
    """Scale all gradients together so their joint L2 norm is at most max_norm (Zaremba's
    ``max_grad_norm``). Returns the norm before clipping."""
    if max_norm <= 0:
        raise ValueError(f"max_norm must be positive, got {max_norm}")
    norm = global_norm(grads)
    if norm > max_norm:
        scale = max_norm / norm
        for g in grads.values():
            g *= g.dtype.type(scale)
    return norm


# ---- learning-rate schedules ----

class Schedule:
    """Multiplies the base learning rate: ``lr(step) = base * factor(step)``. The default is
    constant. Subclasses are plain data so checkpoints can record them in JSON."""

    def factor(self, step: int) -> float:
        return 1.0

    def to_json(self) -> dict[str, Any]:
        return {"kind": "constant"}


class StepDecay(Schedule):
    """Multiply by ``gamma`` every ``every`` steps once ``start`` steps have passed.

    Zaremba's PTB recipe (lr 1, halve after epoch 4, then every epoch) is
    ``StepDecay(start=4*E, every=E, gamma=0.5)`` with E steps per epoch; char-rnn's
    ``learning_rate_decay_after`` / ``learning_rate_decay`` is the same form."""

    def __init__(self, start: int, every: int, gamma: float) -> None:
        if every <= 0 or not 0 < gamma:
            raise ValueError(f"StepDecay needs every > 0 and gamma > 0, got {every}, {gamma}")
        self.start, self.every, self.gamma = int(start), int(every), float(gamma)

    def factor(self, step: int) -> float:
        if step < self.start:
            return 1.0
        return self.gamma ** ((step - self.start) // self.every + 1)

    def to_json(self) -> dict[str, Any]:
        return {"kind": "step", "start": self.start, "every": self.every, "gamma": self.gamma}


class ExponentialDecay(Schedule):
    """``gamma ** (step / every)``: a smooth decay."""

    def __init__(self, every: int, gamma: float) -> None:
        if every <= 0 or not 0 < gamma:
            raise ValueError(f"ExponentialDecay needs every > 0 and gamma > 0, got {every}, "
                             f"{gamma}")
        self.every, self.gamma = int(every), float(gamma)

    def factor(self, step: int) -> float:
        return self.gamma ** (step / self.every)

    def to_json(self) -> dict[str, Any]:
        return {"kind": "exponential", "every": self.every, "gamma": self.gamma}


def schedule_from_json(d: dict[str, Any] | None) -> Schedule:
    if not d or d.get("kind") == "constant":
        return Schedule()
    kind = d.get("kind")
    if kind == "step":
        return StepDecay(d["start"], d["every"], d["gamma"])
    if kind == "exponential":
        return ExponentialDecay(d["every"], d["gamma"])
    raise ValueError(f"unknown schedule {kind!r}; expected constant, step or exponential")


# ---- parameter groups ----

@dataclass(frozen=True)
class ParamGroup:
    """Parameters by name or glob (``"l*.b"``, ``"head.*"``) with their own ``lr`` and
    ``weight_decay`` (None: the optimizer's). ``frozen`` (or ``lr == 0``) leaves them untouched.
    """
    params: tuple[str, ...]
    lr: float | None = None
    weight_decay: float | None = None
    frozen: bool = False

    @property
    def excluded(self) -> bool:
        return self.frozen or self.lr == 0

    def to_json(self) -> dict[str, Any]:
        return {"params": list(self.params), "lr": self.lr, "weight_decay": self.weight_decay,
                "frozen": self.frozen}


def param_group(g: ParamGroup | dict[str, Any], i: int = 0) -> ParamGroup:
    """A ParamGroup from itself or a dict with torch's keys (``params``, ``lr``,
    ``weight_decay``) plus ``frozen``; ``params`` is a glob or a list of names/globs."""
    if isinstance(g, ParamGroup):
        return g
    if not isinstance(g, dict):
        raise TypeError(f"parameter group {i}: expected a dict or ParamGroup, got "
                        f"{type(g).__name__}")
    unknown = set(g) - {"params", "lr", "weight_decay", "frozen"}
    if unknown:
        raise ValueError(f"parameter group {i}: unknown keys {sorted(unknown)}; expected "
                         "params, lr, weight_decay, frozen")
    pats = g.get("params")
    if isinstance(pats, str):
        pats = [pats]
    if not pats or not all(isinstance(p, str) for p in pats):
        raise ValueError(f"parameter group {i}: params must be a name/glob or a non-empty list "
                         f"of them, got {pats!r}")
    lr, wd = g.get("lr"), g.get("weight_decay")
    if lr is not None and not (float(lr) >= 0 and math.isfinite(float(lr))):
        raise ValueError(f"parameter group {i}: lr must be >= 0, got {lr}")
    if wd is not None and not float(wd) >= 0:
        raise ValueError(f"parameter group {i}: weight_decay must be >= 0, got {wd}")
    return ParamGroup(tuple(pats), None if lr is None else float(lr),
                      None if wd is None else float(wd), bool(g.get("frozen", False)))


# ---- optimizers ----

class Optimizer:
    """Base: ``step(params, grads)`` updates params in place and counts steps."""

    name = "?"
    slots: tuple[str, ...] = ()
    decoupled = False  # weight decay as p *= 1 - lr*wd (AdamW) instead of g += wd*p

    def __init__(self, lr: float, schedule: Schedule | None = None, weight_decay: float = 0.0,
                 groups: Sequence[ParamGroup | dict[str, Any]] | None = None) -> None:
        if not lr > 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.groups = [param_group(g, i) for i, g in enumerate(groups or ())]
        self.schedule = schedule or Schedule()
        self.t = 0  # completed steps
        self.state: dict[str, Arrays] = {s: {} for s in self.slots}
        self._checked: frozenset[str] = frozenset()

    def group_of(self, name: str) -> ParamGroup | None:
        """The first group whose globs match ``name`` (None: the optimizer's defaults)."""
        for g in self.groups:
            if any(fnmatch.fnmatchcase(name, pat) for pat in g.params):
                return g
        return None

    def trainable(self, name: str) -> bool:
        g = self.group_of(name)
        return g is None or not g.excluded

    def _check_groups(self, names: Sequence[str]) -> None:
        # a group that matches nothing is almost always a typo in a glob: say so once
        key = frozenset(names)
        if key == self._checked:
            return
        for i, g in enumerate(self.groups):
            if not any(fnmatch.fnmatchcase(n, pat) for n in names for pat in g.params):
                raise ValueError(f"parameter group {i} {list(g.params)} matches no parameter; "
                                 f"names are {sorted(names)}")
        self._checked = key

    def current_lr(self) -> float:
        return self.lr * self.schedule.factor(self.t)

    def _slot(self, slot: str, name: str, like: np.ndarray) -> np.ndarray:
        d = self.state[slot]
        if name not in d:
            d[name] = np.zeros_like(like)
        return d[name]

    def step(self, params: Arrays, grads: Arrays, frozen: Collection[str] = ()) -> None:
        """Update ``params`` in place. A parameter with no entry in ``grads`` (frozen in its
        cell), named in ``frozen`` (``Cell.frozen``: a gradient given for it is ignored) or in
        an excluded group is left as it is, with no optimizer state; a gradient for an unknown
        name is an error."""
        unknown = set(grads) - set(params)
        if unknown:
            raise KeyError(f"gradients for unknown parameters {sorted(unknown)}; parameters "
                           f"are {sorted(params)}")
        self._check_groups(list(params))
        factor = self.schedule.factor(self.t)
        for name, p in params.items():
            g = grads.get(name)
            grp = self.group_of(name)
            if g is None or name in frozen or (grp is not None and grp.excluded):
                continue
            if g.shape != p.shape:
                raise ValueError(f"gradient of {name!r} has shape {g.shape}, parameter has "
                                 f"{p.shape}")
            g = g.astype(p.dtype, copy=False)
            lr = (self.lr if grp is None or grp.lr is None else grp.lr) * factor
            wd = self.weight_decay if grp is None or grp.weight_decay is None \
                else grp.weight_decay
            if wd and self.decoupled:
                p *= p.dtype.type(1 - lr * wd)
            elif wd:
                g = g + p.dtype.type(wd) * p
            self._update(name, p, g, p.dtype.type(lr))
        self.t += 1

    def _update(self, name: str, p: np.ndarray, g: np.ndarray, lr: Any) -> None:
        raise NotImplementedError

    # ---- persistence ----
    def hyper(self) -> dict[str, Any]:
        return {"lr": self.lr}

    def to_json(self) -> dict[str, Any]:
        out = {"name": self.name, "t": self.t, "hyper": self.hyper(),
               "schedule": self.schedule.to_json()}
        if self.weight_decay:
            out["hyper"] = {**out["hyper"], "weight_decay": self.weight_decay}
        if self.groups:
            out["groups"] = [g.to_json() for g in self.groups]
        return out

    def state_dict(self) -> Arrays:
        """The slot arrays, flat: ``slot/param_name``."""
        return {f"{slot}/{k}": v for slot, d in self.state.items() for k, v in d.items()}

    def load_state_dict(self, arrays: Arrays, meta: dict[str, Any]) -> None:
        if meta.get("name") != self.name:
            raise ValueError(f"optimizer state is for {meta.get('name')!r}, not {self.name!r}")
        self.t = int(meta["t"])
        self.state = {s: {} for s in self.slots}
        for key, v in arrays.items():
            slot, _, pname = key.partition("/")
            if slot not in self.state:
                raise ValueError(f"optimizer {self.name}: unknown state slot {slot!r}")
            self.state[slot][pname] = np.array(v)


class SGD(Optimizer):
    name = "sgd"
    slots = ("velocity",)

    def __init__(self, lr: float, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0, schedule: Schedule | None = None,
                 groups: Sequence[ParamGroup | dict[str, Any]] | None = None) -> None:
        super().__init__(lr, schedule, weight_decay, groups)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum, self.nesterov = float(momentum), bool(nesterov)

    def _update(self, name: str, p: np.ndarray, g: np.ndarray, lr: Any) -> None:
        if self.momentum == 0:
            p -= lr * g
            return
        mu = p.dtype.type(self.momentum)
        v = self._slot("velocity", name, p)
        v *= mu
        v += g
        p -= lr * (g + mu * v if self.nesterov else v)

    def hyper(self) -> dict[str, Any]:
        return {"lr": self.lr, "momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay}


class RMSprop(Optimizer):
    name = "rmsprop"
    slots = ("square_avg",)

    def __init__(self, lr: float = 2e-3, alpha: float = 0.95, eps: float = 1e-8,
                 schedule: Schedule | None = None, weight_decay: float = 0.0,
                 groups: Sequence[ParamGroup | dict[str, Any]] | None = None) -> None:
        super().__init__(lr, schedule, weight_decay, groups)
        self.alpha, self.eps = float(alpha), float(eps)

    def _update(self, name: str, p: np.ndarray, g: np.ndarray, lr: Any) -> None:
        a = p.dtype.type(self.alpha)
        m = self._slot("square_avg", name, p)
        m *= a
        m += (1 - a) * g * g
        p -= lr * g / (np.sqrt(m) + p.dtype.type(self.eps))

    def hyper(self) -> dict[str, Any]:
        return {"lr": self.lr, "alpha": self.alpha, "eps": self.eps}


class Adagrad(Optimizer):
    name = "adagrad"
    slots = ("sum_sq",)

    def __init__(self, lr: float = 1e-2, eps: float = 1e-10,
                 schedule: Schedule | None = None, weight_decay: float = 0.0,
                 groups: Sequence[ParamGroup | dict[str, Any]] | None = None) -> None:
        super().__init__(lr, schedule, weight_decay, groups)
        self.eps = float(eps)

    def _update(self, name: str, p: np.ndarray, g: np.ndarray, lr: Any) -> None:
        s = self._slot("sum_sq", name, p)
        s += g * g
        p -= lr * g / (np.sqrt(s) + p.dtype.type(self.eps))

    def hyper(self) -> dict[str, Any]:
        return {"lr": self.lr, "eps": self.eps}


class Adam(Optimizer):
    """Adam; the bias correction counts each parameter's own updates (``step``, as torch), so
    a group unfrozen after k steps starts its correction afresh rather than at k."""
    name = "adam"
    slots = ("m", "v", "step")

    def __init__(self, lr: float = 2e-3, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, schedule: Schedule | None = None,
                 weight_decay: float = 0.0,
                 groups: Sequence[ParamGroup | dict[str, Any]] | None = None) -> None:
        super().__init__(lr, schedule, weight_decay, groups)
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)

    def _update(self, name: str, p: np.ndarray, g: np.ndarray, lr: Any) -> None:
        f = p.dtype.type
        b1, b2 = f(self.beta1), f(self.beta2)
        steps = self.state["step"]
        # state saved before per-parameter counts existed: the optimizer's count was theirs
        t = int(steps[name]) + 1 if name in steps else \
            (self.t + 1 if name in self.state["m"] else 1)
        steps[name] = np.array(t, np.int64)
        m = self._slot("m", name, p)
        v = self._slot("v", name, p)
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * g * g
        mhat = m / f(1 - self.beta1 ** t)
        vhat = v / f(1 - self.beta2 ** t)
        p -= lr * mhat / (np.sqrt(vhat) + f(self.eps))

    def hyper(self) -> dict[str, Any]:
        return {"lr": self.lr, "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps}


class AdamW(Adam):
    """Adam with decoupled weight decay (``torch.optim.AdamW``: p *= 1 - lr*wd before the
    Adam step; default wd 0.01 as torch's)."""
    name = "adamw"
    decoupled = True

    def __init__(self, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, schedule: Schedule | None = None,
                 weight_decay: float = 1e-2,
                 groups: Sequence[ParamGroup | dict[str, Any]] | None = None) -> None:
        super().__init__(lr, beta1, beta2, eps, schedule, weight_decay, groups)

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out["hyper"] = {**out["hyper"], "weight_decay": self.weight_decay}  # even when 0
        return out


OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "rmsprop": RMSprop, "adagrad": Adagrad,
                                          "adam": Adam, "adamw": AdamW}


def make_optimizer(name: str, lr: float, schedule: Schedule | None = None,
                   **hyper: Any) -> Optimizer:
    """An optimizer by name (``sgd``, ``rmsprop``, ``adagrad``, ``adam``, ``adamw``)."""
    cls = OPTIMIZERS.get(name.lower())
    if cls is None:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {sorted(OPTIMIZERS)}")
    return cls(lr=lr, schedule=schedule, **hyper)


def optimizer_from_json(meta: dict[str, Any]) -> Optimizer:
    hyper = dict(meta["hyper"])
    lr = hyper.pop("lr")
    if meta.get("groups"):
        hyper["groups"] = meta["groups"]
    return make_optimizer(meta["name"], lr, schedule_from_json(meta.get("schedule")), **hyper)
