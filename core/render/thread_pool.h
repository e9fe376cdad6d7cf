#pragma once
// A small persistent pool of worker threads for data-parallel loops (the CPU device renders
// every work unit with it, so threads are created once, not per unit).
//
// Threads: parallelFor() must be called from one thread at a time (the owner); it blocks until
// every index is done. The calling thread works too, so a pool of N threads starts N - 1.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace pl {

class ThreadPool {
 public:
  // threads == 0: std::thread::hardware_concurrency() (at least 1). When a thread cannot
  // start, the pool has fewer (threadCount()).
  explicit ThreadPool(uint32_t threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  uint32_t threadCount() const { return threadCount_; }

  // Calls fn(index, threadIndex) once for every index in [0, count), spread over all threads
  // (threadIndex in [0, threadCount()) identifies the calling thread, for per-thread scratch).
  // Indices are handed out in increasing order by an atomic counter. fn must not throw.
  void parallelFor(uint32_t count, const std::function<void(uint32_t, uint32_t)>& fn);

 private:
  void workerLoop(uint32_t threadIndex);
  void runJob(uint32_t threadIndex);

  uint32_t threadCount_;
  std::vector<std::thread> workers_;

  std::mutex mutex_;
  std::condition_variable wake_;      // workers wait here for a new job or shutdown
  std::condition_variable finished_;  // the owner waits here for the workers to finish
  uint64_t generation_ = 0;           // incremented per job (under mutex_)
  uint32_t activeWorkers_ = 0;        // workers still inside the current job (under mutex_)
  bool stopping_ = false;

  // The current job; written by the owner before generation_ is bumped.
  const std::function<void(uint32_t, uint32_t)>* job_ = nullptr;
  uint32_t jobCount_ = 0;
  std::atomic<uint32_t> next_{0};
};

}  // namespace pl
