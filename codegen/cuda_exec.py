"""Runs a ``graphrnn.program.Program`` with CUDA kernels, on any "device" that can launch them.

The same executor drives the real GPU (``codegen.cuda``: CuPy arrays, RawModule kernels,
cuBLAS) and the CPU proof (``CpuDevice`` here: numpy arrays, the kernels built as C++ through
``cuda_shim.h``, GEMMs and reductions in numpy, every launch checked by a ``FakeLauncher``).

What it does with a Program:

- every ``Kernel`` step becomes a ``KernelSpec``: the kernel's scalar program with the row
  strides of the buffers its views point into baked in (a view ``buf[:, c0:c1]`` is passed as a
  pointer to its first element; its row stride is the buffer's width);
- every ``RowKernel`` step becomes a ``RowSpec``: one kernel with a warp per row running its
  parts (kernels and reductions over the row) in order;
- a diagonal sweep (only kernels in the step phase) becomes one ``LoopSpec`` kernel that runs
  the whole time loop, when every thread provably touches only its own elements (all stages
  share one domain width and each written buffer is always reached at one column offset);
  otherwise the step phase is launched step by step;
- the bindings of the Program's docstring move user arrays in and out.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from graphrnn.errors import BackendError
from graphrnn.ir import Cell
from graphrnn.program import (
    Buffer,
    Kernel,
    Program,
    Ref,
    RowKernel,
    Sweep,
    cols_of,
    overlap,
)
from graphrnn.runtime import Device, ExecutedCell, Executor

from .cuda_render import (
    DEFAULT_BLOCK,
    Access,
    KernelSpec,
    LoopSpec,
    LoopStage,
    Operand,
    RenderedKernel,
    RowPart,
    RowSpec,
    grid_for,
    kernel_name,
    render,
    render_loop,
    render_rows,
)


def kernel_spec(step: Kernel, bufs: dict[str, Buffer], block: int = DEFAULT_BLOCK,
                in_loop: bool = False) -> KernelSpec:
    """The pointwise kernel for one Kernel step of a Program (``in_loop``: of the step phase).
    Its pointers are ``__restrict__`` unless an output may share elements with another view."""
    kd = step.kernel
    ins = []
    for r, f in zip(step.ins, kd.bcast):
        w = bufs[r.buf].cols
        ins.append(Operand(0 if f in ("row", "scalar") else w, 0 if f in ("col", "scalar") else 1))
    outs = tuple(Operand(bufs[r.buf].cols) for r in step.outs)
    c0, c1 = cols_of(step.outs[0], bufs[step.outs[0].buf])
    refs = list(step.ins) + list(step.outs)
    restrict = not any(overlap(o, r, bufs, in_loop) for i, o in enumerate(step.outs)
                       for j, r in enumerate(refs) if j != len(step.ins) + i)
    key = f"{kd.dtype}|{kd.program}|{ins}|{outs}|{c1 - c0}|{restrict}|{block}"
    return KernelSpec(kernel_name(kd.name, key), kd.program, kd.dtype, c1 - c0, tuple(ins),
                      outs, block, restrict)


def _operand(r: Ref, f: str, bufs: dict[str, Buffer]) -> Operand:
    w = bufs[r.buf].cols
    return Operand(0 if f in ("row", "scalar") else w, 0 if f in ("col", "scalar") else 1)


def row_spec(step: RowKernel, bufs: dict[str, Buffer], dtype: str,
             block: int = DEFAULT_BLOCK) -> RowSpec:
    """The warp-per-row kernel for one RowKernel step (its parameters: each part's views)."""
    parts = []
    for part in step.parts:
        if isinstance(part, Kernel):
            c0, c1 = cols_of(part.outs[0], bufs[part.outs[0].buf])
            parts.append(RowPart(c1 - c0, tuple(_operand(r, f, bufs) for r, f in
                                                zip(part.ins, part.kernel.bcast)),
                                 tuple(_operand(r, "full", bufs) for r in part.outs),
                                 part.kernel.program))
        else:
            c0, c1 = cols_of(part.src, bufs[part.src.buf])
            parts.append(RowPart(c1 - c0, (_operand(part.src, "full", bufs),),
                                 (_operand(part.out, "full", bufs),), None, part.op,
                                 part.accumulate))
    key = f"{dtype}|{parts}|{block}"
    return RowSpec(kernel_name(step.name, key), dtype, tuple(parts), block)


def row_args(step: RowKernel, view: Callable[[Ref], Any]) -> list[Any]:
    """A row kernel's array arguments, in its parameters' order."""
    args: list[Any] = []
    for part in step.parts:
        if isinstance(part, Kernel):
            args += [view(r) for r in part.ins] + [view(r) for r in part.outs]
        else:
            args += [view(part.src), view(part.out)]
    return args


def loop_spec(sweep: Sweep, bufs: dict[str, Buffer], dtype: str, label: str,
              block: int = DEFAULT_BLOCK) -> tuple[LoopSpec, list[str]] | None:
    """One kernel for a whole diagonal step phase, with the buffer names its parameters take,
    or None when some thread could read an element another thread writes."""
    if not sweep.diagonal:
        return None
    steps = [s for s in sweep.step if isinstance(s, Kernel)]
    widths = set()
    names: list[str] = []
    written: dict[str, set[int]] = {}   # buffer -> column offsets it is reached at
    for s in steps:
        ob = bufs[s.outs[0].buf]
        if ob.fixed:
            return None               # the domain must be the batch rows
        c0, c1 = cols_of(s.outs[0], ob)
        widths.add(c1 - c0)
        for r in s.outs:
            if bufs[r.buf].fixed or r.t < 0:
                return None
            written.setdefault(r.buf, set())
    if len(widths) != 1:
        return None
    for s in steps:
        for r, f in list(zip(s.ins, s.kernel.bcast)) + [(o, "full") for o in s.outs]:
            if r.buf in written:
                if f != "full":
                    return None
                written[r.buf].add(cols_of(r, bufs[r.buf])[0])
    if any(len(offs) != 1 for offs in written.values()):
        return None

    def access(r: Ref, f: str) -> Access:
        if r.buf not in names:
            names.append(r.buf)
        b = bufs[r.buf]
        c0 = cols_of(r, b)[0]
        r0 = r.rows[0] if (b.fixed and r.rows is not None) else 0
        return Access(names.index(r.buf), b.cols, r0 * b.cols + c0,
                      r.t if b.kind == "seq" else None, f)

    stages = tuple(LoopStage(s.kernel.program,
                             tuple(access(r, f) for r, f in zip(s.ins, s.kernel.bcast)),
                             tuple(access(r, "full") for r in s.outs)) for s in steps)
    key = f"{dtype}|{stages}|{sweep.reverse}|{block}"
    spec = LoopSpec(kernel_name(f"{label}_loop", key), dtype, widths.pop(),
                    tuple(n in written for n in names), stages, sweep.reverse, block)
    return spec, names


# ---- the CPU proof's device (the GPU's is codegen.cuda.GpuDevice) ----

class CpuDevice(Device):
    """numpy arrays; kernels built through the C shim, every launch checked by a FakeLauncher
    and run with the grid walked in ``order``. ``grid_scale`` < 1 launches fewer blocks than
    the domain needs, so the grid-stride loops do real work."""

    def __init__(self, kernels: Sequence[RenderedKernel], order: str = "forward", seed: int = 0,
                 cache_dir: Any = None, grid_scale: float = 1.0, lib: Any = None) -> None:
        from .cuda_cpu import FakeLauncher, ShimLauncher, ShimLibrary
        # a prebuilt library holding these kernels (and others) saves a C++ build
        if lib is None or any(k.name not in lib.kernels for k in kernels):
            lib = ShimLibrary(list(kernels), cache_dir)
        self.lib = lib
        self.launcher = FakeLauncher(ShimLauncher(self.lib, order, seed))
        self.grid_scale = grid_scale

    def launch(self, kernel: RenderedKernel, rows: int, args: Sequence[Any]) -> None:
        grid = grid_for(rows, kernel.spec.cols, kernel.block)
        grid = max(1, int(grid * self.grid_scale))
        self.launcher.launch(kernel, grid, kernel.block, args)


# ---- the executor ----

class ProgramExecutor(Executor):
    """Renders a Program's kernels once; runs its sweeps on a Device (``graphrnn.runtime``)
    with a launch of a rendered kernel for each kernel step, and a diagonal step phase as one
    kernel over the whole time loop where ``loop_spec`` allows."""

    def __init__(self, program: Program, block: int = DEFAULT_BLOCK,
                 loop_kernels: bool = True) -> None:
        super().__init__(program)
        self.kernel_of: dict[int, RenderedKernel] = {}
        self.loop_of: dict[str, tuple[RenderedKernel, list[str]]] = {}
        for label, sw in (("forward", program.forward), ("backward", program.backward)):
            for ph, steps in sw.phases():
                for s in steps:
                    if isinstance(s, Kernel):
                        spec = kernel_spec(s, self.bufs, block, ph == "step")
                        self.kernel_of[id(s)] = render(spec)
                    elif isinstance(s, RowKernel):
                        self.kernel_of[id(s)] = render_rows(
                            row_spec(s, self.bufs, program.dtype, block))
            made = loop_spec(sw, self.bufs, program.dtype, f"{program.cell_name}_{label}",
                             block) if loop_kernels else None
            if made is not None:
                self.loop_of[label] = (render_loop(made[0]), made[1])

    def kernels(self) -> list[RenderedKernel]:
        """Every distinct kernel the Program needs (one module holds them all)."""
        seen: dict[str, RenderedKernel] = {}
        for k in list(self.kernel_of.values()) + [k for k, _ in self.loop_of.values()]:
            seen.setdefault(k.name, k)
        return list(seen.values())

    def alloc(self, dev: Device, T: int, B: int) -> dict[str, Any]:
        for b in self.p.buffers:
            shape = b.shape(T, B)
            if int(np.prod(shape)) >= 2**31:
                # kernels index with 32-bit unsigned arithmetic (cheaper, and enough below this)
                raise BackendError(f"cuda: buffer {b.name} of shape {shape} has 2**31 elements "
                                   "or more; split the sequence into shorter chunks (T) or "
                                   "smaller batches")
        return super().alloc(dev, T, B)

    def run_kernel(self, dev: Device, s: Kernel, ins: list[Any], outs: list[Any],
                   rows: int) -> None:
        dev.launch(self.kernel_of[id(s)], rows, ins + outs + [rows])

    def run_row_kernel(self, dev: Device, s: RowKernel, view: Callable[[Ref], Any],
                       rows: int) -> None:
        dev.launch(self.kernel_of[id(s)], rows, row_args(s, view) + [rows])

    def run_loop(self, dev: Device, label: str, arrays: dict[str, Any], T: int, B: int) -> bool:
        if label not in self.loop_of:
            return False
        k, names = self.loop_of[label]
        dev.launch(k, B, [arrays[n] for n in names] + [B, T])
        return True


class CudaCpuBackend(ExecutedCell):
    """The CUDA backend's CPU proof as a compiled cell: the Program run by the executor above
    with every kernel built through the C shim (walked in ``order``), GEMMs and reductions in
    numpy. Slow; it exists so CI can check the generated CUDA against the reference."""

    backend_name = "cuda-cpu"

    def __init__(self, cell: Cell, dtype: str, order: str = "forward", seed: int = 0,
                 cache_dir: Any = None, grid_scale: float = 1.0, block: int = 64,
                 loop_kernels: bool = True, program: Program | None = None,
                 lib: Any = None) -> None:
        super().__init__(cell, dtype, program)
        self.executor = ProgramExecutor(self.program, block, loop_kernels)
        self.device = CpuDevice(self.executor.kernels(), order, seed, cache_dir, grid_scale, lib)
