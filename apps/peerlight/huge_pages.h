#pragma once
// Large allocations on transparent huge pages. A node decodes hundreds of MB of render data
// (Sponza: 275 MB) into fresh memory; with 4 KiB pages every one of its 67,000 pages costs a
// page fault on first touch, which on this project's VMs took a fifth of a 1-spp render of
// Sponza. glibc's malloc asks the kernel for huge pages (madvise) when the tunable
// glibc.malloc.hugetlb=1 is set, and it reads tunables only when a process starts: so the
// command sets it and executes itself again, once, before anything else (a guard variable in
// the exec's environment stops a second one). Worker processes inherit the tunable. Not done
// unless the kernel gives huge pages on request ([madvise]; [always] gives them anyway), when
// GLIBC_TUNABLES already names the tunable, for secure-execution processes (setuid, file
// capabilities: glibc ignores tunables there), in sanitizer builds (their own malloc), or with
// PEERLIGHT_HUGE_PAGES=0; if the exec fails the command goes on as it is.

namespace pl::app {

// Returns only when it did not execute the program again.
void preferHugePages(char** argv);

}  // namespace pl::app
