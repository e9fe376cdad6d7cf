#pragma once
// UvKjLoop: one libuv loop with KJ (and so Cap'n Proto RPC) running on it, in one thread.
//
//   pl::UvKjLoop loop;                                  // on the thread that will run it
//   auto receiver = pl::listenTcp(loop.lowLevelIo(), "127.0.0.1:0").value();
//   capnp::TwoPartyServer server(kj::heap<MyImpl>());
//   auto listening = server.listen(*receiver);          // a KJ promise; nothing blocks
//   uv_signal_t / uv_timer_t / uv_spawn ... on loop.uv() // plain libuv next to it
//   loop.run();                                         // until stop() or nothing is left
//
// What keeps run() going: ref'd libuv handles (yours, plus pending KJ timers, fds KJ is
// waiting on, and pending KJ work). Posted functions and kj::Executor wake-ups from other
// threads do NOT keep it alive on their own; whoever expects them must hold something else
// (a listening socket, a connection, a timer) or not call run() before they arrive.
//
// Blocking: top-level code (not inside any uv or KJ callback) may also use
// `promise.wait(loop.waitScope())`, which runs the uv loop until the promise resolves. Inside
// callbacks, chain with .then() (a wait() there aborts with a message).
//
// Threads: construct, use and destroy on one thread (KJ ties its event loop to the thread that
// created it). Only post() and executor() may be used from other threads, and only while the
// loop exists. Process-wide effect: the constructor ignores SIGPIPE (libuv does not, and a peer
// dying mid-write must not kill the process).

#include <kj/async-io.h>
#include <kj/timer.h>
#include <uv.h>

#include <functional>
#include <memory>

namespace pl {

class UvEventPort;

class UvKjLoop {
 public:
  // Creates and owns a fresh uv_loop_t.
  UvKjLoop();
  // Drives `borrowed`, which must outlive this object and is driven on this thread. Run it with
  // run() (or uv_run, as long as no top-level wait() happens inside one of its callbacks). The
  // owner must run it once more after this object is destroyed, to free the bridge's handles.
  explicit UvKjLoop(uv_loop_t* borrowed);
  // Destroy everything built on io() (streams, RPC systems) first. Closes the bridge's handles;
  // for an owned loop also runs the close callbacks and closes the loop (aborting with a list of
  // handles if someone else's handles are still open, which is a leak bug).
  ~UvKjLoop();
  UvKjLoop(const UvKjLoop&) = delete;
  UvKjLoop& operator=(const UvKjLoop&) = delete;

  uv_loop_t* uv() const;
  kj::WaitScope& waitScope();
  // Network, pipes and timers on this loop (kj::newAsyncIoProvider over lowLevelIo()).
  kj::AsyncIoProvider& io();
  kj::LowLevelAsyncIoProvider& lowLevelIo();
  // KJ timers on the uv clock (uv_now, ms resolution, cached per iteration), ordered with plain
  // uv timers. Same object as io().getTimer().
  kj::Timer& timer();
  // For KJ code on other threads (executeAsync needs a KJ loop on the calling thread;
  // executeSync works from any thread and blocks it).
  const kj::Executor& executor();

  // Runs the loop until stop() is called or no ref'd handles and no KJ work are left. Not
  // re-entrant; not from inside a callback.
  void run();
  // Makes run() return after the current iteration. Loop thread only (from another thread:
  // post([&] { loop.stop(); })).
  void stop();

  // Thread-safe: runs `fn` on the loop thread, soon. Functions posted from one thread run in
  // the order they were posted; KJ work they trigger runs right after each batch. `fn` must not
  // throw (the process aborts). Render threads hand results to the loop this way.
  void post(std::function<void()> fn);

  // The port (for bridge internals such as fd watchers).
  UvEventPort& port();

 private:
  struct Impl;
  void init();

  std::unique_ptr<uv_loop_t> ownedLoop_;
  uv_loop_t* loop_ = nullptr;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pl
