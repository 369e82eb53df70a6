// CUDA launch helpers shared by every stovtal CUDA kernel.
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cstdint>

namespace stovtal {

constexpr int kThreadsPerBlock = 256;

// Blocks for a grid-stride loop over n items: enough to fill the device,
// capped so that huge n does not overflow gridDim.x.
inline unsigned int blocks_for(int64_t n, int threads = kThreadsPerBlock) {
  const int64_t wanted = (n + threads - 1) / threads;
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>(wanted, 65535 * 8)));
}

// Grid-stride loop index over [0, n).
#define STOVTAL_CUDA_KERNEL_LOOP(i, n)                                                  \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

}  // namespace stovtal
