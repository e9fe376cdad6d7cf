#include "core/render/render_kernel.h"

#include "render_kernel_id.h"  // generated in the build tree (core/render/CMakeLists.txt)

namespace pl {

const char* renderKernelId() { return PEERLIGHT_RENDER_KERNEL_ID; }

std::string renderKernelMismatch(const std::string& theirs) {
  const std::string ours = renderKernelId();
  if (theirs == ours) return "";
  if (theirs.empty())
    return "renders with an older build of peerlight (no render kernel named; ours " + ours + ")";
  // Quoted as letters and digits only: it may come from the network, and goes into JSON.
  std::string quoted;
  for (size_t i = 0; i < theirs.size() && quoted.size() < 32; ++i) {
    const char c = theirs[i];
    const bool plain = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    quoted += plain ? c : '?';
  }
  return "renders with another build of peerlight (render kernel " + quoted + ", ours " + ours +
         ")";
}

}  // namespace pl
