#include "apps/peerlight/cli_util.h"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "core/scene/compile.h"

namespace pl::app {

void fail(const std::string& message, int code) {
  std::fprintf(stderr, "peerlight: error: %s\n", message.c_str());
  throw CLI::RuntimeError(code);
}

void failUsage(const std::string& message) { fail(message, 2); }

namespace {
// Parses the whole of text as a number; false on junk or overflow.
bool parseFloat(const std::string& text, float* out) {
  if (text.empty()) return false;
  char* end = nullptr;
  float v = std::strtof(text.c_str(), &end);
  if (end != text.c_str() + text.size() || !std::isfinite(v)) return false;
  *out = v;
  return true;
}
bool parseDimension(const std::string& text, uint32_t* out) {
  if (text.empty() || text.size() > 6) return false;
  for (char c : text)
    if (c < '0' || c > '9') return false;
  unsigned long v = std::strtoul(text.c_str(), nullptr, 10);
  if (v < 1 || v > kMaxImageDimension) return false;
  *out = uint32_t(v);
  return true;
}
}  // namespace

Status parseSize(const std::string& text, uint32_t* width, uint32_t* height) {
  size_t x = text.find_first_of("xX");
  if (x == std::string::npos || !parseDimension(text.substr(0, x), width) ||
      !parseDimension(text.substr(x + 1), height))
    return Error{"--size " + text + ": expected WxH with both between 1 and " +
                 std::to_string(kMaxImageDimension)};
  return Status();
}

Result<Rect> parseRegion(const std::string& text, uint32_t width, uint32_t height) {
  uint32_t v[4] = {0, 0, 0, 0};
  size_t at = 0;
  for (int i = 0; i < 4; ++i) {
    const size_t comma = i < 3 ? text.find(',', at) : text.size();
    const std::string field = comma == std::string::npos ? "" : text.substr(at, comma - at);
    // X and Y may be 0; W and H at least 1 (parseDimension's range). A fourth field with a
    // comma in it (more than four) fails parseDimension.
    const bool zero = i < 2 && !field.empty() && field.size() <= 6 &&
                      field.find_first_not_of('0') == std::string::npos;
    if (!zero && !parseDimension(field, &v[i]))
      return Error{"--region " + text + ": expected X,Y,W,H in pixels from the top-left corner"};
    at = comma + 1;
  }
  const Rect r{v[0], v[1], v[2], v[3]};
  if (uint64_t(r.x) + r.width > width || uint64_t(r.y) + r.height > height)
    return Error{"--region " + text + ": outside the " + std::to_string(width) + "x" +
                 std::to_string(height) + " image"};
  return r;
}

Result<uint32_t> parsePasses(const std::string& text) {
  uint32_t passes = 0;
  size_t at = 0;
  while (at <= text.size()) {
    const size_t comma = std::min(text.find(',', at), text.size());
    const std::string name = text.substr(at, comma - at);
    if (name == "albedo")
      passes |= kernel::kPassAlbedo;
    else if (name == "normal")
      passes |= kernel::kPassNormal;
    else if (name == "depth")
      passes |= kernel::kPassDepth;
    else
      return Error{"--passes " + text + ": unknown pass '" + name +
                   "' (use albedo, normal, depth, comma-separated)"};
    at = comma + 1;
  }
  return passes;
}

Status parseEnv(const std::string& text, CompileOptions* options) {
  if (text.find(',') == std::string::npos) {
    options->envFile = text;
    return Status();
  }
  float c[3];
  size_t begin = 0;
  for (int i = 0; i < 3; ++i) {
    size_t end = i < 2 ? text.find(',', begin) : text.size();
    if (end == std::string::npos || !parseFloat(text.substr(begin, end - begin), &c[i]) ||
        c[i] < 0.0f)
      return Error{"--env " + text + ": expected a file or R,G,B with three numbers >= 0"};
    begin = end + 1;
  }
  options->envColor = kernel::Vec3f{c[0], c[1], c[2]};
  return Status();
}

std::string formatCount(double n) {
  char buf[32];
  if (n >= 1e9) std::snprintf(buf, sizeof buf, "%.2fG", n / 1e9);
  else if (n >= 1e6) std::snprintf(buf, sizeof buf, "%.2fM", n / 1e6);
  else if (n >= 1e3) std::snprintf(buf, sizeof buf, "%.1fk", n / 1e3);
  else std::snprintf(buf, sizeof buf, "%.0f", n);
  return buf;
}

std::string formatSeconds(double s) {
  char buf[32];
  if (s < 60) std::snprintf(buf, sizeof buf, s < 10 ? "%.2f s" : "%.1f s", s);
  else if (s < 3600) std::snprintf(buf, sizeof buf, "%dm%02ds", int(s) / 60, int(s) % 60);
  else std::snprintf(buf, sizeof buf, "%dh%02dm", int(s) / 3600, (int(s) / 60) % 60);
  return buf;
}

std::string formatBytes(uint64_t n) {
  char buf[32];
  if (n >= (uint64_t(1) << 30)) std::snprintf(buf, sizeof buf, "%.2f GiB", double(n) / (1 << 30));
  else if (n >= (1u << 20)) std::snprintf(buf, sizeof buf, "%.1f MiB", double(n) / (1 << 20));
  else if (n >= 1024) std::snprintf(buf, sizeof buf, "%.1f KiB", double(n) / 1024);
  else std::snprintf(buf, sizeof buf, "%llu B", (unsigned long long)n);
  return buf;
}

}  // namespace pl::app
