#pragma once
// Large allocations on transparent huge pages. A node decodes hundreds of MB of render data
// (Sponza: 275 MB) into fresh memory; with 4 KiB pages every one of its 67,000 pages costs a
// page fault on first touch, which on this project's VMs took a fifth of a 1-spp render of
// Sponza. glibc's malloc asks the kernel for huge pages (madvise) when the tunable
// glibc.malloc.hugetlb=1 is set, and it reads tunables only when a process starts: so the
// command sets it and executes itself again, once, before anything else. Worker processes
// inherit it. Not done when the kernel offers no transparent huge pages, when
// GLIBC_TUNABLES already names the tunable, or with PEERLIGHT_HUGE_PAGES=0; if the exec
// fails the command goes on as it is.

namespace pl::app {

// Returns only when it did not execute the program again.
void preferHugePages(char** argv);

}  // namespace pl::app
