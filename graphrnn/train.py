"""Training: a plain functional step, (truncated) BPTT over chunks, and a ``Trainer`` loop.

Truncated BPTT (char-rnn, Zaremba): a long stream is read in chunks of T steps; the final state of
chunk k is the initial state of chunk k+1 (*carried*), but no gradient flows back across the
boundary (*detached*). ``chunked_bptt(..., detach=False)`` instead passes the cotangent of each
chunk's initial state back into the previous chunk, which is exactly full BPTT computed chunk by
chunk (a test checks it against one long call).

The ``Trainer`` adds clipping, validation, progress, checkpoints and guards: a NaN/inf loss or
gradient, or a loss above ``explode_factor`` times the first one, stops training with a
``TrainingDivergedError`` error saying where the last good checkpoint is (the update that would have
been applied is not). An update that leaves non-finite parameters (those stay in memory; the
checkpoint does not get them), or a validation loss that is non-finite or above
``explode_factor`` times the first loss, stops it the same way. A checkpoint is only ever
written from finite parameters with a sane validation loss, so "the last good checkpoint" is
good: a diverged run leaves the previous file untouched. Resuming from a checkpoint restores
parameters, optimizer state, the carried state, the step counter and the RNG, so it continues
bit for bit like an uninterrupted run on the same backend.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import checkpoint as ckpt
from .data import Batch, IterableData, to_batch
from .errors import GraphRNNError
from .model import Arrays, Result, RNNModel, State
from .optim import Optimizer, clip_elementwise, clip_global_norm, global_norm, optimizer_from_json
from .runlog import RunLog
from .safefile import atomic_write, umask_mode


class TrainingDivergedError(GraphRNNError, ArithmeticError):
    """The loss or the gradients became NaN/inf or exploded; training stopped."""


# ---- the functional step ----

def train_step(model: RNNModel, params: Arrays, opt: Optimizer, batch: Batch,
               state: State | None = None, rng: np.random.Generator | None = None,
               clip: float | None = None, max_norm: float | None = None) -> Result:
    """One update: loss and gradients on a batch, clipping, the optimizer step (in place).
    Returns the Result (loss, grads after clipping, final state to carry)."""
    r = model.loss_and_grads(params, batch.ids, batch.targets, state, batch.mask,
                             batch.weights, rng)
    _check_finite(r, getattr(opt, "t", 0))
    for k in [k for k in r.grads if not opt.trainable(k)]:
        del r.grads[k]  # frozen: out of clipping
    if clip:
        clip_elementwise(r.grads, clip)
    if max_norm:
        clip_global_norm(r.grads, max_norm)
    opt.step(params, r.grads)
    return r


def _check_finite(r: Result, step: int) -> None:
    if not math.isfinite(r.loss):
        raise TrainingDivergedError(f"loss became {r.loss} at step {step}")
    n = global_norm(r.grads)
    if not math.isfinite(n):
        bad = sorted(k for k, g in r.grads.items() if not np.all(np.isfinite(g)))
        raise TrainingDivergedError(f"gradients became non-finite at step {step} (in {bad})")


def _stack_state(a: State) -> State:
    return [[h.copy() for h in layer] for layer in a]


def chunked_bptt(model: RNNModel, params: Arrays, ids: np.ndarray, targets: np.ndarray,
                 chunk: int, state: State | None = None, detach: bool = True,
                 rng: np.random.Generator | None = None) -> Result:
    """Loss (mean over all tokens) and gradients over a long sequence read in chunks of
    ``chunk`` steps, the state carried from chunk to chunk.

    ``detach=True`` is truncated BPTT: each chunk's gradient stops at its first step. Its
    forward (losses, final state) equals one long forward, and with one chunk its gradients equal
    full BPTT; with several chunks they differ by exactly the cross-chunk terms.
    ``detach=False`` carries the state's cotangent backwards between chunks: full BPTT."""
    if model.pool != "step":
        raise ValueError(f"chunked_bptt needs a per-step head; this model's head is pooled "
                         f"({model.pool!r}) over whole sequences")
    tax = 1 if model.batch_first else 0  # the time axis, along which chunks are cut
    T = ids.shape[tax]
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    bounds = [(a, min(a + chunk, T)) for a in range(0, T, chunk)]

    def cut(x: np.ndarray, a: int, b: int) -> np.ndarray:
        return x[:, a:b] if tax else x[a:b]
    # the loss is a mean over tokens (and over outputs, for a regression head)
    total = float(T * ids.shape[1 - tax] * (model.n_classes if model.head == "regress" else 1))
    scale = 1.0 / total
    # only the gradients the model gives: a frozen parameter has none (a zero would still be
    # decayed by the optimizer's weight decay)
    grads: Arrays = {}

    def add(g: Arrays) -> None:
        for k, v in g.items():
            grads[k] = grads[k] + v if k in grads else v.copy()
    loss = 0.0
    if detach:
        for a, b in bounds:
            r = model.loss_and_grads(params, cut(ids, a, b), cut(targets, a, b), state, rng=rng,
                                     grad_scale=scale)
            loss += r.loss * r.tokens
            add(r.grads)
            state = r.state
        assert state is not None
        return Result(loss / total, grads, state, total)
    caches = []
    for a, b in bounds:
        logits, state, cache = model.forward(params, cut(ids, a, b), state, rng=rng)
        ls, d, _ = model._loss(logits, cut(targets, a, b), None, None)
        loss += ls
        caches.append((cache, d * np.asarray(scale, model.dtype)))
    assert state is not None
    final = state
    d_final: State | None = None
    for cache, d in reversed(caches):
        g, d_final = model.backward(params, cache, d, d_final)
        add(g)
    return Result(loss / total, grads, final, total, d_final)


# ---- progress and plots ----

def _fmt_time(s: float) -> str:
    if not math.isfinite(s) or s < 0:
        return "?"
    s = int(s)
    if s >= 3600:
        return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


class Progress:
    """A progress bar: tqdm when installed, else one self-rewriting line on stderr. Shows the
    loss, tokens/s and the ETA (from the step budget or the time budget, whichever ends first).
    """

    def __init__(self, total: int | None, deadline: float | None = None, desc: str = "train",
                 enabled: bool = True, stream: Any = None) -> None:
        self.total, self.deadline, self.desc = total, deadline, desc
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.n = 0
        self.tokens = 0.0
        self.t0 = time.perf_counter()
        self._last = 0.0
        self._bar = None
        if enabled:
            try:
                from tqdm import tqdm
                self._bar = tqdm(total=total, desc=desc, file=self.stream, dynamic_ncols=True,
                                 leave=True)
            except ImportError:
                self._bar = None

    def eta(self) -> float:
        el = time.perf_counter() - self.t0
        cands = []
        if self.total and self.n:
            cands.append(el / self.n * (self.total - self.n))
        if self.deadline is not None:
            cands.append(max(0.0, self.deadline - time.time()))
        return min(cands) if cands else float("nan")

    def postfix(self, loss: float) -> str:
        el = max(time.perf_counter() - self.t0, 1e-9)
        return f"loss {loss:.4f}  {self.tokens / el:,.0f} tok/s  ETA {_fmt_time(self.eta())}"

    def update(self, loss: float, tokens: float) -> None:
        self.n += 1
        self.tokens += tokens
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(1)
            now = time.perf_counter()
            if now - self._last > 0.2:
                self._bar.set_postfix_str(self.postfix(loss), refresh=False)
                self._last = now
            return
        now = time.perf_counter()
        if now - self._last < 0.2 and self.n != self.total:
            return
        self._last = now
        if self.total:
            frac = self.n / self.total
            bar = "#" * int(frac * 24)
            head = f"{self.desc} [{bar:<24}] {self.n}/{self.total}"
        else:
            head = f"{self.desc} {self.n}"
        self.stream.write(f"\r{head}  {self.postfix(loss)}\x1b[K")
        self.stream.flush()

    def write(self, text: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            self.stream.write("\r\x1b[K" + text + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def plot_losses(history: Sequence[tuple[int, float]], val: Sequence[tuple[int, float]],
                path: str | Path) -> Path | None:
    """Loss curves as PNG with matplotlib; None (and a note on stderr) when it is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed; no loss plot (pip install matplotlib)",
              file=sys.stderr)
        return None
    path = Path(path)
    fig, ax = plt.subplots(figsize=(7, 4))
    if history:
        s, l = zip(*history, strict=True)
        # a running mean keeps the curve readable over thousands of noisy steps
        k = max(1, len(l) // 100)
        sm = np.convolve(l, np.ones(k) / k, mode="valid")
        ax.plot(s[k - 1:], sm, label="train")
    if val:
        s, l = zip(*val, strict=True)
        ax.plot(s, l, "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:  # atomically, with the usual umask permissions: the user opens the plot
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100), fsync=False,
                     mode=umask_mode())
    finally:
        plt.close(fig)
    return path


# ---- the Trainer ----

@dataclass
class TrainConfig:
    steps: int | None = None          # step budget (None: only the time budget)
    minutes: float | None = None      # time budget
    clip: float | None = None         # elementwise gradient clamp (char-rnn grad_clip)
    max_norm: float | None = None     # global-norm clipping (Zaremba max_grad_norm)
    eval_every: int = 0               # validate every N steps (0: only at the end)
    save_every: int = 0               # checkpoint every N steps (0: at evaluations and the end)
    checkpoint: str | None = None     # path of the .npz checkpoint
    explode_factor: float = 3.0       # stop when loss > factor * first loss (char-rnn)
    carry_state: bool = True          # truncated BPTT across batches (streams)
    progress: bool = True
    seed: int = 0
    log_dir: str | None = None        # JSON lines (log.jsonl) and TensorBoard events go here
    log_every: int = 10               # a log line every N steps (and at every evaluation)
    tensorboard: bool | None = None   # None: TensorBoard events when a writer is installed


@dataclass
class Trainer:
    """The training loop. ``data``: ``data(step, rng) -> Batch`` (a StreamBatcher's
    ``batch``), or any iterable of batches (a list, a generator, a PyTorch DataLoader; see
    ``data.to_batch`` for the items it reads, in the model's layout, and ``data.IterableData``
    for epochs; a generator that runs out ends the run). ``val_data``: ``() -> iterable of
    Batch``, or such an iterable itself. ``meta`` (vocab, model options, ...) is stored in
    checkpoints as JSON."""
    model: RNNModel
    params: Arrays
    opt: Optimizer
    data: Callable[[int, np.random.Generator], Batch] | Iterable[Any]
    val_data: Callable[[], Iterable[Any]] | Iterable[Any] | None = None
    config: TrainConfig = field(default_factory=TrainConfig)
    meta: dict[str, Any] = field(default_factory=dict)
    rng: np.random.Generator | None = None
    step: int = 0
    state: State | None = None
    history: list[tuple[int, float]] = field(default_factory=list)
    val_history: list[tuple[int, float]] = field(default_factory=list)
    first_loss: float | None = None
    tokens_per_s: float = 0.0
    log: Callable[[str], None] | None = None
    _runlog: RunLog | None = field(default=None, init=False, repr=False)
    _logged: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    # data-parallel over MPI (a graphrnn.distributed.Distributed): each step's global batch is
    # sharded over the ranks and the gradients summed; only rank 0 logs and writes
    dist: Any = None

    def __post_init__(self) -> None:
        if self.rng is None:
            self.rng = np.random.default_rng(self.config.seed)
        self.model.check_params(self.params)
        if not callable(self.data):
            self.data = IterableData(self.data, self.model.batch_first)
        if self.dist is not None:
            self.dist.check_params(self.params, self.step)

    # ---- validation ----
    def evaluate(self) -> float:
        """Mean loss per token on the validation batches (state carried across continuation
        batches, reset where a batch says so)."""
        if self.val_data is None:
            return float("nan")
        total = count = 0.0
        state: State | None = None
        src = self.val_data() if callable(self.val_data) else self.val_data
        for item in src:
            b = to_batch(item, self.model.batch_first)
            s = None if b.reset or not self.config.carry_state else state
            if self.dist is not None:
                ls, n, state = self.dist.evaluate(self.model, self.params, b, s)
            else:
                ls, n, state, _ = self.model.evaluate(self.params, b.ids, b.targets, s, b.mask,
                                                      b.weights)
            total += ls
            count += n
        return total / max(count, 1e-12)

    # ---- the loop ----
    def run(self, steps: int | None = None, minutes: float | None = None) -> Trainer:
        """Train until ``steps`` more steps or ``minutes`` pass (defaults from the config).
        With ``config.log_dir``, every ``log_every``-th step and every evaluation is a line of
        ``log_dir/log.jsonl`` (and a TensorBoard event, see ``graphrnn.runlog``); a divergence
        is logged as an ``error`` line before it is raised."""
        cfg = self.config
        if cfg.log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {cfg.log_every}")
        self._runlog = RunLog(cfg.log_dir, cfg.tensorboard) if cfg.log_dir else None
        self._logged = {"t": time.perf_counter(), "tokens": 0.0}
        try:
            return self._run(steps, minutes)
        except TrainingDivergedError as e:
            if self._runlog is not None:
                self._runlog.write({"step": self.step, "error": str(e)})
            raise
        finally:
            if self._runlog is not None:
                self._runlog.close()
                self._runlog = None

    def _run(self, steps: int | None, minutes: float | None) -> Trainer:
        cfg = self.config
        steps = steps if steps is not None else cfg.steps
        minutes = minutes if minutes is not None else cfg.minutes
        if steps is None and minutes is None:
            raise ValueError("give a step budget or a time budget (steps= or minutes=)")
        end_step = self.step + steps if steps is not None else None
        deadline = time.time() + 60 * minutes if minutes is not None else None
        root = self.dist is None or self.dist.is_root
        bar = Progress(steps, deadline, enabled=cfg.progress and root)
        say = (self.log or bar.write) if root else (lambda m: None)
        self.model.train()
        t0 = time.perf_counter()
        try:
            while (end_step is None or self.step < end_step) and \
                    (deadline is None or self._before(deadline)):
                try:
                    self._one_step(bar)
                except StopIteration:  # a one-shot iterator of batches ran out
                    break
                v = None
                if cfg.eval_every and self.step % cfg.eval_every == 0:
                    v = self._validate(say)
                elif cfg.save_every and self.step % cfg.save_every == 0:
                    self.save()
                self._log_step(v)
        finally:
            bar.close()
            self.model.eval()
        self.tokens_per_s = bar.tokens / max(time.perf_counter() - t0, 1e-9)
        if not (cfg.eval_every and self.step % cfg.eval_every == 0):
            v = self._validate(say)
            if self._runlog is not None and v is not None:
                self._runlog.write({"step": self.step, "val_loss": v})
        return self

    def _log_step(self, val: float | None) -> None:
        """A log line for this step when it is a logged one or was evaluated."""
        lg = self._logged
        if self._runlog is None or "loss" not in lg:
            return
        lg["tokens"] += lg.pop("batch_tokens", 0.0)
        if self.step % self.config.log_every and val is None:
            lg.pop("loss")
            return
        now = time.perf_counter()
        rec = {"step": self.step, "loss": lg.pop("loss"), "grad_norm": lg.get("grad_norm"),
               "tokens_per_s": lg["tokens"] / max(now - lg["t"], 1e-9), "lr": lg.get("lr")}
        if val is not None:
            rec["val_loss"] = val
        self._runlog.write(rec)
        if val is not None:
            self._runlog.sync()
        lg["t"], lg["tokens"] = time.perf_counter(), 0.0

    def _one_step(self, bar: Progress) -> None:
        cfg = self.config
        assert self.rng is not None
        batch = self.data(self.step, self.rng)  # type: ignore[operator]
        state = None if batch.reset or not cfg.carry_state else self.state
        if self.dist is not None:
            from .distributed import make_rng
            r = self.dist.loss_and_grads(self.model, self.params, batch, state,
                                         make_rng(cfg.seed, self.dist.rank, self.step))
        else:
            r = self.model.loss_and_grads(self.params, batch.ids, batch.targets, state,
                                          batch.mask, batch.weights, self.rng)
        try:
            _check_finite(r, self.step)
        except TrainingDivergedError as e:
            raise self._diverged(str(e)) from None
        self._check_loss("loss", r.loss)
        if self.first_loss is None:
            self.first_loss = r.loss
        # frozen parameters (an excluded optimizer group) take no part in clipping
        frozen = [k for k in r.grads if not self.opt.trainable(k)]
        for k in frozen:
            del r.grads[k]
        if self._runlog is not None:  # the norm before clipping, the lr this step uses
            self._logged.update(grad_norm=global_norm(r.grads), lr=self.opt.current_lr(),
                                batch_tokens=batch.tokens, loss=float(r.loss))
        if cfg.clip:
            clip_elementwise(r.grads, cfg.clip)
        if cfg.max_norm:
            clip_global_norm(r.grads, cfg.max_norm)
        self.opt.step(self.params, r.grads)
        # finite gradients times a huge learning rate can still overflow the parameters; say so
        # at the step that did it rather than one step later as a NaN loss
        bad = self._nonfinite_params()
        if bad:
            raise self._diverged(f"parameters became non-finite in the update at step "
                                 f"{self.step} (in {bad})")
        self.state = r.state if cfg.carry_state else None
        self.step += 1
        if self.dist is not None:
            self.dist.after_step(self.params, self.step)
        self.history.append((self.step, float(r.loss)))
        bar.update(r.loss, batch.tokens)

    def _before(self, deadline: float) -> bool:
        """Whether the time budget has time left; rank 0's clock decides for every rank (they
        must stop at the same step)."""
        ok = time.time() < deadline
        return ok if self.dist is None else self.dist.root_says(ok)

    def _validate(self, say: Callable[[str], None]) -> float | None:
        v = None
        if self.val_data is not None:
            v = self.evaluate()
            self.val_history.append((self.step, v))
            if math.isfinite(v):
                say(f"step {self.step}: validation loss {v:.4f}")
            # a model whose validation loss is NaN or has exploded is not a checkpoint anyone
            # should resume from: stop before save() replaces the last good file with it
            self._check_loss("validation loss", v)
        if self.config.checkpoint:
            self.save()
        return v

    def _check_loss(self, what: str, v: float) -> None:
        """Stop on a loss that is not finite or above ``explode_factor`` x the first loss."""
        fl, k = self.first_loss, self.config.explode_factor
        if not math.isfinite(v):
            raise self._diverged(f"{what} became {v} at step {self.step}")
        if fl is not None and v > k * fl:
            raise self._diverged(f"{what} exploded at step {self.step}: {v:.4g} > {k:g} x the "
                                 f"first loss {fl:.4g}")

    def _nonfinite_params(self) -> list[str]:
        return sorted(k for k, v in self.params.items() if not np.all(np.isfinite(v)))

    def _diverged(self, what: str) -> TrainingDivergedError:
        """The divergence error, naming the last good checkpoint when there is one. Only
        ``save`` writes that file, and it refuses non-finite parameters, so whatever exists at
        the configured path was written from a good state."""
        ck = self.config.checkpoint
        where = (f"; the last good checkpoint is {ck}" if ck and Path(ck).exists()
                 else "; no good checkpoint was written")
        return TrainingDivergedError(f"{what}{where}. Try a lower learning rate or gradient "
                                     "clipping (--clip / --max-norm).")

    # ---- checkpoints ----
    def save(self, path: str | Path | None = None) -> Path:
        """Write a checkpoint (atomically). Refuses, with ``TrainingDivergedError``, parameters
        that are not all finite: such a file would only be a trap for ``--resume``."""
        path = Path(path or self.config.checkpoint or "checkpoint.npz")
        bad = self._nonfinite_params()
        if bad:
            raise self._diverged(f"not saving {path}: parameters {bad} are not finite")
        state = self.state
        if self.dist is not None:
            # the global batch's state (every rank's rows), so that any number of ranks
            # resumes from it; rank 0 alone writes
            state = self.dist.gather_state(state)
            if not self.dist.is_root:
                return path
        arrays: dict[str, np.ndarray] = {}
        arrays.update(ckpt.prefixed("param", self.params))
        arrays.update(ckpt.prefixed("opt", self.opt.state_dict()))
        if state is not None:
            for i, layer in enumerate(state):
                for j, h in enumerate(layer):
                    arrays[f"state/{i}/{j}"] = h
        assert self.rng is not None
        meta = {**self.meta, "optimizer": self.opt.to_json(), "rng": ckpt.rng_state(self.rng),
                "step": self.step, "history": self.history, "val_history": self.val_history,
                "first_loss": self.first_loss, "config": asdict(self.config),
                "param_shapes": {k: list(v.shape) for k, v in self.params.items()}}
        return ckpt.save(path, arrays, meta)

    def load(self, path: str | Path) -> Trainer:
        """Restore everything a checkpoint holds into this trainer (same model layout)."""
        arrays, meta = ckpt.load(path)
        params = ckpt.group(arrays, "param")
        want = self.model.param_shapes()
        got = {k: tuple(v.shape) for k, v in params.items()}
        if got != want:
            diff = sorted(set(want) ^ set(got)) or sorted(k for k in want if want[k] != got[k])
            raise ckpt.CheckpointError(f"checkpoint {path} does not fit this model (parameters "
                                       f"differ: {diff[:6]})")
        step, history, val_history, first_loss = _checked_progress(path, meta)
        om = ckpt.check_field(path, "optimizer", meta.get("optimizer"), "dict")
        try:
            opt = optimizer_from_json(om)
            opt.load_state_dict(ckpt.group(arrays, "opt"), om)
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            # the optimizer's JSON is a small nested object its own constructor checks; any
            # failure there is a malformed checkpoint, said in one line
            raise ckpt.CheckpointError(f"{path}: metadata field optimizer is malformed "
                                       f"({type(e).__name__}: {str(e)[:100]})") from None
        rng = ckpt.rng_from_state(meta.get("rng"))  # type: ignore[arg-type]
        self.params.clear()
        self.params.update({k: v.astype(self.model.dtype) for k, v in params.items()})
        self.opt, self.rng, self.step = opt, rng, step
        self.history, self.val_history, self.first_loss = history, val_history, first_loss
        st = ckpt.group(arrays, "state")
        if st:
            n = 1 + max(int(k.split("/")[0]) for k in st)
            self.state = [[st[f"{i}/{j}"] for j in range(sum(1 for k in st
                                                              if k.startswith(f"{i}/")))]
                          for i in range(n)]
        else:
            self.state = None
        if self.dist is not None:
            self.state = self.dist.shard_state(self.state)
            self.dist.check_params(self.params, self.step)
        return self


def _checked_progress(path: str | Path, meta: dict[str, Any]
                      ) -> tuple[int, list[tuple[int, float]], list[tuple[int, float]],
                                 float | None]:
    """step, history, val_history and first_loss of a checkpoint's metadata, each checked for
    type and range (a hand-made file gets one CheckpointError line, not a TypeError)."""
    step = ckpt.check_field(path, "step", meta.get("step"), "int", lo=0, hi=2**62)
    hists = []
    for name in ("history", "val_history"):
        h = ckpt.check_field(path, name, meta.get(name, []), "list", max_len=10**7)
        out: list[tuple[int, float]] = []
        for i, e in enumerate(h):
            ckpt.check_field(path, f"{name}[{i}]", e, "list", max_len=2)
            if len(e) != 2 or isinstance(e[0], bool) or not isinstance(e[0], int) \
                    or isinstance(e[1], bool) or not isinstance(e[1], (int, float)):
                raise ckpt.CheckpointError(f"{path}: metadata field {name}[{i}] must be "
                                           f"[step, loss], got {e!r:.60}")
            out.append((e[0], float(e[1])))
        hists.append(out)
    fl = meta.get("first_loss")
    if fl is not None:
        fl = float(ckpt.check_field(path, "first_loss", fl, "float"))
    return step, hists[0], hists[1], fl
