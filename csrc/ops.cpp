// Schemas of the compiled ops and their Meta implementations.
//
// The public ops torch.ops.sasa.{project, project_rmsnorm, probe} are defined in Python
// (sasa_kernels/_ops.py) and pick a backend at call time. The compiled kernels are separate
// out-variant ops in the same namespace, so registering them for the CPU and CUDA dispatch keys
// never bypasses that choice:
//
//   sasa::_compiled_project(hs, hf, out!, a, b, eps)
//   sasa::_compiled_project_rmsnorm(hs, hf, norm_weight, out!, out_normed!, a, b, eps, norm_eps,
//                                   weight_offset)
//   sasa::_compiled_probe(hidden, positions?, weight, bias?, norm_weight?, out!, norm_eps,
//                         weight_offset, sigmoid)
//
// The argument contract is sasa_kernels/backends/base.py's. The Meta kernels only check the
// arguments (the ops return nothing), which is what fake-tensor tracing needs.
#include <torch/library.h>

#include "sasa_checks.h"

namespace sasa {
namespace {

void project_meta(const at::Tensor& hs, const at::Tensor& hf, const at::Tensor& out, double a,
                  double b, double eps) {
  check_project_args("sasa::_compiled_project", hs, hf, out, eps);
}

void project_rmsnorm_meta(const at::Tensor& hs, const at::Tensor& hf, const at::Tensor& norm_weight,
                          const at::Tensor& out, const at::Tensor& out_normed, double a, double b,
                          double eps, double norm_eps, double weight_offset) {
  check_project_rmsnorm_args("sasa::_compiled_project_rmsnorm", hs, hf, norm_weight, out,
                             out_normed, eps, norm_eps);
}

void probe_meta(const at::Tensor& hidden, const std::optional<at::Tensor>& positions,
                const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                const std::optional<at::Tensor>& norm_weight, const at::Tensor& out,
                double norm_eps, double weight_offset, bool sigmoid) {
  check_probe_args("sasa::_compiled_probe", hidden, positions, weight, bias, norm_weight, out,
                   norm_eps);
}

}  // namespace
}  // namespace sasa

TORCH_LIBRARY_FRAGMENT(sasa, m) {
  m.def("_compiled_project(Tensor hs, Tensor hf, Tensor(a!) out, float a, float b, float eps) -> ()");
  m.def(
      "_compiled_project_rmsnorm(Tensor hs, Tensor hf, Tensor norm_weight, Tensor(a!) out, "
      "Tensor(b!) out_normed, float a, float b, float eps, float norm_eps, float weight_offset) -> ()");
  m.def(
      "_compiled_probe(Tensor hidden, Tensor? positions, Tensor weight, Tensor? bias, "
      "Tensor? norm_weight, Tensor(a!) out, float norm_eps, float weight_offset, bool sigmoid) -> ()");
}

TORCH_LIBRARY_IMPL(sasa, Meta, m) {
  m.impl("_compiled_project", &sasa::project_meta);
  m.impl("_compiled_project_rmsnorm", &sasa::project_rmsnorm_meta);
  m.impl("_compiled_probe", &sasa::probe_meta);
}
