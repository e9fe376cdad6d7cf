#include "core/util/log.h"

#include <atomic>
#include <cstdio>
#include <mutex>

namespace pl {
namespace {
std::atomic<int> gLevel{static_cast<int>(LogLevel::Info)};
std::mutex gMutex;
const char* levelName(LogLevel level) {
  switch (level) {
    case LogLevel::Debug: return "debug";
    case LogLevel::Info: return "info";
    case LogLevel::Warn: return "warning";
    case LogLevel::Error: return "error";
    default: return "";
  }
}
}  // namespace

void setLogLevel(LogLevel level) { gLevel = static_cast<int>(level); }
LogLevel logLevel() { return static_cast<LogLevel>(gLevel.load()); }

void log(LogLevel level, const char* fmt, ...) {
  if (static_cast<int>(level) < gLevel.load()) return;
  std::lock_guard<std::mutex> lock(gMutex);
  std::fprintf(stderr, "peerlight: %s: ", levelName(level));
  va_list args;
  va_start(args, fmt);
  std::vfprintf(stderr, fmt, args);
  va_end(args);
  std::fputc('\n', stderr);
}

}  // namespace pl
