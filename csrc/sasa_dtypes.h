// The kernels' element types, shared by the CPU and CUDA code: which torch dtypes they compute,
// how each is stored (half and bfloat16 travel as raw 16-bit patterns, so device and host code
// convert them with their own arithmetic), and the one switch from at::ScalarType to a
// compile-time tag. The conversions themselves differ per target (csrc/cpu/simd_*.h, CUDA
// intrinsics in csrc/cuda/kernels.cu); the map below is the single list of what exists.
#pragma once

#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <type_traits>

namespace sasa {

enum class Dtype { kF32, kF16, kBF16 };

// The one map from a kernel dtype to per-dtype types: by_dtype<kD, A, B, C> is A for float32, B
// for float16 and C for bfloat16. Each target names its own (storage types below; the CUDA
// conversion structs in cuda/kernels.cu).
template <Dtype kD, class ForF32, class ForF16, class ForBF16>
using by_dtype = std::conditional_t<kD == Dtype::kF32, ForF32, std::conditional_t<kD == Dtype::kF16, ForF16, ForBF16>>;

// The element type in memory of dtype kD (half and bfloat16 as raw 16-bit patterns).
template <Dtype kD>
using storage_t = by_dtype<kD, float, uint16_t, uint16_t>;

template <Dtype kD>
using DtypeTag = std::integral_constant<Dtype, kD>;

inline bool is_kernel_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kHalf || t == at::kBFloat16;
}

// Calls fn(DtypeTag<kD>{}) for the kernel dtype of t; any other dtype is an error naming op.
template <class Fn>
void dispatch_dtype(at::ScalarType t, const char* op, Fn&& fn) {
  switch (t) {
    case at::kFloat: fn(DtypeTag<Dtype::kF32>{}); break;
    case at::kHalf: fn(DtypeTag<Dtype::kF16>{}); break;
    case at::kBFloat16: fn(DtypeTag<Dtype::kBF16>{}); break;
    default: TORCH_CHECK(false, op, ": unsupported dtype ", t);
  }
}

}  // namespace sasa
