#include "apps/peerlight/huge_pages.h"

#include <sys/auxv.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

namespace pl::app {

namespace {

constexpr const char* kTunable = "glibc.malloc.hugetlb=1";
// Set in the environment of the exec itself, so that the second start never execs again,
// whatever glibc left of GLIBC_TUNABLES (it strips tunables for secure-execution processes).
constexpr const char* kGuard = "PEERLIGHT_HUGE_PAGES_EXECED";

// "always [madvise] never": huge pages when a program asks (madvise), which is what the
// tunable makes malloc do. With [always] they come without asking; with [never], not at all.
bool kernelHugePagesOnRequest() {
  std::ifstream in("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string line;
  return std::getline(in, line) && line.find("[madvise]") != std::string::npos;
}

bool builtWithSanitizer() {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  return true;  // the sanitizer's allocator replaces glibc's malloc: the tunable does nothing
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
  return true;
#else
  return false;
#endif
#else
  return false;
#endif
}

}  // namespace

void preferHugePages(char** argv) {
  if (std::getenv(kGuard) != nullptr) {  // the second start
    ::unsetenv(kGuard);
    return;
  }
  const char* opt = std::getenv("PEERLIGHT_HUGE_PAGES");
  if (opt != nullptr && std::strcmp(opt, "0") == 0) return;
  if (::getauxval(AT_SECURE) != 0 || builtWithSanitizer()) return;
  const char* current = std::getenv("GLIBC_TUNABLES");
  if (current != nullptr && std::strstr(current, "glibc.malloc.hugetlb") != nullptr) return;
  if (!kernelHugePagesOnRequest()) return;
  const std::string before = current != nullptr ? current : "";
  const std::string tunables = before.empty() ? kTunable : before + ":" + kTunable;
  if (::setenv("GLIBC_TUNABLES", tunables.c_str(), 1) != 0) return;
  ::setenv(kGuard, "1", 1);
  ::execv("/proc/self/exe", argv);
  // The exec failed (no /proc, the binary replaced meanwhile): go on with small pages, and do
  // not pass on a tunable this process did not get.
  ::unsetenv(kGuard);
  if (current != nullptr)
    ::setenv("GLIBC_TUNABLES", before.c_str(), 1);
  else
    ::unsetenv("GLIBC_TUNABLES");
}

}  // namespace pl::app
