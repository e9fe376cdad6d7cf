#include "transport/control_socket.h"

#include <capnp/rpc-twoparty.h>
#include <capnp/rpc.capnp.h>
#include <capnp/serialize.h>
#include <capnp/serialize-async.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <list>
#include <vector>

#include "core/util/log.h"
#include "transport/control_film.h"
#include "transport/uv_kj_loop.h"

namespace pl {

namespace {

std::string text(capnp::Text::Reader t) { return std::string(t.cStr(), t.size()); }

// The daemon's side of one connection's message framing: Cap'n Proto's own, read with the
// daemon's ReaderOptions (TwoPartyVatNetwork passes them on every read), plus two things of
// ours:
// - while more than kMaxControlMessageBytes of replies wait to be written to this client, the
//   next message is not read (the queue is polled every 10 ms until it drains);
// - the Abort message that Cap'n Proto sends when it gives up on the connection (garbage, a
//   frame beyond the limit, a malformed message) is logged once with its reason, naming the
//   client: the client and the log are told the same thing. Aborts of type DISCONNECTED (the
//   client went away, the daemon is stopping) are normal life and not logged.
class ControlMessageStream final : public capnp::MessageStream {
 public:
  ControlMessageStream(kj::AsyncIoStream& stream, kj::Timer& timer, std::string who)
      : inner_(stream), timer_(timer), who_(std::move(who)) {}
  // How many bytes of messages wait to be written (the network's queue); set once it exists.
  void setQueueProbe(std::function<size_t()> probe) { queuedBytes_ = std::move(probe); }

  kj::Promise<kj::Maybe<capnp::MessageReaderAndFds>> tryReadMessage(
      kj::ArrayPtr<kj::AutoCloseFd> fdSpace, capnp::ReaderOptions options,
      kj::ArrayPtr<capnp::word> scratchSpace) override {
    return whenRepliesDrain().then([this, fdSpace, options, scratchSpace]() {
      return inner_.tryReadMessage(fdSpace, options, scratchSpace);
    });
  }
  kj::Promise<void> writeMessage(
      kj::ArrayPtr<const int> fds,
      kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>> segments) override {
    if (!reported_) reportAbort(segments);
    return inner_.writeMessage(fds, segments);
  }
  kj::Promise<void> writeMessages(
      kj::ArrayPtr<kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>>> messages) override {
    if (!reported_) {
      for (auto segments : messages) reportAbort(segments);
    }
    return inner_.writeMessages(messages);
  }
  kj::Maybe<int> getSendBufferSize() override { return inner_.getSendBufferSize(); }
  kj::Promise<void> end() override { return inner_.end(); }

 private:
  kj::Promise<void> whenRepliesDrain() {
    if (!queuedBytes_ || queuedBytes_() <= kMaxControlMessageBytes) return kj::READY_NOW;
    return timer_.afterDelay(10 * kj::MILLISECONDS).then([this] { return whenRepliesDrain(); });
  }

  // Our own outgoing message: only its root's union tag is looked at, unless it is an Abort.
  void reportAbort(kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>> segments) {
    kj::runCatchingExceptions([&] {
      capnp::SegmentArrayMessageReader reader(segments);
      auto message = reader.getRoot<capnp::rpc::Message>();
      if (!message.isAbort()) return;
      reported_ = true;
      auto abort = message.getAbort();
      if (abort.getType() == capnp::rpc::Exception::Type::DISCONNECTED) return;
      PL_LOG_WARN("control socket: closing the connection of %s: %s", who_.c_str(),
                  abort.getReason().cStr());
    });
  }

  capnp::AsyncIoMessageStream inner_;
  kj::Timer& timer_;
  std::string who_;
  std::function<size_t()> queuedBytes_;
  bool reported_ = false;
};

}  // namespace

struct ControlSocket::Impl final : private kj::TaskSet::ErrorHandler {
  struct Job;

  // What the capabilities of one connection share. Outlives the connection (capabilities may
  // be released later than the connection ends); `impl` is null once the connection is gone.
  struct Client {
    Impl* impl = nullptr;
    uint32_t uid = 0;
    std::string who;          // "a client of uid N (pid P)", for logs
    std::string ownerToken;   // set while this connection holds an owner job
    uint64_t ownerSerial = 0;  // which OwnerJob holds it
    std::shared_ptr<Job> render;  // set while this connection holds a render job
    bool requested = false;       // it has asked for an owner job or a render job
    bool session = false;         // it holds a session (its slot is alive)
  };

  // How many render jobs / owner jobs the connections of `uid` hold now.
  size_t renderJobsOf(uint32_t uid) const;
  size_t ownerJobsOf(uint32_t uid) const;
  size_t sessionsOf(uint32_t uid) const;
  bool limited(uint32_t uid) const { return options.limitOwnUid || uid != ::getuid(); }

  // A render job (ControlRenderJob). Shared by the client's RenderJob capability, the job
  // code (after start()) and the Client; outlives its client.
  struct Job final : public ControlRenderJob {
    enum class Phase { uploading, submitted, accepted, ended };

    std::shared_ptr<Client> client;
    bool gone = false;  // the client dropped the job or closed the connection
    std::string token_;
    RenderJobParams params_;
    uint32_t uid_ = 0;
    uint64_t declaredBytes = 0;
    bool reserved = false;  // declaredBytes count against Impl::uploadingBytes
    std::vector<uint8_t> payload_;
    ControlOutcome uploadError;  // sticky: bytes beyond the declared size, an oversized chunk
    Phase phase = Phase::uploading;
    bool started = false;   // start() answered ok
    ControlOutcome startAnswer, endAnswer;
    ClusterRenderStats stats;
    std::vector<int64_t> sums;
    std::vector<uint32_t> pixelSamples;  // empty: filmSpp everywhere
    uint32_t filmSpp = 0;  // the samples per pixel of `sums`
    kj::Own<kj::PromiseFulfiller<void>> startWaiter, resultWaiter;
    ctl::ProgressListener::Client listener = nullptr;
    bool progressInFlight = false;
    kj::Promise<void> progressCall = nullptr;
    std::function<void()> disconnected;

    // KJ's and Cap'n Proto's members may throw from their destructors; ours does not.
    ~Job() noexcept override {}

    const std::string& token() const override { return token_; }
    const RenderJobParams& params() const override { return params_; }
    std::vector<uint8_t>& payload() override { return payload_; }
    uint32_t clientUid() const override { return uid_; }
    bool connected() const override { return !gone && client->impl != nullptr; }

    void accept() override {
      if (phase != Phase::submitted) return;
      phase = Phase::accepted;
      started = true;
      if (startWaiter) startWaiter->fulfill();
    }
    void progress(uint64_t done, uint64_t total, const ClusterRenderStats& s) override {
      if (phase != Phase::accepted || !connected() || progressInFlight) return;
      auto request = listener.progressRequest();
      request.setSamplesDone(done);
      request.setSamplesTotal(total);
      toControl(s, request.initStats());
      progressInFlight = true;
      // The previous call has finished (progressInFlight was clear), so replacing it cancels
      // nothing.
      progressCall = request.send()
                         .then([this](auto&&) { progressInFlight = false; },
                               [this](kj::Exception&&) { progressInFlight = false; })
                         .eagerlyEvaluate(nullptr);
    }
    void done(const ClusterRenderStats& s, std::vector<int64_t> film,
              std::vector<uint32_t> samples, uint32_t spp) override {
      if (phase != Phase::accepted) return;
      phase = Phase::ended;
      if (gone) return;  // nobody would read the film
      stats = s;
      sums = std::move(film);
      pixelSamples = std::move(samples);
      filmSpp = spp;
      endAnswer = {ctl::Outcome::OK, ""};
      if (resultWaiter) resultWaiter->fulfill();
    }
    void fail(ctl::Outcome outcome, const std::string& why) override {
      PL_CHECK(outcome != ctl::Outcome::OK);
      if (phase == Phase::submitted) {
        phase = Phase::ended;
        startAnswer = {outcome, why};
        if (startWaiter) startWaiter->fulfill();
      } else if (phase == Phase::accepted) {
        phase = Phase::ended;
        endAnswer = {outcome, why};
        if (resultWaiter) resultWaiter->fulfill();
      }
    }
    void onDisconnect(std::function<void()> callback) override {
      disconnected = std::move(callback);
    }

    // Gives back the job's share of the upload bound.
    void unreserve() {
      if (!reserved) return;
      reserved = false;
      if (client->impl != nullptr) client->impl->uploadingBytes -= declaredBytes;
    }

    // The client dropped the job or its connection closed: the job's upload ends, a running
    // job is cancelled (by the job code's callback), and what it would be sent is dropped.
    void clientLeft() {
      if (gone) return;
      gone = true;
      unreserve();
      std::vector<uint8_t>().swap(payload_);
      if (client->render.get() == this) client->render = nullptr;
      progressCall = nullptr;
      listener = nullptr;
      if (phase == Phase::accepted && disconnected) {
        auto callback = std::move(disconnected);
        callback();
      }
    }
  };

  // The client's RenderJob capability. Dropping it cancels the job.
  class RenderJobImpl final : public ctl::RenderJob::Server {
   public:
    explicit RenderJobImpl(std::shared_ptr<Job> job) : job_(std::move(job)) {}
    ~RenderJobImpl() { job_->clientLeft(); }

   protected:
    kj::Promise<void> write(WriteContext context) override {
      Job& j = *job_;
      KJ_REQUIRE(j.phase == Job::Phase::uploading, "render job: write() after start()");
      if (!j.uploadError.ok()) return kj::READY_NOW;
      capnp::Data::Reader chunk = context.getParams().getChunk();
      if (chunk.size() > kControlChunkBytes) {
        j.uploadError = {ctl::Outcome::BAD_DATA,
                         "render data: a chunk of " + std::to_string(chunk.size()) +
                             " bytes (at most " + std::to_string(kControlChunkBytes) + ")"};
      } else if (j.payload_.size() + chunk.size() > j.declaredBytes) {
        j.uploadError = {ctl::Outcome::BAD_DATA,
                         "render data: more than the " + std::to_string(j.declaredBytes) +
                             " bytes declared (data after the payload)"};
      }
      if (!j.uploadError.ok()) {
        std::vector<uint8_t>().swap(j.payload_);
        return kj::READY_NOW;
      }
      // Grows with what arrived, never beyond what was declared (and reserved).
      const size_t need = j.payload_.size() + chunk.size();
      if (need > j.payload_.capacity())
        j.payload_.reserve(size_t(std::min<uint64_t>(
            j.declaredBytes, std::max<uint64_t>(need, uint64_t(j.payload_.capacity()) * 2))));
      j.payload_.insert(j.payload_.end(), chunk.begin(), chunk.end());
      return kj::READY_NOW;
    }

    kj::Promise<void> start(StartContext context) override {
      Job& j = *job_;
      KJ_REQUIRE(j.phase == Job::Phase::uploading, "render job: start() called twice");
      j.unreserve();
      Impl* impl = j.client->impl;
      const std::string label = "render job " + j.token_.substr(0, 8);
      ControlOutcome refusal = j.uploadError;
      if (refusal.ok() && j.payload_.size() != j.declaredBytes)
        refusal = {ctl::Outcome::BAD_DATA, "render data: " + std::to_string(j.payload_.size()) +
                                               " of the " + std::to_string(j.declaredBytes) +
                                               " bytes declared arrived"};
      if (refusal.ok() && impl == nullptr)
        refusal = {ctl::Outcome::SHUTTING_DOWN, "the node daemon is shutting down"};
      if (!refusal.ok()) {
        PL_LOG_WARN("control socket: %s from %s refused (%s): %s", label.c_str(),
                    j.client->who.c_str(), outcomeName(refusal.outcome), refusal.message.c_str());
        j.phase = Job::Phase::ended;
        std::vector<uint8_t>().swap(j.payload_);
        answer(context.getResults(), refusal);
        return kj::READY_NOW;
      }
      j.phase = Job::Phase::submitted;
      impl->callbacks.renderRequested(job_);
      if (j.phase != Job::Phase::submitted) return answerStart(context);
      auto paf = kj::newPromiseAndFulfiller<void>();
      j.startWaiter = kj::mv(paf.fulfiller);
      return paf.promise.then([this, context]() mutable { return answerStart(context); });
    }

    kj::Promise<void> result(ResultContext context) override {
      Job& j = *job_;
      KJ_REQUIRE(j.started, "render job: result() before the job started");
      context.allowCancellation();
      if (j.phase == Job::Phase::ended) {
        answerResult(context);
        return kj::READY_NOW;
      }
      KJ_REQUIRE(!(j.resultWaiter && j.resultWaiter->isWaiting()),
                 "render job: result() is waited for already");
      auto paf = kj::newPromiseAndFulfiller<void>();
      j.resultWaiter = kj::mv(paf.fulfiller);
      return paf.promise.then([this, context]() mutable { answerResult(context); });
    }

    kj::Promise<void> readFilm(ReadFilmContext context) override {
      Job& j = *job_;
      KJ_REQUIRE(j.phase == Job::Phase::ended && j.started && j.endAnswer.ok(),
                 "render job: readFilm() before result() said ok");
      // The sums, then the sample counts: one stream of filmBytes + samplesBytes.
      readFilmSlice(j.sums, j.pixelSamples, context.getParams().getOffset(),
                    context.getParams().getBytes(), [&](size_t n) {
                      return context.getResults().initData(unsigned(n)).asBytes();
                    });
      return kj::READY_NOW;
    }

   private:
    template <typename Results>
    static void answer(Results results, const ControlOutcome& outcome) {
      results.setOutcome(outcome.outcome);
      results.setMessage(outcome.message);
    }
    kj::Promise<void> answerStart(StartContext& context) {
      answer(context.getResults(), job_->started ? ControlOutcome{} : job_->startAnswer);
      return kj::READY_NOW;
    }
    void answerResult(ResultContext& context) {
      Job& j = *job_;
      auto results = context.getResults();
      answer(results, j.endAnswer);
      if (!j.endAnswer.ok()) return;
      toControl(j.stats, results.initStats());
      results.setFilmBytes(uint64_t(j.sums.size()) * sizeof(int64_t));
      results.setSpp(j.filmSpp);
      results.setSamplesBytes(uint64_t(j.pixelSamples.size()) * sizeof(uint32_t));
    }

    std::shared_ptr<Job> job_;
  };

  // The client's OwnerJob capability: holding it holds the owner job.
  class OwnerJobImpl final : public ctl::OwnerJob::Server {
   public:
    OwnerJobImpl(std::shared_ptr<Client> client, uint64_t serial)
        : client_(std::move(client)), serial_(serial) {}
    ~OwnerJobImpl() { endOwnerJob(*client_, serial_); }

   private:
    std::shared_ptr<Client> client_;
    uint64_t serial_;
  };

  // The bootstrap capability of one connection.
  class NodeControlImpl final : public ctl::NodeControl::Server {
   public:
    explicit NodeControlImpl(std::shared_ptr<Client> client) : client_(std::move(client)) {}

   protected:
    kj::Promise<void> ownerJob(OwnerJobContext context) override {
      Client& c = *client_;
      const std::string token = text(context.getParams().getToken());
      ControlOutcome refusal;
      if (!validControlToken(token))
        refusal = {ctl::Outcome::BAD_PARAMS, "owner job: bad token (1 to 64 of [0-9a-zA-Z])"};
      else if (c.impl == nullptr)
        refusal = {ctl::Outcome::SHUTTING_DOWN, "the node daemon is shutting down"};
      else if (!c.ownerToken.empty())
        refusal = {ctl::Outcome::BUSY, "owner job: this connection holds one already"};
      else if (c.impl->limited(c.uid) &&
               c.impl->ownerJobsOf(c.uid) >= c.impl->options.ownerJobsPerUid)
        refusal = {ctl::Outcome::BUSY, "owner job: uid " + std::to_string(c.uid) + " holds " +
                                           std::to_string(c.impl->options.ownerJobsPerUid) +
                                           " already (the most one user may hold)"};
      auto results = context.getResults();
      if (!refusal.ok()) {
        PL_LOG_WARN("control socket: %s refused (%s): %s", c.who.c_str(),
                    outcomeName(refusal.outcome), refusal.message.c_str());
        results.setOutcome(refusal.outcome);
        results.setMessage(refusal.message);
        return kj::READY_NOW;
      }
      c.requested = true;  // granted: the connection may stay silent from now on
      c.ownerToken = token;
      c.ownerSerial += 1;
      c.impl->ownerJobCount += 1;
      if (c.impl->callbacks.ownerStarted) c.impl->callbacks.ownerStarted(token);
      results.setOutcome(ctl::Outcome::OK);
      results.setJob(kj::heap<OwnerJobImpl>(client_, c.ownerSerial));
      return kj::READY_NOW;
    }

    kj::Promise<void> render(RenderContext context) override {
      Client& c = *client_;
      auto params = context.getParams();
      auto request = params.getRequest();
      const std::string token = text(request.getToken());
      std::string label = "render job " + token.substr(0, 8);
      Result<RenderJobParams> frame = fromControl(request.getParams());
      const uint64_t bytes = request.getDataBytes();
      if (!validControlToken(token)) label = "render job";
      const ControlOutcome refusal = [&]() -> ControlOutcome {
        if (ControlOutcome checked = checkRequest(c, "render job", token, frame, bytes);
            !checked.ok())
          return checked;
        if (c.render != nullptr)
          return {ctl::Outcome::BUSY,
                  "render job: this connection holds a render job already (one per "
                  "connection)"};
        if (c.impl->limited(c.uid) &&
            c.impl->renderJobsOf(c.uid) >= c.impl->options.renderJobsPerUid)
          return {ctl::Outcome::BUSY, "busy: uid " + std::to_string(c.uid) + " has " +
                                          std::to_string(c.impl->options.renderJobsPerUid) +
                                          " render job(s) here already (the most one user "
                                          "may have)"};
        if (c.impl->uploadingBytes + bytes > c.impl->options.maxPayloadBytes)
          return {ctl::Outcome::BUSY, "busy: other render jobs are uploading " +
                                          std::to_string(c.impl->uploadingBytes) + " bytes"};
        if (!c.impl->callbacks.admitRender || !c.impl->callbacks.renderRequested)
          return {ctl::Outcome::FAILED, "this node does not take render jobs"};
        return c.impl->callbacks.admitRender(*frame, bytes);
      }();
      auto results = context.getResults();
      if (!refusal.ok()) {
        PL_LOG_WARN("control socket: %s from %s refused (%s): %s", label.c_str(), c.who.c_str(),
                    outcomeName(refusal.outcome), refusal.message.c_str());
        results.setOutcome(refusal.outcome);
        results.setMessage(refusal.message);
        return kj::READY_NOW;
      }
      auto job = std::make_shared<Job>();
      job->client = client_;
      job->token_ = token;
      job->params_ = std::move(frame).value();
      job->uid_ = c.uid;
      job->declaredBytes = bytes;
      job->reserved = true;
      c.impl->uploadingBytes += bytes;
      job->listener = params.getListener();
      c.render = job;
      c.requested = true;
      results.setOutcome(ctl::Outcome::OK);
      results.setJob(kj::heap<RenderJobImpl>(std::move(job)));
      return kj::READY_NOW;
    }

    kj::Promise<void> session(SessionContext context) override {
      Client& c = *client_;
      auto params = context.getParams();
      auto request = params.getRequest();
      const std::string token = text(request.getToken());
      Result<RenderJobParams> frame = fromControl(request.getParams());
      const uint64_t bytes = request.getDataBytes();
      ControlOutcome refusal = [&]() -> ControlOutcome {
        if (ControlOutcome checked = checkRequest(c, "session", token, frame, bytes);
            !checked.ok())
          return checked;
        if (c.session)
          return {ctl::Outcome::BUSY,
                  "session: this connection holds a session already (one per connection)"};
        if (c.impl->limited(c.uid) &&
            c.impl->sessionsOf(c.uid) >= c.impl->options.sessionsPerUid)
          return {ctl::Outcome::BUSY, "busy: uid " + std::to_string(c.uid) + " has " +
                                          std::to_string(c.impl->options.sessionsPerUid) +
                                          " session(s) here already (the most one user "
                                          "may have)"};
        if (!c.impl->callbacks.openSession)
          return {ctl::Outcome::FAILED, "this node does not hold sessions"};
        return ControlOutcome{};
      }();
      auto results = context.getResults();
      if (refusal.ok()) {
        ControlSessionRequest r{token,    std::move(frame).value(), bytes,
                                request.getPassFilms(), c.uid, c.who};
        // The slot: while it lives, this connection (and its uid) holds a session.
        struct Slot {
          explicit Slot(std::shared_ptr<Client> c) : client(std::move(c)) {}
          Slot(const Slot&) = delete;
          Slot& operator=(const Slot&) = delete;
          ~Slot() { client->session = false; }
          std::shared_ptr<Client> client;
        };
        c.session = true;
        ControlSessionOpened opened = c.impl->callbacks.openSession(
            std::move(r), params.getListener(), kj::heap<Slot>(client_));
        refusal = opened.outcome;
        KJ_IF_MAYBE(job, opened.job) {
          if (refusal.ok()) {
            c.requested = true;  // granted: the connection may stay silent from now on
            results.setOutcome(ctl::Outcome::OK);
            results.setJob(kj::mv(*job));
            return kj::READY_NOW;
          }
        }
        if (refusal.ok()) refusal = {ctl::Outcome::FAILED, "session: not opened"};
      }
      PL_LOG_WARN("control socket: session from %s refused (%s): %s", c.who.c_str(),
                  outcomeName(refusal.outcome), refusal.message.c_str());
      results.setOutcome(refusal.outcome);
      results.setMessage(refusal.message);
      return kj::READY_NOW;
    }

   private:
    // What a render job and a session are both checked for: the token, the parameters' bounds,
    // a daemon that stops, the size of the data. `what`: "render job" or "session".
    static ControlOutcome checkRequest(const Client& c, const std::string& what,
                                       const std::string& token,
                                       const Result<RenderJobParams>& params, uint64_t bytes) {
      if (!validControlToken(token))
        return {ctl::Outcome::BAD_PARAMS, what + ": bad token (1 to 64 of [0-9a-zA-Z])"};
      if (!params.ok()) {
        // fromControl() names the request "render job".
        std::string message = params.error().message;
        const std::string prefix = "render job: ";
        if (message.rfind(prefix, 0) == 0) message.erase(0, prefix.size());
        return {ctl::Outcome::BAD_PARAMS, what + ": " + message};
      }
      if (c.impl == nullptr)
        return {ctl::Outcome::SHUTTING_DOWN, "the node daemon is shutting down"};
      if (bytes == 0) return {ctl::Outcome::BAD_PARAMS, what + ": no render data (dataBytes is 0)"};
      if (bytes > c.impl->options.maxPayloadBytes)
        return {ctl::Outcome::TOO_LARGE, what + ": render data of " + std::to_string(bytes) +
                                             " bytes (this node takes 1 to " +
                                             std::to_string(c.impl->options.maxPayloadBytes) +
                                             ")"};
      return ControlOutcome{};
    }

    std::shared_ptr<Client> client_;
  };

  // One accepted connection: its stream and RPC system. Destroying it ends what its client held.
  struct Connection {
    Connection(Impl& impl, kj::Own<kj::AsyncIoStream> streamIn, std::shared_ptr<Client> clientIn)
        : impl(impl), client(std::move(clientIn)), stream(kj::mv(streamIn)),
          messages(*stream, impl.loop.timer(), client->who),
          network(messages, capnp::rpc::twoparty::Side::SERVER, impl.readerOptions()),
          rpc(capnp::makeRpcServer(network, kj::heap<NodeControlImpl>(client))) {
      messages.setQueueProbe([this] { return network.getCurrentQueueSize(); });
      impl.open.push_back(this);
    }
    ~Connection() {
      // Before the RPC system goes: its capabilities may be released later than now.
      impl.clientGone(*client);
      impl.open.remove(this);
    }

    Impl& impl;
    std::shared_ptr<Client> client;
    kj::Own<kj::AsyncIoStream> stream;
    ControlMessageStream messages;
    capnp::TwoPartyVatNetwork network;
    capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc;
  };

  Impl(UvKjLoop& loop, std::string path, Callbacks callbacks, Options options)
      : loop(loop), path(std::move(path)), callbacks(std::move(callbacks)), options(options),
        connections(kj::heap<kj::TaskSet>(static_cast<kj::TaskSet::ErrorHandler&>(*this))) {}

  ~Impl() {
    accepting = nullptr;
    listener = nullptr;
    connections = nullptr;  // each connection ends what its client held
    ::unlink(path.c_str());
  }

  capnp::ReaderOptions readerOptions() const {
    capnp::ReaderOptions o;
    // Sized from the payload bound: a message carries at most one chunk of it.
    o.traversalLimitInWords =
        std::min<uint64_t>(kMaxControlMessageBytes, options.maxPayloadBytes + (64 << 10)) /
        sizeof(capnp::word);
    return o;
  }

  kj::Promise<void> acceptLoop() {
    return listener->accept().then(
        [this](kj::Own<kj::AsyncIoStream> stream) {
          serve(kj::mv(stream));
          return acceptLoop();
        },
        [this](kj::Exception&& e) -> kj::Promise<void> {
          PL_LOG_WARN("control socket: accepting a client failed (%s); retrying in 100 ms",
                      e.getDescription().cStr());
          return loop.timer().afterDelay(100 * kj::MILLISECONDS).then([this] {
            return acceptLoop();
          });
        });
  }

  void serve(kj::Own<kj::AsyncIoStream> stream) {
    struct ucred cred {};
    uint length = sizeof(cred);
    try {
      stream->getsockopt(SOL_SOCKET, SO_PEERCRED, &cred, &length);
    } catch (const kj::Exception& e) {
      PL_LOG_WARN("control socket: no peer credentials (%s); closing", e.getDescription().cStr());
      return;
    }
    if (cred.uid != ::getuid() && cred.uid != 0 && !inGroup(*stream, cred)) {
      if (options.group)
        PL_LOG_WARN("control socket: refused a client of uid %u (pid %d): not in group %s",
                    unsigned(cred.uid), int(cred.pid), printable(options.groupName).c_str());
      else
        PL_LOG_WARN("control socket: refused a client of uid %u (only uid %u may control this "
                    "node)",
                    unsigned(cred.uid), unsigned(::getuid()));
      return;  // dropping the stream closes it
    }
    if (limited(cred.uid)) {
      size_t mine = 0;
      for (const Connection* c : open) mine += c->client->uid == cred.uid ? 1 : 0;
      if (mine >= options.connectionsPerUid) {
        PL_LOG_WARN("control socket: refused a client of uid %u (pid %d): it has %zu "
                    "connections open, the most one user may have",
                    unsigned(cred.uid), int(cred.pid), mine);
        return;
      }
    }
    if (open.size() >= kMaxControlClients) {
      PL_LOG_WARN("control socket: %zu clients connected already; refusing another", open.size());
      return;
    }
    auto client = std::make_shared<Client>();
    client->impl = this;
    client->uid = cred.uid;
    client->who = "a client of uid " + std::to_string(cred.uid) + " (pid " +
                  std::to_string(cred.pid) + ")";
    auto connection = kj::heap<Connection>(*this, kj::mv(stream), std::move(client));
    capnp::TwoPartyVatNetwork& network = connection->network;
    // The task owns the connection: it ends (and the connection goes) when the client closes
    // the socket, aborts, or sends what cannot be read, or has asked for nothing within
    // idleBeforeRequestMs.
    kj::Promise<void> idle = kj::NEVER_DONE;
    if (options.idleBeforeRequestMs != 0) {
      idle = loop.timer()
                 .afterDelay(options.idleBeforeRequestMs * kj::MILLISECONDS)
                 .then([client = connection->client, ms = options.idleBeforeRequestMs]()
                           -> kj::Promise<void> {
                   if (client->requested) return kj::NEVER_DONE;
                   PL_LOG_WARN("control socket: closing the connection of %s: no request "
                               "within %u ms",
                               client->who.c_str(), ms);
                   return kj::READY_NOW;
                 });
    }
    connections->add(network.onDisconnect().exclusiveJoin(kj::mv(idle)).attach(
        kj::mv(connection)));
  }

  // Whether the client belongs to options.group: its primary gid or one of its supplementary
  // groups (SO_PEERGROUPS: the client process's groups when it connected).
  bool inGroup(kj::AsyncIoStream& stream, const struct ucred& cred) {
    if (!options.group) return false;
    if (cred.gid == *options.group) return true;
    for (size_t capacity : {size_t(64), size_t(NGROUPS_MAX)}) {
      std::vector<gid_t> groups(capacity);
      uint length = uint(groups.size() * sizeof(gid_t));
      try {
        stream.getsockopt(SOL_SOCKET, SO_PEERGROUPS, groups.data(), &length);
      } catch (const kj::Exception&) {
        continue;  // ERANGE: more groups than this; try the most there can be
      }
      groups.resize(std::min<size_t>(groups.size(), length / sizeof(gid_t)));
      return std::find(groups.begin(), groups.end(), gid_t(*options.group)) != groups.end();
    }
    return false;
  }

  // A connection is gone: its owner job ends, its render job hears of it.
  void clientGone(Client& client) {
    endOwnerJob(client, client.ownerSerial);
    if (std::shared_ptr<Job> job = client.render) job->clientLeft();
    client.impl = nullptr;
  }

  static void endOwnerJob(Client& client, uint64_t serial) {
    if (client.ownerToken.empty() || client.ownerSerial != serial || client.impl == nullptr)
      return;
    std::string token = std::move(client.ownerToken);
    client.ownerToken.clear();
    Impl& impl = *client.impl;
    impl.ownerJobCount -= 1;
    if (impl.callbacks.ownerEnded) impl.callbacks.ownerEnded(token);
  }

  // Every reply queued is written, or the deadline passed.
  kj::Promise<void> whenWritten(kj::TimePoint deadline) {
    size_t queued = 0;
    for (Connection* c : open) queued += c->network.getCurrentQueueSize();
    if (queued == 0 || loop.timer().now() >= deadline) return kj::READY_NOW;
    return loop.timer().afterDelay(10 * kj::MILLISECONDS).then([this, deadline] {
      return whenWritten(deadline);
    });
  }

  void taskFailed(kj::Exception&& exception) override {
    PL_LOG_DEBUG("control socket: a connection ended: %s", exception.getDescription().cStr());
  }

  UvKjLoop& loop;
  std::string path;
  Callbacks callbacks;
  Options options;
  kj::Own<kj::ConnectionReceiver> listener;
  kj::Promise<void> accepting = nullptr;
  kj::Own<kj::TaskSet> connections;  // each task owns one Connection
  std::list<Connection*> open;       // the connections now
  size_t ownerJobCount = 0;
  uint64_t uploadingBytes = 0;  // declared bytes of the render data being uploaded now
};

size_t ControlSocket::Impl::renderJobsOf(uint32_t uid) const {
  size_t n = 0;
  for (const Connection* c : open)
    if (c->client->uid == uid && c->client->render != nullptr &&
        c->client->render->phase != Job::Phase::ended)
      ++n;
  return n;
}

size_t ControlSocket::Impl::sessionsOf(uint32_t uid) const {
  size_t n = 0;
  for (const Connection* c : open)
    if (c->client->uid == uid && c->client->session) ++n;
  return n;
}

size_t ControlSocket::Impl::ownerJobsOf(uint32_t uid) const {
  size_t n = 0;
  for (const Connection* c : open)
    if (c->client->uid == uid && !c->client->ownerToken.empty()) ++n;
  return n;
}

Result<std::unique_ptr<ControlSocket>> ControlSocket::listen(UvKjLoop& loop,
                                                             const std::string& path,
                                                             Callbacks callbacks,
                                                             Options options) {
  const std::string where = "control socket " + path;
  struct sockaddr_un addr {};
  if (path.size() >= sizeof(addr.sun_path)) return Error{where + ": path too long"};
  size_t slash = path.rfind('/');
  if (slash != std::string::npos && slash > 0) {
    std::string dir = path.substr(0, slash);
    const mode_t dirMode = options.group ? 0755 : 0700;
    if (::mkdir(dir.c_str(), dirMode) != 0 && errno != EEXIST) {
      return Error{where + ": cannot create " + dir + ": " + std::strerror(errno)};
    }
    // A folder someone else made (e.g. /tmp/peerlight-<uid> created by another user to
    // intercept the socket) is refused.
    struct stat st {};
    if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
      return Error{where + ": " + dir + " is not a folder"};
    if (st.st_uid != ::getuid())
      return Error{where + ": " + dir + " belongs to uid " + std::to_string(st.st_uid) +
                   ", not to this user (uid " + std::to_string(::getuid()) + ")"};
    if ((st.st_mode & 0022) != 0)
      return Error{where + ": " + dir + " is writable by other users"};
  }
  if (controlSocketAnswers(path))
    return Error{where + ": another process (a running node daemon?) listens on it"};
  ::unlink(path.c_str());  // a stale socket of a daemon that died

  // Bound and listening under a name of its own first, then renamed over `path`: a client
  // that finds the file always finds a daemon listening (never the moment between bind and
  // listen, when it would be refused).
  const std::string bound = path + ".new";
  if (bound.size() >= sizeof(addr.sun_path)) return Error{where + ": path too long"};
  ::unlink(bound.c_str());
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return Error{where + ": socket: " + std::strerror(errno)};
  auto fail = [&](const std::string& what, int error, const std::string& after = "") {
    ::close(fd);
    ::unlink(bound.c_str());
    return Error{where + ": " + what + std::strerror(error) + after};
  };
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, bound.c_str(), bound.size() + 1);
  // The file is created with the right mode (no window in which it is more open).
  mode_t old = ::umask(0177);  // 0600 at first; a group's socket is opened to it below
  int rc = ::bind(fd, reinterpret_cast<struct sockaddr*>(&addr), sizeof(addr));
  int bindError = errno;
  ::umask(old);
  if (rc != 0) {
    ::close(fd);
    return Error{where + ": cannot bind: " + std::strerror(bindError)};
  }
  if (options.group) {
    if (::chown(bound.c_str(), uid_t(-1), gid_t(*options.group)) != 0 ||
        ::chmod(bound.c_str(), 0660) != 0) {
      const int error = errno;
      return fail("cannot give it to group " + options.groupName + ": ", error,
                  " (the daemon must be a member of the group)");
    }
  }
  if (::listen(fd, 64) != 0) {
    const int error = errno;
    return fail("cannot listen: ", error);
  }
  if (::rename(bound.c_str(), path.c_str()) != 0) {
    const int error = errno;
    return fail("cannot move it into place: ", error);
  }
  auto impl = std::make_unique<Impl>(loop, path, std::move(callbacks), options);
  impl->listener = loop.lowLevelIo().wrapListenSocketFd(
      fd, kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP |
              kj::LowLevelAsyncIoProvider::ALREADY_NONBLOCK |
              kj::LowLevelAsyncIoProvider::ALREADY_CLOEXEC);
  impl->accepting = impl->acceptLoop().eagerlyEvaluate([](kj::Exception&& e) {
    PL_LOG_ERROR("control socket: stopped accepting: %s", e.getDescription().cStr());
  });
  return std::unique_ptr<ControlSocket>(new ControlSocket(std::move(impl)));
}

ControlSocket::ControlSocket(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ControlSocket::~ControlSocket() = default;
const std::string& ControlSocket::path() const { return impl_->path; }
size_t ControlSocket::ownerJobs() const { return impl_->ownerJobCount; }
size_t ControlSocket::clients() const { return impl_->open.size(); }

kj::Promise<void> ControlSocket::flush(kj::Duration atMost) {
  const kj::TimePoint deadline = impl_->loop.timer().now() + atMost;
  // After every event queued now (the continuations that turn decided answers into Return
  // messages), then until the connections' write queues are empty.
  return kj::evalLast([this, deadline] { return impl_->whenWritten(deadline); });
}

}  // namespace pl
