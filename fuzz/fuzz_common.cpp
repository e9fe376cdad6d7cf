// Linked into every fuzz target: the targets feed decoders malformed input by the million, and
// each refusal would log a warning. Logging is off unless PEERLIGHT_FUZZ_VERBOSE is set.
#include <cstdlib>

#include "core/util/log.h"

namespace {

const bool kQuiet = [] {
  if (std::getenv("PEERLIGHT_FUZZ_VERBOSE") == nullptr) pl::setLogLevel(pl::LogLevel::Off);
  return true;
}();

}  // namespace
