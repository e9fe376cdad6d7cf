#include "core/render/render_kernel.h"

#include "render_kernel_id.h"  // generated in the build tree (core/render/CMakeLists.txt)

namespace pl {

const char* renderKernelId() { return PEERLIGHT_RENDER_KERNEL_ID; }

}  // namespace pl
