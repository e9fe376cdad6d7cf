#pragma once
// Small helpers shared by the peerlight subcommands: argument parsing, error exits, and
// human-readable numbers.

#include <cstdint>
#include <string>

#include "core/render/work_unit.h"
#include "core/util/status.h"

namespace pl {
struct CompileOptions;
}

namespace pl::app {

// Prints "peerlight: error: <message>" on stderr and ends the subcommand with exit status
// `code` (by throwing CLI::RuntimeError, which main() turns into the exit status).
[[noreturn]] void fail(const std::string& message, int code);
// fail() with status 2: the user's input (arguments, scene file) is wrong.
[[noreturn]] void failUsage(const std::string& message);

// "WxH", both 1 .. kMaxImageDimension.
Status parseSize(const std::string& text, uint32_t* width, uint32_t* height);
// "R,G,B" (finite, >= 0) sets options->envColor; anything else is an environment map file.
Status parseEnv(const std::string& text, CompileOptions* options);
// "albedo,normal,depth" (any of them, comma-separated) as kernel::FilmPass bits.
Result<uint32_t> parsePasses(const std::string& text);
// "X,Y,W,H" (pixels, from the top-left corner): a render border within a width x height image.
Result<Rect> parseRegion(const std::string& text, uint32_t width, uint32_t height);

std::string formatCount(double n);      // 950, 12.3k, 4.56M, 1.23G
std::string formatSeconds(double s);    // 0.42 s, 12.3 s, 3m05s
std::string formatBytes(uint64_t n);    // 512 B, 1.2 KiB, 3.4 MiB

}  // namespace pl::app
