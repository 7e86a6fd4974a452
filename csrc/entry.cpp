// See entry.h.
#include "entry.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <c10/core/GradMode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "cpu/kernels.h"
#include "sasa_dtypes.h"

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

// Whether a call can go straight to the CPU kernel: every key the dispatcher would visit for these
// tensors (theirs, plus what this thread switches on, minus what it switches off) is one of a
// plain eager CPU call's. Then the dispatcher would only pass through autograd's boxed fallback
// and the fallthrough view/backend-select keys to the CPU kernel; skipping it saves about 0.6 us
// per call on a small CPU. A tensor subclass, a TorchDispatchMode, vmap, autocast, a CUDA or meta
// tensor each add a key, and such a call goes through the dispatcher as before, so modes and
// transforms still see sasa::_compiled_*.
c10::DispatchKeySet tensor_keys(const at::Tensor& t) { return t.key_set(); }
c10::DispatchKeySet tensor_keys(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->key_set() : c10::DispatchKeySet();
}

template <class... Ts>
bool direct_cpu(const Ts&... tensors) {
  static const c10::DispatchKeySet allowed({c10::DispatchKey::CPU, c10::DispatchKey::AutogradCPU,
                                            c10::DispatchKey::ADInplaceOrView, c10::DispatchKey::BackendSelect});
  const c10::impl::LocalDispatchKeySet tls = c10::impl::tls_local_dispatch_key_set();
  const c10::DispatchKeySet visited = ((tensor_keys(tensors) | ...) | tls.included_) - tls.excluded_;
  if (!visited.has(c10::DispatchKey::CPU)) return false;
  for (const c10::DispatchKey key : visited) {
    if (!allowed.has(key)) return false;
  }
  return true;
}

// x [N, d] as it is, x [..., d] as an [N, d] view.
at::Tensor as_rows(const at::Tensor& x) { return x.dim() == 2 ? x : x.view({-1, x.size(-1)}); }

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

// hs and hf are rows sasa_kernels' validator accepts without question: same shape with d >= 1,
// the same kernel dtype, and no gradient to record (see project_if_plain in entry.h).
bool plain_rows(const at::Tensor& hs, const at::Tensor& hf) {
  const int64_t dim = hs.dim();
  return dim >= 1 && hs.size(dim - 1) >= 1 && hs.sizes() == hf.sizes() && is_kernel_dtype(hs.scalar_type()) &&
         hf.scalar_type() == hs.scalar_type() &&
         !(at::GradMode::is_enabled() && (hs.requires_grad() || hf.requires_grad()));
}

// The outputs (fresh unless given), computed straight by the CPU kernel when `direct`, else
// through the dispatcher.
at::Tensor run_project(bool direct, const at::Tensor& hs, const at::Tensor& hf, double a, double b, double eps,
                       const std::optional<at::Tensor>& out) {
  static const auto op = find<ProjectFn>("sasa::_compiled_project");
  at::Tensor o = output_like(hs, out);
  if (hs.numel() == 0) return o;
  if (direct) cpu::project_cpu(rows(hs), rows(hf), as_rows(o), a, b, eps);
  else op.call(rows(hs), rows(hf), as_rows(o), a, b, eps);
  return o;
}

std::tuple<at::Tensor, at::Tensor> run_project_rmsnorm(bool direct, const at::Tensor& hs, const at::Tensor& hf,
                                                       const at::Tensor& norm_weight, double a, double b,
                                                       double eps, double norm_eps, double weight_offset,
                                                       const std::optional<at::Tensor>& out,
                                                       const std::optional<at::Tensor>& out_normed) {
  static const auto op = find<ProjectRmsnormFn>("sasa::_compiled_project_rmsnorm");
  at::Tensor o = output_like(hs, out), on = output_like(hs, out_normed);
  if (hs.numel() == 0) return {o, on};
  if (direct) {
    cpu::project_rmsnorm_cpu(rows(hs), rows(hf), norm_weight, as_rows(o), as_rows(on), a, b, eps, norm_eps,
                             weight_offset);
  } else {
    op.call(rows(hs), rows(hf), norm_weight, as_rows(o), as_rows(on), a, b, eps, norm_eps, weight_offset);
  }
  return {o, on};
}

}  // namespace

std::optional<at::Tensor> project_if_plain(const at::Tensor& hs, const at::Tensor& hf, double a, double b,
                                           double eps, const std::optional<at::Tensor>& out) {
  if (!direct_cpu(hs, hf, out) || !plain_rows(hs, hf)) return std::nullopt;
  return run_project(true, hs, hf, a, b, eps, out);
}

std::optional<std::tuple<at::Tensor, at::Tensor>> project_rmsnorm_if_plain(
    const at::Tensor& hs, const at::Tensor& hf, const at::Tensor& norm_weight, double a, double b, double eps,
    double norm_eps, double weight_offset, const std::optional<at::Tensor>& out,
    const std::optional<at::Tensor>& out_normed) {
  if (!direct_cpu(hs, hf, norm_weight, out, out_normed) || !plain_rows(hs, hf) || norm_weight.dim() != 1 ||
      norm_weight.size(0) != hs.size(-1) || norm_weight.scalar_type() != hs.scalar_type() ||
      (at::GradMode::is_enabled() && norm_weight.requires_grad())) {
    return std::nullopt;
  }
  return run_project_rmsnorm(true, hs, hf, norm_weight, a, b, eps, norm_eps, weight_offset, out, out_normed);
}

at::Tensor project(const at::Tensor& hs, const at::Tensor& hf, double a, double b, double eps,
                   const std::optional<at::Tensor>& out) {
  return run_project(direct_cpu(hs, hf, out), hs, hf, a, b, eps, out);
}

std::tuple<at::Tensor, at::Tensor> project_rmsnorm(const at::Tensor& hs, const at::Tensor& hf,
                                                   const at::Tensor& norm_weight, double a, double b,
                                                   double eps, double norm_eps, double weight_offset,
                                                   const std::optional<at::Tensor>& out,
                                                   const std::optional<at::Tensor>& out_normed) {
  return run_project_rmsnorm(direct_cpu(hs, hf, norm_weight, out, out_normed), hs, hf, norm_weight, a, b, eps,
                             norm_eps, weight_offset, out, out_normed);
}

at::Tensor probe(const at::Tensor& hidden, const std::optional<at::Tensor>& positions,
                 const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                 const std::optional<at::Tensor>& norm_weight, double norm_eps, double weight_offset,
                 bool sigmoid, const std::optional<at::Tensor>& out) {
  static const auto op = find<ProbeFn>("sasa::_compiled_probe");
  const bool direct = direct_cpu(hidden, positions, weight, bias, norm_weight, out);
  at::Tensor o = out.has_value() ? *out
                                 : at::empty({hidden.size(0), weight.size(0)}, hidden.options().dtype(at::kFloat));
  if (hidden.size(0) != 0) {
    const at::Tensor h3 = positions.has_value() ? hidden : hidden.unsqueeze(1);
    if (direct) {
      cpu::probe_cpu(unit_last_stride(h3), positions, unit_last_stride(weight), bias, norm_weight, o, norm_eps,
                     weight_offset, sigmoid);
    } else {
      op.call(unit_last_stride(h3), positions, unit_last_stride(weight), bias, norm_weight, o, norm_eps,
              weight_offset, sigmoid);
    }
  }
  return o;
}

}  // namespace entry
}  // namespace sasa
