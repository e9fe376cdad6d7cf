#pragma once
// SecureChannel: TLS 1.3 on every Primary <-> Render Node TCP connection, keyed by the cluster
// key (docs/DESIGN.md section 7). Without it the Gate's challenge-response (transport/auth.h)
// proves the key but is not bound to the channel: a relay could pass the handshake through to a
// real node and then read or alter everything after it.
//
//   std::unique_ptr<SecureChannel> tls = SecureChannel::create(key).value();
//   connectTcp(io, address)                       // the node: an accepted stream, wrapServer()
//       .then([&](kj::Own<kj::AsyncIoStream> plain) { return tls->wrapClient(kj::mv(plain)); })
//       .then([&](kj::Own<kj::AsyncIoStream> secure) { /* TwoPartyClient, Gate.hello ... */ });
//
// Identity: both ends derive the same identity from the key, deterministically:
//   seed        = HKDF-SHA256(key, salt "peerlight", info "peerlight tls identity v1"), 32 bytes
//   private key = the Ed25519 key with that seed
//   certificate = self-signed X.509 v3 over it: subject and issuer CN=peerlight-cluster, SAN
//                 DNS:peerlight-cluster, serial 1, valid 2000-01-01 .. 9999-12-31 (Ed25519
//                 signatures are deterministic, so the certificate's bytes are too).
// Each end presents that certificate and trusts only it (no system trust store); the server
// requires a client certificate, the client checks the server's against the name
// "peerlight-cluster", and only TLS 1.3 is spoken. A peer without the key cannot complete the
// handshake in either role, and a relay only forwards ciphertext. The key never travels; the
// certificate reveals only a public key derived one way from it.
//
// Errors: wrapClient() and wrapServer() reject with
//   FAILED        "TLS: the peer does not hold this cluster key (<OpenSSL's reason>)" when the
//                 peer's certificate is not ours, or the peer refused ours;
//   DISCONNECTED  "TLS handshake failed: <reason>" for anything else (the connection closed
//                 mid-handshake, the peer does not speak TLS), so that callers treat it like
//                 any lost connection.
//
// Threads and lifetimes: create() on any thread; one SecureChannel may wrap any number of
// streams, on the thread of their event loop (the TLS state of a stream is its own; the shared
// OpenSSL context is only read). The wrapped stream owns the plain one and is independent of the
// SecureChannel once the wrap promise has resolved, but the SecureChannel must outlive the
// promises it returns. Implemented with kj-tls (kj::TlsContext) over OpenSSL 3.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <kj/async-io.h>

#include "core/util/status.h"
#include "transport/auth.h"

namespace kj {
class TlsContext;
}

namespace pl {

// The name in the derived certificate, which clients check.
inline constexpr char kTlsPeerName[] = "peerlight-cluster";

// The identity derived from a key (see above), DER encoded.
struct TlsIdentity {
  std::vector<uint8_t> privateKeyDer;   // PKCS#8; secret, like the key
  std::vector<uint8_t> certificateDer;  // public
};

// Fails only for an empty key or when OpenSSL fails (the message says which step).
Result<TlsIdentity> deriveTlsIdentity(const ClusterKey& key);

class SecureChannel {
 public:
  static Result<std::unique_ptr<SecureChannel>> create(const ClusterKey& key);
  ~SecureChannel();
  SecureChannel(const SecureChannel&) = delete;
  SecureChannel& operator=(const SecureChannel&) = delete;

  // The client (Primary) side: resolves when the handshake is done and the server proved it
  // holds the key; rejects as described above.
  kj::Promise<kj::Own<kj::AsyncIoStream>> wrapClient(kj::Own<kj::AsyncIoStream> stream);
  // The server (Render Node) side: resolves when the handshake is done and the client proved it
  // holds the key (or closed the connection mid-handshake: the stream then reads end of file).
  kj::Promise<kj::Own<kj::AsyncIoStream>> wrapServer(kj::Own<kj::AsyncIoStream> stream);

  const std::vector<uint8_t>& certificateDer() const { return certificateDer_; }

 private:
  SecureChannel() = default;

  std::vector<uint8_t> certificateDer_;
  std::unique_ptr<kj::TlsContext> context_;
};

// True when a rejection of wrapClient() / wrapServer() says the peer does not hold our key.
bool isTlsKeyMismatch(const kj::Exception& e);
// The reason inside such a rejection, e.g. "tlsv1 alert unknown ca" (for log lines).
std::string tlsFailureReason(const kj::Exception& e);

}  // namespace pl
