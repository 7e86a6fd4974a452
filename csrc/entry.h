// Direct entry points of the compiled ops for sasa_kernels/backends/compiled.py (bound in
// module.cpp), with the backend contract of sasa_kernels/backends/base.py. Each takes the op
// layer's tensors as they are ([..., d] rows with any strides, hidden [B, T, d] or [B, d]),
// allocates the outputs unless it is given them (contiguous; tests pass NaN-filled ones), makes
// the [N, d] unit-stride views the kernels need (copying only when a view is impossible) and calls
// sasa::_compiled_* through the C++ dispatcher, which picks the CPU or CUDA kernel by device.
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

}  // namespace entry
}  // namespace sasa
