#include "transport/control_client.h"

#include <capnp/rpc-twoparty.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "transport/control_film.h"
#include "transport/protocol_convert.h"
#include "transport/uv_kj_loop.h"

namespace pl {

std::string defaultControlSocketPath() {
  const char* runtime = std::getenv("XDG_RUNTIME_DIR");
  if (runtime != nullptr && runtime[0] != '\0') return std::string(runtime) + "/peerlight/node.sock";
  if (::getuid() == 0) return "/run/peerlight/node.sock";
  return "/tmp/peerlight-" + std::to_string(::getuid()) + "/node.sock";
}

std::vector<std::string> controlSocketCandidates() {
  std::vector<std::string> paths = {defaultControlSocketPath()};
  if (paths[0] != "/run/peerlight/node.sock") paths.push_back("/run/peerlight/node.sock");
  return paths;
}

namespace {

// Connects a blocking Unix stream socket to `path`; -1 (errno set) on failure.
int connectUnix(const std::string& path) {
  struct sockaddr_un addr {};
  if (path.size() >= sizeof(addr.sun_path)) {
    errno = ENAMETOOLONG;
    return -1;
  }
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (::connect(fd, reinterpret_cast<struct sockaddr*>(&addr), sizeof(addr)) != 0) {
    int saved = errno;
    ::close(fd);
    errno = saved;
    return -1;
  }
  return fd;
}

// A stream that can be told to go silent: from mute() on it writes nothing (writes succeed at
// once), reads nothing more (new reads never complete) and never shuts its socket down, so what
// Cap'n Proto sends while it is torn down goes nowhere (ControlConnection::keepOpenSilently).
class MutableStream final : public kj::AsyncIoStream {
 public:
  explicit MutableStream(kj::Own<kj::AsyncIoStream> inner) : inner_(kj::mv(inner)) {}
  void mute() { muted_ = true; }

  kj::Promise<size_t> tryRead(void* buffer, size_t minBytes, size_t maxBytes) override {
    if (muted_) return kj::Promise<size_t>(kj::NEVER_DONE);
    return inner_->tryRead(buffer, minBytes, maxBytes);
  }
  kj::Promise<void> write(const void* buffer, size_t size) override {
    if (muted_) return kj::READY_NOW;
    return inner_->write(buffer, size);
  }
  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override {
    if (muted_) return kj::READY_NOW;
    return inner_->write(pieces);
  }
  kj::Promise<void> whenWriteDisconnected() override {
    if (muted_) return kj::Promise<void>(kj::NEVER_DONE);
    return inner_->whenWriteDisconnected();
  }
  void shutdownWrite() override {
    if (!muted_) inner_->shutdownWrite();
  }
  void abortRead() override {
    if (!muted_) inner_->abortRead();
  }
  void getsockopt(int level, int option, void* value, uint* length) override {
    inner_->getsockopt(level, option, value, length);
  }
  void setsockopt(int level, int option, const void* value, uint length) override {
    inner_->setsockopt(level, option, value, length);
  }
  void getsockname(struct sockaddr* addr, uint* length) override {
    inner_->getsockname(addr, length);
  }
  void getpeername(struct sockaddr* addr, uint* length) override {
    inner_->getpeername(addr, length);
  }
  kj::Maybe<int> getFd() const override { return inner_->getFd(); }

 private:
  kj::Own<kj::AsyncIoStream> inner_;
  bool muted_ = false;
};

capnp::ReaderOptions clientReaderOptions() {
  capnp::ReaderOptions options;
  options.traversalLimitInWords = kMaxControlMessageBytes / sizeof(capnp::word);
  return options;
}

// The description of a KJ exception, for a pl::Error.
std::string describe(const kj::Exception& e) {
  return std::string(e.getDescription().cStr());
}

}  // namespace

Status checkDaemonTrusted(const std::string& path, int fd) {
  const uid_t me = ::geteuid();
  struct ucred peer {};
  socklen_t length = sizeof peer;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &length) != 0)
    return Error{"control socket " + path + ": cannot read the daemon's credentials"};
  const std::string folder = path.substr(0, path.rfind('/') == std::string::npos ? 0
                                                                                  : path.rfind('/'));
  const std::string parent = folder.substr(0, folder.rfind('/') == std::string::npos
                                                  ? 0
                                                  : folder.rfind('/'));
  struct stat f {}, p {};
  const std::string who = "control socket " + path + ": ";
  const std::string uids = " (daemon uid " + std::to_string(peer.uid) + ", this user's uid " +
                           std::to_string(me) + ")";
  if (folder.empty() || ::lstat(folder.c_str(), &f) != 0 || !S_ISDIR(f.st_mode))
    return Error{who + "its folder is not a real folder (a link, or missing)" + uids};
  if ((f.st_mode & 022) != 0)
    return Error{who + "its folder " + folder + " is writable by others" + uids};
  if (f.st_uid == me) {
    // This user's own folder: the daemon must be this user's (or root's).
    if (peer.uid == me || peer.uid == 0) return Status();
    return Error{who + "the daemon runs as another user" + uids};
  }
  // A system daemon's folder (/run/peerlight): owned by the daemon's user, in a folder that
  // only root may change, so that nobody else can have made it.
  const bool parentSafe = !parent.empty() && ::lstat(parent.c_str(), &p) == 0 &&
                          S_ISDIR(p.st_mode) && p.st_uid == 0 && (p.st_mode & 022) == 0;
  if (parentSafe && f.st_uid == peer.uid) return Status();
  return Error{who + "its folder " + folder + " belongs to uid " + std::to_string(f.st_uid) +
               (parentSafe ? ", not the daemon's" : ", in a folder others may write to") + uids};
}

Status checkDaemonAt(const std::string& path) {
  int fd = connectUnix(path);
  if (fd < 0) return Error{"control socket " + path + ": " + std::strerror(errno)};
  Status trusted = checkDaemonTrusted(path, fd);
  ::close(fd);
  return trusted;
}

bool controlSocketAnswers(const std::string& path) {
  int fd = connectUnix(path);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

struct ControlConnection::Impl {
  // Members go in reverse order: the capability and the RPC system first, the fd last (after
  // the stream's poll watcher is gone).
  struct Fd {
    int fd = -1;
    ~Fd() {
      if (fd >= 0) ::close(fd);
    }
  };

  Impl(UvKjLoop& loop, std::string path, int socket)
      : path(std::move(path)),
        fd{socket},
        // The stream does not own the fd (keepOpenSilently() may hand it on).
        stream(kj::heap<MutableStream>(loop.lowLevelIo().wrapSocketFd(socket, 0))),
        network(*stream, capnp::rpc::twoparty::Side::CLIENT, clientReaderOptions()),
        rpc(capnp::makeRpcClient(network)) {
    capnp::word scratch[4] = {};
    capnp::MallocMessageBuilder message(scratch);
    auto vat = message.getRoot<capnp::rpc::twoparty::VatId>();
    vat.setSide(capnp::rpc::twoparty::Side::SERVER);
    control = rpc.bootstrap(vat).castAs<ctl::NodeControl>();
  }

  std::string path;
  Fd fd;
  kj::Own<MutableStream> stream;
  capnp::TwoPartyVatNetwork network;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc;
  ctl::NodeControl::Client control = nullptr;
};

Result<std::unique_ptr<ControlConnection>> ControlConnection::open(UvKjLoop& loop,
                                                                   const std::string& path) {
  int fd = connectUnix(path);
  if (fd < 0) return Error{"control socket " + path + ": " + std::strerror(errno)};
  // Nothing is sent to a daemon this user cannot trust (another user's fake one at a /tmp path).
  if (Status trusted = checkDaemonTrusted(path, fd); !trusted.ok()) {
    ::close(fd);
    return Error{trusted.error().message + "; not handing it anything"};
  }
  return std::unique_ptr<ControlConnection>(
      new ControlConnection(std::make_unique<Impl>(loop, path, fd)));
}

ControlConnection::ControlConnection(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ControlConnection::~ControlConnection() = default;
ctl::NodeControl::Client& ControlConnection::control() { return impl_->control; }
const std::string& ControlConnection::path() const { return impl_->path; }
kj::Promise<void> ControlConnection::onDisconnect() { return impl_->network.onDisconnect(); }

int ControlConnection::keepOpenSilently() {
  impl_->stream->mute();
  int fd = impl_->fd.fd;
  impl_->fd.fd = -1;
  return fd;
}

Result<int> announceOwnerJob(UvKjLoop& loop, const std::string& path, const std::string& token,
                             int timeoutMs) {
  const std::string where = "control socket " + path;
  if (!validControlToken(token)) return Error{where + ": invalid owner token"};
  Result<std::unique_ptr<ControlConnection>> connection = ControlConnection::open(loop, path);
  if (!connection.ok()) return connection.error();
  ControlConnection& c = **connection;
  auto request = c.control().ownerJobRequest();
  request.setToken(token);
  using Reply = capnp::Response<ctl::NodeControl::OwnerJobResults>;
  kj::Promise<kj::Maybe<Reply>> reply =
      request.send()
          .then([](Reply&& r) -> kj::Maybe<Reply> { return kj::mv(r); })
          .exclusiveJoin(loop.timer().afterDelay(timeoutMs * kj::MILLISECONDS).then([] {
            return kj::Maybe<Reply>(nullptr);
          }));
  kj::Maybe<Reply> answered = nullptr;
  try {
    answered = reply.wait(loop.waitScope());
  } catch (const kj::Exception& e) {
    return Error{where + ": " + describe(e)};
  }
  KJ_IF_MAYBE(r, answered) {
    if (r->getOutcome() != ctl::Outcome::OK)
      return Error{where + ": refused (" + outcomeName(r->getOutcome()) +
                   "): " + std::string(r->getMessage().cStr())};
    // The OwnerJob capability in `r` is never released from here: the connection goes silent
    // first, and the daemon holds the job until the fd closes.
    return c.keepOpenSilently();
  }
  return Error{where + ": no answer within " + std::to_string(timeoutMs) + " ms"};
}

namespace {

// The client's ProgressListener: hands each update to the callback, on the loop thread.
class ProgressListenerImpl final : public ctl::ProgressListener::Server {
 public:
  explicit ProgressListenerImpl(ControlProgressCallback callback)
      : callback_(std::move(callback)) {}

 protected:
  kj::Promise<void> progress(ProgressContext context) override {
    auto params = context.getParams();
    if (callback_)
      callback_(params.getSamplesDone(), params.getSamplesTotal(), fromControl(params.getStats()));
    return kj::READY_NOW;
  }

 private:
  ControlProgressCallback callback_;
};

}  // namespace

Result<ControlRenderResult> runRenderJob(UvKjLoop& loop, const std::string& path,
                                         const std::string& token, const RenderJobParams& params,
                                         std::span<const uint8_t> data, uint64_t filmValues,
                                         const ControlProgressCallback& onProgress,
                                         bool* refused) {
  const std::string where = "node daemon at " + path;
  *refused = true;
  if (!validControlToken(token)) return Error{where + ": invalid job token"};
  Result<std::unique_ptr<ControlConnection>> connection = ControlConnection::open(loop, path);
  if (!connection.ok()) return connection.error();
  ControlConnection& c = **connection;
  kj::WaitScope& waitScope = loop.waitScope();
  try {
    auto request = c.control().renderRequest();
    auto r = request.initRequest();
    r.setToken(token);
    toControl(params, r.initParams());
    r.setDataBytes(data.size());
    request.setListener(kj::heap<ProgressListenerImpl>(onProgress));
    auto reply = request.send().wait(waitScope);
    if (reply.getOutcome() != ctl::Outcome::OK)
      return Error{where + ": refused (" + std::string(outcomeName(reply.getOutcome())) +
                   "): " + reply.getMessage().cStr()};
    ctl::RenderJob::Client job = reply.getJob();

    // The data, in chunks that reference `data` (no copy; the last one, unless a whole number of
    // words, copied); each send() resolves when Cap'n Proto's flow control lets the next one go.
    for (size_t at = 0; at < data.size(); at += kControlChunkBytes) {
      const size_t n = std::min<size_t>(kControlChunkBytes, data.size() - at);
      auto write = job.writeRequest();
      if (referenceableBytes(data.data() + at, n)) {
        capnp::Orphanage orphanage = capnp::Orphanage::getForMessageContaining(
            ctl::RenderJob::WriteParams::Builder(write));
        write.adoptChunk(orphanage.referenceExternalData(capnp::Data::Reader(data.data() + at, n)));
      } else {
        write.setChunk(capnp::Data::Reader(data.data() + at, n));
      }
      write.send().wait(waitScope);
    }
    auto started = job.startRequest().send().wait(waitScope);
    if (started.getOutcome() != ctl::Outcome::OK)
      return Error{where + ": refused (" + std::string(outcomeName(started.getOutcome())) +
                   "): " + started.getMessage().cStr()};
    *refused = false;

    // Progress calls arrive while this waits (the loop runs inside wait()).
    auto result = job.resultRequest().send().wait(waitScope);
    if (result.getOutcome() != ctl::Outcome::OK) return Error{result.getMessage().cStr()};
    const uint64_t filmBytes = filmValues * sizeof(int64_t);
    if (result.getFilmBytes() != filmBytes)
      return Error{where + ": a film of " + std::to_string(result.getFilmBytes()) +
                   " bytes, expected " + std::to_string(filmBytes)};
    ControlRenderResult out;
    out.stats = fromControl(result.getStats());
    out.spp = result.getSpp() != 0 ? result.getSpp() : params.spp;
    if (out.spp > params.spp)
      return Error{where + ": a film of " + std::to_string(out.spp) + " spp, more than the " +
                   std::to_string(params.spp) + " asked for"};
    const uint64_t pixels = uint64_t(params.width) * params.height;
    const uint64_t samplesBytes = result.getSamplesBytes();
    if (samplesBytes != 0 && samplesBytes != pixels * sizeof(uint32_t))
      return Error{where + ": " + std::to_string(samplesBytes) + " bytes of sample counts, " +
                   "expected 0 or " + std::to_string(pixels * sizeof(uint32_t))};
    out.sums.resize(size_t(filmValues));
    out.pixelSamples.resize(size_t(samplesBytes / sizeof(uint32_t)));
    const uint64_t total = filmBytes + samplesBytes;
    for (uint64_t at = 0; at < total;) {
      const uint32_t n = uint32_t(std::min<uint64_t>(kControlChunkBytes, total - at));
      auto read = job.readFilmRequest();
      read.setOffset(at);
      read.setBytes(n);
      auto slice = read.send().wait(waitScope);
      capnp::Data::Reader got = slice.getData();
      if (got.size() != n)
        return Error{where + ": film slice at " + std::to_string(at) + " has " +
                     std::to_string(got.size()) + " bytes, expected " + std::to_string(n)};
      storeFilmSlice(out.sums, out.pixelSamples, at, got);  // it may straddle both
      at += n;
    }
    return out;
  } catch (const kj::Exception& e) {
    if (e.getType() == kj::Exception::Type::DISCONNECTED)
      return Error{where + ": the connection to the daemon broke (" + describe(e) + ")"};
    return Error{where + ": " + describe(e)};
  }
}

}  // namespace pl
