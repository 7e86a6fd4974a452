// AVX-512 with AVX512_BF16 (Zen 4 and later, Cooper Lake, Sapphire Rapids and later): the
// AVX-512 set with bfloat16 rounding done by vcvtneps2bf16, one instruction for 16 lanes where
// the integer rounding of simd_avx512.h takes eight. Included inside namespace
// sasa::cpu::avx512_bf16 under #pragma GCC target(... "avx512bf16"); every other member is
// avx512's.
//
// Same bits as avx512: vcvtneps2bf16 rounds to nearest even like torch's conversion, but flushes
// subnormal inputs to zero and keeps a NaN's sign and payload (torch keeps subnormals and writes
// 0x7FC0 for every NaN). A vector holding either kind of lane (vfpclassps) takes avx512's integer
// path, so only vectors of normal numbers, zeros and infinities use the instruction; a normal
// float32 never rounds to a subnormal bfloat16 (the two share their exponent range).

struct Isa : avx512::Isa {
  static constexpr const char* kName = "avx512_bf16";

  // vfpclassps categories: quiet NaN (0x01), denormal (0x20), signalling NaN (0x80).
  static constexpr int kNanOrSubnormal = 0x01 | 0x20 | 0x80;

  // The 16 bfloat16 values of x, rounded to nearest even, packed into 256 bits.
  static SASA_INLINE __m256i bf16_packed(F x) {
    if (__builtin_expect(_mm512_fpclass_ps_mask(x, kNanOrSubnormal) == 0, 1)) {
      return reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(x));
    }
    return _mm512_cvtepi32_epi16(avx512::Isa::bf16_bits(x));
  }
  static SASA_INLINE void store_bf16(uint16_t* p, F x) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), bf16_packed(x));
  }
  static SASA_INLINE void stream_bf16(uint16_t* p, F x) {
    _mm256_stream_si256(reinterpret_cast<__m256i*>(p), bf16_packed(x));
  }
  static SASA_INLINE F round_bf16(F x) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bf16_packed(x)), 16));
  }
  // Two vectors at once (simd_avx512.h's pairs): vcvtne2ps2bf16 gives [even 0..15 | odd 0..15],
  // one word permutation interleaves them into storage order.
  static SASA_INLINE Bf16Pair pack_pair_bf16(F even, F odd) {
    if (__builtin_expect((_mm512_fpclass_ps_mask(even, kNanOrSubnormal) | _mm512_fpclass_ps_mask(odd, kNanOrSubnormal)) == 0, 1)) {
      alignas(64) static constexpr uint16_t kInterleave[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,
                                                               21, 6, 22, 7, 23, 8, 24, 9, 25, 10, 26,
                                                               11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
      const __m512i words = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(odd, even));
      return _mm512_permutexvar_epi16(_mm512_load_si512(kInterleave), words);
    }
    return avx512::Isa::pack_pair_bf16(even, odd);
  }
};
