// The AVX-512 (F, BW, VL, DQ, + FMA, F16C) instruction set of the CPU row kernels: 16 float32 /
// 8 float64 lanes. Included inside namespace sasa::cpu::avx512 under #pragma GCC target(...);
// members as in simd_portable.h. bfloat16 is rounded with integer arithmetic rather than
// AVX512_BF16's vcvtneps2bf16, which flushes subnormals (torch keeps them).

struct Isa {
  static constexpr const char* kName = "avx512";
  // Vector registers, and the most probes one register block of the probe's dot products holds
  // (rows_impl.h's ProbeBlock sizes the blocks from these).
  static constexpr int kRegisters = 32;
  static constexpr int kMaxProbeBlock = 8;
  static constexpr int kW = 16;

  using F = __m512;
  using D = __m512d;

  static SASA_INLINE F load_f32(const float* p) { return _mm512_loadu_ps(p); }
  static SASA_INLINE void store_f32(float* p, F x) { _mm512_storeu_ps(p, x); }

  // Non-temporal stores (the destination must be aligned to the stored size) and the fence that
  // orders them before anything later; see rows_impl.h, project_rows.
  static SASA_INLINE void stream_f32(float* p, F x) { _mm512_stream_ps(p, x); }
  static SASA_INLINE void stream_f16(uint16_t* p, F x) {
    _mm256_stream_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  static SASA_INLINE void stream_fence() { _mm_sfence(); }

  static SASA_INLINE F load_bf16(const uint16_t* p) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  static SASA_INLINE __m512i bf16_bits(F x) {
    const __m512i u = _mm512_castps_si512(x);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    const __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7FFF)), lsb), 16);
    const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    return _mm512_mask_mov_epi32(r, nan, _mm512_set1_epi32(0x7FC0));
  }
  static SASA_INLINE void store_bf16(uint16_t* p, F x) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(bf16_bits(x)));
  }
  static SASA_INLINE void stream_bf16(uint16_t* p, F x) {
    _mm256_stream_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(bf16_bits(x)));
  }
  static SASA_INLINE F round_bf16(F x) { return _mm512_castsi512_ps(_mm512_slli_epi32(bf16_bits(x), 16)); }

  // bfloat16 in pairs of vectors (sweep 2 of project): 2 * kW values as their even- and odd-indexed
  // elements in float32, split with one shift or mask where load_bf16 needs a widening shuffle per
  // vector, and packed back into storage order with one shift and or.
  using Bf16Pair = __m512i;  // 2 * kW bfloat16 values in storage order
  static SASA_INLINE void unpack_pair_bf16(Bf16Pair x, F& even, F& odd) {
    even = _mm512_castsi512_ps(_mm512_slli_epi32(x, 16));
    odd = _mm512_castsi512_ps(_mm512_and_si512(x, _mm512_set1_epi32(int(0xFFFF0000u))));
  }
  static SASA_INLINE void load_pair_bf16(const uint16_t* p, F& even, F& odd) {
    unpack_pair_bf16(_mm512_loadu_si512(p), even, odd);
  }
  static SASA_INLINE Bf16Pair pack_pair_bf16(F even, F odd) {
    return _mm512_or_si512(bf16_bits(even), _mm512_slli_epi32(bf16_bits(odd), 16));
  }
  static SASA_INLINE void store_pair_bf16(uint16_t* p, Bf16Pair x) { _mm512_storeu_si512(p, x); }
  static SASA_INLINE void stream_pair_bf16(uint16_t* p, Bf16Pair x) { _mm512_stream_si512(reinterpret_cast<__m512i*>(p), x); }

  static SASA_INLINE F load_f16(const uint16_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static SASA_INLINE void store_f16(uint16_t* p, F x) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  static SASA_INLINE F round_f16(F x) {
    return _mm512_cvtph_ps(_mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }

  static SASA_INLINE F set1(float a) { return _mm512_set1_ps(a); }
  static SASA_INLINE F mul(F x, F y) { return _mm512_mul_ps(x, y); }
  static SASA_INLINE F add(F x, F y) { return _mm512_add_ps(x, y); }

  static SASA_INLINE D zero_d() { return _mm512_setzero_pd(); }
  static SASA_INLINE D set1_d(double a) { return _mm512_set1_pd(a); }
  static SASA_INLINE D load_d(const double* p) { return _mm512_loadu_pd(p); }
  static SASA_INLINE void store_d(double* p, D x) { _mm512_storeu_pd(p, x); }
  // kW / 2 elements at p widened to float64 (sweeps that only reduce need no float32 vector).
  static SASA_INLINE D widen_f32(const float* p) { return _mm512_cvtps_pd(_mm256_loadu_ps(p)); }
  // kW bfloat16 values at p in float64: a = the even-indexed ones, b = the odd-indexed ones (as
  // in simd_avx2.h).
  static SASA_INLINE void widen_pair_bf16(const uint16_t* p, D& a, D& b) {
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    a = _mm512_cvtps_pd(_mm256_castsi256_ps(_mm256_slli_epi32(x, 16)));
    b = _mm512_cvtps_pd(_mm256_castsi256_ps(_mm256_and_si256(x, _mm256_set1_epi32(int(0xFFFF0000u)))));
  }
  static SASA_INLINE D widen_f16(const uint16_t* p) {
    return _mm512_cvtps_pd(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  }
  static SASA_INLINE D lo(F x) { return _mm512_cvtps_pd(_mm512_castps512_ps256(x)); }
  static SASA_INLINE D hi(F x) {
    return _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
  }
  static SASA_INLINE D mul_d(D x, D y) { return _mm512_mul_pd(x, y); }
  static SASA_INLINE D add_d(D x, D y) { return _mm512_add_pd(x, y); }
  static SASA_INLINE D fmadd_d(D x, D y, D acc) { return _mm512_fmadd_pd(x, y, acc); }
  static SASA_INLINE double sum_d(D x) {
    alignas(64) double t[8];
    _mm512_store_pd(t, x);
    return ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
  }
};
