"""Quality benchmark (not a test): the char LM of ``quality_charlm.py`` trained through the
PyTorch bridge (``graphrnn.torch.Module`` in place of ``torch.nn.LSTM``, everything else a plain
PyTorch loop: one-hot, dropout, ``nn.Linear`` head, cross-entropy, ``torch.optim.Adam``, clamp)
against graphrnn's own trainer (``graphrnn.train.Trainer``, as ``graphrnn train`` runs it), at
equal steps, from the same initial weights, on the same batches and learning-rate schedule.

    python benchmarks/quality_torch_bridge.py --steps 600 --eval-every 100    # both, compared
    python benchmarks/quality_torch_bridge.py --steps 6000                      # the full run

Target (issue 16): validation loss within 0.02 nats of graphrnn's at equal steps. Writes
``OUT_graphrnn.json`` / ``OUT_bridge.json`` (``--out``, default /tmp/quality/bridge) and prints
the comparison table of ``quality_charlm.py --compare``. Exits 0 with a note when
tinyshakespeare is absent (``/work/shared/data/tinyshakespeare/input.txt`` or ``--data``).
The two runs differ in their dropout masks (different random streams) and float32 rounding,
as ``quality_charlm.py``'s torch run does.
"""

from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import quality_charlm as q  # noqa: E402


class BridgeLM(q.TorchLM):
    """quality_charlm's TorchLM with its nn.LSTM replaced by graphrnn.torch.Module: the same
    parameter names (nn.LSTM's), so its loading, freezing of bias_hh and optimizer code apply
    unchanged."""

    def __init__(self, a, V: int, init: dict[str, np.ndarray]) -> None:
        import torch

        import graphrnn.torch as gt
        real = torch.nn.LSTM
        try:   # TorchLM builds torch.nn.LSTM(V, H, num_layers=, dropout=): build ours instead
            torch.nn.LSTM = lambda i, h, num_layers, dropout: gt.Module(
                "lstm", i, h, num_layers=num_layers, dropout=dropout, backend=a.backend)
            super().__init__(a, V, init)
        finally:
            torch.nn.LSTM = real


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    out = "/tmp/quality/bridge"
    if "--out" in argv:
        i = argv.index("--out")
        out = argv[i + 1]
        del argv[i:i + 2]
    data = q.DATA
    if "--data" in argv:
        data = Path(argv[argv.index("--data") + 1])
    if not Path(data).exists():
        print(f"tinyshakespeare not found at {data}: nothing to compare (pass --data)")
        return 0
    rc = q.main(argv + ["--impl", "graphrnn", "--out", out + "_graphrnn"])
    if rc:
        return rc
    real, q.TorchLM = q.TorchLM, BridgeLM   # run_torch builds TorchLM: ours, for this run
    try:
        rc = q.main(argv + ["--impl", "torch", "--out", out + "_bridge"])
    finally:
        q.TorchLM = real
    if rc:
        return rc
    return q.compare([out + "_graphrnn.json", out + "_bridge.json"], 1.5, 0.02)


if __name__ == "__main__":
    np.seterr(over="ignore")
    sys.exit(main())
