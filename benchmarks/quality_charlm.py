"""Quality benchmark (not a test): a 2-layer LSTM (H=256) char-LM on tinyshakespeare, trained
with graphrnn (llvm backend) or, with the same data, initial weights and hyper-parameters, with
``torch.nn.LSTM``; both evaluated at the same steps on the same validation batches.

    python benchmarks/quality_charlm.py --impl graphrnn --out /tmp/quality/charlm_graphrnn
    python benchmarks/quality_charlm.py --impl torch    --out /tmp/quality/charlm_torch
    python benchmarks/quality_charlm.py --compare /tmp/quality/charlm_graphrnn.json \\
        /tmp/quality/charlm_torch.json
    python benchmarks/quality_charlm.py --impl graphrnn --steps 5 --eval-every 5 --val-batches 2
                                                                    # a smoke run

Target (issue 5): validation loss <= 1.50 nats/char, with the wall time; torch.nn.LSTM within
0.03 nats at equal steps.

The setup is char-rnn's (Karpathy 2015): one-hot input (65 characters) -> LSTM 256 -> LSTM 256
-> linear 65 -> softmax; uniform +-0.08 initialization; sequences of 50, batches of 50 parallel
streams read in order with the state carried between chunks (truncated BPTT); the last 10% of
the file is validation data; elementwise gradient clamp at 5. Optimizer Adam 2e-3, multiplied by
``--decay`` every ``--decay-every`` steps after ``--decay-after``. Dropout (Zaremba et al. 2014,
non-recurrent connections only) on the input of each layer and before the head.

Equal setups: the torch model starts from graphrnn's initial weights (converted with
``graphrnn.convert.lstm_to_torch``; the second torch bias ``bias_hh`` stays frozen at zero so the
two models have the same parameters), sees the same batches in the same order and uses the same
learning-rate schedule, clamp and Adam formula. Only the dropout masks come from different
random streams, and float32 rounding differs.

Validation: all validation chunks (or the first ``--val-batches``), state carried from chunk to
chunk and zero at the start, mean cross-entropy per character in nats. Every ``--eval-every``
steps a row (step, mean train loss since the last row, validation loss, training wall seconds,
total wall seconds) is appended to ``OUT.csv`` / ``OUT.json`` and a checkpoint ``OUT.npz`` is
written atomically (npz + JSON, no pickle); ``--resume`` continues from it.
"""

from __future__ import annotations

import os

# one thread per training process (the machine is shared); must precede numpy's import
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from graphrnn import checkpoint as ckpt  # noqa: E402
from graphrnn.cells import lstm  # noqa: E402
from graphrnn.convert import lstm_to_torch  # noqa: E402
from graphrnn.data import StreamBatcher, Vocab, read_text, split_ids  # noqa: E402
from graphrnn.model import RNNModel  # noqa: E402
from graphrnn.optim import Adam, StepDecay  # noqa: E402
from graphrnn.train import TrainConfig, Trainer  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare" / "input.txt"


# ---- setup shared by both implementations ----

def build_graphrnn(a, V: int) -> RNNModel:
    cells = [lstm(V, a.hidden)] + [lstm(a.hidden, a.hidden) for _ in range(a.layers - 1)]
    return RNNModel(cells, V, V, input="onehot", dropout=a.dropout, backend=a.backend)


def schedule(a) -> StepDecay:
    return StepDecay(start=a.decay_after, every=a.decay_every, gamma=a.decay)


class Log:
    """Rows of (step, train loss, val loss, train wall s, total wall s), as CSV and JSON."""

    def __init__(self, out: Path, a, impl: str, resume: bool) -> None:
        self.out, self.rows = out, []
        self.info = {"impl": impl, "args": {k: v for k, v in vars(a).items()
                                            if k not in ("compare",)}}
        if resume and out.with_suffix(".json").exists():
            self.rows = json.loads(out.with_suffix(".json").read_text())["rows"]

    @property
    def wall(self) -> tuple[float, float]:
        return (self.rows[-1]["train_s"], self.rows[-1]["total_s"]) if self.rows else (0.0, 0.0)

    def add(self, step: int, train: float, val: float, train_s: float, total_s: float) -> None:
        self.rows = [r for r in self.rows if r["step"] < step]
        self.rows.append({"step": step, "train_loss": round(train, 5), "val_loss": round(val, 5),
                          "train_s": round(train_s, 1), "total_s": round(total_s, 1)})
        print(f"[{self.info['impl']}] step {step}: train {train:.4f}  val {val:.4f}  "
              f"train {train_s:.0f}s  total {total_s:.0f}s", flush=True)
        self._write()

    def _write(self) -> None:
        # atomic: a temp file then os.replace
        doc = json.dumps({**self.info, "rows": self.rows}, indent=1)
        csv = "step,train_loss,val_loss,train_s,total_s\n" + "".join(
            f"{r['step']},{r['train_loss']},{r['val_loss']},{r['train_s']},{r['total_s']}\n"
            for r in self.rows)
        for suffix, text in ((".json", doc), (".csv", csv)):
            p = self.out.with_suffix(suffix)
            tmp = p.with_name(p.name + ".tmp")
            tmp.write_text(text)
            os.replace(tmp, p)


# ---- graphrnn ----

def val_graphrnn(model: RNNModel, params, val: StreamBatcher, n: int) -> float:
    tot = cnt = 0.0
    state = None
    for k in range(n):
        b = val.batch(k)
        ls, c, state, _ = model.evaluate(params, b.ids, b.targets, state)
        tot, cnt = tot + ls, cnt + c
    return tot / cnt


def run_graphrnn(a, V: int, train: StreamBatcher, val: StreamBatcher, nval: int,
                 log: Log, ck: Path) -> None:
    model = build_graphrnn(a, V)
    params = model.init_params(seed=a.seed, scale=0.08)
    tr = Trainer(model, params, Adam(a.lr, schedule=schedule(a)),
                 lambda s, rng: train.batch(s), None,
                 TrainConfig(clip=a.clip, seed=a.seed, progress=False, explode_factor=3.0))
    if a.resume and ck.exists():
        tr.load(ck)
        print(f"resumed from {ck} at step {tr.step}", flush=True)
    print(f"graphrnn backend {model.layers[0].fwd.backend_name}, "
          f"{sum(v.size for v in params.values())} parameters", flush=True)
    train_s, total_s = log.wall
    t_start = time.perf_counter() - total_s
    if tr.step == 0:
        log.add(0, float("nan"), val_graphrnn(model, params, val, nval), 0.0, 0.0)
    while tr.step < a.steps:
        n = min(a.eval_every - tr.step % a.eval_every, a.steps - tr.step)
        h0 = len(tr.history)
        t0 = time.perf_counter()
        tr.run(steps=n)
        train_s += time.perf_counter() - t0
        tl = float(np.mean([x[1] for x in tr.history[h0:]]))
        v = val_graphrnn(model, params, val, nval)
        tr.save(ck)
        log.add(tr.step, tl, v, train_s, time.perf_counter() - t_start)


# ---- torch ----

class TorchLM:
    """One-hot -> dropout -> nn.LSTM(layers, dropout between layers) -> dropout -> Linear: the
    same dropout placement as RNNModel (each layer's input and the head's input)."""

    def __init__(self, a, V: int, init: dict[str, np.ndarray]) -> None:
        import torch
        self.torch, self.V, self.p = torch, V, a.dropout
        self.rnn = torch.nn.LSTM(V, a.hidden, num_layers=a.layers, dropout=a.dropout)
        self.head = torch.nn.Linear(a.hidden, V)
        sd = {}
        for i in range(a.layers):
            sd.update(lstm_to_torch({k[len(f"l{i}."):]: v for k, v in init.items()
                                     if k.startswith(f"l{i}.")}, layer=i))
        self.rnn.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()})
        with torch.no_grad():
            self.head.weight.copy_(torch.from_numpy(init["head.W"].T.copy()))
            self.head.bias.copy_(torch.from_numpy(init["head.b"].copy()))
        self.params = {}
        for k, p in self.rnn.named_parameters():
            if k.startswith("bias_hh"):
                p.requires_grad_(False)  # zero and frozen: RNNModel has one bias per gate
            else:
                self.params["rnn." + k] = p
        self.params.update({"head." + k: p for k, p in self.head.named_parameters()})

    def train(self, mode: bool) -> None:
        self.rnn.train(mode)
        self.head.train(mode)

    def forward(self, ids: np.ndarray, state):
        torch = self.torch
        F = torch.nn.functional
        x = F.one_hot(torch.from_numpy(ids), self.V).float()
        x = F.dropout(x, self.p, self.rnn.training)
        out, state = self.rnn(x, state)
        return self.head(F.dropout(out, self.p, self.rnn.training)), state


def val_torch(m: TorchLM, val: StreamBatcher, n: int) -> float:
    torch = m.torch
    m.train(False)
    tot = cnt = 0.0
    state = None
    with torch.no_grad():
        for k in range(n):
            b = val.batch(k)
            lo, state = m.forward(b.ids, state)
            tot += float(torch.nn.functional.cross_entropy(
                lo.reshape(-1, m.V), torch.from_numpy(b.targets).reshape(-1), reduction="sum"))
            cnt += b.ids.size
    return tot / cnt


def run_torch(a, V: int, train: StreamBatcher, val: StreamBatcher, nval: int,
              log: Log, ck: Path) -> None:
    import torch
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    init = build_graphrnn(a, V).init_params(seed=a.seed, scale=0.08)
    m = TorchLM(a, V, init)
    ps = list(m.params.values())
    opt = torch.optim.Adam(ps, lr=a.lr, betas=(0.9, 0.999), eps=1e-8)
    sched = schedule(a)
    step = 0
    state = None
    if a.resume and ck.exists():
        arrays, meta = ckpt.load(ck)
        with torch.no_grad():
            for k, p in m.params.items():
                p.copy_(torch.from_numpy(arrays[f"param/{k}"]))
        opt.load_state_dict({"state": {i: {"step": torch.tensor(float(meta["step"])),
                                           "exp_avg": torch.from_numpy(arrays[f"m/{k}"]),
                                           "exp_avg_sq": torch.from_numpy(arrays[f"v/{k}"])}
                                       for i, k in enumerate(m.params)},
                             "param_groups": opt.state_dict()["param_groups"]})
        torch.set_rng_state(torch.from_numpy(arrays["torch_rng"]))
        step = int(meta["step"])
        if "state/h" in arrays:
            state = (torch.from_numpy(arrays["state/h"]), torch.from_numpy(arrays["state/c"]))
        print(f"resumed from {ck} at step {step}", flush=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"{sum(p.numel() for p in ps)} trained parameters", flush=True)
    train_s, total_s = log.wall
    t_start = time.perf_counter() - total_s
    if step == 0:
        log.add(0, float("nan"), val_torch(m, val, nval), 0.0, 0.0)
    while step < a.steps:
        n = min(a.eval_every - step % a.eval_every, a.steps - step)
        losses = []
        m.train(True)
        t0 = time.perf_counter()
        for _ in range(n):
            b = train.batch(step)
            if b.reset:
                state = None
            for g in opt.param_groups:
                g["lr"] = a.lr * sched.factor(step)
            lo, state = m.forward(b.ids, state)
            state = tuple(s.detach() for s in state)
            loss = torch.nn.functional.cross_entropy(lo.reshape(-1, V),
                                                     torch.from_numpy(b.targets).reshape(-1))
            opt.zero_grad()
            loss.backward()
            for p in ps:
                p.grad.clamp_(-a.clip, a.clip)
            opt.step()
            losses.append(loss.item())
            step += 1
        train_s += time.perf_counter() - t0
        v = val_torch(m, val, nval)
        arrays = {f"param/{k}": p.detach().numpy() for k, p in m.params.items()}
        st = opt.state_dict()["state"]
        for i, k in enumerate(m.params):
            arrays[f"m/{k}"] = st[i]["exp_avg"].numpy()
            arrays[f"v/{k}"] = st[i]["exp_avg_sq"].numpy()
        arrays["torch_rng"] = torch.get_rng_state().numpy()
        if state is not None:
            arrays["state/h"], arrays["state/c"] = state[0].numpy(), state[1].numpy()
        ckpt.save(ck, arrays, {"step": step, "impl": "torch"})
        log.add(step, float(np.mean(losses)), v, train_s, time.perf_counter() - t_start)


# ---- comparing two runs ----

def compare(paths: list[str], target: float, tol: float) -> int:
    docs = [json.loads(Path(p).read_text()) for p in paths]
    by = [{r["step"]: r for r in d["rows"]} for d in docs]
    steps = sorted(set(by[0]) & set(by[1]))
    names = [d["impl"] for d in docs]
    print(f"| step | val {names[0]} | val {names[1]} | diff | train {names[0]} | "
          f"train {names[1]} |")
    print("|---:|---:|---:|---:|---:|---:|")
    worst = 0.0
    for s in steps:
        r0, r1 = by[0][s], by[1][s]
        d = r0["val_loss"] - r1["val_loss"]
        worst = max(worst, abs(d))
        print(f"| {s} | {r0['val_loss']:.4f} | {r1['val_loss']:.4f} | {d:+.4f} | "
              f"{r0['train_loss']:.4f} | {r1['train_loss']:.4f} |")
    for d in docs:
        hit = next((r for r in d["rows"] if r["val_loss"] <= target), None)
        best = min(d["rows"], key=lambda r: r["val_loss"])
        last = d["rows"][-1]
        print(f"{d['impl']}: best val {best['val_loss']:.4f} at step {best['step']}; "
              + (f"first <= {target} at step {hit['step']} after {hit['train_s']:.0f} s of "
                 f"training ({hit['total_s']:.0f} s with evaluations)" if hit else
                 f"never <= {target}")
              + f"; {last['step']} steps in {last['train_s']:.0f} s training, "
                f"{last['train_s'] / max(last['step'], 1):.3f} s/step")
    print(f"largest |val difference| at equal steps: {worst:.4f} (tolerance {tol})")
    return 0 if worst <= tol else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--impl", choices=("graphrnn", "torch"), default="graphrnn")
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--out", default="/tmp/quality/charlm",
                   help="prefix of OUT.json, OUT.csv and the checkpoint OUT.npz")
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--val-batches", type=int, default=0, help="0: all validation chunks")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--seq-len", type=int, default=50)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--decay", type=float, default=0.9)
    p.add_argument("--decay-after", type=int, default=2000)
    p.add_argument("--decay-every", type=int, default=400)
    p.add_argument("--clip", type=float, default=5.0)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--backend", default="llvm")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--compare", nargs=2, metavar="JSON", help="compare two runs and exit")
    p.add_argument("--target", type=float, default=1.50)
    p.add_argument("--tolerance", type=float, default=0.03)
    a = p.parse_args(argv)
    if a.compare:
        return compare(a.compare, a.target, a.tolerance)
    if not Path(a.data).exists():
        print(f"no data at {a.data}; pass --data", file=sys.stderr)
        return 1
    text = read_text(a.data)
    vocab = Vocab.from_text(text)
    tr_ids, va_ids = split_ids(vocab.encode(text), 0.1)
    train = StreamBatcher(tr_ids, a.batch, a.seq_len)
    val = StreamBatcher(va_ids, a.batch, a.seq_len)
    nval = min(a.val_batches, len(val)) if a.val_batches else len(val)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    log = Log(out, a, a.impl, a.resume)
    print(f"{len(vocab)} characters, {len(tr_ids)} train / {len(va_ids)} validation; "
          f"{len(train)} steps per epoch; {nval} validation chunks", flush=True)
    run = run_graphrnn if a.impl == "graphrnn" else run_torch
    run(a, len(vocab), train, val, nval, log, out.with_suffix(".npz"))
    last = log.rows[-1]
    print(json.dumps({"impl": a.impl, **last}), flush=True)
    return 0


if __name__ == "__main__":
    np.seterr(over="ignore")
    sys.exit(main())
