#!/usr/bin/env bash
# The README's test command: install graphrnn with its test extras into .venv, run every test.
# Set GRAPHRNN_NO_TORCH=1 to skip installing PyTorch (its cross-checks then skip),
# GRAPHRNN_NO_JAX=1 to skip JAX (the JAX bridge tests then skip).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e ".[test,viz]"
# PyTorch is only for the cross-checks: where it cannot be installed they skip
if [ "${GRAPHRNN_NO_TORCH:-0}" != 1 ]; then
  .venv/bin/pip install -q --disable-pip-version-check -e ".[torch]" \
    || echo "note: could not install torch==2.13.0; the PyTorch cross-checks will skip"
fi
# JAX and optax for graphrnn.jax (the bridge's tests and example skip without them)
if [ "${GRAPHRNN_NO_JAX:-0}" != 1 ]; then
  .venv/bin/pip install -q --disable-pip-version-check -e ".[jax]" \
    || echo "note: could not install jax/optax; the JAX bridge tests will skip"
fi
# mpi4py and MPICH (mpiexec) for the data-parallel tests; where they cannot be installed those
# tests skip
.venv/bin/pip install -q --disable-pip-version-check -e ".[mpi]" \
  || echo "note: could not install mpi4py/mpich; the MPI tests will skip"
# CuPy and NVRTC (no GPU needed): the CUDA backend is compiled by NVRTC and checked against the
# real CuPy's signatures; where they cannot be installed those tests skip
.venv/bin/pip install -q --disable-pip-version-check -e ".[cuda]" \
  || echo "note: could not install cupy/nvrtc; the NVRTC and CuPy-signature tests will skip"
# Graphviz's dot binary renders SVG/PNG; without it those tests skip
if ! command -v dot >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  { apt-get update -qq && apt-get install -y -qq graphviz; } >/dev/null 2>&1 \
    || echo "note: could not install graphviz; picture tests will skip"
fi
exec .venv/bin/python -m pytest -q "$@"
