"""Exported LLVM modules: IR text, object, shared library and C header, used from a C program."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from test_llvm_program import rnn_cell, rnn_program

from codegen.llvm import LLVMBackend, export
from codegen.ref import RefBackend

C_MAIN = r"""
#include <stdio.h>
#include <stdlib.h>
#include <pthread.h>
#include "PREFIX.h"

struct job { int64_t T, B; void **bufs; int64_t ctx[4]; };

static void *backward(void *arg) {
    struct job *j = arg;
    PREFIX_backward(j->T, j->B, j->bufs, j->ctx);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 5) return 2;
    int64_t T = atoll(argv[1]), B = atoll(argv[2]);
    FILE *in = fopen(argv[3], "rb"), *out = fopen(argv[4], "wb");
    if (!in || !out) return 3;
    void *bufs[UPPER_NBUFS];
    for (int i = 0; i < UPPER_NBUFS; i++) {
        int64_t n = PREFIX_buffer_elems(i, T, B), size = PREFIX_buffer_info[i][4];
        bufs[i] = calloc(n ? n : 1, size);
        if (fread(bufs[i], size, n, in) != (size_t)n) return 4;
    }
    /* the forward on this thread; the backward on two, with the packed-weight workspace */
    PREFIX_forward(T, B, bufs, NULL);
    static int64_t sync[16];
    void *work = aligned_alloc(64, UPPER_WORKSPACE_BYTES + 64);
    struct job jobs[2];
    pthread_t other;
    for (int t = 0; t < 2; t++) {
        jobs[t] = (struct job){T, B, bufs, {t, 2, (int64_t)sync, (int64_t)work}};
    }
    if (pthread_create(&other, NULL, backward, &jobs[1])) return 5;
    backward(&jobs[0]);
    pthread_join(other, NULL);
    free(work);
    for (int i = 0; i < UPPER_NBUFS; i++) {
        int64_t n = PREFIX_buffer_elems(i, T, B), size = PREFIX_buffer_info[i][4];
        fwrite(bufs[i], size, n, out);
        free(bufs[i]);
    }
    fclose(in); fclose(out);
    return 0;
}
"""


@pytest.mark.skipif(shutil.which("cc") is None, reason="no system C compiler")
def test_exported_library_runs_from_c(tmp_path) -> None:
    T, B, I, H, dtype = 4, 3, 5, 7, "float64"  # noqa: E741
    cell = rnn_cell(I, H, dtype)
    prog = rnn_program(I, H, dtype)
    cc = LLVMBackend(cell, dtype, program=prog, cache=False)
    files = export(cc, tmp_path)
    assert set(files) == {"ir", "obj", "so", "header"}
    ll = files["ir"].read_text()
    assert "define void @grnn_rnn_f64_forward(i64" in ll and "target triple" in ll
    header = files["header"].read_text()
    for word in ("grnn_rnn_f64_backward", "residual buffers", "param Wx[0:5, 0:7]", "seq",
                 "WORKSPACE_BYTES"):
        assert word in header
    prefix = cc.prefix
    src = tmp_path / "main.c"
    src.write_text(C_MAIN.replace("UPPER", prefix.upper()).replace("PREFIX", prefix))
    exe = tmp_path / "main"
    subprocess.run(["cc", "-O1", "-o", str(exe), str(src), f"-I{tmp_path}", f"-L{tmp_path}",
                    f"-l{prefix}", f"-Wl,-rpath,{tmp_path}", "-pthread"],
                   check=True)
    # the buffers, laid out as the header says, filled as the binding says
    ref = RefBackend(cell, dtype)
    params = ref.init_params(seed=2, scale=0.5)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, I))
    h0 = rng.standard_normal((B, H))
    dy = rng.standard_normal((T, B, H))
    arrays = {b.name: np.zeros(b.shape(T, B), b.dtype) for b in prog.buffers}
    for pc in prog.param_pieces:
        arrays[pc.ref.buf][...] = params[pc.name]
    arrays["x"][...] = x
    arrays["h"][0] = h0
    arrays["dy"][...] = dy
    (tmp_path / "in.bin").write_bytes(b"".join(arrays[b.name].tobytes() for b in prog.buffers))
    subprocess.run([str(exe), str(T), str(B), str(tmp_path / "in.bin"),
                    str(tmp_path / "out.bin")], check=True)
    raw = (tmp_path / "out.bin").read_bytes()
    out, off = {}, 0
    for b in prog.buffers:
        n = int(np.prod(b.shape(T, B)))
        out[b.name] = np.frombuffer(raw, b.dtype, n, off).reshape(b.shape(T, B))
        off += n * 8
    ys, hT, res = ref.forward_train(params, x, h0)
    g = ref.backward(params, res, [dy], None)
    np.testing.assert_allclose(out["h"][1:], ys[0], rtol=1e-12)
    np.testing.assert_allclose(out["dWx"], g.params["Wx"], rtol=1e-10)
    np.testing.assert_allclose(out["dWh"], g.params["Wh"], rtol=1e-10)
    np.testing.assert_allclose(out["db"], g.params["b"], rtol=1e-10)
    np.testing.assert_allclose(out["dx"], g.inputs[0], rtol=1e-10)
    np.testing.assert_allclose(out["dh"], g.states[0], rtol=1e-10)
