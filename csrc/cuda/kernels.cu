// CUDA kernels of the compiled ops (float32, float16, bfloat16 in and out).
//
// Numerics: the design every fused backend shares (csrc/cpu/rows_impl.h describes it, and
// sasa_kernels/backends/base.py states it for all backends): float32 values widened to float64,
// where products are exact; dot products and sums of squares accumulate in float64 (per thread,
// then warp shuffles and shared memory in float64); b * alpha and 1/rms are formed in float64 and
// rounded to float32 once; h and the RMSNorm use the reference's float32 roundings; the probe's
// scores, bias and sigmoid stay in float64 until one final rounding, and its final norm keeps
// float32 rows in float64. On GPUs with slow float64 (1/32 or 1/64 of float32) this is about one
// float64 FMA per element, below the memory-bound floor of these kernels on current cards.
//
// project / project_rmsnorm
// - One row of [N, d] per warp (small d: 4 rows per 128-thread block) or per block (large d:
//   64 to 1024 threads), chosen on the host from d.
// - 16-byte vector loads and stores (8 half/bfloat16 or 4 float32 values) when every pointer is
//   16-byte aligned and d and the row strides are multiples of the vector width; else scalar.
// - Sweep 1 reduces <hs, hf> and ||hf||^2 (warp shuffles, then shared memory across warps).
//   Sweep 2 writes h = a*hs + c*hf (re-reading hs, hf: L1/L2 hits) and, for RMSNorm, reduces
//   sum(h^2) of the rounded h; sweep 3 re-reads the thread's own h and writes out_normed.
// - Numerics follow sasa_kernels.reference (no FMA contraction where the reference rounds twice).
//
// probe
// - One launch: a block per sequence gathers the row at positions[b] (a position outside [0, T)
//   writes NaN scores for that row and reads nothing), computes the RMSNorm scale with a block
//   reduction, then each warp computes whole probe dot products (a small batched matmul) over the
//   normalized row, adds the bias and applies the sigmoid.
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "../sasa_checks.h"
#include "../sasa_dtypes.h"

namespace sasa {
namespace cuda {

// Facts for sasa_kernels._C.build_info() (module.cpp is compiled by the host compiler).
int build_cuda_runtime_version() { return CUDART_VERSION; }

const char* build_cuda_archs() {
#ifdef __CUDA_ARCH_LIST__
#define SASA_STR2(...) #__VA_ARGS__
#define SASA_STR(...) SASA_STR2(__VA_ARGS__)
  return SASA_STR(__CUDA_ARCH_LIST__);
#else
  return "unknown";
#endif
}

namespace {

constexpr int kWarp = 32;
constexpr int kMaxThreads = 1024;

// Storage <-> float32 for each kernel dtype (sasa_dtypes.h lists them and their storage types).
struct F32 {
  using storage = storage_t<Dtype::kF32>;
  static __device__ __forceinline__ float load(float x) { return x; }
  static __device__ __forceinline__ float store(float x) { return x; }
};
struct F16 {
  using storage = storage_t<Dtype::kF16>;
  static __device__ __forceinline__ float load(unsigned short b) { return __half2float(__ushort_as_half(b)); }
  static __device__ __forceinline__ unsigned short store(float x) { return __half_as_ushort(__float2half_rn(x)); }
};
struct BF16 {
  using storage = storage_t<Dtype::kBF16>;
  static __device__ __forceinline__ float load(unsigned short b) {
    return __uint_as_float(static_cast<unsigned int>(b) << 16);
  }
  static __device__ __forceinline__ unsigned short store(float x) {
    return __bfloat16_as_ushort(__float2bfloat16_rn(x));
  }
};

template <Dtype kD>
using conv_t = by_dtype<kD, F32, F16, BF16>;

template <class D>
__device__ __forceinline__ float round_to(float x) {
  return D::load(D::store(x));
}

template <class T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};

template <class T, int N>
__device__ __forceinline__ Vec<T, N> load_vec(const T* p) {
  return *reinterpret_cast<const Vec<T, N>*>(p);
}
template <class T, int N>
__device__ __forceinline__ void store_vec(T* p, const Vec<T, N>& x) {
  *reinterpret_cast<Vec<T, N>*>(p) = x;
}

__device__ __forceinline__ double warp_sum(double x) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o /= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// Sum over the block (every thread gets the result). smem: kMaxThreads / kWarp values per sum.
template <int K>
__device__ __forceinline__ void block_sum(double (&x)[K], double* smem) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int nwarps = (blockDim.x + kWarp - 1) / kWarp;
#pragma unroll
  for (int r = 0; r < K; ++r) x[r] = warp_sum(x[r]);
  __syncthreads();  // smem may still be read by a previous reduction
  if (lane == 0) {
#pragma unroll
    for (int r = 0; r < K; ++r) smem[r * kWarp + warp] = x[r];
  }
  __syncthreads();
#pragma unroll
  for (int r = 0; r < K; ++r) {
    double t = lane < nwarps ? smem[r * kWarp + lane] : 0.0;
    x[r] = warp_sum(t);
  }
}

template <class D>
struct ProjectParams {
  using S = typename D::storage;
  const S* hs;
  const S* hf;
  S* out;
  S* out_normed;       // nullptr: plain project
  const S* norm_weight;
  int64_t n, d, hs_row_stride, hf_row_stride, out_row_stride, out_normed_row_stride, norm_weight_stride;
  float a, weight_offset;
  double b, eps, norm_eps;
};

// One row, processed by `nthreads` threads with index `tid`; Reduce sums double[K] over them.
template <class D, int VEC, bool NORM, class Reduce>
__device__ __forceinline__ void project_row(const ProjectParams<D>& p, int64_t row, int tid, int nthreads,
                                            Reduce reduce) {
  using S = typename D::storage;
  const S* s = p.hs + row * p.hs_row_stride;
  const S* f = p.hf + row * p.hf_row_stride;
  S* o = p.out + row * p.out_row_stride;
  const int64_t nvec = p.d / VEC;

  // Widened to float64, where the products are exact; float64 sums.
  double acc[2] = {0.0, 0.0};
  for (int64_t v = tid; v < nvec; v += nthreads) {
    const Vec<S, VEC> xs = load_vec<S, VEC>(s + v * VEC);
    const Vec<S, VEC> xf = load_vec<S, VEC>(f + v * VEC);
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const double x = D::load(xs.v[j]), y = D::load(xf.v[j]);
      acc[0] = fma(x, y, acc[0]);
      acc[1] = fma(y, y, acc[1]);
    }
  }
  reduce(acc);
  const float c = static_cast<float>(p.b * __ddiv_rn(acc[0], acc[1] + p.eps));
  const float a = p.a;

  double sq[1] = {0.0};
  for (int64_t v = tid; v < nvec; v += nthreads) {
    const Vec<S, VEC> xs = load_vec<S, VEC>(s + v * VEC);
    const Vec<S, VEC> xf = load_vec<S, VEC>(f + v * VEC);
    Vec<S, VEC> h;
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      // Two roundings, then the add, as the reference's tensor ops do (no contraction to FMA).
      h.v[j] = D::store(__fadd_rn(__fmul_rn(a, D::load(xs.v[j])), __fmul_rn(c, D::load(xf.v[j]))));
      if (NORM) {
        const double hv = D::load(h.v[j]);
        sq[0] = fma(hv, hv, sq[0]);
      }
    }
    store_vec<S, VEC>(o + v * VEC, h);
  }
  if (!NORM) return;
  reduce(sq);
  const float r = static_cast<float>(1.0 / sqrt(sq[0] / static_cast<double>(p.d) + p.norm_eps));
  S* on = p.out_normed + row * p.out_normed_row_stride;
  for (int64_t v = tid; v < nvec; v += nthreads) {
    const Vec<S, VEC> h = load_vec<S, VEC>(o + v * VEC);  // this thread's own writes
    Vec<S, VEC> w;
    if (p.norm_weight_stride == 1) {
      w = load_vec<S, VEC>(p.norm_weight + v * VEC);
    } else {
#pragma unroll
      for (int j = 0; j < VEC; ++j) w.v[j] = p.norm_weight[(v * VEC + j) * p.norm_weight_stride];
    }
    Vec<S, VEC> y;
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const float nrm = round_to<D>(__fmul_rn(D::load(h.v[j]), r));
      const float we = round_to<D>(__fadd_rn(D::load(w.v[j]), p.weight_offset));
      y.v[j] = D::store(__fmul_rn(nrm, we));
    }
    store_vec<S, VEC>(on + v * VEC, y);
  }
}

struct WarpReduce {
  template <int K>
  __device__ __forceinline__ void operator()(double (&x)[K]) const {
#pragma unroll
    for (int r = 0; r < K; ++r) x[r] = warp_sum(x[r]);
  }
};

struct BlockReduce {
  double* smem;
  template <int K>
  __device__ __forceinline__ void operator()(double (&x)[K]) const {
    block_sum(x, smem);
  }
};

// A warp per row; blockDim = (32, rows per block). The row loop is warp-uniform.
constexpr int kRowsPerWarpBlock = 4;

template <class D, int VEC, bool NORM>
__global__ void __launch_bounds__(kWarp * kRowsPerWarpBlock) project_warp_kernel(ProjectParams<D> p) {
  const int64_t rows_per_grid = static_cast<int64_t>(gridDim.x) * blockDim.y;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; row < p.n;
       row += rows_per_grid) {
    project_row<D, VEC, NORM>(p, row, threadIdx.x, kWarp, WarpReduce{});
  }
}

// A block per row; blockDim.x a multiple of 32. The row loop is block-uniform.
template <class D, int VEC, bool NORM>
__global__ void __launch_bounds__(kMaxThreads) project_block_kernel(ProjectParams<D> p) {
  __shared__ double smem[2 * kWarp];
  for (int64_t row = blockIdx.x; row < p.n; row += gridDim.x) {
    project_row<D, VEC, NORM>(p, row, threadIdx.x, blockDim.x, BlockReduce{smem});
  }
}

// Cap on the blocks of one launch. Every kernel loops over its rows with a grid stride, so any
// number of rows is covered; the cap keeps the grid far inside gridDim.x's limit (2^31 - 1) and
// stops a huge batch of short rows from launching millions of blocks that each do one row
// (65535 * 32 blocks are still thousands per SM on any current GPU).
constexpr int64_t kMaxBlocks = 65535LL * 32;

template <class D, int VEC, bool NORM>
void launch_project(const ProjectParams<D>& p, cudaStream_t stream) {
  const int64_t nvec = p.d / VEC;
  if (nvec <= 4 * kWarp) {
    const int64_t blocks =
        std::min<int64_t>((p.n + kRowsPerWarpBlock - 1) / kRowsPerWarpBlock, kMaxBlocks);
    project_warp_kernel<D, VEC, NORM>
        <<<static_cast<unsigned>(blocks), dim3(kWarp, kRowsPerWarpBlock), 0, stream>>>(p);
  } else {
    // About two vectors per thread, rounded to whole warps, in [64, 1024].
    int64_t threads = ((nvec + 1) / 2 + kWarp - 1) / kWarp * kWarp;
    threads = std::max<int64_t>(64, std::min<int64_t>(kMaxThreads, threads));
    const int64_t blocks = std::min<int64_t>(p.n, kMaxBlocks);
    project_block_kernel<D, VEC, NORM>
        <<<static_cast<unsigned>(blocks), static_cast<unsigned>(threads), 0, stream>>>(p);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

template <class D, bool NORM>
void dispatch_vec(const ProjectParams<D>& p, cudaStream_t stream) {
  using S = typename D::storage;
  constexpr int kVec = 16 / sizeof(S);
  bool vec_ok = p.d % kVec == 0 && p.hs_row_stride % kVec == 0 && p.hf_row_stride % kVec == 0 &&
                p.out_row_stride % kVec == 0 && aligned16(p.hs) && aligned16(p.hf) && aligned16(p.out);
  if (NORM) {
    vec_ok = vec_ok && p.out_normed_row_stride % kVec == 0 && aligned16(p.out_normed) &&
             (p.norm_weight_stride != 1 || aligned16(p.norm_weight));
  }
  if (vec_ok) {
    launch_project<D, kVec, NORM>(p, stream);
  } else {
    launch_project<D, 1, NORM>(p, stream);
  }
}

template <class D>
void project_impl(const at::Tensor& hs, const at::Tensor& hf, const at::Tensor& out,
                  const at::Tensor* norm_weight, const at::Tensor* out_normed, double a, double b,
                  double eps, double norm_eps, double weight_offset) {
  using S = typename D::storage;
  ProjectParams<D> p{};
  p.n = hs.size(0);
  p.d = hs.size(1);
  if (p.n == 0 || p.d == 0) return;
  const c10::cuda::CUDAGuard guard(hs.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(hs.device().index()).stream();
  p.hs = reinterpret_cast<const S*>(hs.const_data_ptr());
  p.hf = reinterpret_cast<const S*>(hf.const_data_ptr());
  p.out = reinterpret_cast<S*>(out.mutable_data_ptr());
  p.hs_row_stride = hs.stride(0);
  p.hf_row_stride = hf.stride(0);
  p.out_row_stride = out.stride(0);
  p.a = static_cast<float>(a);
  p.b = b;
  p.eps = eps;
  p.norm_eps = norm_eps;
  p.weight_offset = static_cast<float>(weight_offset);
  if (norm_weight != nullptr) {
    p.out_normed = reinterpret_cast<S*>(out_normed->mutable_data_ptr());
    p.out_normed_row_stride = out_normed->stride(0);
    p.norm_weight = reinterpret_cast<const S*>(norm_weight->const_data_ptr());
    p.norm_weight_stride = norm_weight->stride(0);
    dispatch_vec<D, true>(p, stream);
  } else {
    dispatch_vec<D, false>(p, stream);
  }
}

void check_cuda(const char* op, const at::Tensor& t) {
  TORCH_CHECK(t.is_cuda(), op, ": expected CUDA tensors, got ", t.device());
}

void project_cuda(const at::Tensor& hs, const at::Tensor& hf, const at::Tensor& out, double a,
                  double b, double eps) {
  constexpr const char* op = "sasa::_compiled_project";
  check_project_args(op, hs, hf, out, eps);
  check_cuda(op, hs);
  dispatch_dtype(hs.scalar_type(), op, [&](auto tag) {
    project_impl<conv_t<decltype(tag)::value>>(hs, hf, out, nullptr, nullptr, a, b, eps, 1.0, 0.0);
  });
}

void project_rmsnorm_cuda(const at::Tensor& hs, const at::Tensor& hf, const at::Tensor& norm_weight,
                          const at::Tensor& out, const at::Tensor& out_normed, double a, double b,
                          double eps, double norm_eps, double weight_offset) {
  constexpr const char* op = "sasa::_compiled_project_rmsnorm";
  check_project_rmsnorm_args(op, hs, hf, norm_weight, out, out_normed, eps, norm_eps);
  check_cuda(op, hs);
  dispatch_dtype(hs.scalar_type(), op, [&](auto tag) {
    project_impl<conv_t<decltype(tag)::value>>(hs, hf, out, &norm_weight, &out_normed, a, b, eps, norm_eps,
                                               weight_offset);
  });
}

// ---------------------------------------------------------------------------------------------
// probe

template <class D, class DW>
struct ProbeParams {
  using S = typename D::storage;
  using SW = typename DW::storage;
  const S* hidden;
  const int64_t* positions;  // nullptr: t = 0
  const SW* weight;
  const SW* bias;            // nullptr: none
  const S* norm_weight;      // nullptr: no RMSNorm
  float* out;
  int64_t batch, seq_len, d, num_probes, batch_stride, seq_stride, weight_row_stride, bias_stride,
      norm_weight_stride, out_row_stride, out_col_stride;
  double norm_eps;
  float weight_offset;
  bool sigmoid;
};

constexpr int kProbeThreads = 256;

template <class D, class DW>
__global__ void __launch_bounds__(kProbeThreads) probe_kernel(ProbeParams<D, DW> p) {
  using S = typename D::storage;
  using SW = typename DW::storage;
  // float32 rows are normalized in float64, float16/bfloat16 rows with Llama's roundings.
  constexpr bool kExactNorm = std::is_same<D, F32>::value;
  __shared__ double smem[kWarp];
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int nwarps = blockDim.x / kWarp;
  for (int64_t b = blockIdx.x; b < p.batch; b += gridDim.x) {
    float* out = p.out + b * p.out_row_stride;
    int64_t t = 0;
    if (p.positions != nullptr) {
      t = p.positions[b];
      if (t < 0 || t >= p.seq_len) {  // block-uniform: never read out of bounds, flag the row with NaN
        for (int64_t c = threadIdx.x; c < p.num_probes; c += blockDim.x)
          out[c * p.out_col_stride] = __int_as_float(0x7fc00000);
        continue;
      }
    }
    const S* x = p.hidden + b * p.batch_stride + t * p.seq_stride;
    double r = 1.0;
    if (p.norm_weight != nullptr) {
      double sq[1] = {0.0};
      for (int64_t k = threadIdx.x; k < p.d; k += blockDim.x) {
        const double xv = D::load(x[k]);
        sq[0] = fma(xv, xv, sq[0]);
      }
      block_sum(sq, smem);
      r = 1.0 / sqrt(sq[0] / static_cast<double>(p.d) + p.norm_eps);
    }
    const float r32 = static_cast<float>(r);
    for (int64_t c = warp; c < p.num_probes; c += nwarps) {
      const SW* w = p.weight + c * p.weight_row_stride;
      double acc = 0.0;
      for (int64_t k = lane; k < p.d; k += kWarp) {
        double v = D::load(x[k]);
        if (p.norm_weight != nullptr) {
          const float nw = D::load(p.norm_weight[k * p.norm_weight_stride]);
          if (kExactNorm) {
            v = v * r * (static_cast<double>(nw) + static_cast<double>(p.weight_offset));
          } else {
            const float nrm = round_to<D>(__fmul_rn(static_cast<float>(v), r32));
            const float we = round_to<D>(__fadd_rn(nw, p.weight_offset));
            v = round_to<D>(__fmul_rn(nrm, we));
          }
        }
        acc = fma(v, static_cast<double>(DW::load(w[k])), acc);
      }
      acc = warp_sum(acc);
      if (lane == 0) {
        double score = acc;
        if (p.bias != nullptr) score += DW::load(p.bias[c * p.bias_stride]);
        if (p.sigmoid) score = 1.0 / (1.0 + exp(-score));
        out[c * p.out_col_stride] = static_cast<float>(score);
      }
    }
  }
}

template <class D, class DW>
void probe_impl(const at::Tensor& hidden, const std::optional<at::Tensor>& positions,
                const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                const std::optional<at::Tensor>& norm_weight, const at::Tensor& out,
                double norm_eps, double weight_offset, bool sigmoid) {
  using S = typename D::storage;
  using SW = typename DW::storage;
  ProbeParams<D, DW> p{};
  p.batch = hidden.size(0);
  p.seq_len = hidden.size(1);
  p.d = hidden.size(2);
  p.num_probes = weight.size(0);
  if (p.batch == 0 || p.num_probes == 0) return;
  const c10::cuda::CUDAGuard guard(hidden.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(hidden.device().index()).stream();
  p.hidden = reinterpret_cast<const S*>(hidden.const_data_ptr());
  at::Tensor pos;  // kept alive until the launch is queued (the caching allocator orders reuse)
  if (positions.has_value()) {
    pos = positions->contiguous();
    p.positions = pos.const_data_ptr<int64_t>();
  }
  p.weight = reinterpret_cast<const SW*>(weight.const_data_ptr());
  p.weight_row_stride = weight.stride(0);
  if (bias.has_value()) {
    p.bias = reinterpret_cast<const SW*>(bias->const_data_ptr());
    p.bias_stride = bias->stride(0);
  }
  if (norm_weight.has_value()) {
    p.norm_weight = reinterpret_cast<const S*>(norm_weight->const_data_ptr());
    p.norm_weight_stride = norm_weight->stride(0);
  }
  p.out = out.mutable_data_ptr<float>();
  p.batch_stride = hidden.stride(0);
  p.seq_stride = hidden.stride(1);
  p.out_row_stride = out.stride(0);
  p.out_col_stride = out.stride(1);
  p.norm_eps = norm_eps;
  p.weight_offset = static_cast<float>(weight_offset);
  p.sigmoid = sigmoid;
  const int64_t blocks = std::min<int64_t>(p.batch, kMaxBlocks);
  probe_kernel<D, DW><<<static_cast<unsigned>(blocks), kProbeThreads, 0, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void probe_cuda(const at::Tensor& hidden, const std::optional<at::Tensor>& positions,
                const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                const std::optional<at::Tensor>& norm_weight, const at::Tensor& out,
                double norm_eps, double weight_offset, bool sigmoid) {
  constexpr const char* op = "sasa::_compiled_probe";
  check_probe_args(op, hidden, positions, weight, bias, norm_weight, out, norm_eps);
  check_cuda(op, hidden);
  const bool weight_f32 = weight.scalar_type() == at::kFloat;
  dispatch_dtype(hidden.scalar_type(), op, [&](auto tag) {
    using D = conv_t<decltype(tag)::value>;
    if (weight_f32) {
      probe_impl<D, F32>(hidden, positions, weight, bias, norm_weight, out, norm_eps, weight_offset,
                         sigmoid);
    } else {
      probe_impl<D, D>(hidden, positions, weight, bias, norm_weight, out, norm_eps, weight_offset,
                       sigmoid);
    }
  });
}

}  // namespace
}  // namespace cuda
}  // namespace sasa

TORCH_LIBRARY_IMPL(sasa, CUDA, m) {
  m.impl("_compiled_project", &sasa::cuda::project_cuda);
  m.impl("_compiled_project_rmsnorm", &sasa::cuda::project_rmsnorm_cuda);
  m.impl("_compiled_probe", &sasa::cuda::probe_cuda);
}
