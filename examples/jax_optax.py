"""A cell written as equations, compiled by graphrnn and trained from JAX with optax.

    python examples/jax_optax.py                       # a char LM, ~20 s on 2 cores
    python examples/jax_optax.py --data input.txt --steps 2000 --hidden 256
    python examples/jax_optax.py --steps 3 --hidden 8  # a smoke run

The recurrent cell (a minimal gated unit with a layer-normed gate) is declared as text
equations and compiled by graphrnn (``llvm``: the whole time loop, forward and BPTT, is one
native call). ``graphrnn.jax.rnn`` makes it a JAX function; everything around it is plain JAX:
the embedding, the softmax head, the loss, ``jax.value_and_grad``, ``optax.adamw`` and
gradient clipping, all in one ``jax.jit``-ed training step. The hidden state is carried across
consecutive chunks of the text (truncated BPTT). Needs ``pip install jax optax``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphrnn.data import StreamBatcher, Vocab, read_text, split_ids, stdlib_corpus  # noqa: E402

EQUATIONS = """
# cell: ln_mgu
f = sigmoid(layer_norm(W_xf @ x + W_hf @ h) + b_f)
hc = tanh(W_xh @ x + W_hh @ (f * h) + b_h)
h_next = (1 - f) * h + f * hc
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="a text file (default: text from Python's standard library)")
    ap.add_argument("--max-chars", type=int, default=200_000)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=32)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--val-batches", type=int, default=10)
    ap.add_argument("--backend", default="llvm", choices=["llvm", "ref"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-progress", action="store_true", help="print only the summary")
    a = ap.parse_args(argv)
    try:
        import jax
        import jax.numpy as jnp
        import optax
    except ImportError as e:
        print(f"this example needs JAX and optax: pip install jax optax ({e})", file=sys.stderr)
        return 2
    import graphrnn.jax
    from frontends.equations import cell_from_equations

    text = (read_text(a.data) if a.data else stdlib_corpus(a.max_chars))[:a.max_chars]
    vocab = Vocab.from_text(text)
    tr_ids, va_ids = split_ids(vocab.encode(text), 0.1)
    train = StreamBatcher(tr_ids, a.batch, a.seq_len)
    val = StreamBatcher(va_ids, a.batch, a.seq_len)
    V, H = len(vocab), a.hidden

    cell = cell_from_equations(EQUATIONS, inputs={"x": H}, states={"h": H},
                               filename="<ln_mgu equations>")
    cc = graphrnn.compile(cell, backend=a.backend, dtype="float32")
    rnn = graphrnn.jax.rnn(cc)

    # parameters: one pytree, the cell's (by its equations' names) next to JAX's own
    key = jax.random.PRNGKey(a.seed)
    k_emb, k_out = jax.random.split(key)
    params = {"cell": {k: jnp.asarray(v) for k, v in cc.init_params(seed=a.seed).items()},
              "embed": 0.1 * jax.random.normal(k_emb, (V, H), jnp.float32),
              "W_out": 0.1 * jax.random.normal(k_out, (H, V), jnp.float32),
              "b_out": jnp.zeros((V,), jnp.float32)}
    opt = optax.chain(optax.clip_by_global_norm(5.0), optax.adamw(a.lr, weight_decay=1e-4))
    opt_state = opt.init(params)

    def loss_fn(p, ids, targets, h0):
        x = p["embed"][ids]                                    # (T, B, H)
        (ys,), (hT,) = rnn(p["cell"], x, [h0])
        logits = ys @ p["W_out"] + p["b_out"]
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
        return jnp.mean(nll), hT

    @jax.jit
    def train_step(p, opt_state, ids, targets, h0):
        (loss, hT), g = jax.value_and_grad(loss_fn, has_aux=True)(p, ids, targets, h0)
        updates, opt_state = opt.update(g, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, loss, hT

    eval_loss = jax.jit(loss_fn)

    def validate(p) -> float:
        h = jnp.zeros((a.batch, H), jnp.float32)
        total = []
        for k in range(min(len(val), a.val_batches)):
            b = val.batch(k)
            loss, h = eval_loss(p, jnp.asarray(b.ids), jnp.asarray(b.targets), h)
            total.append(float(loss))
        return float(np.mean(total))

    print(f"cell {cell.name} as equations:{EQUATIONS}backend {a.backend}, vocabulary {V}, "
          f"H={H}, batch {a.batch} x {a.seq_len} chars, {a.steps} steps of optax.adamw")
    val0 = validate(params)
    h = jnp.zeros((a.batch, H), jnp.float32)
    losses, t_steps = [], []
    for step in range(a.steps):
        b = train.batch(step)
        if b.reset:
            h = jnp.zeros_like(h)
        t0 = time.perf_counter()
        params, opt_state, loss, h = train_step(params, opt_state, jnp.asarray(b.ids),
                                                jnp.asarray(b.targets), h)
        losses.append(float(loss))          # waits for the step: the time below is honest
        t_steps.append(time.perf_counter() - t0)
        if not a.no_progress and (step + 1) % max(1, a.steps // 10) == 0:
            print(f"step {step + 1:5d}  train loss {np.mean(losses[-20:]):.4f} nats/char")
    val1 = validate(params)
    ms = 1e3 * float(np.median(t_steps[1:] if len(t_steps) > 1 else t_steps))
    print(f"validation loss {val0:.4f} -> {val1:.4f} nats/char after {a.steps} steps; "
          f"{ms:.1f} ms per jitted training step (median, first step's compile left out)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
