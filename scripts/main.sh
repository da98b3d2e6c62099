#!/usr/bin/env bash
# The README's main job: install graphrnn into .venv and train a character-level LSTM language
# model (declared with the nngraph frontend, compiled with the LLVM backend) on the Python standard
# library's own source for a few minutes, then print samples. Extra arguments go to `graphrnn train`
# (e.g. --data FILE, --minutes 10, --hidden 256 --layers 2).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e ".[train]"
exec .venv/bin/graphrnn train --minutes "${MINUTES:-3}" "$@"
