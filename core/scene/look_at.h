#pragma once
// LookAt: a perspective camera given by where it is and what it looks at. One value for the
// CLI's --look-at flag, for render-session camera edits and for a DCC's camera matrix (a
// Blender add-on sends the camera's world matrix).
//
// lookAtCamera() is the only conversion to kernel::Camera: compile() uses it for
// CompileOptions::lookAt, and compileCamera() (compile.h) gives a session the same bits
// without recompiling the scene.

#include <array>
#include <cstdint>
#include <string>

#include "core/kernel/types.h"
#include "core/util/status.h"

namespace pl {

struct LookAt {
  kernel::Vec3f eye{0, 0, 0};
  kernel::Vec3f target{0, 0, -1};
  kernel::Vec3f up{0, 1, 0};  // need not be unit or orthogonal to the view, only not parallel
  // Full vertical field of view. 0: keep the chosen scene camera's, or 40 degrees when that
  // camera is orthographic or the scene has none (the fallback argument of lookAtCamera()).
  float yfovDegrees = 0.0f;
};

// Checks that lookAtCamera() can build a camera from it: eye, target and up finite, eye !=
// target, up neither zero nor parallel to target - eye, yfovDegrees 0 or in (0, 180). The
// error names the field, e.g. "up (0, 2, 0) is parallel to the view direction (0, 1, 0)"
// (no prefix: callers add "look-at: " or the flag's name).
Status validateLookAt(const LookAt& lookAt);

// The camera: position = eye, forward = normalize(target - eye), right =
// normalize(cross(forward, up)), up = cross(right, forward); tanHalfFovY =
// tan(radians(yfovDegrees) / 2), or fallbackTanHalfFovY when yfovDegrees is 0. width and
// height must be in 1..kMaxImageDimension, fallbackTanHalfFovY finite and > 0.
Result<kernel::Camera> lookAtCamera(const LookAt& lookAt, uint32_t width, uint32_t height,
                                    float fallbackTanHalfFovY);

// Parses the CLI flag value "EX,EY,EZ,TX,TY,TZ[,UX,UY,UZ]": 6 or 9 comma-separated finite
// numbers (spaces around them allowed; up defaults to +Y, yfovDegrees to 0), and validates
// the result. Errors start with "--look-at: " and say which value is wrong and why.
Result<LookAt> parseLookAt(const std::string& text);

// The look-at of a camera whose camera-to-world matrix (column-major, affine) is given: the
// camera looks down its local -Z with +Y up, as in glTF (and Blender). eye = the
// translation, the view direction = -(third column), up = the second column; scale and shear
// only change lengths, not directions. yfovDegrees is 0 (the caller sets it). Errors start
// with "camera matrix: ".
Result<LookAt> lookAtFromMatrix(const std::array<float, 16>& columnMajorCameraToWorld);

}  // namespace pl
