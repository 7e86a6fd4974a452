// Scalar float32 <-> bfloat16 / float16 conversions with round-to-nearest-even, bit-exact with
// torch's own (c10::BFloat16, c10::Half) including subnormals, infinities and NaN. The portable
// instruction set uses them per lane; the x86 ones use them to prepare constants. Branch-free, so
// a loop over them still vectorizes.
#pragma once

#include <cstdint>
#include <cstring>

namespace sasa {
namespace cpu {

inline float bits_to_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

inline uint32_t f32_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

inline float bf16_to_f32(uint16_t b) { return bits_to_f32(uint32_t(b) << 16); }

inline uint16_t f32_to_bf16(float f) {
  const uint32_t u = f32_to_bits(f);
  const uint32_t rounded = (u + (((u >> 16) & 1u) + 0x7FFFu)) >> 16;
  return f != f ? uint16_t(0x7FC0) : uint16_t(rounded);
}

// IEEE half <-> float32 without F16C (the FP16 library's branch-free algorithms, as in c10).
inline float f16_to_f32(uint16_t h) {
  const uint32_t w = uint32_t(h) << 16;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t two_w = w + w;
  const uint32_t exp_offset = 0xE0u << 23;
  const float exp_scale = bits_to_f32(0x7800000u);  // 0x1.0p-112f
  const float normalized = bits_to_f32((two_w >> 4) + exp_offset) * exp_scale;
  const uint32_t magic_mask = 126u << 23;
  const float denormalized = bits_to_f32((two_w >> 17) | magic_mask) - 0.5f;
  // two_w < 2^27, as a branch-free mask (see f32_to_f16).
  const uint32_t is_denormal = 0u - uint32_t(int32_t(two_w >> 1) < int32_t(1u << 26));
  const uint32_t result =
      sign | (f32_to_bits(denormalized) & is_denormal) | (f32_to_bits(normalized) & ~is_denormal);
  return bits_to_f32(result);
}

inline uint16_t f32_to_f16(float f) {
  const float scale_to_inf = bits_to_f32(239u << 23);  // 0x1.0p+112f
  const float scale_to_zero = bits_to_f32(17u << 23);  // 0x1.0p-110f
  float base = (__builtin_fabsf(f) * scale_to_inf) * scale_to_zero;
  const uint32_t w = f32_to_bits(f);
  const uint32_t shl1_w = w + w;
  const uint32_t sign = w & 0x80000000u;
  // Branch-free selects; unsigned compares written on 31-bit values as signed ones (SSE2/AVX2
  // have no unsigned vector compare), so loops over this vectorize.
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

}  // namespace cpu
}  // namespace sasa
