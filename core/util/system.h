#pragma once
// Facts about this machine.

#include <unistd.h>

#include <cstdint>

namespace pl {

// Physical memory in bytes; 0 when the system does not say.
inline uint64_t physicalMemoryBytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), pageSize = ::sysconf(_SC_PAGE_SIZE);
  if (pages <= 0 || pageSize <= 0) return 0;
  return uint64_t(pages) * uint64_t(pageSize);
}

}  // namespace pl
