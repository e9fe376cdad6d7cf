#pragma once
// Minimal leveled logging to stderr. The level is process-wide but set only by apps/ at
// start-up (setLogLevel); libraries only call log().

#include <cstdarg>
#include <string>
#include <string_view>

namespace pl {

enum class LogLevel { Debug = 0, Info = 1, Warn = 2, Error = 3, Off = 4 };

void setLogLevel(LogLevel level);
LogLevel logLevel();
// One line on stderr (at most 4 KiB), with control characters (terminal escapes) replaced.
void log(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
// `text` with every control character but newline and tab (ESC, CR, BEL, DEL...) replaced by
// '?': for names from the network printed on a terminal.
std::string printable(std::string_view text);

#define PL_LOG_INFO(...) ::pl::log(::pl::LogLevel::Info, __VA_ARGS__)
#define PL_LOG_WARN(...) ::pl::log(::pl::LogLevel::Warn, __VA_ARGS__)
#define PL_LOG_ERROR(...) ::pl::log(::pl::LogLevel::Error, __VA_ARGS__)
#define PL_LOG_DEBUG(...) ::pl::log(::pl::LogLevel::Debug, __VA_ARGS__)

}  // namespace pl
