#pragma once
// The identity of the code that computes pixels in this build: 16 hex digits of a SHA-256 over
// the shared kernel (core/kernel), the devices (core/render, gpu), the render data's layout, and
// the Embree and compiler versions (cmake/render_kernel_id.cmake). Two builds with the same
// identity compute the same bits on CPU nodes (docs/DESIGN.md section 4); a Primary uses only
// nodes whose identity equals its own (Node.info), so a node on another build never puts
// different pixels into its image. `peerlight version` prints it.

#include <string>

namespace pl {

const char* renderKernelId();

// Whether a node that names `theirs` (Node.info, or its mDNS advert) may render into our image:
// "" when it is ours, else why not, e.g. "renders with another build of peerlight (render
// kernel 0123..., ours 4567...)"; an empty one is an older build's, which names none. The text
// may come from the network: at most 32 of its characters are quoted, letters and digits only
// (others as '?').
std::string renderKernelMismatch(const std::string& theirs);

}  // namespace pl
