#pragma once
// The determinism contract in integration tests: two EXR renders must be bitwise identical.

#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "core/render/image_io.h"

namespace pl::testing {

// Expects the EXR images at `gotPath` and `wantPath` to have the same size and bitwise the same
// floats; `what` names them in the failure message. Reads with core/render/image_io.h.
inline void expectSameExr(const std::string& gotPath, const std::string& wantPath,
                          const std::string& what) {
  Result<ImageRgb> got = readExr(gotPath);
  Result<ImageRgb> want = readExr(wantPath);
  ASSERT_TRUE(got.ok()) << got.error().message;
  ASSERT_TRUE(want.ok()) << want.error().message;
  ASSERT_EQ(got->width, want->width) << what;
  ASSERT_EQ(got->height, want->height) << what;
  ASSERT_EQ(got->rgb.size(), want->rgb.size()) << what;
  size_t differing = 0;
  for (size_t i = 0; i < got->rgb.size(); ++i)
    differing += std::memcmp(&got->rgb[i], &want->rgb[i], sizeof(float)) != 0;
  EXPECT_EQ(differing, 0u) << "of " << got->rgb.size() << " floats, " << what;
}

}  // namespace pl::testing
