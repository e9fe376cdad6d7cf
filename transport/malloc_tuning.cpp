#include "transport/malloc_tuning.h"

#include <malloc.h>

namespace pl {

bool tuneMallocForBulkTransfers() {
  // 32 MiB is glibc's largest mmap threshold on 64-bit; allocations below it come from the heap.
  bool ok = mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1;
  // Keep up to 512 MiB of freed memory at the top of the heap instead of trimming it.
  ok = mallopt(M_TRIM_THRESHOLD, 512 << 20) == 1 && ok;
  return ok;
}

}  // namespace pl
