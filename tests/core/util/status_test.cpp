#include "core/util/status.h"

#include <gtest/gtest.h>

namespace pl {
namespace {

Result<int> parsePositive(int v) {
  if (v <= 0) return Error{"value " + std::to_string(v) + " is not positive"};
  return v;
}

TEST(Result, HoldsValueOrError) {
  auto good = parsePositive(3);
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(*good, 3);
  auto bad = parsePositive(-1);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message, "value -1 is not positive");
  Status s = Error{"x"};
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(Status().ok());
}

}  // namespace
}  // namespace pl
