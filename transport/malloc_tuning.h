#pragma once
// Heap settings for moving large messages (multi-MiB Cap'n Proto messages, chunks, tiles).
//
// glibc serves big allocations with mmap and returns freed memory to the kernel at once; on the
// VMs we run on every fresh page then costs a fault, and copying 4 MiB messages ran at only
// 28-115 MB/s (PLATFORM_NOTES.md). Raising the mmap and trim thresholds keeps such buffers in the
// heap for reuse (1.3-1.8 GB/s).
//
// Process-wide: call once at start-up from apps/ (or a benchmark), before starting threads.
// Returns false if glibc refused a setting.

namespace pl {

bool tuneMallocForBulkTransfers();

}  // namespace pl
