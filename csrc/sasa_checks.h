// Argument checks shared by the CPU, CUDA and Meta implementations of the sasa::_compiled_* ops.
//
// The Python op layer validates before it calls a backend; these checks make the compiled ops safe
// to call directly (torch.ops.sasa._compiled_*): a wrong shape, dtype, device or layout raises a
// RuntimeError with a message instead of reading or writing out of bounds.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>

#include "sasa_dtypes.h"

namespace sasa {

inline void check_kernel_dtype(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(is_kernel_dtype(t.scalar_type()), op, ": ", name,
              " must be float32, float16 or bfloat16, got ", t.scalar_type());
}

inline void check_same_device(const char* op, const char* name, const at::Tensor& t,
                              const at::Tensor& ref) {
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " must be on ", ref.device(),
              " (the device of the first input), got ", t.device());
}

// [N, d] rows with unit stride along d (row strides are free).
inline void check_rows(const char* op, const char* name, const at::Tensor& t, const at::Tensor& ref) {
  TORCH_CHECK(t.dim() == 2, op, ": ", name, " must be 2-D [N, d], got ", t.dim(), "-D");
  TORCH_CHECK(t.sizes() == ref.sizes(), op, ": ", name, " must have shape ", ref.sizes(), ", got ",
              t.sizes());
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name, " must have dtype ",
              ref.scalar_type(), ", got ", t.scalar_type());
  check_same_device(op, name, t, ref);
  TORCH_CHECK(t.size(1) <= 1 || t.stride(1) == 1, op, ": ", name,
              " must have unit stride in the last dimension, got stride ", t.stride(1));
}

inline void check_vector(const char* op, const char* name, const at::Tensor& t, int64_t n,
                         at::ScalarType dtype, const at::Tensor& ref) {
  TORCH_CHECK(t.dim() == 1 && t.size(0) == n, op, ": ", name, " must have shape [", n, "], got ",
              t.sizes());
  TORCH_CHECK(t.scalar_type() == dtype, op, ": ", name, " must have dtype ", dtype, ", got ",
              t.scalar_type());
  check_same_device(op, name, t, ref);
}

inline void check_project_args(const char* op, const at::Tensor& hs, const at::Tensor& hf,
                               const at::Tensor& out, double eps) {
  TORCH_CHECK(hs.dim() == 2, op, ": hs must be 2-D [N, d], got ", hs.dim(), "-D");
  check_kernel_dtype(op, "hs", hs);
  check_rows(op, "hs", hs, hs);
  check_rows(op, "hf", hf, hs);
  check_rows(op, "out", out, hs);
  TORCH_CHECK(eps > 0, op, ": eps must be > 0, got ", eps);
}

inline void check_project_rmsnorm_args(const char* op, const at::Tensor& hs, const at::Tensor& hf,
                                       const at::Tensor& norm_weight, const at::Tensor& out,
                                       const at::Tensor& out_normed, double eps, double norm_eps) {
  check_project_args(op, hs, hf, out, eps);
  check_rows(op, "out_normed", out_normed, hs);
  check_vector(op, "norm_weight", norm_weight, hs.size(1), hs.scalar_type(), hs);
  TORCH_CHECK(norm_eps > 0, op, ": norm_eps must be > 0, got ", norm_eps);
}

inline void check_probe_args(const char* op, const at::Tensor& hidden,
                             const std::optional<at::Tensor>& positions, const at::Tensor& weight,
                             const std::optional<at::Tensor>& bias,
                             const std::optional<at::Tensor>& norm_weight, const at::Tensor& out,
                             double norm_eps) {
  TORCH_CHECK(hidden.dim() == 3, op, ": hidden must be 3-D [B, T, d], got ", hidden.dim(), "-D");
  check_kernel_dtype(op, "hidden", hidden);
  const int64_t B = hidden.size(0), T = hidden.size(1), d = hidden.size(2);
  TORCH_CHECK(d <= 1 || hidden.stride(2) == 1, op,
              ": hidden must have unit stride in the last dimension, got stride ", hidden.stride(2));
  if (positions.has_value()) {
    const at::Tensor& p = *positions;
    TORCH_CHECK(p.dim() == 1 && p.size(0) == B, op, ": positions must have shape [", B, "], got ",
                p.sizes());
    TORCH_CHECK(p.scalar_type() == at::kLong, op, ": positions must be int64, got ",
                p.scalar_type());
    check_same_device(op, "positions", p, hidden);
  } else {
    TORCH_CHECK(T == 1 || B == 0, op, ": hidden must be [B, 1, d] when positions is None, got T = ",
                T);
  }
  TORCH_CHECK(weight.dim() == 2 && weight.size(1) == d, op, ": weight must have shape [C, ", d,
              "], got ", weight.sizes());
  TORCH_CHECK(weight.scalar_type() == at::kFloat || weight.scalar_type() == hidden.scalar_type(), op,
              ": weight must be float32 or ", hidden.scalar_type(), ", got ", weight.scalar_type());
  TORCH_CHECK(d <= 1 || weight.stride(1) == 1, op,
              ": weight must have unit stride in the last dimension, got stride ", weight.stride(1));
  check_same_device(op, "weight", weight, hidden);
  const int64_t C = weight.size(0);
  if (bias.has_value()) check_vector(op, "bias", *bias, C, weight.scalar_type(), hidden);
  if (norm_weight.has_value())
    check_vector(op, "norm_weight", *norm_weight, d, hidden.scalar_type(), hidden);
  TORCH_CHECK(out.dim() == 2 && out.size(0) == B && out.size(1) == C, op,
              ": out must have shape [", B, ", ", C, "], got ", out.sizes());
  TORCH_CHECK(out.scalar_type() == at::kFloat, op, ": out must be float32, got ",
              out.scalar_type());
  check_same_device(op, "out", out, hidden);
  TORCH_CHECK(norm_eps > 0, op, ": norm_eps must be > 0, got ", norm_eps);
}

}  // namespace sasa
