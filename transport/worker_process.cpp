#include "transport/worker_process.h"

#include <capnp/rpc-twoparty.h>
#include <kj/debug.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <cstring>

#include "core/cluster/worker_watch.h"
#include "core/util/log.h"
#include "transport/node_service.h"

namespace pl {

namespace {
// How often the daemon looks at a worker's heartbeats, and how late a look may come before the
// daemon's own loop counts as held up (core/cluster/worker_watch.h).
constexpr uint32_t kWatchPeriodMs = 100;
constexpr std::chrono::milliseconds kLoopStall{400};
// Heartbeats a worker leaves unanswered before it stops sending more (see HeartbeatSender).
constexpr uint32_t kMaxHeartbeatsInFlight = 64;
// How long a new worker may take to send its first heartbeat (device start-up included).
constexpr std::chrono::milliseconds kStartupTimeout{30000};
}  // namespace
namespace {

using Clock = std::chrono::steady_clock;

class SupervisorImpl final : public proto::Supervisor::Server {
 public:
  SupervisorImpl(std::shared_ptr<WorkerWatch> watch, std::string who)
      : watch_(std::move(watch)), who_(std::move(who)) {}
  kj::Promise<void> heartbeat(HeartbeatContext) override {
    // The first one: the worker has started (its devices are open); the heartbeat timeout
    // applies from now on.
    if (watch_->heartbeat(Clock::now())) PL_LOG_INFO("%s is ready", who_.c_str());
    return kj::READY_NOW;
  }

 private:
  std::shared_ptr<WorkerWatch> watch_;
  std::string who_;  // "worker <pid>"
};

std::string describeExit(int64_t status, int termSignal) {
  if (termSignal != 0) {
    const char* name = strsignal(termSignal);
    return "killed by signal " + std::to_string(termSignal) + " (" + (name ? name : "?") + ")";
  }
  return "exited with status " + std::to_string(status);
}

}  // namespace

struct WorkerProcess::Impl {
  UvKjLoop& loop;
  std::string label;
  WorkerProcessOptions options;
  FailureHandler onFailure;
  ExitHandler onExit;
  uv_process_t* process = nullptr;  // heap; data = this until closed
  pid_t pid = -1;
  bool exited = false;
  bool stopping = false;
  // The heartbeats' judgement (core/cluster/worker_watch.h), shared with the Supervisor.
  std::shared_ptr<WorkerWatch> watchdog;
  // Promises first in destruction order (declared last below); the RPC objects after them.
  kj::Own<kj::AsyncIoStream> stream;
  kj::Own<capnp::TwoPartyVatNetwork> network;
  kj::Own<capnp::RpcSystem<capnp::rpc::twoparty::VatId>> rpc;
  proto::Node::Client node = nullptr;
  kj::Promise<void> watch = nullptr;
  kj::Promise<void> disconnectWatch = nullptr;
  kj::Promise<void> killTimer = nullptr;

  Impl(UvKjLoop& loop, std::string label, WorkerProcessOptions options, FailureHandler onFailure,
       ExitHandler onExit)
      : loop(loop), label(std::move(label)), options(options), onFailure(std::move(onFailure)),
        onExit(std::move(onExit)),
        watchdog(std::make_shared<WorkerWatch>(watchOptions(options), Clock::now())) {}

  static WorkerWatchOptions watchOptions(const WorkerProcessOptions& options) {
    WorkerWatchOptions w;
    w.heartbeatTimeout = std::chrono::milliseconds(options.heartbeatTimeoutMs);
    w.startupTimeout = kStartupTimeout;
    w.lookPeriod = std::chrono::milliseconds(kWatchPeriodMs);
    w.loopStall = kLoopStall;
    return w;
  }

  ~Impl() {
    killTimer = nullptr;
    disconnectWatch = nullptr;
    watch = nullptr;
    node = nullptr;
    rpc = nullptr;
    network = nullptr;
    stream = nullptr;
    if (process != nullptr) {
      if (!exited && pid > 0) ::kill(pid, SIGKILL);
      process->data = nullptr;
      uv_close(reinterpret_cast<uv_handle_t*>(process),
               [](uv_handle_t* h) { delete reinterpret_cast<uv_process_t*>(h); });
      process = nullptr;
    }
  }

  // SIGTERM (+SIGCONT so that a stopped worker receives it) now, SIGKILL after the grace.
  void terminate() {
    stopping = true;
    if (exited) return;
    ::kill(pid, SIGTERM);
    ::kill(pid, SIGCONT);
    killTimer = loop.timer()
                    .afterDelay(options.killGraceMs * kj::MILLISECONDS)
                    .then([this]() {
                      if (exited) return;
                      PL_LOG_WARN("worker %d for %s killed (SIGKILL: still running %u ms after "
                                  "SIGTERM)",
                                  int(pid), label.c_str(), options.killGraceMs);
                      ::kill(pid, SIGKILL);
                    })
                    .eagerlyEvaluate(nullptr);
  }

  void fail(const std::string& why) {
    if (stopping) return;
    PL_LOG_WARN("worker %d for %s failed: %s", int(pid), label.c_str(), why.c_str());
    terminate();
    FailureHandler handler = onFailure;
    handler("worker " + std::to_string(pid) + " " + why);
  }

  void stop(const std::string& why) {
    if (stopping) return;
    PL_LOG_INFO("worker %d for %s stopped (%s)", int(pid), label.c_str(), why.c_str());
    terminate();
  }

  kj::Promise<void> watchLoop() {
    return loop.timer().afterDelay(kWatchPeriodMs * kj::MILLISECONDS).then(
        [this]() -> kj::Promise<void> {
          if (stopping || exited) return kj::READY_NOW;
          const WorkerVerdict v = watchdog->look(Clock::now());
          if (v.kind == WorkerVerdict::Kind::Fine) return watchLoop();
          char text[96];
          std::snprintf(text, sizeof(text), "%s: no heartbeat for %.1f s",
                        v.kind == WorkerVerdict::Kind::Hung ? "hung" : "did not start",
                        double(v.silence.count()) / 1e6);
          fail(text);
          return kj::READY_NOW;
        });
  }

  static void exited_cb(uv_process_t* handle, int64_t status, int termSignal) {
    auto* self = static_cast<Impl*>(handle->data);
    if (self == nullptr) return;
    self->exited = true;
    if (self->stopping) {
      // Stopped already (its lease ended, often because the worker's crash broke the
      // Primary's calls first): still name a crash as one.
      const bool crashed = termSignal != 0 && termSignal != SIGTERM && termSignal != SIGKILL;
      if (crashed) {
        PL_LOG_WARN("worker %d for %s crashed: %s", int(self->pid), self->label.c_str(),
                    describeExit(status, termSignal).c_str());
      } else {
        PL_LOG_DEBUG("worker %d for %s %s", int(self->pid), self->label.c_str(),
                     describeExit(status, termSignal).c_str());
      }
    } else {
      self->fail(termSignal != 0 ? "crashed: " + describeExit(status, termSignal)
                                 : describeExit(status, termSignal));
    }
    ExitHandler handler = self->onExit;
    if (handler) handler();
  }
};

Result<std::unique_ptr<WorkerProcess>> WorkerProcess::start(
    UvKjLoop& loop, const std::vector<std::string>& argv, std::string label,
    WorkerProcessOptions options, FailureHandler onFailure, ExitHandler onExit) {
  if (argv.empty()) return Error{"worker: no command"};
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    return Error{std::string("worker: socketpair failed: ") + std::strerror(errno)};
  }
  auto impl = std::make_unique<Impl>(loop, std::move(label), options, std::move(onFailure),
                                     std::move(onExit));
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  uv_stdio_container_t stdio[4];
  stdio[0].flags = UV_IGNORE;
  stdio[1].flags = UV_INHERIT_FD;  // the worker's stdout goes to the daemon's stderr: the
  stdio[1].data.fd = 2;            // daemon's stdout carries only its own lines
  stdio[2].flags = UV_INHERIT_FD;
  stdio[2].data.fd = 2;
  stdio[3].flags = UV_INHERIT_FD;
  stdio[3].data.fd = fds[1];
  uv_process_options_t spawnOptions{};
  spawnOptions.exit_cb = &Impl::exited_cb;
  spawnOptions.file = options.executable.empty() ? args[0] : options.executable.c_str();
  spawnOptions.args = args.data();
  spawnOptions.stdio_count = 4;
  spawnOptions.stdio = stdio;
  impl->process = new uv_process_t{};
  impl->process->data = impl.get();
  int rc = uv_spawn(loop.uv(), impl->process, &spawnOptions);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    impl->exited = true;
    return Error{"worker: cannot start " + argv[0] + ": " + uv_strerror(rc)};
  }
  impl->pid = impl->process->pid;
  PL_LOG_INFO("worker %d started for %s", int(impl->pid), impl->label.c_str());

  Impl* self = impl.get();
  impl->stream = loop.lowLevelIo().wrapSocketFd(fds[0], kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP);
  capnp::ReaderOptions readerOptions;
  readerOptions.traversalLimitInWords = options.maxMessageBytes / sizeof(capnp::word);
  impl->network = kj::heap<capnp::TwoPartyVatNetwork>(
      *impl->stream, capnp::rpc::twoparty::Side::CLIENT, readerOptions);
  impl->rpc = kj::heap(capnp::makeRpcClient(*impl->network));
  capnp::word scratch[4] = {};
  capnp::MallocMessageBuilder message(scratch);
  auto vatId = message.getRoot<capnp::rpc::twoparty::VatId>();
  vatId.setSide(capnp::rpc::twoparty::Side::SERVER);
  auto worker = impl->rpc->bootstrap(vatId).castAs<proto::Worker>();
  auto request = worker.startRequest();
  request.setSupervisor(
      kj::heap<SupervisorImpl>(impl->watchdog, "worker " + std::to_string(impl->pid)));
  impl->node = request.send().getNode();
  impl->watch = impl->watchLoop().eagerlyEvaluate(nullptr);
  // A closed socket without an exit yet: give the exit status 200 ms to arrive (it names the
  // cause better), then report the connection.
  impl->disconnectWatch =
      impl->network->onDisconnect()
          .then([self]() { return self->loop.timer().afterDelay(200 * kj::MILLISECONDS); },
                [self](kj::Exception&&) {
                  return self->loop.timer().afterDelay(200 * kj::MILLISECONDS);
                })
          .then([self]() {
            if (!self->exited) self->fail("closed its connection");
          })
          .eagerlyEvaluate(nullptr);
  return std::unique_ptr<WorkerProcess>(new WorkerProcess(std::move(impl)));
}

WorkerProcess::WorkerProcess(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
WorkerProcess::~WorkerProcess() = default;

proto::Node::Client WorkerProcess::node() { return impl_->node; }
void WorkerProcess::setLabel(std::string label) { impl_->label = std::move(label); }
pid_t WorkerProcess::pid() const { return impl_->pid; }
bool WorkerProcess::exited() const { return impl_->exited; }
void WorkerProcess::stop(const std::string& why) { impl_->stop(why); }

// --- worker side --------------------------------------------------------------------------------

HeartbeatSender::HeartbeatSender(UvKjLoop& loop, proto::Supervisor::Client supervisor,
                                 uint32_t periodMs, FailureHandler onFailure)
    : loop_(loop), supervisor_(kj::mv(supervisor)), periodMs_(periodMs),
      onFailure_(kj::mv(onFailure)), calls_(*this),
      ticking_(tick().eagerlyEvaluate([this](kj::Exception&& e) { fail(e); })) {}

HeartbeatSender::~HeartbeatSender() = default;

kj::Promise<void> HeartbeatSender::tick() {
  if (failed_) return kj::READY_NOW;
  if (inFlight_ < kMaxHeartbeatsInFlight) {
    ++inFlight_;
    ++sent_;
    // Counted down once however the call ends (answered, failed or cancelled).
    calls_.add(supervisor_.heartbeatRequest().send().ignoreResult().attach(
        kj::defer([this]() { --inFlight_; })));
  }
  return loop_.timer().afterDelay(periodMs_ * kj::MILLISECONDS).then([this]() {
    return tick();
  });
}

void HeartbeatSender::taskFailed(kj::Exception&& exception) { fail(exception); }

void HeartbeatSender::fail(const kj::Exception& exception) {
  if (failed_) return;
  failed_ = true;
  onFailure_(exception);
}

namespace {

struct WorkerSide {
  UvKjLoop& loop;
  NodeService& node;
  uint32_t heartbeatMs;
  kj::Own<HeartbeatSender> heartbeats;
};

class WorkerImpl final : public proto::Worker::Server {
 public:
  explicit WorkerImpl(WorkerSide& side) : side_(side) {}
  kj::Promise<void> start(StartContext context) override {
    if (started_) kj::throwFatalException(KJ_EXCEPTION(FAILED, "worker: already started"));
    started_ = true;
    WorkerSide* side = &side_;
    side_.heartbeats = kj::heap<HeartbeatSender>(
        side_.loop, context.getParams().getSupervisor(), side_.heartbeatMs,
        [side](const kj::Exception& e) {
          PL_LOG_WARN("worker: heartbeat failed (%s); exiting", e.getDescription().cStr());
          side->loop.stop();
        });
    context.getResults().setNode(side_.node.newTrustedNode("daemon"));
    return kj::READY_NOW;
  }

 private:
  WorkerSide& side_;
  bool started_ = false;
};

}  // namespace

void serveWorker(UvKjLoop& loop, NodeService& node, int fd, uint32_t heartbeatMs) {
  auto stream = loop.lowLevelIo().wrapSocketFd(fd, kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP);
  capnp::ReaderOptions readerOptions;
  readerOptions.traversalLimitInWords = (uint64_t(64) << 20) / sizeof(capnp::word);
  capnp::TwoPartyVatNetwork network(*stream, capnp::rpc::twoparty::Side::SERVER, readerOptions);
  WorkerSide side{loop, node, heartbeatMs, {}};
  auto rpc = capnp::makeRpcServer(network, kj::heap<WorkerImpl>(side));
  auto disconnected = network.onDisconnect()
                          .then([&loop]() { loop.stop(); },
                                [&loop](kj::Exception&&) { loop.stop(); })
                          .eagerlyEvaluate(nullptr);
  loop.run();
  side.heartbeats = nullptr;
}

}  // namespace pl
