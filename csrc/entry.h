// Direct entry points of the compiled ops for sasa_kernels/backends/compiled.py (bound in
// module.cpp), with the backend contract of sasa_kernels/backends/base.py. Each takes the op
// layer's tensors as they are ([..., d] rows with any strides, hidden [B, T, d] or [B, d]),
// allocates the outputs unless it is given them (contiguous; tests pass NaN-filled ones), makes
// the [N, d] unit-stride views the kernels need (copying only when a view is impossible) and calls
// sasa::_compiled_* through the C++ dispatcher, which picks the CPU or CUDA kernel by device (a
// plain CPU call goes straight to the CPU kernel: entry.cpp, direct_cpu).
// Compared with allocating in Python and calling torch.ops.sasa._compiled_*(...) this saves about
// 1.5 us per call on a small CPU, which is most of a small call's cost.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

namespace sasa {
namespace entry {

at::Tensor project(const at::Tensor& hs, const at::Tensor& hf, double a, double b, double eps,
                   const std::optional<at::Tensor>& out);

std::tuple<at::Tensor, at::Tensor> project_rmsnorm(const at::Tensor& hs, const at::Tensor& hf,
                                                   const at::Tensor& norm_weight, double a, double b,
                                                   double eps, double norm_eps, double weight_offset,
                                                   const std::optional<at::Tensor>& out,
                                                   const std::optional<at::Tensor>& out_normed);

at::Tensor probe(const at::Tensor& hidden, const std::optional<at::Tensor>& positions,
                 const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                 const std::optional<at::Tensor>& norm_weight, double norm_eps, double weight_offset,
                 bool sigmoid, const std::optional<at::Tensor>& out);

// The fast path of the public ops on CPU (sasa_kernels/_api.py): the result when the tensors are
// plain dense CPU tensors that the Python validator would accept without question (same shape
// with d >= 1, one kernel dtype, no gradient to record, norm_weight [d] of that dtype) and no
// dispatch mode or transform is active; otherwise nothing (std::nullopt: None in Python), and the
// caller takes the validated path, which raises the precise error or routes the call. The
// scalars are the caller's to check; outputs given as out are used as in project (tests poison
// them). Checking the tensors here costs nanoseconds where reading
// .shape/.dtype/.device in Python costs about a microsecond.
std::optional<at::Tensor> project_if_plain(const at::Tensor& hs, const at::Tensor& hf, double a, double b,
                                           double eps, const std::optional<at::Tensor>& out);

std::optional<std::tuple<at::Tensor, at::Tensor>> project_rmsnorm_if_plain(
    const at::Tensor& hs, const at::Tensor& hf, const at::Tensor& norm_weight, double a, double b, double eps,
    double norm_eps, double weight_offset, const std::optional<at::Tensor>& out,
    const std::optional<at::Tensor>& out_normed);

}  // namespace entry
}  // namespace sasa
