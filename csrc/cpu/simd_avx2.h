// The AVX2 (+FMA, F16C) instruction set of the CPU row kernels: 8 float32 / 4 float64 lanes.
// Included inside namespace sasa::cpu::avx2 under #pragma GCC target("avx2,fma,f16c"); members as
// in simd_portable.h.

struct Isa {
  static constexpr const char* kName = "avx2";
  // Vector registers, and the most probes one register block of the probe's dot products holds
  // (rows_impl.h's ProbeBlock sizes the blocks from these).
  static constexpr int kRegisters = 16;
  static constexpr int kMaxProbeBlock = 4;
  static constexpr int kW = 8;

  using F = __m256;
  using D = __m256d;

  static SASA_INLINE F load_f32(const float* p) { return _mm256_loadu_ps(p); }
  static SASA_INLINE void store_f32(float* p, F x) { _mm256_storeu_ps(p, x); }

  // Non-temporal stores (the destination must be aligned to the vector's size) and the fence that
  // orders them before anything later; see rows_impl.h, project_rows.
  static SASA_INLINE void stream_f32(float* p, F x) { _mm256_stream_ps(p, x); }
  static SASA_INLINE void stream_f16(uint16_t* p, F x) {
    _mm_stream_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  static SASA_INLINE void stream_fence() { _mm_sfence(); }

  static SASA_INLINE F load_bf16(const uint16_t* p) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  // bfloat16 bits (round to nearest even; NaN -> 0x7FC0) in the low half of each 32-bit lane.
  static SASA_INLINE __m256i bf16_bits(F x) {
    const __m256i u = _mm256_castps_si256(x);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    const __m256i r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7FFF)), lsb), 16);
    const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
    return _mm256_blendv_epi8(r, _mm256_set1_epi32(0x7FC0), nan);
  }
  static SASA_INLINE void store_bf16(uint16_t* p, F x) {
    const __m256i r = bf16_bits(x);
    // packus works per 128-bit half: [r0..r3 r0..r3 | r4..r7 r4..r7]; gather the two low quads.
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(packed));
  }
  static SASA_INLINE void stream_bf16(uint16_t* p, F x) {
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(bf16_bits(x), bf16_bits(x)), 0x08);
    _mm_stream_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(packed));
  }
  static SASA_INLINE F round_bf16(F x) { return _mm256_castsi256_ps(_mm256_slli_epi32(bf16_bits(x), 16)); }

  // bfloat16 in pairs of vectors (as in simd_avx512.h): no packus/permute to store, no widening
  // shuffle to load.
  using Bf16Pair = __m256i;
  static SASA_INLINE void unpack_pair_bf16(Bf16Pair x, F& even, F& odd) {
    even = _mm256_castsi256_ps(_mm256_slli_epi32(x, 16));
    odd = _mm256_castsi256_ps(_mm256_and_si256(x, _mm256_set1_epi32(int(0xFFFF0000u))));
  }
  static SASA_INLINE void load_pair_bf16(const uint16_t* p, F& even, F& odd) {
    unpack_pair_bf16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)), even, odd);
  }
  static SASA_INLINE Bf16Pair pack_pair_bf16(F even, F odd) {
    return _mm256_or_si256(bf16_bits(even), _mm256_slli_epi32(bf16_bits(odd), 16));
  }
  static SASA_INLINE void store_pair_bf16(uint16_t* p, Bf16Pair x) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), x);
  }
  static SASA_INLINE void stream_pair_bf16(uint16_t* p, Bf16Pair x) {
    _mm256_stream_si256(reinterpret_cast<__m256i*>(p), x);
  }

  static SASA_INLINE F load_f16(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static SASA_INLINE void store_f16(uint16_t* p, F x) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  static SASA_INLINE F round_f16(F x) {
    return _mm256_cvtph_ps(_mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }

  static SASA_INLINE F set1(float a) { return _mm256_set1_ps(a); }
  static SASA_INLINE F mul(F x, F y) { return _mm256_mul_ps(x, y); }
  static SASA_INLINE F add(F x, F y) { return _mm256_add_ps(x, y); }

  static SASA_INLINE D zero_d() { return _mm256_setzero_pd(); }
  static SASA_INLINE D set1_d(double a) { return _mm256_set1_pd(a); }
  static SASA_INLINE D load_d(const double* p) { return _mm256_loadu_pd(p); }
  static SASA_INLINE void store_d(double* p, D x) { _mm256_storeu_pd(p, x); }
  // kW / 2 elements at p widened to float64 (sweeps that only reduce need no float32 vector).
  static SASA_INLINE D widen_f32(const float* p) { return _mm256_cvtps_pd(_mm_loadu_ps(p)); }
  // kW bfloat16 values at p in float64: a = the even-indexed ones, b = the odd-indexed ones. A
  // bfloat16 is the top half of its float32, so one shift or mask per 32-bit pair widens both
  // (simd_portable.h says why any fixed order will do).
  static SASA_INLINE void widen_pair_bf16(const uint16_t* p, D& a, D& b) {
    const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    a = _mm256_cvtps_pd(_mm_castsi128_ps(_mm_slli_epi32(x, 16)));
    b = _mm256_cvtps_pd(_mm_castsi128_ps(_mm_and_si128(x, _mm_set1_epi32(int(0xFFFF0000u)))));
  }
  static SASA_INLINE D widen_f16(const uint16_t* p) {
    return _mm256_cvtps_pd(_mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  }
  static SASA_INLINE D lo(F x) { return _mm256_cvtps_pd(_mm256_castps256_ps128(x)); }
  static SASA_INLINE D hi(F x) { return _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)); }
  static SASA_INLINE D mul_d(D x, D y) { return _mm256_mul_pd(x, y); }
  static SASA_INLINE D add_d(D x, D y) { return _mm256_add_pd(x, y); }
  static SASA_INLINE D fmadd_d(D x, D y, D acc) { return _mm256_fmadd_pd(x, y, acc); }
  static SASA_INLINE double sum_d(D x) {
    alignas(32) double t[4];
    _mm256_store_pd(t, x);
    return (t[0] + t[1]) + (t[2] + t[3]);
  }
};
