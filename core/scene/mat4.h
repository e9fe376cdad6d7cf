#pragma once
// Mat4: the 4x4 double-precision matrix that the glTF loader composes node transforms with and
// that scene edits (core/scene/scene_edit.h) move nodes with. Column-major, as glTF stores
// them: m[col * 4 + row]. Host only.
//
// Vertices are transformed in double and rounded to float once, so the loader and an edit
// that reproduces a loader's world matrix give the same bits.

#include <array>
#include <cmath>
#include <optional>

#include "core/kernel/math.h"

namespace pl {

struct Mat4 {
  std::array<double, 16> m;  // m[col * 4 + row]

  static Mat4 identity() {
    Mat4 r{};
    r.m[0] = r.m[5] = r.m[10] = r.m[15] = 1.0;
    return r;
  }
  static Mat4 fromColumnMajor(const std::array<double, 16>& values) { return Mat4{values}; }

  double at(int row, int col) const { return m[col * 4 + row]; }
  bool operator==(const Mat4& b) const { return m == b.m; }
  bool operator!=(const Mat4& b) const { return m != b.m; }

  Mat4 operator*(const Mat4& b) const {
    Mat4 r{};
    for (int c = 0; c < 4; ++c)
      for (int rr = 0; rr < 4; ++rr) {
        double s = 0;
        for (int k = 0; k < 4; ++k) s += at(rr, k) * b.at(k, c);
        r.m[c * 4 + rr] = s;
      }
    return r;
  }
  // Affine point transform (the bottom row is ignored), rounded to float once.
  kernel::Vec3f point(kernel::Vec3f p) const {
    return {float(at(0, 0) * p.x + at(0, 1) * p.y + at(0, 2) * p.z + at(0, 3)),
            float(at(1, 0) * p.x + at(1, 1) * p.y + at(1, 2) * p.z + at(1, 3)),
            float(at(2, 0) * p.x + at(2, 1) * p.y + at(2, 2) * p.z + at(2, 3))};
  }
  // The upper 3x3 applied to a direction, rounded to float once.
  kernel::Vec3f vector(kernel::Vec3f v) const {
    return {float(at(0, 0) * v.x + at(0, 1) * v.y + at(0, 2) * v.z),
            float(at(1, 0) * v.x + at(1, 1) * v.y + at(1, 2) * v.z),
            float(at(2, 0) * v.x + at(2, 1) * v.y + at(2, 2) * v.z)};
  }
  double det3() const {
    return at(0, 0) * (at(1, 1) * at(2, 2) - at(1, 2) * at(2, 1)) -
           at(0, 1) * (at(1, 0) * at(2, 2) - at(1, 2) * at(2, 0)) +
           at(0, 2) * (at(1, 0) * at(2, 1) - at(1, 1) * at(2, 0));
  }
  // Inverse transpose of the upper 3x3 (cofactor matrix; the 1/det scale does not matter
  // for normals, but its sign does).
  Mat4 normalMatrix() const {
    Mat4 r = identity();
    auto a = [this](int i, int j) { return at(i, j); };
    double cof[3][3] = {
        {a(1, 1) * a(2, 2) - a(1, 2) * a(2, 1), a(1, 2) * a(2, 0) - a(1, 0) * a(2, 2),
         a(1, 0) * a(2, 1) - a(1, 1) * a(2, 0)},
        {a(0, 2) * a(2, 1) - a(0, 1) * a(2, 2), a(0, 0) * a(2, 2) - a(0, 2) * a(2, 0),
         a(0, 1) * a(2, 0) - a(0, 0) * a(2, 1)},
        {a(0, 1) * a(1, 2) - a(0, 2) * a(1, 1), a(0, 2) * a(1, 0) - a(0, 0) * a(1, 2),
         a(0, 0) * a(1, 1) - a(0, 1) * a(1, 0)}};
    double s = det3() < 0 ? -1.0 : 1.0;
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j) r.m[j * 4 + i] = cof[i][j] * s;
    return r;
  }
  // The inverse of the affine transform (upper 3x3 and translation; the bottom row is taken
  // as 0 0 0 1). nullopt when the 3x3 is singular or the result is not finite.
  std::optional<Mat4> affineInverse() const {
    const double det = det3();
    if (!(det != 0.0) || !std::isfinite(det)) return std::nullopt;
    auto a = [this](int i, int j) { return at(i, j); };
    Mat4 r = identity();
    // inverse = adjugate / det; adjugate = transpose of the cofactor matrix.
    const double inv = 1.0 / det;
    r.m[0 * 4 + 0] = (a(1, 1) * a(2, 2) - a(1, 2) * a(2, 1)) * inv;
    r.m[1 * 4 + 0] = (a(0, 2) * a(2, 1) - a(0, 1) * a(2, 2)) * inv;
    r.m[2 * 4 + 0] = (a(0, 1) * a(1, 2) - a(0, 2) * a(1, 1)) * inv;
    r.m[0 * 4 + 1] = (a(1, 2) * a(2, 0) - a(1, 0) * a(2, 2)) * inv;
    r.m[1 * 4 + 1] = (a(0, 0) * a(2, 2) - a(0, 2) * a(2, 0)) * inv;
    r.m[2 * 4 + 1] = (a(0, 2) * a(1, 0) - a(0, 0) * a(1, 2)) * inv;
    r.m[0 * 4 + 2] = (a(1, 0) * a(2, 1) - a(1, 1) * a(2, 0)) * inv;
    r.m[1 * 4 + 2] = (a(0, 1) * a(2, 0) - a(0, 0) * a(2, 1)) * inv;
    r.m[2 * 4 + 2] = (a(0, 0) * a(1, 1) - a(0, 1) * a(1, 0)) * inv;
    for (int row = 0; row < 3; ++row)
      r.m[12 + row] = -(r.at(row, 0) * a(0, 3) + r.at(row, 1) * a(1, 3) + r.at(row, 2) * a(2, 3));
    for (double v : r.m)
      if (!std::isfinite(v)) return std::nullopt;
    return r;
  }
};

}  // namespace pl
