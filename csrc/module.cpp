// The Python module sasa_kernels._C: loading it registers the compiled ops (static initializers in
// ops.cpp, cpu/kernels.cpp and, when built, cuda/kernels.cu); build_info() says what was built;
// project / project_rmsnorm / probe are the direct entry points of csrc/entry.h.
#include <pybind11/pybind11.h>
#include <torch/csrc/utils/pybind.h>  // at::Tensor and std::optional casters

#include <string>

#include "cpu/kernels.h"
#include "entry.h"

// setup.py and CMakeLists.txt generate this header (SASA_TORCH_VERSION, SASA_BUILD_SYSTEM).
#if __has_include("sasa_build_config.h")
#include "sasa_build_config.h"
#endif

#ifndef SASA_TORCH_VERSION
#include <torch/version.h>
#define SASA_TORCH_VERSION TORCH_VERSION
#endif
#ifndef SASA_BUILD_SYSTEM
#define SASA_BUILD_SYSTEM "unknown"
#endif

#define SASA_STR2(x) #x
#define SASA_STR(x) SASA_STR2(x)

// The torch version this extension was compiled against, findable in the file's bytes without
// loading it: sasa_kernels.backends.compiled reads it before importing, so an extension built for
// another torch is skipped with a warning instead of being loaded (which could crash).
#if defined(__GNUC__) || defined(__clang__)
#define SASA_KEEP __attribute__((used, visibility("default")))
#else
#define SASA_KEEP
#endif
extern "C" SASA_KEEP const char sasa_built_with_torch[] =
    "SASA_BUILT_WITH_TORCH=" SASA_TORCH_VERSION "\n";

#ifdef SASA_WITH_CUDA
namespace sasa {
namespace cuda {
// Defined in cuda/kernels.cu (compiled by nvcc, which knows the runtime version and archs).
int build_cuda_runtime_version();
const char* build_cuda_archs();
}  // namespace cuda
}  // namespace sasa
#endif

namespace py = pybind11;

namespace {

std::string compiler() {
#if defined(__clang__)
  return std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  return std::string("gcc ") + __VERSION__;
#elif defined(_MSC_VER)
  return std::string("msvc ") + SASA_STR(_MSC_VER);
#else
  return "unknown";
#endif
}

py::dict build_info() {
  py::dict info;
  py::list backends;
  backends.append("cpp");
#ifdef SASA_WITH_CUDA
  backends.append("cuda");
  const int v = sasa::cuda::build_cuda_runtime_version();
  info["cuda_version"] = std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
  info["cuda_archs"] = std::string(sasa::cuda::build_cuda_archs());
#else
  info["cuda_version"] = py::none();
  info["cuda_archs"] = py::none();
#endif
  info["backends"] = backends;
  info["compiler"] = compiler();
  info["torch_version"] = std::string(SASA_TORCH_VERSION);
  info["build_system"] = std::string(SASA_BUILD_SYSTEM);
  info["cpu_capability"] = std::string(sasa::cpu::capability_name());
  return info;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "sasa_kernels compiled kernels (C++ CPU and, when built, CUDA); see build_info().";
  m.def("build_info", &build_info,
        "What this extension was built with: backends (list of names), compiler, cuda_version, "
        "cuda_archs, torch_version (the torch it was compiled against), build_system, "
        "cpu_capability (the instruction set the CPU kernels run with).");
  // Direct entry points of sasa::_compiled_* (csrc/entry.h), used by the compiled backends.
  m.def("project", &sasa::entry::project, "sasa::_compiled_project on [..., d] rows; returns out",
        py::arg("hs"), py::arg("hf"), py::arg("a"), py::arg("b"), py::arg("eps"), py::arg("out") = py::none());
  m.def("project_rmsnorm", &sasa::entry::project_rmsnorm,
        "sasa::_compiled_project_rmsnorm on [..., d] rows; returns (out, out_normed)", py::arg("hs"),
        py::arg("hf"), py::arg("norm_weight"), py::arg("a"), py::arg("b"), py::arg("eps"), py::arg("norm_eps"),
        py::arg("weight_offset"), py::arg("out") = py::none(), py::arg("out_normed") = py::none());
  m.def("project_if_plain", &sasa::entry::project_if_plain,
        "project() for plain CPU rows the validator accepts as they are; None otherwise (entry.h)", py::arg("hs"),
        py::arg("hf"), py::arg("a"), py::arg("b"), py::arg("eps"), py::arg("out") = py::none());
  m.def("project_rmsnorm_if_plain", &sasa::entry::project_rmsnorm_if_plain,
        "project_rmsnorm() for plain CPU rows the validator accepts as they are; None otherwise (entry.h)",
        py::arg("hs"), py::arg("hf"), py::arg("norm_weight"), py::arg("a"), py::arg("b"), py::arg("eps"),
        py::arg("norm_eps"), py::arg("weight_offset"), py::arg("out") = py::none(),
        py::arg("out_normed") = py::none());
  m.def("probe", &sasa::entry::probe,
        "sasa::_compiled_probe; hidden [B, T, d], or [B, d] without positions; returns out [B, C]",
        py::arg("hidden"), py::arg("positions"), py::arg("weight"), py::arg("bias"), py::arg("norm_weight"),
        py::arg("norm_eps"), py::arg("weight_offset"), py::arg("sigmoid"), py::arg("out") = py::none());
}
