// CPU kernels of the compiled ops (float32, float16, bfloat16 in and out).
//
// Design
// - One row of [N, d] per step; rows are split over threads with at::parallel_for.
// - A row is read from memory once: sweep 1 reduces it, the write sweep re-reads it from L1/L2
//   (a row is at most tens of KiB).
// - The row kernels (rows_impl.h, where their numerics are described) are written once against a
//   small vector layer and compiled for four instruction sets: portable (simd_portable.h: plain
//   loops, the compiler's baseline vectors), AVX2+FMA+F16C, AVX-512 and AVX-512 with AVX512_BF16
//   (simd_avx2.h, simd_avx512.h, simd_avx512_bf16.h: intrinsics, under #pragma GCC target; the
//   last rounds to bfloat16 in one instruction and gives avx512's bits). The best one the CPU has
//   runs; SASA_CPU_CAPABILITY=portable|avx2|avx512 (read once, when the extension loads) picks a
//   lower one, the way ATEN_CPU_CAPABILITY does for torch. build_info()["cpu_capability"] says
//   which runs.
// - Built with -ffp-contract=off (setup.py, CMakeLists.txt): where the reference rounds a product
//   before adding, so do the kernels; the float64 sums use explicit FMAs, which change nothing
//   there because the products of widened float32 values are exact.
#include "kernels.h"

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "../sasa_checks.h"
#include "../sasa_dtypes.h"
#include "scalar_convert.h"

#if defined(__GNUC__)
#define SASA_INLINE inline __attribute__((always_inline))
#define SASA_NOINLINE __attribute__((noinline))
#else
#define SASA_INLINE inline
#define SASA_NOINLINE
#endif

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) && !defined(SASA_NO_X86_SIMD)
#define SASA_X86_SIMD 1
#include <immintrin.h>
#else
#define SASA_X86_SIMD 0
#endif

namespace sasa {
namespace cpu {

template <class S>
struct ProjectArgs {
  const S* hs;
  const S* hf;
  S* out;
  S* out_normed;            // nullptr for plain project
  const float* norm_scale;  // dtype(norm_weight + weight_offset) as float32 [d_pad]; project_rmsnorm only
  int64_t d, hs_row_stride, hf_row_stride, out_row_stride, out_normed_row_stride;
  float a;
  double b, eps, norm_eps;
};

template <class S>
struct ProbeArgs {
  const S* hidden;
  const int64_t* positions;     // nullptr: row 0 of every sequence
  const double* weight64;       // probe weights in float64, [num_probes padded][d_pad], zero padded
  const double* bias64;         // [num_probes] or nullptr
  const float* norm_scale;      // dtype(norm_weight + weight_offset) as float32 [d_pad] (with a norm)
  const double* norm_scale64;   // norm_weight + weight_offset in float64 [d_pad] (float32 rows, with a norm)
  float* out;
  int64_t seq_len, d, d_pad, num_probes, batch_stride, seq_stride, out_row_stride, out_col_stride;
  double norm_eps;
  bool has_norm, sigmoid;
};

namespace portable {
#include "simd_portable.h"
#include "rows_impl.h"
}  // namespace portable

#if SASA_X86_SIMD
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
namespace avx2 {
#include "simd_avx2.h"
#include "rows_impl.h"
}  // namespace avx2
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")
namespace avx512 {
#include "simd_avx512.h"
#include "rows_impl.h"
}  // namespace avx512
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,f16c")
namespace avx512_bf16 {
#include "simd_avx512_bf16.h"
#include "rows_impl.h"
}  // namespace avx512_bf16
#pragma GCC pop_options
#endif

namespace {

enum class Capability { kPortable = 0, kAvx2 = 1, kAvx512 = 2, kAvx512Bf16 = 3 };

Capability best_capability() {
#if SASA_X86_SIMD
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("f16c");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  if (avx512 && __builtin_cpu_supports("avx512bf16")) return Capability::kAvx512Bf16;
  return avx512 ? Capability::kAvx512 : avx2 ? Capability::kAvx2 : Capability::kPortable;
#else
  return Capability::kPortable;
#endif
}

Capability choose_capability() {
  const Capability best = best_capability();
  const char* env = std::getenv("SASA_CPU_CAPABILITY");
  if (env == nullptr || *env == '\0') return best;
  const std::string want(env);
  Capability asked = best;
  if (want == "portable") asked = Capability::kPortable;
  else if (want == "avx2") asked = Capability::kAvx2;
  else if (want == "avx512") asked = Capability::kAvx512;
  else if (want == "avx512_bf16") asked = Capability::kAvx512Bf16;
  // Anything unknown, or above what this CPU has, falls back to the best it has.
  return asked <= best ? asked : best;
}

Capability capability() {
  static const Capability c = choose_capability();
  return c;
}

// fn(K{}) with K the kernel set (portable::Kernels, avx2::Kernels, avx512::Kernels) that runs.
template <class Fn>
void with_kernels(Fn&& fn) {
  switch (capability()) {
#if SASA_X86_SIMD
    case Capability::kAvx512Bf16: fn(avx512_bf16::Kernels{}); return;
    case Capability::kAvx512: fn(avx512::Kernels{}); return;
    case Capability::kAvx2: fn(avx2::Kernels{}); return;
#endif
    default: fn(portable::Kernels{}); return;
  }
}

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Total output bytes from which project / project_rmsnorm use streaming stores (rows_impl.h):
// about where the outputs stop fitting in the caches of a small server CPU. On a 2-core Sapphire
// Rapids VM, project on 4096 x 4096 fp32 rows into a preallocated output went from 1.1-1.3x to
// about 1.0x the time of torch.add(out=...) with them; below this size they change nothing.
constexpr int64_t kStreamBytes = int64_t(16) << 20;

int64_t row_grain(int64_t work_per_row) {
  // About 32K elements of work per task: below that, threading costs more than it saves.
  const int64_t per = work_per_row > 0 ? work_per_row : 1;
  return std::max<int64_t>(1, 32768 / per);
}

// Per-thread scratch that grows and is reused, so a call does not page-fault fresh memory.
template <class T>
T* scratch(std::vector<T>& buf, int64_t n) {
  if (buf.size() < size_t(n)) buf.resize(size_t(n));
  return buf.data();
}

// A contiguous copy of a strided 1-D tensor only when needed.
at::Tensor unit_stride(const at::Tensor& t) { return t.stride(0) == 1 ? t : t.contiguous(); }

template <Dtype kD>
void project_impl(const at::Tensor& hs, const at::Tensor& hf, const at::Tensor& out,
                  const at::Tensor* norm_weight, const at::Tensor* out_normed, double a, double b,
                  double eps, double norm_eps, double weight_offset) {
  using S = storage_t<kD>;
  const int64_t n = hs.size(0), d = hs.size(1);
  if (n == 0 || d == 0) return;
  ProjectArgs<S> p{};
  p.hs = reinterpret_cast<const S*>(hs.const_data_ptr());
  p.hf = reinterpret_cast<const S*>(hf.const_data_ptr());
  p.out = reinterpret_cast<S*>(out.mutable_data_ptr());
  p.d = d;
  p.hs_row_stride = hs.stride(0);
  p.hf_row_stride = hf.stride(0);
  p.out_row_stride = out.stride(0);
  p.a = float(a);
  p.b = b;
  p.eps = eps;
  p.norm_eps = norm_eps;
  // Outputs this large would only pass through the caches: write them with streaming stores.
  const bool stream = n * d * int64_t(sizeof(S)) * (norm_weight == nullptr ? 1 : 2) >= kStreamBytes;
  with_kernels([&](auto kernels) {
    using K = decltype(kernels);
    if (norm_weight == nullptr) {
      at::parallel_for(0, n, row_grain(2 * d), [&](int64_t begin, int64_t end) {
        if (stream) K::template project<kD, false, true>(p, begin, end, nullptr);
        else K::template project<kD, false, false>(p, begin, end, nullptr);
      });
      return;
    }
    static thread_local std::vector<float> scale_buf;
    const int64_t d_pad = round_up(d, K::kWidth);
    float* scale = scratch(scale_buf, d_pad);
    const at::Tensor w = unit_stride(*norm_weight);
    K::template norm_scale<kD>(reinterpret_cast<const S*>(w.const_data_ptr()), d, d_pad, float(weight_offset),
                               scale, nullptr);
    p.norm_scale = scale;
    p.out_normed = reinterpret_cast<S*>(out_normed->mutable_data_ptr());
    p.out_normed_row_stride = out_normed->stride(0);
    at::parallel_for(0, n, row_grain(3 * d), [&](int64_t begin, int64_t end) {
      if (stream) {
        static thread_local std::vector<S> h_buf;
        K::template project<kD, true, true>(p, begin, end, scratch(h_buf, d));
      } else {
        K::template project<kD, true, false>(p, begin, end, nullptr);
      }
    });
  });
}

}  // namespace

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

namespace {

template <Dtype kD, Dtype kWeight>
void probe_impl(const at::Tensor& hidden, const std::optional<at::Tensor>& positions,
                const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                const std::optional<at::Tensor>& norm_weight, const at::Tensor& out,
                double norm_eps, double weight_offset, bool sigmoid) {
  using S = storage_t<kD>;
  using SW = storage_t<kWeight>;
  const int64_t batch = hidden.size(0), d = hidden.size(2), num_probes = weight.size(0);
  if (batch == 0 || num_probes == 0) return;
  ProbeArgs<S> p{};
  p.hidden = reinterpret_cast<const S*>(hidden.const_data_ptr());
  at::Tensor pos;
  if (positions.has_value()) {
    pos = unit_stride(*positions);
    p.positions = pos.const_data_ptr<int64_t>();
  }
  p.out = out.mutable_data_ptr<float>();
  p.seq_len = hidden.size(1);
  p.d = d;
  p.num_probes = num_probes;
  p.batch_stride = hidden.stride(0);
  p.seq_stride = hidden.stride(1);
  p.out_row_stride = out.stride(0);
  p.out_col_stride = out.stride(1);
  p.norm_eps = norm_eps;
  p.sigmoid = sigmoid;
  with_kernels([&](auto kernels) {
    using K = decltype(kernels);
    // Row stride of the float64 scratch rows (probe weights, gathered rows, zero padded): d in
    // whole vectors, one vector longer where that would be a multiple of 4 KiB. Rows 4 KiB apart
    // share their L1 sets, so the P weight rows and R gathered rows a step of probe_rows reads
    // at the same k (10 on AVX-512) would all compete for one 8-way set.
    int64_t d_pad = round_up(d, K::kWidth);
    if (d_pad * int64_t(sizeof(double)) % 4096 == 0) d_pad += K::kWidth;
    p.d_pad = d_pad;
    // Widened once per call and shared by the threads (the scratch belongs to the calling thread).
    static thread_local std::vector<double> weight_buf, bias_buf, scale64_buf;
    static thread_local std::vector<float> scale_buf;
    if (bias.has_value()) {
      double* b64 = scratch(bias_buf, num_probes);
      const SW* braw = reinterpret_cast<const SW*>(bias->const_data_ptr());
      for (int64_t c = 0; c < num_probes; ++c) {
        const SW v = braw[c * bias->stride(0)];
        if constexpr (kWeight == Dtype::kF32) b64[c] = double(v);
        else if constexpr (kWeight == Dtype::kBF16) b64[c] = double(bf16_to_f32(v));
        else b64[c] = double(f16_to_f32(v));
      }
      p.bias64 = b64;
    }
    if (norm_weight.has_value()) {
      const at::Tensor w = unit_stride(*norm_weight);
      float* scale = scratch(scale_buf, d_pad);
      double* scale64 = kD == Dtype::kF32 ? scratch(scale64_buf, d_pad) : nullptr;
      K::template norm_scale<kD>(reinterpret_cast<const S*>(w.const_data_ptr()), d, d_pad, float(weight_offset),
                                 scale, scale64);
      p.has_norm = true;
      p.norm_scale = scale;
      p.norm_scale64 = scale64;
    }
    K::with_probe_block(num_probes, [&](auto block) {
      constexpr int R = decltype(block)::kRows, P = decltype(block)::kProbes;
      const int64_t padded = round_up(num_probes, P);
      double* w64 = scratch(weight_buf, padded * d_pad);
      K::template weights<kWeight>(reinterpret_cast<const SW*>(weight.const_data_ptr()), weight.stride(0),
                                   num_probes, padded, d, d_pad, w64);
      p.weight64 = w64;
      // Rows are split over threads in even shares, each walked in super-blocks of rows
      // (rows_impl.h) with the thread's own scratch (reused across calls, so no fresh memory is
      // page-faulted per call); a batch of one super-block or less stays on one thread. Splitting
      // by whole super-blocks instead gave 64 rows of 14 per block a 3 : 2 split on 2 threads.
      const int64_t super_rows = K::template probe_super_rows<R>(d_pad);
      at::parallel_for(0, batch, super_rows, [&](int64_t begin, int64_t end) {
        static thread_local std::vector<double> rows_buf, partial_buf;
        static thread_local std::vector<char> valid_buf;
        static thread_local std::vector<const void*> next_buf;
        double* rows = scratch(rows_buf, super_rows * d_pad);
        double* partial = scratch(partial_buf, super_rows * P * K::kDoublesPerVector);
        bool* valid = reinterpret_cast<bool*>(scratch(valid_buf, super_rows));
        const void** next = scratch(next_buf, super_rows);
        K::template probe<kD, R, P>(p, begin, end, rows, partial, valid, next);
      });
    });
  });
}

}  // namespace

void probe_cpu(const at::Tensor& hidden, const std::optional<at::Tensor>& positions,
               const at::Tensor& weight, const std::optional<at::Tensor>& bias,
               const std::optional<at::Tensor>& norm_weight, const at::Tensor& out, double norm_eps,
               double weight_offset, bool sigmoid) {
  constexpr const char* op = "sasa::_compiled_probe";
  check_probe_args(op, hidden, positions, weight, bias, norm_weight, out, norm_eps);
  TORCH_CHECK(hidden.device().is_cpu(), op, ": expected CPU tensors, got ", hidden.device());
  const bool weight_f32 = weight.scalar_type() == at::kFloat;
  dispatch_dtype(hidden.scalar_type(), op, [&](auto tag) {
    constexpr Dtype kD = decltype(tag)::value;
    if (weight_f32) {
      probe_impl<kD, Dtype::kF32>(hidden, positions, weight, bias, norm_weight, out, norm_eps,
                                  weight_offset, sigmoid);
    } else {
      probe_impl<kD, kD>(hidden, positions, weight, bias, norm_weight, out, norm_eps, weight_offset,
                         sigmoid);
    }
  });
}

const char* capability_name() {
  const char* name = portable::Kernels::kName;
  with_kernels([&](auto kernels) { name = decltype(kernels)::kName; });
  return name;
}

}  // namespace cpu
}  // namespace sasa

TORCH_LIBRARY_IMPL(sasa, CPU, m) {
  m.impl("_compiled_project", &sasa::cpu::project_cpu);
  m.impl("_compiled_project_rmsnorm", &sasa::cpu::project_rmsnorm_cpu);
  m.impl("_compiled_probe", &sasa::cpu::probe_cpu);
}
