// The render kernel identity (core/render/render_kernel.h): its form, and the reasons a node of
// another build is refused with (text that may come from the network is quoted safely).

#include "core/render/render_kernel.h"

#include <gtest/gtest.h>

#include <string>

namespace pl {
namespace {

TEST(RenderKernelTest, IdIsSixteenHexDigits) {
  const std::string id = renderKernelId();
  ASSERT_EQ(id.size(), 16u);
  for (char c : id) EXPECT_TRUE((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')) << id;
}

TEST(RenderKernelTest, MismatchNamesBothAndQuotesOnlyLettersAndDigits) {
  const std::string ours = renderKernelId();
  EXPECT_EQ(renderKernelMismatch(ours), "");
  EXPECT_EQ(renderKernelMismatch("0123456789abcdef"),
            "renders with another build of peerlight (render kernel 0123456789abcdef, ours " +
                ours + ")");
  EXPECT_EQ(renderKernelMismatch(""),
            "renders with an older build of peerlight (no render kernel named; ours " + ours +
                ")");
  // Bytes that are not letters or digits (invalid UTF-8 here) become '?'; at most 32 quoted.
  EXPECT_EQ(renderKernelMismatch("ab\xff\xfe\"c" + std::string(100, 'd')),
            "renders with another build of peerlight (render kernel ab???c" +
                std::string(26, 'd') + ", ours " + ours + ")");
}

}  // namespace
}  // namespace pl
