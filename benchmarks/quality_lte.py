"""Quality benchmark (not a test): learning_to_execute addition of two 3-digit numbers.

    python benchmarks/quality_lte.py              # target: >= 95% character accuracy

Runs ``examples/learning_to_execute.py`` with the addition task (length 3, nesting 1), the
combined curriculum, a 2-layer LSTM of 128, and prints its report (the last line is the final
character accuracy on 200 fixed validation programs).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "learning_to_execute.py"


def main(argv=None):
    spec = importlib.util.spec_from_file_location("learning_to_execute", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    args = ["--ops", "addition", "--length", "3", "--nesting", "1", "--strategy", "combined",
            "--layers", "2", "--hidden", "128", "--steps", "3000", "--eval-every", "250"]
    return mod.main(args + list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
