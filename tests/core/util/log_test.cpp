// printable() (core/util/log.h): names from the network reach the terminal without control
// characters.

#include "core/util/log.h"

#include <gtest/gtest.h>

namespace pl {
namespace {

TEST(Printable, ReplacesControlCharactersButKeepsTextNewlinesTabsAndUtf8) {
  EXPECT_EQ(printable("host-1 \xc2\xb7 ok\n\tnext"), "host-1 \xc2\xb7 ok\n\tnext");
  // An escape sequence that would retitle the terminal, a carriage return, a bell, DEL.
  EXPECT_EQ(printable("evil\x1b]0;pwned\x07\rname\x7f"), "evil?]0;pwned??name?");
  EXPECT_EQ(printable(std::string("a\0b", 3)), "a?b");
}

}  // namespace
}  // namespace pl
