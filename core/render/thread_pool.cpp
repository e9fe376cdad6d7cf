#include "core/render/thread_pool.h"

#include <system_error>

namespace pl {

ThreadPool::ThreadPool(uint32_t threads) {
  if (threads == 0) threads = std::thread::hardware_concurrency();
  if (threads == 0) threads = 1;
  workers_.reserve(threads - 1);
  try {
    for (uint32_t i = 1; i < threads; ++i) workers_.emplace_back([this, i] { workerLoop(i); });
  } catch (const std::system_error&) {
    // A thread that cannot start: the pool has those that did (and the owner's).
  }
  threadCount_ = uint32_t(workers_.size()) + 1;
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::runJob(uint32_t threadIndex) {
  for (;;) {
    uint32_t i = next_.fetch_add(1, std::memory_order_relaxed);
    if (i >= jobCount_) return;
    (*job_)(i, threadIndex);
  }
}

void ThreadPool::workerLoop(uint32_t threadIndex) {
  uint64_t seen = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
      if (stopping_) return;
      seen = generation_;
    }
    runJob(threadIndex);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (--activeWorkers_ == 0) finished_.notify_one();
    }
  }
}

void ThreadPool::parallelFor(uint32_t count,
                             const std::function<void(uint32_t, uint32_t)>& fn) {
  if (count == 0) return;
  if (workers_.empty() || count == 1) {
    for (uint32_t i = 0; i < count; ++i) fn(i, 0);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    job_ = &fn;
    jobCount_ = count;
    next_.store(0, std::memory_order_relaxed);
    activeWorkers_ = static_cast<uint32_t>(workers_.size());
    ++generation_;
  }
  wake_.notify_all();
  runJob(0);
  std::unique_lock<std::mutex> lock(mutex_);
  finished_.wait(lock, [&] { return activeWorkers_ == 0; });
  job_ = nullptr;
}

}  // namespace pl
