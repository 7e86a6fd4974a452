// The CPU row kernels, compiled once per instruction set: csrc/cpu/kernels.cpp includes this file
// inside namespace sasa::cpu::<isa>, right after that namespace's `struct Isa` (simd_<isa>.h) and
// under the matching `#pragma GCC target`, and picks one set at run time. No include guard and no
// #include on purpose: it is included inside namespaces, after everything it needs (<cmath>,
// <cstring>, <algorithm>, <limits>, the intrinsics, kernels.cpp's argument structs).
//
// Numerics (the design every backend shares; sasa_kernels/backends/base.py states it once):
// - <hs, hf>, ||hf||^2 and every sum of squares: each float32 value is widened to float64, where
//   the product of two of them is exact, and summed in float64 (relative error about d * 2^-53 of
//   the sum of |terms|). Cancelling dot products (hs nearly orthogonal to hf) therefore come out
//   correctly rounded instead of carrying float32's summation error, which is what the 2x-eager
//   tolerance rule needs; in a memory-bound row sweep the widening is free.
// - c = b * <hs, hf> / (||hf||^2 + eps) in float64, rounded to float32 once; then
//   h = a * hs + c * hf in float32 with the reference's roundings (both products, then the sum).
// - RMSNorm (Hugging Face Llama): 1/rms from the float64 sum, rounded to float32 once; then
//   dtype(dtype(h * r) * dtype(weight + weight_offset)).
// - probe: float64 dot products with float64 weights; bias and sigmoid in float64; the score is
//   rounded to float32 once. With the final norm on float32 rows the normalized row stays in
//   float64 (no intermediate float32 roundings: with a weight nearly orthogonal to the row they
//   would dominate the error); on float16/bfloat16 rows the roundings to the dtype are the
//   model's own numerics and are kept.

using F = Isa::F;
using D = Isa::D;
constexpr int kW = Isa::kW;
constexpr int kWd = kW / 2;  // float64 lanes of a D

// Storage <-> float32 lanes for each dtype; round() gives the float32 value of the nearest dtype
// value (round to nearest even), i.e. what storing and reloading gives; widen_pair() loads kW
// elements straight into two float64 vectors, in an order that depends only on the position (for
// bfloat16 the instruction set's cheapest: even and odd elements on x86), so it serves sums only.
template <Dtype>
struct Io;
template <>
struct Io<Dtype::kF32> {
  static SASA_INLINE void widen_pair(const float* p, D& a, D& b) {
    a = Isa::widen_f32(p);
    b = Isa::widen_f32(p + kWd);
  }
  static SASA_INLINE F load(const float* p) { return Isa::load_f32(p); }
  static SASA_INLINE void store(float* p, F x) { Isa::store_f32(p, x); }
  static SASA_INLINE void stream(float* p, F x) { Isa::stream_f32(p, x); }
  static SASA_INLINE F round(F x) { return x; }
};
template <>
struct Io<Dtype::kBF16> {
  static SASA_INLINE void widen_pair(const uint16_t* p, D& a, D& b) { Isa::widen_pair_bf16(p, a, b); }
  static SASA_INLINE F load(const uint16_t* p) { return Isa::load_bf16(p); }
  static SASA_INLINE void store(uint16_t* p, F x) { Isa::store_bf16(p, x); }
  static SASA_INLINE void stream(uint16_t* p, F x) { Isa::stream_bf16(p, x); }
  static SASA_INLINE F round(F x) { return Isa::round_bf16(x); }
};
template <>
struct Io<Dtype::kF16> {
  static SASA_INLINE void widen_pair(const uint16_t* p, D& a, D& b) {
    a = Isa::widen_f16(p);
    b = Isa::widen_f16(p + kWd);
  }
  static SASA_INLINE F load(const uint16_t* p) { return Isa::load_f16(p); }
  static SASA_INLINE void store(uint16_t* p, F x) { Isa::store_f16(p, x); }
  static SASA_INLINE void stream(uint16_t* p, F x) { Isa::stream_f16(p, x); }
  static SASA_INLINE F round(F x) { return Isa::round_f16(x); }
};

using Full = std::true_type;
using Part = std::false_type;

// Loads n = kW elements at p (Full) or n < kW through a zero-padded copy (Part), so every step of
// a sweep is one full vector; padding lanes read 0.
template <Dtype kD, class Whole>
SASA_INLINE F load_at(const storage_t<kD>* p, int64_t n, Whole) {
  if constexpr (Whole::value) {
    return Io<kD>::load(p);
  } else {
    storage_t<kD> buf[kW] = {};
    std::memcpy(buf, p, size_t(n) * sizeof(storage_t<kD>));
    return Io<kD>::load(buf);
  }
}

template <Dtype kD, class Whole>
SASA_INLINE void store_at(storage_t<kD>* p, F x, int64_t n, Whole) {
  if constexpr (Whole::value) {
    Io<kD>::store(p, x);
  } else {
    storage_t<kD> buf[kW];
    Io<kD>::store(buf, x);
    std::memcpy(p, buf, size_t(n) * sizeof(storage_t<kD>));
  }
}

// step(i, n, Full{}) for each whole vector of [begin, d), then step(i, d - i, Part{}) for the rest.
template <class Step>
SASA_INLINE void for_chunks(int64_t d, Step&& step, int64_t begin = 0) {
  int64_t i = begin;
  for (; i + kW <= d; i += kW) step(i, int64_t(kW), Full{});
  if (i < d) step(i, d - i, Part{});
}

// sum += x * x over both halves of x, in float64.
SASA_INLINE void add_squares(F x, D& sum_lo, D& sum_hi) {
  const D xl = Isa::lo(x), xh = Isa::hi(x);
  sum_lo = Isa::fmadd_d(xl, xl, sum_lo);
  sum_hi = Isa::fmadd_d(xh, xh, sum_hi);
}

SASA_INLINE double total(D lo, D hi) { return Isa::sum_d(Isa::add_d(lo, hi)); }

// 1 / sqrt(sum_sq / d + eps) in float64.
SASA_INLINE double inv_rms(double sum_sq, int64_t d, double eps) {
  return 1.0 / std::sqrt(sum_sq / double(d) + eps);
}

// ---------------------------------------------------------------------------------------------
// project / project_rmsnorm

// kStream (outputs too large to stay in the caches): full vectors go to memory with non-temporal
// stores, which skip reading each destination line before overwriting it (a quarter of the memory
// traffic of project). RMSNorm then keeps the row's h in `scratch` (d elements, L1/L2) for its
// third sweep instead of reading it back from memory.
template <Dtype kD, bool kNorm, bool kStream>
SASA_NOINLINE void project_rows(const ProjectArgs<storage_t<kD>>& p, int64_t begin, int64_t end,
                                storage_t<kD>* scratch) {
  using S = storage_t<kD>;
  const int64_t d = p.d;
  const F va = Isa::set1(p.a);
  for (int64_t row = begin; row < end; ++row) {
    const S* s = p.hs + row * p.hs_row_stride;
    const S* f = p.hf + row * p.hf_row_stride;
    S* o = p.out + row * p.out_row_stride;
    S* on = kNorm ? p.out_normed + row * p.out_normed_row_stride : nullptr;
    // Streaming needs each vector's destination aligned to its size: true when the row starts on
    // a cache line (the chunks are kW elements apart).
    const bool stream = kStream && reinterpret_cast<uintptr_t>(o) % 64 == 0 &&
                        (!kNorm || reinterpret_cast<uintptr_t>(on) % 64 == 0);
    S* h_row = stream && kNorm ? scratch : o;  // where sweep 3 finds h

    // Sweep 1: <hs, hf> and ||hf||^2. Two vectors per step and four accumulators per sum, so the
    // float64 FMAs' latency overlaps; the conversions, not the FMAs, bound this loop.
    D dot_acc[4] = {Isa::zero_d(), Isa::zero_d(), Isa::zero_d(), Isa::zero_d()};
    D nrm_acc[4] = {Isa::zero_d(), Isa::zero_d(), Isa::zero_d(), Isa::zero_d()};
    int64_t i = 0;
    for (; i + 2 * kW <= d; i += 2 * kW) {
#pragma GCC unroll 2
      for (int k = 0; k < 2; ++k) {
        D x[2], y[2];
        Io<kD>::widen_pair(s + i + k * kW, x[0], x[1]);
        Io<kD>::widen_pair(f + i + k * kW, y[0], y[1]);
        for (int j = 0; j < 2; ++j) {
          dot_acc[2 * k + j] = Isa::fmadd_d(x[j], y[j], dot_acc[2 * k + j]);
          nrm_acc[2 * k + j] = Isa::fmadd_d(y[j], y[j], nrm_acc[2 * k + j]);
        }
      }
    }
    for (; i < d; i += kW) {
      const int64_t n = std::min<int64_t>(kW, d - i);
      const F x = n == kW ? Io<kD>::load(s + i) : load_at<kD>(s + i, n, Part{});
      const F y = n == kW ? Io<kD>::load(f + i) : load_at<kD>(f + i, n, Part{});
      const D yl = Isa::lo(y), yh = Isa::hi(y);
      dot_acc[0] = Isa::fmadd_d(Isa::lo(x), yl, dot_acc[0]);
      dot_acc[1] = Isa::fmadd_d(Isa::hi(x), yh, dot_acc[1]);
      nrm_acc[0] = Isa::fmadd_d(yl, yl, nrm_acc[0]);
      nrm_acc[1] = Isa::fmadd_d(yh, yh, nrm_acc[1]);
    }
    const D dot_lo = Isa::add_d(dot_acc[0], dot_acc[2]), dot_hi = Isa::add_d(dot_acc[1], dot_acc[3]);
    const D nrm_lo = Isa::add_d(nrm_acc[0], nrm_acc[2]), nrm_hi = Isa::add_d(nrm_acc[1], nrm_acc[3]);
    const double dot = total(dot_lo, dot_hi), nrm = total(nrm_lo, nrm_hi);
    const F vc = Isa::set1(float(p.b * dot / (nrm + p.eps)));

    // Sweep 2: h = a*hs + c*hf (re-read from L1/L2); for RMSNorm also the sum of the stored h^2.
    D sq_lo = Isa::zero_d(), sq_hi = Isa::zero_d();
    int64_t done = 0;
    if constexpr (kD == Dtype::kBF16) {
      // bfloat16: two vectors a step, loaded, rounded and stored as a pair (simd_*.h), then the
      // rest below. The pair's order is the instruction set's; every operation here is elementwise.
      for (; done + 2 * kW <= d; done += 2 * kW) {
        F se, so, fe, fo;
        Isa::load_pair_bf16(s + done, se, so);
        Isa::load_pair_bf16(f + done, fe, fo);
        const auto packed = Isa::pack_pair_bf16(Isa::add(Isa::mul(va, se), Isa::mul(vc, fe)),
                                                Isa::add(Isa::mul(va, so), Isa::mul(vc, fo)));
        if (stream) {
          Isa::stream_pair_bf16(o + done, packed);
          if (kNorm) Isa::store_pair_bf16(h_row + done, packed);
        } else {
          Isa::store_pair_bf16(o + done, packed);
          if (kNorm && h_row != o) Isa::store_pair_bf16(h_row + done, packed);
        }
        if constexpr (kNorm) {
          F re, ro;  // what the next block reads: the stored values
          Isa::unpack_pair_bf16(packed, re, ro);
          add_squares(re, sq_lo, sq_hi);
          add_squares(ro, sq_lo, sq_hi);
        }
      }
    }
    for_chunks(d, [&](int64_t i, int64_t n, auto whole) {
      const F h = Isa::add(Isa::mul(va, load_at<kD>(s + i, n, whole)), Isa::mul(vc, load_at<kD>(f + i, n, whole)));
      if (stream && decltype(whole)::value) {
        Io<kD>::stream(o + i, h);
        if (kNorm) Io<kD>::store(h_row + i, h);
      } else {
        store_at<kD>(o + i, h, n, whole);
        if (kNorm && h_row != o) store_at<kD>(h_row + i, h, n, whole);
      }
      if constexpr (kNorm) {
        // What the next block reads: the stored value (padding lanes reloaded as 0).
        if constexpr (decltype(whole)::value) {
          add_squares(Io<kD>::round(h), sq_lo, sq_hi);
        } else {
          add_squares(load_at<kD>(o + i, n, whole), sq_lo, sq_hi);
        }
      }
    }, done);
    if constexpr (kNorm) {
      // Sweep 3: out_normed = dtype(dtype(h * r) * norm_scale).
      const F vr = Isa::set1(float(inv_rms(total(sq_lo, sq_hi), d, p.norm_eps)));
      const float* scale = p.norm_scale;  // a local: the stores below may alias p in the compiler's eyes
      for_chunks(d, [&](int64_t i, int64_t n, auto whole) {
        const F normed = Io<kD>::round(Isa::mul(load_at<kD>(h_row + i, n, whole), vr));
        const F y = Isa::mul(normed, Isa::load_f32(scale + i));
        if (stream && decltype(whole)::value) {
          Io<kD>::stream(on + i, y);
        } else {
          store_at<kD>(on + i, y, n, whole);
        }
      });
    }
  }
  if constexpr (kStream) Isa::stream_fence();
}

// ---------------------------------------------------------------------------------------------
// probe

// norm_scale[i] = dtype(norm_weight[i] + offset) as float32 and norm_scale64[i] = norm_weight[i]
// + offset in float64, for i < d; zeros up to d_pad (a multiple of kW).
template <Dtype kD>
SASA_NOINLINE void norm_scales(const storage_t<kD>* w, int64_t d, int64_t d_pad, float offset,
                               float* norm_scale, double* norm_scale64) {
  const F voff = Isa::set1(offset);
  for_chunks(d, [&](int64_t i, int64_t n, auto whole) {
    const F x = load_at<kD>(w + i, n, whole);
    Isa::store_f32(norm_scale + i, Io<kD>::round(Isa::add(x, voff)));
    if (norm_scale64 != nullptr) {
      Isa::store_d(norm_scale64 + i, Isa::add_d(Isa::lo(x), Isa::set1_d(double(offset))));
      Isa::store_d(norm_scale64 + i + kWd, Isa::add_d(Isa::hi(x), Isa::set1_d(double(offset))));
    }
  });
  for (int64_t i = d; i < d_pad; ++i) {  // the last chunk's padding lanes hold the offset
    norm_scale[i] = 0.f;
    if (norm_scale64 != nullptr) norm_scale64[i] = 0.0;
  }
}

// Row c of the probe weights [C, d] (row stride ws) widened to float64 rows of length d_pad
// (zero padded) in out; rows C .. c_pad - 1 are zeros.
template <Dtype kW_>
SASA_NOINLINE void widen_weights(const storage_t<kW_>* w, int64_t ws, int64_t c, int64_t c_pad, int64_t d,
                                 int64_t d_pad, double* out) {
  for (int64_t r = 0; r < c_pad; ++r) {
    double* o = out + r * d_pad;
    if (r >= c) {
      std::memset(o, 0, size_t(d_pad) * sizeof(double));
      continue;
    }
    const storage_t<kW_>* x = w + r * ws;
    for_chunks(d, [&](int64_t i, int64_t n, auto whole) {
      const F v = load_at<kW_>(x + i, n, whole);
      Isa::store_d(o + i, Isa::lo(v));
      Isa::store_d(o + i + kWd, Isa::hi(v));
    });
    for (int64_t i = d; i < d_pad; ++i) o[i] = 0.0;
  }
}

// The probe's input row b as float64 values in v[0, d_pad) (zero padded): hidden[b, positions[b]],
// RMS-normalized when the call has a norm. False (v untouched) when positions[b] is outside [0, T).
template <Dtype kD>
SASA_INLINE bool gather_row(const ProbeArgs<storage_t<kD>>& p, int64_t b, double* v) {
  using S = storage_t<kD>;
  int64_t t = 0;
  if (p.positions != nullptr) {
    t = p.positions[b];
    if (t < 0 || t >= p.seq_len) return false;  // never read out of bounds
  }
  const S* x = p.hidden + b * p.batch_stride + t * p.seq_stride;
  const int64_t d = p.d;
  if (!p.has_norm) {
    for_chunks(d, [&](int64_t i, int64_t n, auto whole) {
      const F xv = load_at<kD>(x + i, n, whole);
      Isa::store_d(v + i, Isa::lo(xv));
      Isa::store_d(v + i + kWd, Isa::hi(xv));
    });
  } else {
    D sq_lo = Isa::zero_d(), sq_hi = Isa::zero_d();
    for_chunks(d, [&](int64_t i, int64_t n, auto whole) { add_squares(load_at<kD>(x + i, n, whole), sq_lo, sq_hi); });
    const double r = inv_rms(total(sq_lo, sq_hi), d, p.norm_eps);
    if constexpr (kD == Dtype::kF32) {
      const D vr = Isa::set1_d(r);
      for_chunks(d, [&](int64_t i, int64_t n, auto whole) {
        const F xv = load_at<kD>(x + i, n, whole);
        Isa::store_d(v + i, Isa::mul_d(Isa::mul_d(Isa::lo(xv), vr), Isa::load_d(p.norm_scale64 + i)));
        Isa::store_d(v + i + kWd, Isa::mul_d(Isa::mul_d(Isa::hi(xv), vr), Isa::load_d(p.norm_scale64 + i + kWd)));
      });
    } else {
      const F vr = Isa::set1(float(r));
      for_chunks(d, [&](int64_t i, int64_t n, auto whole) {
        const F normed = Io<kD>::round(Isa::mul(load_at<kD>(x + i, n, whole), vr));
        const F y = Io<kD>::round(Isa::mul(normed, Isa::load_f32(p.norm_scale + i)));
        Isa::store_d(v + i, Isa::lo(y));
        Isa::store_d(v + i + kWd, Isa::hi(y));
      });
    }
  }
  for (int64_t i = d; i < p.d_pad; ++i) v[i] = 0.0;
  return true;
}

// Register blocking of the probe's dot products: kRows rows x kProbes probes of float64
// accumulators, plus the kProbes weight vectors of one step and one row vector, fill the register
// file; each weight load then feeds kRows FMAs and each row load kProbes FMAs.
template <int P>
struct ProbeBlock {
  static constexpr int kProbes = P;
  static constexpr int kRows = std::min(16, (Isa::kRegisters - P - 1) / P);
};

// Scores of rows [begin, end) for all probes, kRows rows at a time. rows: kRows * d_pad doubles
// of scratch; p.weight64 has the probes padded to a multiple of P with zero rows.
// Cache blocking of the probe (a small GEMM, [B, d] x [d, C], in float64): a super-block of rows
// (about 512 KiB of float64 rows: L2) is gathered and widened once; then d is walked in chunks
// whose P weight rows (about 24 KiB) stay in L1 while every register block of the super-block
// passes over them, keeping its accumulators in memory between chunks. Without it each register
// block re-read the weights from L2 for every step and the loop was bound by those loads.
constexpr int64_t kSuperBlockDoubles = int64_t(64) << 10;
constexpr int64_t kWeightChunkDoubles = 3072;

template <int R>
SASA_INLINE int64_t super_block_rows(int64_t d_pad) {
  return std::max<int64_t>(R, kSuperBlockDoubles / d_pad / R * R);
}

template <int P>
SASA_INLINE int64_t probe_chunk() {
  return std::max<int64_t>(kWd, kWeightChunkDoubles / P / kWd * kWd);
}

// Scores of rows [begin, end) for all probes. Scratch: rows (super_block_rows<R> * d_pad
// doubles), partial (super_block_rows<R> * P accumulators), valid and next (super_block_rows<R>
// flags and pointers).
// p.weight64 has the probes padded to a multiple of P with zero rows.
// Where row b's input starts (nullptr when its position is out of range: nothing to prefetch).
template <class S>
SASA_INLINE const S* row_start(const ProbeArgs<S>& p, int64_t b) {
  int64_t t = 0;
  if (p.positions != nullptr) {
    t = p.positions[b];
    if (t < 0 || t >= p.seq_len) return nullptr;
  }
  return p.hidden + b * p.batch_stride + t * p.seq_stride;
}

template <Dtype kD, int R, int P>
SASA_NOINLINE void probe_rows(const ProbeArgs<storage_t<kD>>& p, int64_t begin, int64_t end, double* rows,
                              double* partial, bool* valid, const storage_t<kD>** next) {
  using S = storage_t<kD>;
  constexpr int64_t kPerLine = 64 / int64_t(sizeof(S));
  const int64_t d_pad = p.d_pad;
  const int64_t super_rows = super_block_rows<R>(d_pad), chunk = probe_chunk<P>();
  for (int64_t s0 = begin; s0 < end; s0 += super_rows) {
    const int64_t ns = std::min(super_rows, end - s0);
    const int64_t blocks = (ns + R - 1) / R;
    // The gather reads memory, the dot products compute from the caches: while block blk works
    // on d's chunk, it prefetches the same part of the next super-block's rows blk * R .. + R - 1,
    // so that every line of them is requested once and the two phases overlap.
    for (int64_t r = 0; r < blocks * R; ++r) next[r] = s0 + super_rows + r < end ? row_start(p, s0 + super_rows + r) : nullptr;
    for (int64_t r = 0; r < blocks * R; ++r) {
      double* v = rows + r * d_pad;
      valid[r] = r < ns && gather_row<kD>(p, s0 + r, v);
      if (!valid[r]) std::memset(v, 0, size_t(d_pad) * sizeof(double));
    }
    for (int64_t c0 = 0; c0 < p.num_probes; c0 += P) {
      std::memset(partial, 0, size_t(blocks * R * P * kWd) * sizeof(double));
      const double* w = p.weight64 + c0 * d_pad;
      for (int64_t k0 = 0; k0 < d_pad; k0 += chunk) {
        const int64_t k1 = std::min(d_pad, k0 + chunk);
        for (int64_t blk = 0; blk < blocks; ++blk) {
          const double* x = rows + blk * R * d_pad;
          double* saved = partial + blk * R * P * kWd;  // unaligned: plain scratch memory
          D acc[R][P];
#pragma GCC unroll 16
          for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
            for (int j = 0; j < P; ++j) acc[r][j] = Isa::load_d(saved + (r * P + j) * kWd);
          const S* const* ahead = next + blk * R;
          const bool prefetch = c0 == 0;
          for (int64_t k = k0; k < k1; k += kWd) {
            if (prefetch && k % kPerLine == 0 && k < p.d) {
#pragma GCC unroll 16
              for (int r = 0; r < R; ++r)
                if (ahead[r] != nullptr) __builtin_prefetch(ahead[r] + k, 0, 2);
            }
            D wv[P];
#pragma GCC unroll 8
            for (int j = 0; j < P; ++j) wv[j] = Isa::load_d(w + j * d_pad + k);
#pragma GCC unroll 16
            for (int r = 0; r < R; ++r) {
              const D xv = Isa::load_d(x + r * d_pad + k);
#pragma GCC unroll 8
              for (int j = 0; j < P; ++j) acc[r][j] = Isa::fmadd_d(xv, wv[j], acc[r][j]);
            }
          }
          // Constant indices only: a run-time index would force acc into memory inside the loop.
#pragma GCC unroll 16
          for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
            for (int j = 0; j < P; ++j) Isa::store_d(saved + (r * P + j) * kWd, acc[r][j]);
        }
      }
      for (int64_t r = 0; r < ns; ++r) {
        float* out = p.out + (s0 + r) * p.out_row_stride;
        for (int j = 0; j < P && c0 + j < p.num_probes; ++j) {
          const int64_t c = c0 + j;
          if (!valid[r]) {  // a NaN score counts as flagged (fail closed)
            out[c * p.out_col_stride] = std::numeric_limits<float>::quiet_NaN();
            continue;
          }
          double score = Isa::sum_d(Isa::load_d(partial + (r * P + j) * kWd));
          if (p.bias64 != nullptr) score += p.bias64[c];
          if (p.sigmoid) score = 1.0 / (1.0 + std::exp(-score));
          out[c * p.out_col_stride] = float(score);
        }
      }
    }
  }
}

// The entry points kernels.cpp calls for this instruction set.
struct Kernels {
  static constexpr const char* kName = Isa::kName;
  static constexpr int kWidth = kW;

  // fn(ProbeBlock<P>{}) with the widest probe block that num_probes fills.
  template <class Fn>
  static void with_probe_block(int64_t num_probes, Fn&& fn) {
    if constexpr (Isa::kMaxProbeBlock >= 8) {
      if (num_probes >= 8) return fn(ProbeBlock<8>{});
    }
    if constexpr (Isa::kMaxProbeBlock >= 4) {
      if (num_probes >= 4) return fn(ProbeBlock<4>{});
    }
    if (num_probes >= 2) return fn(ProbeBlock<2>{});
    return fn(ProbeBlock<1>{});
  }

  template <Dtype kD, bool kNorm, bool kStream>
  static void project(const ProjectArgs<storage_t<kD>>& p, int64_t begin, int64_t end, storage_t<kD>* scratch) {
    project_rows<kD, kNorm, kStream>(p, begin, end, scratch);
  }
  template <Dtype kD>
  static void norm_scale(const storage_t<kD>* w, int64_t d, int64_t d_pad, float offset, float* scale,
                         double* scale64) {
    norm_scales<kD>(w, d, d_pad, offset, scale, scale64);
  }
  template <Dtype kW_>
  static void weights(const storage_t<kW_>* w, int64_t ws, int64_t c, int64_t c_pad, int64_t d, int64_t d_pad,
                      double* out) {
    widen_weights<kW_>(w, ws, c, c_pad, d, d_pad, out);
  }
  // Rows per probe super-block (the unit of the scratch sizes and of the work split over threads).
  template <int R>
  static int64_t probe_super_rows(int64_t d_pad) {
    return super_block_rows<R>(d_pad);
  }
  static constexpr int kDoublesPerVector = kWd;
  template <Dtype kD, int R, int P>
  static void probe(const ProbeArgs<storage_t<kD>>& p, int64_t begin, int64_t end, double* rows, void* partial,
                    bool* valid, const void** next) {
    probe_rows<kD, R, P>(p, begin, end, rows, static_cast<double*>(partial), valid,
                         reinterpret_cast<const storage_t<kD>**>(next));
  }
};
