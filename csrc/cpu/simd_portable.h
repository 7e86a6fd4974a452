// The portable instruction set of the CPU row kernels: short fixed-size arrays and plain loops,
// which any compiler turns into its baseline vector code (SSE2 on x86-64, NEON on arm64). Included
// inside namespace sasa::cpu::portable by kernels.cpp, before rows_impl.h; the x86 sets
// (simd_avx2.h, simd_avx512.h) provide the same members. F holds kW float32 lanes, D holds kW / 2
// float64 lanes (lo/hi widen the two halves of an F).

struct Isa {
  static constexpr const char* kName = "portable";
  // Vector registers, and the most probes one register block of the probe's dot products holds
  // (rows_impl.h's ProbeBlock sizes the blocks from these).
  static constexpr int kRegisters = 16;
  static constexpr int kMaxProbeBlock = 2;
  static constexpr int kW = 4;

  struct F {
    float v[kW];
  };
  struct D {
    double v[kW / 2];
  };

  static SASA_INLINE F load_f32(const float* p) {
    F x;
    std::memcpy(x.v, p, sizeof(x.v));
    return x;
  }
  static SASA_INLINE void store_f32(float* p, F x) { std::memcpy(p, x.v, sizeof(x.v)); }

  // Stores that bypass the caches (see rows_impl.h, project_rows); plain stores here.
  static SASA_INLINE void stream_f32(float* p, F x) { store_f32(p, x); }
  static SASA_INLINE void stream_bf16(uint16_t* p, F x) { store_bf16(p, x); }
  static SASA_INLINE void stream_f16(uint16_t* p, F x) { store_f16(p, x); }
  static SASA_INLINE void stream_fence() {}

  static SASA_INLINE F load_bf16(const uint16_t* p) {
    F x;
    for (int j = 0; j < kW; ++j) x.v[j] = bf16_to_f32(p[j]);
    return x;
  }
  static SASA_INLINE void store_bf16(uint16_t* p, F x) {
    for (int j = 0; j < kW; ++j) p[j] = f32_to_bf16(x.v[j]);
  }
  static SASA_INLINE F round_bf16(F x) {
    for (int j = 0; j < kW; ++j) x.v[j] = bf16_to_f32(f32_to_bf16(x.v[j]));
    return x;
  }

  // bfloat16 in pairs of vectors (sweep 2 of project): 2 * kW values as two F in an order of the
  // instruction set's choosing (the x86 sets split even and odd elements; here the two halves),
  // and back into storage order. Elementwise work gives the same values in either order.
  struct Bf16Pair {
    uint16_t v[2 * kW];
  };
  static SASA_INLINE void load_pair_bf16(const uint16_t* p, F& a, F& b) {
    a = load_bf16(p);
    b = load_bf16(p + kW);
  }
  static SASA_INLINE void unpack_pair_bf16(const Bf16Pair& x, F& a, F& b) { load_pair_bf16(x.v, a, b); }
  static SASA_INLINE Bf16Pair pack_pair_bf16(F a, F b) {
    Bf16Pair x;
    store_bf16(x.v, a);
    store_bf16(x.v + kW, b);
    return x;
  }
  static SASA_INLINE void store_pair_bf16(uint16_t* p, const Bf16Pair& x) { std::memcpy(p, x.v, sizeof(x.v)); }
  static SASA_INLINE void stream_pair_bf16(uint16_t* p, const Bf16Pair& x) { store_pair_bf16(p, x); }

  static SASA_INLINE F load_f16(const uint16_t* p) {
    F x;
    for (int j = 0; j < kW; ++j) x.v[j] = f16_to_f32(p[j]);
    return x;
  }
  static SASA_INLINE void store_f16(uint16_t* p, F x) {
    for (int j = 0; j < kW; ++j) p[j] = f32_to_f16(x.v[j]);
  }
  static SASA_INLINE F round_f16(F x) {
    for (int j = 0; j < kW; ++j) x.v[j] = f16_to_f32(f32_to_f16(x.v[j]));
    return x;
  }

  static SASA_INLINE F set1(float a) {
    F x;
    for (int j = 0; j < kW; ++j) x.v[j] = a;
    return x;
  }
  static SASA_INLINE F mul(F x, F y) {
    for (int j = 0; j < kW; ++j) x.v[j] *= y.v[j];
    return x;
  }
  static SASA_INLINE F add(F x, F y) {
    for (int j = 0; j < kW; ++j) x.v[j] += y.v[j];
    return x;
  }

  static SASA_INLINE D zero_d() { return D{}; }
  static SASA_INLINE D set1_d(double a) {
    D x;
    for (int j = 0; j < kW / 2; ++j) x.v[j] = a;
    return x;
  }
  static SASA_INLINE D load_d(const double* p) {
    D x;
    std::memcpy(x.v, p, sizeof(x.v));
    return x;
  }
  static SASA_INLINE void store_d(double* p, D x) { std::memcpy(p, x.v, sizeof(x.v)); }
  // kW / 2 elements at p widened to float64 (sweeps that only reduce need no float32 vector).
  static SASA_INLINE D widen_f32(const float* p) {
    D y;
    for (int j = 0; j < kW / 2; ++j) y.v[j] = double(p[j]);
    return y;
  }
  // kW bfloat16 values at p widened to float64, as two vectors in an order of the instruction
  // set's choosing that depends only on the position (here the two halves), so two rows split
  // alike pair up lane by lane in a dot product.
  static SASA_INLINE void widen_pair_bf16(const uint16_t* p, D& a, D& b) {
    for (int j = 0; j < kW / 2; ++j) a.v[j] = double(bf16_to_f32(p[j]));
    for (int j = 0; j < kW / 2; ++j) b.v[j] = double(bf16_to_f32(p[kW / 2 + j]));
  }
  static SASA_INLINE D widen_f16(const uint16_t* p) {
    D y;
    for (int j = 0; j < kW / 2; ++j) y.v[j] = double(f16_to_f32(p[j]));
    return y;
  }
  static SASA_INLINE D lo(F x) {
    D y;
    for (int j = 0; j < kW / 2; ++j) y.v[j] = double(x.v[j]);
    return y;
  }
  static SASA_INLINE D hi(F x) {
    D y;
    for (int j = 0; j < kW / 2; ++j) y.v[j] = double(x.v[kW / 2 + j]);
    return y;
  }
  static SASA_INLINE D mul_d(D x, D y) {
    for (int j = 0; j < kW / 2; ++j) x.v[j] *= y.v[j];
    return x;
  }
  static SASA_INLINE D add_d(D x, D y) {
    for (int j = 0; j < kW / 2; ++j) x.v[j] += y.v[j];
    return x;
  }
  // x * y + acc. Callers pass widened float32 values, whose products are exact in float64, so a
  // multiply then an add gives the same result as a fused multiply-add.
  static SASA_INLINE D fmadd_d(D x, D y, D acc) { return add_d(mul_d(x, y), acc); }
  static SASA_INLINE double sum_d(D x) { return x.v[0] + x.v[1]; }
};
