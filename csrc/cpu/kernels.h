// What the CPU kernels tell the rest of the extension (module.cpp's build_info()).
#pragma once

namespace sasa {
namespace cpu {

// The instruction set the CPU row kernels run with: "avx512", "avx2" or "portable".
const char* capability_name();

}  // namespace cpu
}  // namespace sasa
