#include "apps/peerlight/huge_pages.h"

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

namespace pl::app {

namespace {

constexpr const char* kTunable = "glibc.malloc.hugetlb=1";

// "[always] madvise never" or "always [madvise] never": transparent huge pages on request.
bool kernelOffersHugePages() {
  std::ifstream in("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string line;
  return std::getline(in, line) && line.find("[never]") == std::string::npos;
}

}  // namespace

void preferHugePages(char** argv) {
  const char* opt = std::getenv("PEERLIGHT_HUGE_PAGES");
  if (opt != nullptr && std::strcmp(opt, "0") == 0) return;
  const char* current = std::getenv("GLIBC_TUNABLES");
  if (current != nullptr && std::strstr(current, "glibc.malloc.hugetlb") != nullptr) return;
  if (!kernelOffersHugePages()) return;
  const std::string tunables =
      current != nullptr && *current != '\0' ? std::string(current) + ":" + kTunable : kTunable;
  if (::setenv("GLIBC_TUNABLES", tunables.c_str(), 1) != 0) return;
  ::execv("/proc/self/exe", argv);
  // The exec failed (no /proc, the binary replaced meanwhile): go on with small pages, and do
  // not pass a tunable this process did not get on to its children.
  if (current != nullptr)
    ::setenv("GLIBC_TUNABLES", current, 1);
  else
    ::unsetenv("GLIBC_TUNABLES");
}

}  // namespace pl::app
