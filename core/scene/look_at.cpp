// LookAt -> kernel::Camera, the --look-at flag and camera matrices.

#include "core/scene/look_at.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <system_error>
#include <vector>

#include "core/scene/render_data.h"

namespace pl {
namespace {

using kernel::Vec3f;

constexpr double kPi = 3.14159265358979323846;

std::string str(Vec3f v) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "(%g, %g, %g)", double(v.x), double(v.y), double(v.z));
  return buf;
}

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t"), b = s.find_last_not_of(" \t");
  return a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
}

}  // namespace

Status validateLookAt(const LookAt& l) {
  if (!kernel::isFinite(l.eye)) return Error{"eye " + str(l.eye) + " is not finite"};
  if (!kernel::isFinite(l.target)) return Error{"target " + str(l.target) + " is not finite"};
  if (!kernel::isFinite(l.up)) return Error{"up " + str(l.up) + " is not finite"};
  const Vec3f view = l.target - l.eye;
  if (!kernel::isFinite(view))
    return Error{"target - eye overflows (eye " + str(l.eye) + ", target " + str(l.target) + ")"};
  if (kernel::isBlack(view)) return Error{"eye and target are the same point " + str(l.eye)};
  const Vec3f forward = kernel::normalize(view);
  const float upLength = kernel::length(l.up);
  if (!(upLength > 0.0f) || !std::isfinite(upLength))
    return Error{"up " + str(l.up) +
                 " has no direction (zero, or too small or large to normalize)"};
  // sin of the angle between up and the view direction.
  const float sine = kernel::length(kernel::cross(forward, l.up)) / upLength;
  if (!(sine > 1e-5f))
    return Error{"up " + str(l.up) + " is parallel to the view direction " + str(forward)};
  if (!std::isfinite(l.yfovDegrees) || l.yfovDegrees < 0.0f ||
      (l.yfovDegrees != 0.0f && !(l.yfovDegrees < 180.0f)))
    return Error{"yfovDegrees " + std::to_string(l.yfovDegrees) +
                 " is not in (0, 180) (0 keeps the scene camera's)"};
  return Status();
}

Result<kernel::Camera> lookAtCamera(const LookAt& l, uint32_t width, uint32_t height,
                                    float fallbackTanHalfFovY) {
  if (Status s = validateLookAt(l); !s.ok()) return Error{"look-at: " + s.error().message};
  if (width == 0 || height == 0 || width > kMaxImageDimension || height > kMaxImageDimension)
    return Error{"look-at: image size " + std::to_string(width) + "x" + std::to_string(height) +
                 " is not within 1.." + std::to_string(kMaxImageDimension)};
  if (!(fallbackTanHalfFovY > 0.0f) || !std::isfinite(fallbackTanHalfFovY))
    return Error{"look-at: fallback tan(yfov / 2) " + std::to_string(fallbackTanHalfFovY) +
                 " is not finite and positive"};
  kernel::Camera cam{};
  cam.type = kernel::kCameraPerspective;
  cam.width = width;
  cam.height = height;
  cam.position = l.eye;
  // As compile() does for scene cameras.
  cam.forward = kernel::normalize(l.target - l.eye);
  cam.right = kernel::normalize(kernel::cross(cam.forward, l.up));
  cam.up = kernel::cross(cam.right, cam.forward);
  cam.tanHalfFovY = l.yfovDegrees == 0.0f
                        ? fallbackTanHalfFovY
                        : std::tan(float(double(l.yfovDegrees) * kPi / 180.0) * 0.5f);
  cam.orthoHalfHeight = 0.0f;
  if (!kernel::isFinite(cam.right) || !kernel::isFinite(cam.up) || !(kernel::length(cam.up) > 0.5f))
    return Error{"look-at: up " + str(l.up) + " gives a degenerate camera frame"};
  return cam;
}

Result<LookAt> parseLookAt(const std::string& text) {
  static const char* kNames[] = {"EX", "EY", "EZ", "TX", "TY", "TZ", "UX", "UY", "UZ"};
  const std::string usage = " (expected EX,EY,EZ,TX,TY,TZ[,UX,UY,UZ])";
  std::vector<std::string> parts;
  size_t start = 0;
  for (;;) {
    size_t comma = text.find(',', start);
    parts.push_back(text.substr(start, comma == std::string::npos ? comma : comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  if (parts.size() != 6 && parts.size() != 9)
    return Error{"--look-at: '" + text + "' has " + std::to_string(parts.size()) +
                 " comma-separated values, not 6 or 9" + usage};
  float v[9];
  for (size_t i = 0; i < parts.size(); ++i) {
    std::string p = trim(parts[i]);
    std::string where =
        "--look-at: value " + std::to_string(i + 1) + " (" + kNames[i] + ") '" + p + "'";
    const char* first = p.data();
    const char* last = p.data() + p.size();
    if (first != last && *first == '+') ++first;
    auto [end, ec] = std::from_chars(first, last, v[i]);
    if (p.empty() || ec == std::errc::invalid_argument || end != last)
      return Error{where + " is not a number" + usage};
    if (ec == std::errc::result_out_of_range) return Error{where + " is out of float range"};
    if (!std::isfinite(v[i])) return Error{where + " is not finite"};
  }
  LookAt l;
  l.eye = {v[0], v[1], v[2]};
  l.target = {v[3], v[4], v[5]};
  if (parts.size() == 9) l.up = {v[6], v[7], v[8]};
  if (Status s = validateLookAt(l); !s.ok()) return Error{"--look-at: " + s.error().message};
  return l;
}

Result<LookAt> lookAtFromMatrix(const std::array<float, 16>& m) {
  for (size_t i = 0; i < 16; ++i)
    if (!std::isfinite(m[i]))
      return Error{"camera matrix: element " + std::to_string(i) + " (column " +
                   std::to_string(i / 4) + ", row " + std::to_string(i % 4) + ") is not finite"};
  if (std::fabs(m[3]) > 1e-6f || std::fabs(m[7]) > 1e-6f || std::fabs(m[11]) > 1e-6f ||
      std::fabs(m[15] - 1.0f) > 1e-6f)
    return Error{"camera matrix: the bottom row is not 0 0 0 1 (is it row-major?)"};
  LookAt l;
  l.eye = {m[12], m[13], m[14]};
  l.up = {m[4], m[5], m[6]};
  const double fx = -double(m[8]), fy = -double(m[9]), fz = -double(m[10]);
  const double len = std::sqrt(fx * fx + fy * fy + fz * fz);
  if (!(len > 0.0) || !std::isfinite(len))
    return Error{"camera matrix: the local Z axis (third column) is zero"};
  // Far enough along the view that target - eye keeps the direction to float precision
  // wherever the eye is.
  const double far =
      std::fmax(1.0, std::fmax(std::fabs(double(l.eye.x)),
                               std::fmax(std::fabs(double(l.eye.y)), std::fabs(double(l.eye.z)))));
  l.target = {float(double(l.eye.x) + fx / len * far), float(double(l.eye.y) + fy / len * far),
              float(double(l.eye.z) + fz / len * far)};
  if (Status s = validateLookAt(l); !s.ok()) return Error{"camera matrix: " + s.error().message};
  return l;
}

}  // namespace pl
