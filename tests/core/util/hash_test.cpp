#include "core/util/hash.h"

#include <gtest/gtest.h>

namespace pl {
namespace {

TEST(Hash128, SameBytesSameHashDifferentBytesDifferentHash) {
  const char a[] = "peerlight";
  const char b[] = "peerlighT";
  EXPECT_EQ(hash128(a, sizeof a), hash128(a, sizeof a));
  EXPECT_FALSE(hash128(a, sizeof a) == hash128(b, sizeof b));
  EXPECT_EQ(hash128(a, 0).hex().size(), 32u);
}

}  // namespace
}  // namespace pl
