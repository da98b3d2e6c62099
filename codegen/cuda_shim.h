/* graphrnn CUDA shim: build generated CUDA kernels unchanged as C++ and run them on the CPU.
 *
 * threadIdx, blockIdx, blockDim and gridDim become globals of the translation unit; GRNN_WALK
 * sets them and calls the kernel once per (block, thread), walking blocks and threads in an
 * order the caller chooses (forward, reversed, shuffled) so that any dependence of a result on
 * the order in which the hardware schedules blocks shows up as a difference. Kernels that use
 * shared memory, barriers or atomics cannot run here; graphrnn's kernels use none of them.
 * Row kernels (a warp per row on the GPU) run here with one thread per row: GRNN_ROW_LANES is 1,
 * so their lane loops walk every column, the butterfly over lanes is empty and __syncwarp()
 * has nothing to wait for.
 */
#ifndef GRNN_CUDA_SHIM_H
#define GRNN_CUDA_SHIM_H

#include <math.h>
#include <string.h>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
/* __restrict__ is a GNU C++ keyword already */

struct grnn_dim3 { unsigned int x, y, z; };
typedef struct grnn_dim3 dim3;

static dim3 threadIdx, blockIdx, blockDim, gridDim;

#define GRNN_ROW_LANES 1
static inline void __syncwarp(unsigned = 0xffffffffu) {}
/* never called with GRNN_ROW_LANES 1 (the butterfly has no rounds); declared so it compiles */
template <typename T> static inline T __shfl_xor_sync(unsigned, T v, int) { return v; }

/* device intrinsics that have a plain C meaning */
static inline float __int_as_float(int i) { float f; memcpy(&f, &i, sizeof f); return f; }
static inline double __longlong_as_double(long long i) {
  double d; memcpy(&d, &i, sizeof d); return d;
}

/* Walk the grid. grid/block: 3 unsigned each. border: nb block coordinates (x,y,z triples)
 * in the order to run them; torder: nt thread coordinates likewise. CALL is the kernel call. */
#define GRNN_WALK(grid, block, border, nb, torder, nt, CALL)                         \
  do {                                                                               \
    gridDim.x = (grid)[0]; gridDim.y = (grid)[1]; gridDim.z = (grid)[2];             \
    blockDim.x = (block)[0]; blockDim.y = (block)[1]; blockDim.z = (block)[2];       \
    for (long grnn_b = 0; grnn_b < (nb); ++grnn_b) {                                 \
      blockIdx.x = (border)[3 * grnn_b]; blockIdx.y = (border)[3 * grnn_b + 1];      \
      blockIdx.z = (border)[3 * grnn_b + 2];                                         \
      for (long grnn_t = 0; grnn_t < (nt); ++grnn_t) {                               \
        threadIdx.x = (torder)[3 * grnn_t]; threadIdx.y = (torder)[3 * grnn_t + 1];  \
        threadIdx.z = (torder)[3 * grnn_t + 2];                                      \
        CALL;                                                                        \
      }                                                                              \
    }                                                                                \
  } while (0)

#endif
