// See entry.h.
#include "entry.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>

#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace sasa {
namespace entry {
namespace {

// x [..., d] as [N, d] with unit stride along d: a view when the leading dimensions allow it.
at::Tensor rows(const at::Tensor& x) {
  at::Tensor r = x.dim() == 2 ? x : x.reshape({-1, x.size(-1)});
  return (r.size(1) > 1 && r.stride(1) != 1) ? r.contiguous() : r;
}

at::Tensor unit_last_stride(const at::Tensor& x) {
  return (x.size(-1) > 1 && x.stride(-1) != 1) ? x.contiguous() : x;
}

using ProjectFn = void(const at::Tensor&, const at::Tensor&, const at::Tensor&, double, double, double);
using ProjectRmsnormFn = void(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                              const at::Tensor&, double, double, double, double, double);
using ProbeFn = void(const at::Tensor&, const std::optional<at::Tensor>&, const at::Tensor&,
                     const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, const at::Tensor&,
                     double, double, bool);

template <class Fn>
c10::TypedOperatorHandle<Fn> find(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Fn>();
}

// Fresh CPU outputs of this size or more are advised to use transparent huge pages.
constexpr int64_t kHugePageAdviceBytes = int64_t(4) << 20;
constexpr uintptr_t kHugePage = uintptr_t(2) << 20;

// A large fresh allocation (glibc maps 32 MiB and more freshly on every call) is page-faulted as
// the kernel first writes it: 4 KiB at a time that cost about as much as the kernel's own memory
// traffic (measured: filling a fresh 64 MiB tensor 37 ms, a reused one 13 ms). With
// MADV_HUGEPAGE the faults come 2 MiB at a time (19 ms). It only changes how the pages are
// backed, where the system allows it (transparent_hugepage = madvise or always; torch offers the
// same for all its allocations with THP_MEM_ALLOC_ENABLE=1).
void advise_huge_pages(const at::Tensor& t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const int64_t bytes = t.numel() * int64_t(t.element_size());
  if (!t.is_cpu() || bytes < kHugePageAdviceBytes) return;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t lo = (begin + kHugePage - 1) & ~(kHugePage - 1);
  const uintptr_t hi = (begin + uintptr_t(bytes)) & ~(kHugePage - 1);
  if (hi > lo) (void)madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);  // advice only
#else
  (void)t;
#endif
}

// The given output, or a new contiguous one shaped like x.
at::Tensor output_like(const at::Tensor& x, const std::optional<at::Tensor>& out) {
  if (out.has_value()) return *out;
  at::Tensor fresh = at::empty(x.sizes(), x.options());
  advise_huge_pages(fresh);
  return fresh;
}

}  // namespace

at::Tensor project(const at::Tensor& hs, const at::Tensor& hf, double a, double b, double eps,
                   const std::optional<at::Tensor>& out) {
  static const auto op = find<ProjectFn>("sasa::_compiled_project");
  at::Tensor o = output_like(hs, out);
  if (hs.numel() != 0) op.call(rows(hs), rows(hf), o.view({-1, o.size(-1)}), a, b, eps);
  return o;
}

std::tuple<at::Tensor, at::Tensor> project_rmsnorm(const at::Tensor& hs, const at::Tensor& hf,
                                                   const at::Tensor& norm_weight, double a, double b,
                                                   double eps, double norm_eps, double weight_offset,
                                                   const std::optional<at::Tensor>& out,
                                                   const std::optional<at::Tensor>& out_normed) {
  static const auto op = find<ProjectRmsnormFn>("sasa::_compiled_project_rmsnorm");
  at::Tensor o = output_like(hs, out), on = output_like(hs, out_normed);
  if (hs.numel() != 0) {
    const int64_t d = o.size(-1);
    op.call(rows(hs), rows(hf), norm_weight, o.view({-1, d}), on.view({-1, d}), a, b, eps, norm_eps,
            weight_offset);
  }
  return {o, on};
}

at::Tensor probe(const at::Tensor& hidden, const std::optional<at::Tensor>& positions,
                 const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                 const std::optional<at::Tensor>& norm_weight, double norm_eps, double weight_offset,
                 bool sigmoid, const std::optional<at::Tensor>& out) {
  static const auto op = find<ProbeFn>("sasa::_compiled_probe");
  at::Tensor o = out.has_value() ? *out
                                 : at::empty({hidden.size(0), weight.size(0)}, hidden.options().dtype(at::kFloat));
  if (hidden.size(0) != 0) {
    const at::Tensor h3 = positions.has_value() ? hidden : hidden.unsqueeze(1);
    op.call(unit_last_stride(h3), positions, unit_last_stride(weight), bias, norm_weight, o, norm_eps,
            weight_offset, sigmoid);
  }
  return o;
}

}  // namespace entry
}  // namespace sasa
