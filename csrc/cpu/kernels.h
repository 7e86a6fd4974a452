// What the CPU kernels offer the rest of the extension: module.cpp's build_info() and entry.cpp,
// which calls the kernels directly when a call needs nothing else from the dispatcher.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

namespace sasa {
namespace cpu {

// The instruction set the CPU row kernels run with: "avx512", "avx2" or "portable".
const char* capability_name();

// The CPU implementations of sasa::_compiled_project, _compiled_project_rmsnorm and
// _compiled_probe (ops.cpp has the schemas; arguments are checked here too).
void project_cpu(const at::Tensor& hs, const at::Tensor& hf, const at::Tensor& out, double a,
                 double b, double eps);
void project_rmsnorm_cpu(const at::Tensor& hs, const at::Tensor& hf, const at::Tensor& norm_weight,
                         const at::Tensor& out, const at::Tensor& out_normed, double a, double b,
                         double eps, double norm_eps, double weight_offset);
void probe_cpu(const at::Tensor& hidden, const std::optional<at::Tensor>& positions,
               const at::Tensor& weight, const std::optional<at::Tensor>& bias,
               const std::optional<at::Tensor>& norm_weight, const at::Tensor& out, double norm_eps,
               double weight_offset, bool sigmoid);

}  // namespace cpu
}  // namespace sasa
