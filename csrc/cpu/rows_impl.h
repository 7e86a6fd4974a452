// The row kernels, compiled once per instruction set: csrc/cpu/kernels.cpp includes this file
// inside namespace sasa::cpu::base (baseline flags) and, on x86-64 with GCC/Clang, again inside
// namespace sasa::cpu::avx2 under `#pragma GCC target("avx2,fma,f16c")`, and picks one at run
// time. Everything here (conversions, reductions, loops) is thus compiled for that target, which
// the compiler vectorizes like a -march build (target_clones on the row functions alone gave
// code about half as fast). No include guard and no #include: it is included inside namespaces,
// after the headers it needs (<cmath>, <cstring>, <algorithm>, <limits>, kernels.cpp's types).

SASA_INLINE float bits_to_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}
SASA_INLINE uint32_t f32_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

// Storage <-> float32 conversions. round() returns the float32 value of the nearest
// representable value of the dtype (round to nearest even), which is what torch's .to(dtype) gives.
struct F32 {
  using storage = float;
  static SASA_INLINE float load(float x) { return x; }
  static SASA_INLINE float store(float x) { return x; }
};

struct BF16 {
  using storage = uint16_t;
  static SASA_INLINE float load(uint16_t b) { return bits_to_f32(uint32_t(b) << 16); }
  static SASA_INLINE uint16_t store(float f) {
    const uint32_t u = f32_to_bits(f);
    const uint32_t rounded = (u + (((u >> 16) & 1u) + 0x7FFFu)) >> 16;
    return f != f ? uint16_t(0x7FC0) : uint16_t(rounded);
  }
};

// IEEE half <-> float32 without F16C (the FP16 library's branch-free algorithms, as in c10).
struct F16 {
  using storage = uint16_t;
  static SASA_INLINE float load(uint16_t h) {
    const uint32_t w = uint32_t(h) << 16;
    const uint32_t sign = w & 0x80000000u;
    const uint32_t two_w = w + w;
    const uint32_t exp_offset = 0xE0u << 23;
    const float exp_scale = bits_to_f32(0x7800000u);  // 0x1.0p-112f
    const float normalized = bits_to_f32((two_w >> 4) + exp_offset) * exp_scale;
    const uint32_t magic_mask = 126u << 23;
    const float denormalized = bits_to_f32((two_w >> 17) | magic_mask) - 0.5f;
    // two_w < 2^27, as a branch-free mask (see store()).
    const uint32_t is_denormal = 0u - uint32_t(int32_t(two_w >> 1) < int32_t(1u << 26));
    const uint32_t result =
        sign | (f32_to_bits(denormalized) & is_denormal) | (f32_to_bits(normalized) & ~is_denormal);
    return bits_to_f32(result);
  }
  static SASA_INLINE uint16_t store(float f) {
    const float scale_to_inf = bits_to_f32(239u << 23);  // 0x1.0p+112f
    const float scale_to_zero = bits_to_f32(17u << 23);  // 0x1.0p-110f
    float base = (std::fabs(f) * scale_to_inf) * scale_to_zero;
    const uint32_t w = f32_to_bits(f);
    const uint32_t shl1_w = w + w;
    const uint32_t sign = w & 0x80000000u;
    // Branch-free selects; unsigned compares written on 31-bit values as signed ones (AVX2 has
    // no unsigned vector compare), so GCC vectorizes the conversion loops.
    uint32_t bias = shl1_w & 0xFF000000u;
    const uint32_t small = 0u - uint32_t(int32_t(bias >> 1) < int32_t(0x71000000u >> 1));
    bias = (0x71000000u & small) | (bias & ~small);
    base = bits_to_f32((bias >> 1) + 0x07800000u) + base;
    const uint32_t bits = f32_to_bits(base);
    const uint32_t exp_bits = (bits >> 13) & 0x00007C00u;
    const uint32_t mantissa_bits = bits & 0x00000FFFu;
    const uint32_t nonsign = exp_bits + mantissa_bits;
    const uint32_t is_nan = 0u - uint32_t(int32_t(shl1_w >> 1) > int32_t(0xFF000000u >> 1));
    return uint16_t((sign >> 16) | (0x7E00u & is_nan) | (nonsign & ~is_nan));
  }
};

template <Dtype>
struct Conv;
template <>
struct Conv<Dtype::kF32> {
  using type = F32;
};
template <>
struct Conv<Dtype::kF16> {
  using type = F16;
};
template <>
struct Conv<Dtype::kBF16> {
  using type = BF16;
};

template <class D>
SASA_INLINE float round_to(float x) {
  return D::load(D::store(x));
}

// Sum of kLanes partial sums, pairwise, in a fixed order.
SASA_INLINE float lane_sum(const float* acc) {
  float t[kLanes];
  for (int j = 0; j < kLanes; ++j) t[j] = acc[j];
  for (int w = kLanes / 2; w >= 1; w /= 2)
    for (int j = 0; j < w; ++j) t[j] += t[j + w];
  return t[0];
}

// K sums over i in [0, d), accumulated in float32 as a cascade (like torch's CPU sum, so the
// rounding error grows slowly with d). The row is cut into blocks of kBlock elements;
// fill(i0, n, buf) writes term r of element i0 + k into buf[r][k] for k < n (a plain loop over
// contiguous elements, which the compiler vectorizes, dtype conversion included; it may also
// store, as the RMSNorm sweep writes h while it sums h^2). Then kLanes independent lanes sum each
// block (kInner terms per lane), blocks add into a middle level and kMid middle sums into a top
// level; the lanes are combined pairwise at the end.
constexpr int64_t kInner = 16;
constexpr int64_t kBlock = kLanes * kInner;
constexpr int kMid = 16;

template <int K, class Fill>
SASA_INLINE void cascade_sum(int64_t d, Fill&& fill, float* result) {
  float top[K][kLanes] = {}, mid[K][kLanes] = {};
  alignas(64) float buf[K][kBlock];
  int nmid = 0;
  for (int64_t i = 0; i < d; i += kBlock) {
    const int64_t n = std::min<int64_t>(kBlock, d - i);
    fill(i, n, buf);
    float blk[K][kLanes] = {};
    const int64_t n_main = n - n % kLanes;
    for (int64_t k = 0; k < n_main; k += kLanes)
      for (int r = 0; r < K; ++r)
        for (int j = 0; j < kLanes; ++j) blk[r][j] += buf[r][k + j];
    for (int64_t k = n_main; k < n; ++k)
      for (int r = 0; r < K; ++r) blk[r][k - n_main] += buf[r][k];
    for (int r = 0; r < K; ++r)
      for (int j = 0; j < kLanes; ++j) mid[r][j] += blk[r][j];
    if (++nmid == kMid) {
      for (int r = 0; r < K; ++r)
        for (int j = 0; j < kLanes; ++j) {
          top[r][j] += mid[r][j];
          mid[r][j] = 0.f;
        }
      nmid = 0;
    }
  }
  for (int r = 0; r < K; ++r) {
    float lanes[kLanes];
    for (int j = 0; j < kLanes; ++j) lanes[j] = top[r][j] + mid[r][j];
    result[r] = lane_sum(lanes);
  }
}

// ---------------------------------------------------------------------------------------------
// project / project_rmsnorm

template <Dtype kD, bool kNorm>
SASA_NOINLINE void project_rows(const ProjectArgs<typename Storage<kD>::type>& p, int64_t begin,
                                int64_t end) {
  using D = typename Conv<kD>::type;
  using S = typename D::storage;
  const int64_t d = p.d;
  for (int64_t row = begin; row < end; ++row) {
    const S* SASA_RESTRICT s = p.hs + row * p.hs_stride;
    const S* SASA_RESTRICT f = p.hf + row * p.hf_stride;
    S* o = p.out + row * p.out_stride;

    // Sweep 1: <hs, hf> and ||hf||^2.
    float sums[2];
    cascade_sum<2>(d, [&](int64_t i0, int64_t n, float (*buf)[kBlock]) {
      for (int64_t k = 0; k < n; ++k) {
        const float x = D::load(s[i0 + k]);
        const float y = D::load(f[i0 + k]);
        buf[0][k] = x * y;
        buf[1][k] = y * y;
      }
    }, sums);
    const float alpha = sums[0] / (sums[1] + p.eps);
    const float c = p.b * alpha;
    const float a = p.a;

    // Sweep 2: h = a*hs + c*hf rounded to the dtype, with separate roundings (no contraction),
    // like the reference's tensor ops; for RMSNorm also the sum of h^2.
    if (!kNorm) {
      for (int64_t i = 0; i < d; ++i) {
        const float as = a * D::load(s[i]);
        const float cf = c * D::load(f[i]);
        o[i] = D::store(as + cf);
      }
      continue;
    }
    float sumsq;
    cascade_sum<1>(d, [&](int64_t i0, int64_t n, float (*buf)[kBlock]) {
      for (int64_t k = 0; k < n; ++k) {
        const float as = a * D::load(s[i0 + k]);
        const float cf = c * D::load(f[i0 + k]);
        const S h = D::store(as + cf);
        o[i0 + k] = h;
        const float hv = D::load(h);
        buf[0][k] = hv * hv;
      }
    }, &sumsq);
    const float variance = sumsq / float(d);
    const float r = 1.0f / std::sqrt(variance + p.norm_eps);

    // Sweep 3: out_normed = dtype(dtype(h * r) * w).
    S* on = p.out_normed + row * p.outn_stride;
    const float* SASA_RESTRICT w = p.w;
    for (int64_t i = 0; i < d; ++i) {
      const float n = round_to<D>(D::load(o[i]) * r);
      on[i] = D::store(n * w[i]);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// probe

template <Dtype kD, Dtype kW>
SASA_NOINLINE void probe_rows(
    const ProbeArgs<typename Storage<kD>::type, typename Storage<kW>::type>& p, int64_t begin,
    int64_t end, float* v) {
  using D = typename Conv<kD>::type;
  using DW = typename Conv<kW>::type;
  using S = typename D::storage;
  using SW = typename DW::storage;
  const int64_t d = p.d;
  for (int64_t b = begin; b < end; ++b) {
    float* out = p.out + b * p.out_s0;
    int64_t t = 0;
    if (p.positions != nullptr) {
      t = p.positions[b];
      if (t < 0 || t >= p.T) {  // never read out of bounds: a NaN score counts as flagged
        for (int64_t c = 0; c < p.C; ++c) out[c * p.out_s1] = std::numeric_limits<float>::quiet_NaN();
        continue;
      }
    }
    const S* SASA_RESTRICT x = p.hidden + b * p.sB + t * p.sT;
    if (p.w != nullptr) {
      float sumsq;
      cascade_sum<1>(d, [&](int64_t i0, int64_t n, float (*buf)[kBlock]) {
        for (int64_t k = 0; k < n; ++k) {
          const float xv = D::load(x[i0 + k]);
          buf[0][k] = xv * xv;
        }
      }, &sumsq);
      const float r = 1.0f / std::sqrt(sumsq / float(d) + p.norm_eps);
      const float* SASA_RESTRICT w = p.w;
      for (int64_t i = 0; i < d; ++i) {
        const float n = round_to<D>(D::load(x[i]) * r);
        v[i] = round_to<D>(n * w[i]);
      }
    } else {
      for (int64_t i = 0; i < d; ++i) v[i] = D::load(x[i]);
    }
    for (int64_t c = 0; c < p.C; ++c) {
      const SW* SASA_RESTRICT wr = p.weight + c * p.wstride;
      float score;
      cascade_sum<1>(d, [&](int64_t i0, int64_t n, float (*buf)[kBlock]) {
        for (int64_t k = 0; k < n; ++k) buf[0][k] = v[i0 + k] * DW::load(wr[i0 + k]);
      }, &score);
      if (p.bias != nullptr) score += DW::load(p.bias[c * p.bstride]);
      if (p.sigmoid) score = 1.0f / (1.0f + std::exp(-score));
      out[c * p.out_s1] = score;
    }
  }
}

