#pragma once
// JobQueue: threads that run jobs in submission order, for the Render Node's loop thread to
// hand work off (transport/node_service.h, Threads). With one thread (a device's), each job
// runs after the one before it has finished; with several (the codec pool), jobs start in
// submission order but run at the same time, so they must not depend on each other's results.
// runOnQueue() brings a job's result back to the loop thread as a KJ promise. (Not
// core/render/thread_pool.h's ThreadPool, which splits one data-parallel loop over threads.)

#include <kj/async.h>
#include <kj/debug.h>
#include <kj/function.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

namespace pl {

class JobQueue {
 public:
  explicit JobQueue(unsigned threads = 1) {
    threads = std::max(threads, 1u);
    threads_.reserve(threads);
    for (unsigned i = 0; i < threads; ++i) threads_.emplace_back([this] { run(); });
  }
  // Waits for the running jobs; queued jobs are dropped (their fulfillers reject their promises).
  ~JobQueue() {
    std::deque<kj::Function<void()>> dropped;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
      dropped.swap(jobs_);
    }
    wake_.notify_all();
    for (std::thread& thread : threads_) thread.join();
  }
  JobQueue(const JobQueue&) = delete;
  JobQueue& operator=(const JobQueue&) = delete;

  // Thread-safe.
  void submit(kj::Function<void()> job) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      jobs_.push_back(kj::mv(job));
    }
    wake_.notify_one();
  }

 private:
  void run() {
    for (;;) {
      kj::Function<void()> job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
        if (stopping_) return;
        job = kj::mv(jobs_.front());
        jobs_.pop_front();
      }
      job();
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<kj::Function<void()>> jobs_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;  // last: start after the members above exist
};

// Runs fn() -> T on one of `pool`'s threads; the promise resolves on the calling (loop)
// thread, through a cross-thread fulfiller (fn must touch no loop-thread state). When the
// promise is dropped before the job starts, the job is skipped. An exception from fn rejects
// the promise (FAILED, "node worker failed: ...").
template <typename T, typename Fn>
kj::Promise<T> runOnQueue(JobQueue& pool, Fn fn) {
  auto paf = kj::newPromiseAndCrossThreadFulfiller<T>();
  pool.submit([fulfiller = kj::mv(paf.fulfiller), fn = kj::mv(fn)]() mutable {
    if (!fulfiller->isWaiting()) return;
    try {
      fulfiller->fulfill(fn());
    } catch (const std::exception& e) {
      fulfiller->reject(KJ_EXCEPTION(FAILED, "node worker failed", e.what()));
    }
  });
  return kj::mv(paf.promise);
}

}  // namespace pl
