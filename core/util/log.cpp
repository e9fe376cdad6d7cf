#include "core/util/log.h"

#include <sys/time.h>

#include <atomic>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <string>

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
  char buffer[4096];
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(buffer, sizeof buffer, fmt, args);
  va_end(args);
  // Names from the network (mDNS adverts, Primaries, sockets) cannot reach the terminal raw.
  // At debug level every line carries the time of day to the millisecond, so that the lines of
  // a Primary, a daemon and its workers can be put side by side.
  if (logLevel() == LogLevel::Debug) {
    timeval now{};
    gettimeofday(&now, nullptr);
    tm local{};
    localtime_r(&now.tv_sec, &local);
    std::fprintf(stderr, "peerlight: %02d:%02d:%02d.%03ld %s: %s\n", local.tm_hour, local.tm_min,
                 local.tm_sec, static_cast<long>(now.tv_usec / 1000), levelName(level),
                 printable(buffer).c_str());
    return;
  }
  std::fprintf(stderr, "peerlight: %s: %s\n", levelName(level), printable(buffer).c_str());
}

std::string printable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    const unsigned char u = static_cast<unsigned char>(c);
    out += (u < 0x20 && c != '\n' && c != '\t') || u == 0x7f ? '?' : c;
  }
  return out;
}

}  // namespace pl
