#include "core/render/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <vector>

namespace pl {
namespace {

TEST(ThreadPoolTest, EveryIndexExactlyOnceAcrossManyJobs) {
  ThreadPool pool(4);
  EXPECT_EQ(pool.threadCount(), 4u);
  for (uint32_t job = 0; job < 200; ++job) {
    const uint32_t n = 1 + job * 7 % 300;
    std::vector<std::atomic<int>> hits(n);
    std::atomic<int> badThread{0};
    pool.parallelFor(n, [&](uint32_t i, uint32_t thread) {
      hits[i].fetch_add(1);
      if (thread >= 4) badThread.fetch_add(1);
    });
    for (uint32_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "job " << job << " i " << i;
    ASSERT_EQ(badThread.load(), 0);
  }
}

TEST(ThreadPoolTest, SingleThreadAndEmptyJobs) {
  ThreadPool pool(1);
  int calls = 0;
  pool.parallelFor(0, [&](uint32_t, uint32_t) { ++calls; });
  EXPECT_EQ(calls, 0);
  pool.parallelFor(10, [&](uint32_t, uint32_t thread) { calls += thread == 0; });
  EXPECT_EQ(calls, 10);
  ThreadPool defaultPool(0);
  EXPECT_GE(defaultPool.threadCount(), 1u);
}

}  // namespace
}  // namespace pl
