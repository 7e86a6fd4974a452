// CPU kernels of the compiled ops (float32, float16, bfloat16 in and out; float32 accumulation).
//
// Design
// - One row of [N, d] per task; rows are split over threads with at::parallel_for.
// - A row is read from memory once: the reductions (<hs, hf>, ||hf||^2) sweep it, the write sweep
//   reads it again from L1/L2 (a row is at most tens of KiB).
// - The inner loops are plain C++ over raw storage (float, or uint16_t bits for half/bfloat16 with
//   branch-free conversions) that GCC auto-vectorizes; reductions keep kLanes independent partial
//   sums in a three-level cascade (see cascade_sum), so they vectorize without -ffast-math, are
//   deterministic, and lose accuracy with d about as slowly as torch's own sum. Check with
//   scripts/check_cpu_vectorization.sh (GCC -fopt-info-vec, vector registers per build).
// - The row kernels (rows_impl.h) are compiled twice on x86-64: for the baseline (SSE2) and, under
//   #pragma GCC target("avx2,fma,f16c"), for AVX2; the AVX2 ones run when the CPU has it.
// - Numerics follow sasa_kernels.reference: h = a*hs + (b*alpha)*hf in float32 rounded to the
//   dtype; RMSNorm (Hugging Face Llama): normed = dtype(h * rsqrt(mean(h^2) + eps)), then
//   dtype(normed * dtype(weight + weight_offset)). Built with -ffp-contract=off (setup.py,
//   CMakeLists.txt): where the reference rounds a product before adding, so do the kernels.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "../sasa_checks.h"

#if defined(__GNUC__)
#define SASA_INLINE inline __attribute__((always_inline))
#define SASA_NOINLINE __attribute__((noinline))
#define SASA_RESTRICT __restrict__
#else
#define SASA_INLINE inline
#define SASA_NOINLINE
#define SASA_RESTRICT __restrict
#endif

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) && !defined(SASA_NO_AVX2)
#define SASA_X86_AVX2 1
#else
#define SASA_X86_AVX2 0
#endif

namespace sasa {
namespace cpu {

// Independent partial sums per reduction (a multiple of every vector width we target).
constexpr int kLanes = 16;

enum class Dtype { kF32, kF16, kBF16 };

template <Dtype>
struct Storage;
template <>
struct Storage<Dtype::kF32> {
  using type = float;
};
template <>
struct Storage<Dtype::kF16> {
  using type = uint16_t;
};
template <>
struct Storage<Dtype::kBF16> {
  using type = uint16_t;
};

template <class S>
struct ProjectArgs {
  const S* hs;
  const S* hf;
  S* out;
  S* out_normed;   // nullptr for plain project
  const float* w;  // rounded (norm_weight + weight_offset) as float32, [d]; nullptr for project
  int64_t d, hs_stride, hf_stride, out_stride, outn_stride;
  float a, b, eps, norm_eps;
};

template <class S, class SW>
struct ProbeArgs {
  const S* hidden;
  const int64_t* positions;  // nullptr: row 0 of every sequence
  const SW* weight;
  const SW* bias;            // nullptr: no bias
  const float* w;            // rounded (norm_weight + weight_offset), [d]; nullptr: no RMSNorm
  float* out;
  int64_t T, d, C, sB, sT, wstride, bstride, out_s0, out_s1;
  float norm_eps;
  bool sigmoid;
};

namespace base {
#include "rows_impl.h"
}  // namespace base

#if SASA_X86_AVX2
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
namespace avx2 {
#include "rows_impl.h"
}  // namespace avx2
#pragma GCC pop_options

bool cpu_has_avx2() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
  }();
  return has;
}
#endif

namespace {

template <Dtype kD, bool kNorm>
void project_rows_dispatch(const ProjectArgs<typename Storage<kD>::type>& p, int64_t begin,
                           int64_t end) {
#if SASA_X86_AVX2
  if (cpu_has_avx2()) return avx2::project_rows<kD, kNorm>(p, begin, end);
#endif
  base::project_rows<kD, kNorm>(p, begin, end);
}

template <Dtype kD, Dtype kW>
void probe_rows_dispatch(
    const ProbeArgs<typename Storage<kD>::type, typename Storage<kW>::type>& p, int64_t begin,
    int64_t end, float* v) {
#if SASA_X86_AVX2
  if (cpu_has_avx2()) return avx2::probe_rows<kD, kW>(p, begin, end, v);
#endif
  base::probe_rows<kD, kW>(p, begin, end, v);
}

// Rounded (norm_weight + weight_offset) as float32 values; HF Llama multiplies in the dtype.
template <Dtype kD>
std::vector<float> effective_norm_weight(const at::Tensor& norm_weight, float weight_offset) {
  using D = typename base::Conv<kD>::type;
  using S = typename D::storage;
  const int64_t d = norm_weight.size(0);
  const int64_t stride = norm_weight.stride(0);
  const S* w = reinterpret_cast<const S*>(norm_weight.const_data_ptr());
  std::vector<float> out(size_t(d > 0 ? d : 0));
  for (int64_t i = 0; i < d; ++i) out[size_t(i)] = base::round_to<D>(D::load(w[i * stride]) + weight_offset);
  return out;
}

int64_t row_grain(int64_t work_per_row) {
  // About 32K elements of work per task: below that, threading costs more than it saves.
  const int64_t per = work_per_row > 0 ? work_per_row : 1;
  return std::max<int64_t>(1, 32768 / per);
}

template <Dtype kD>
void project_impl(const at::Tensor& hs, const at::Tensor& hf, const at::Tensor& out,
                  const at::Tensor* norm_weight, const at::Tensor* out_normed, double a, double b,
                  double eps, double norm_eps, double weight_offset) {
  using S = typename Storage<kD>::type;
  const int64_t n = hs.size(0), d = hs.size(1);
  if (n == 0 || d == 0) return;
  ProjectArgs<S> p{};
  p.hs = reinterpret_cast<const S*>(hs.const_data_ptr());
  p.hf = reinterpret_cast<const S*>(hf.const_data_ptr());
  p.out = reinterpret_cast<S*>(out.mutable_data_ptr());
  p.d = d;
  p.hs_stride = hs.stride(0);
  p.hf_stride = hf.stride(0);
  p.out_stride = out.stride(0);
  p.a = float(a);
  p.b = float(b);
  p.eps = float(eps);
  p.norm_eps = float(norm_eps);
  std::vector<float> w;
  if (norm_weight != nullptr) {
    w = effective_norm_weight<kD>(*norm_weight, float(weight_offset));
    p.w = w.data();
    p.out_normed = reinterpret_cast<S*>(out_normed->mutable_data_ptr());
    p.outn_stride = out_normed->stride(0);
    at::parallel_for(0, n, row_grain(3 * d), [&](int64_t begin, int64_t end) {
      project_rows_dispatch<kD, true>(p, begin, end);
    });
  } else {
    at::parallel_for(0, n, row_grain(2 * d), [&](int64_t begin, int64_t end) {
      project_rows_dispatch<kD, false>(p, begin, end);
    });
  }
}

template <class Fn>
void dispatch_dtype(at::ScalarType t, const char* op, Fn&& fn) {
  switch (t) {
    case at::kFloat: fn(std::integral_constant<Dtype, Dtype::kF32>{}); break;
    case at::kHalf: fn(std::integral_constant<Dtype, Dtype::kF16>{}); break;
    case at::kBFloat16: fn(std::integral_constant<Dtype, Dtype::kBF16>{}); break;
    default: TORCH_CHECK(false, op, ": unsupported dtype ", t);
  }
}

void project_cpu(const at::Tensor& hs, const at::Tensor& hf, const at::Tensor& out, double a,
                 double b, double eps) {
  constexpr const char* op = "sasa::_compiled_project";
  check_project_args(op, hs, hf, out, eps);
  TORCH_CHECK(hs.device().is_cpu(), op, ": expected CPU tensors, got ", hs.device());
  dispatch_dtype(hs.scalar_type(), op, [&](auto tag) {
    project_impl<decltype(tag)::value>(hs, hf, out, nullptr, nullptr, a, b, eps, 1.0, 0.0);
  });
}

void project_rmsnorm_cpu(const at::Tensor& hs, const at::Tensor& hf, const at::Tensor& norm_weight,
                         const at::Tensor& out, const at::Tensor& out_normed, double a, double b,
                         double eps, double norm_eps, double weight_offset) {
  constexpr const char* op = "sasa::_compiled_project_rmsnorm";
  check_project_rmsnorm_args(op, hs, hf, norm_weight, out, out_normed, eps, norm_eps);
  TORCH_CHECK(hs.device().is_cpu(), op, ": expected CPU tensors, got ", hs.device());
  dispatch_dtype(hs.scalar_type(), op, [&](auto tag) {
    project_impl<decltype(tag)::value>(hs, hf, out, &norm_weight, &out_normed, a, b, eps, norm_eps,
                                       weight_offset);
  });
}

// ---------------------------------------------------------------------------------------------
// probe

template <Dtype kD, Dtype kW>
void probe_impl(const at::Tensor& hidden, const std::optional<at::Tensor>& positions,
                const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                const std::optional<at::Tensor>& norm_weight, const at::Tensor& out,
                double norm_eps, double weight_offset, bool sigmoid) {
  using S = typename Storage<kD>::type;
  using SW = typename Storage<kW>::type;
  const int64_t B = hidden.size(0), d = hidden.size(2), C = weight.size(0);
  if (B == 0 || C == 0) return;
  ProbeArgs<S, SW> p{};
  p.hidden = reinterpret_cast<const S*>(hidden.const_data_ptr());
  at::Tensor pos;
  if (positions.has_value()) {
    pos = positions->contiguous();
    p.positions = pos.const_data_ptr<int64_t>();
  }
  p.weight = reinterpret_cast<const SW*>(weight.const_data_ptr());
  if (bias.has_value()) {
    p.bias = reinterpret_cast<const SW*>(bias->const_data_ptr());
    p.bstride = bias->stride(0);
  }
  std::vector<float> w;
  if (norm_weight.has_value()) {
    w = effective_norm_weight<kD>(*norm_weight, float(weight_offset));
    p.w = w.data();
  }
  p.out = out.mutable_data_ptr<float>();
  p.T = hidden.size(1);
  p.d = d;
  p.C = C;
  p.sB = hidden.stride(0);
  p.sT = hidden.stride(1);
  p.wstride = weight.stride(0);
  p.out_s0 = out.stride(0);
  p.out_s1 = out.stride(1);
  p.norm_eps = float(norm_eps);
  p.sigmoid = sigmoid;
  at::parallel_for(0, B, row_grain((C + 2) * d), [&](int64_t begin, int64_t end) {
    std::vector<float> v(size_t(d > 0 ? d : 1));
    probe_rows_dispatch<kD, kW>(p, begin, end, v.data());
  });
}

void probe_cpu(const at::Tensor& hidden, const std::optional<at::Tensor>& positions,
               const at::Tensor& weight, const std::optional<at::Tensor>& bias,
               const std::optional<at::Tensor>& norm_weight, const at::Tensor& out, double norm_eps,
               double weight_offset, bool sigmoid) {
  constexpr const char* op = "sasa::_compiled_probe";
  check_probe_args(op, hidden, positions, weight, bias, norm_weight, out, norm_eps);
  TORCH_CHECK(hidden.device().is_cpu(), op, ": expected CPU tensors, got ", hidden.device());
  const bool w32 = weight.scalar_type() == at::kFloat;
  dispatch_dtype(hidden.scalar_type(), op, [&](auto tag) {
    constexpr Dtype kD = decltype(tag)::value;
    if (w32) {
      probe_impl<kD, Dtype::kF32>(hidden, positions, weight, bias, norm_weight, out, norm_eps, weight_offset,
                         sigmoid);
    } else {
      probe_impl<kD, kD>(hidden, positions, weight, bias, norm_weight, out, norm_eps, weight_offset,
                       sigmoid);
    }
  });
}

}  // namespace
}  // namespace cpu
}  // namespace sasa

TORCH_LIBRARY_IMPL(sasa, CPU, m) {
  m.impl("_compiled_project", &sasa::cpu::project_cpu);
  m.impl("_compiled_project_rmsnorm", &sasa::cpu::project_rmsnorm_cpu);
  m.impl("_compiled_probe", &sasa::cpu::probe_cpu);
}
