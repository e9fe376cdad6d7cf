#pragma once
// Camera rays. Raster coordinates: (0, 0) is the top-left corner of the image, x grows to the
// right and y downwards, one unit per pixel; pixel (px, py) covers [px, px+1) x [py, py+1)
// (a 1-pixel box filter: the integrator jitters (u, v) uniformly in [0, 1)^2).

#include "core/kernel/types.h"

namespace pl::kernel {

// The primary ray through raster position (rasterX, rasterY). Perspective cameras have their
// origin at camera.position and a vertical field of view of 2 atan(tanHalfFovY); orthographic
// ones look along camera.forward from a (2 orthoHalfHeight * aspect) x (2 orthoHalfHeight)
// window centred on camera.position. aspect = width / height.
PL_HOST_DEVICE PL_INLINE Ray generateCameraRay(const Camera& camera, float rasterX,
                                               float rasterY) {
  const float width = static_cast<float>(camera.width);
  const float height = static_cast<float>(camera.height);
  const float aspect = width / height;
  // Screen coordinates in [-1, 1], +y up.
  const float sx = 2.0f * rasterX / width - 1.0f;
  const float sy = 1.0f - 2.0f * rasterY / height;
  Ray ray;
  if (camera.type == kCameraOrthographic) {
    const float halfH = camera.orthoHalfHeight;
    ray.origin = camera.position + camera.right * (sx * halfH * aspect) + camera.up * (sy * halfH);
    ray.direction = camera.forward;
  } else {
    const float t = camera.tanHalfFovY;
    ray.origin = camera.position;
    ray.direction =
        normalize(camera.forward + camera.right * (sx * t * aspect) + camera.up * (sy * t));
  }
  return ray;
}

}  // namespace pl::kernel
