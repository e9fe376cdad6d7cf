// SecureChannel: see secure_channel.h.

#include "transport/secure_channel.h"

#include <capnp/common.h>
#include <kj/compat/tls.h>
#include <kj/debug.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <array>
#include <cstring>
#include <type_traits>

#include "core/util/check.h"

namespace pl {
namespace {

constexpr char kHkdfSalt[] = "peerlight";
constexpr char kHkdfInfo[] = "peerlight tls identity v1";
constexpr size_t kSeedBytes = 32;
// Suites in order of preference: AES-GCM is fastest where the CPU has AES instructions.
constexpr char kTls13Suites[] =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";

// OpenSSL's queued errors as text ("" when none), and the queue cleared.
std::string opensslErrors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    out += (out.empty() ? "" : "; ") + std::string(buf);
  }
  return out;
}

Error opensslFailure(const char* step) {
  std::string why = opensslErrors();
  return Error{std::string("TLS identity: ") + step + " failed" +
               (why.empty() ? std::string() : ": " + why)};
}

template <typename T, void (*Free)(T*)>
struct Freer {
  void operator()(T* p) const { Free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, Freer<EVP_PKEY, EVP_PKEY_free>>;
using PkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, Freer<EVP_PKEY_CTX, EVP_PKEY_CTX_free>>;
using X509Ptr = std::unique_ptr<X509, Freer<X509, X509_free>>;
using NamePtr = std::unique_ptr<X509_NAME, Freer<X509_NAME, X509_NAME_free>>;
using ExtPtr = std::unique_ptr<X509_EXTENSION, Freer<X509_EXTENSION, X509_EXTENSION_free>>;

// HKDF-SHA256 of the key: the Ed25519 seed.
Result<std::array<uint8_t, kSeedBytes>> deriveSeed(const ClusterKey& key) {
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, nullptr));
  std::array<uint8_t, kSeedBytes> seed{};
  size_t size = seed.size();
  if (!ctx || EVP_PKEY_derive_init(ctx.get()) <= 0 ||
      EVP_PKEY_CTX_set_hkdf_md(ctx.get(), EVP_sha256()) <= 0 ||
      EVP_PKEY_CTX_set1_hkdf_salt(ctx.get(), reinterpret_cast<const uint8_t*>(kHkdfSalt),
                                  int(std::strlen(kHkdfSalt))) <= 0 ||
      EVP_PKEY_CTX_set1_hkdf_key(ctx.get(), key.bytes.data(), int(key.bytes.size())) <= 0 ||
      EVP_PKEY_CTX_add1_hkdf_info(ctx.get(), reinterpret_cast<const uint8_t*>(kHkdfInfo),
                                  int(std::strlen(kHkdfInfo))) <= 0 ||
      EVP_PKEY_derive(ctx.get(), seed.data(), &size) <= 0 || size != seed.size()) {
    return opensslFailure("HKDF-SHA256");
  }
  return seed;
}

Status addExtension(X509* cert, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, cert, cert, nullptr, nullptr, 0);
  ExtPtr ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value));
  if (!ext || X509_add_ext(cert, ext.get(), -1) != 1) return opensslFailure("X509 extension");
  return Status();
}

Result<std::vector<uint8_t>> selfSignedCertificate(EVP_PKEY* pkey) {
  X509Ptr cert(X509_new());
  NamePtr name(X509_NAME_new());
  if (!cert || !name) return opensslFailure("X509_new");
  ASN1_TIME* notBefore = X509_getm_notBefore(cert.get());
  ASN1_TIME* notAfter = X509_getm_notAfter(cert.get());
  if (X509_set_version(cert.get(), 2) != 1 ||
      ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 1) != 1 ||
      ASN1_TIME_set_string_X509(notBefore, "20000101000000Z") != 1 ||
      ASN1_TIME_set_string_X509(notAfter, "99991231235959Z") != 1 ||
      X509_NAME_add_entry_by_txt(name.get(), "CN", MBSTRING_ASC,
                                 reinterpret_cast<const unsigned char*>(kTlsPeerName), -1, -1,
                                 0) != 1 ||
      X509_set_subject_name(cert.get(), name.get()) != 1 ||
      X509_set_issuer_name(cert.get(), name.get()) != 1 ||
      X509_set_pubkey(cert.get(), pkey) != 1) {
    return opensslFailure("X509 fields");
  }
  const std::string san = std::string("DNS:") + kTlsPeerName;
  for (auto [nid, value] : {std::pair<int, const char*>{NID_subject_alt_name, san.c_str()},
                            {NID_basic_constraints, "critical,CA:FALSE"},
                            {NID_key_usage, "critical,digitalSignature"},
                            {NID_ext_key_usage, "serverAuth,clientAuth"}}) {
    if (Status s = addExtension(cert.get(), nid, value); !s.ok()) return s.error();
  }
  // Ed25519 signs without a separate digest (and deterministically).
  if (X509_sign(cert.get(), pkey, nullptr) <= 0) return opensslFailure("X509_sign");
  int size = i2d_X509(cert.get(), nullptr);
  if (size <= 0) return opensslFailure("i2d_X509");
  std::vector<uint8_t> der(static_cast<size_t>(size));
  uint8_t* out = der.data();
  if (i2d_X509(cert.get(), &out) != size) return opensslFailure("i2d_X509");
  return der;
}

// kj::TlsContext (Cap'n Proto 0.9.2) knows no TLS 1.3 minimum and sets no peer verification for
// clients (it checks the result after the handshake). Its SSL_CTX is its first member
// (`void* ctx;` then `Maybe<Timer&> timer; Maybe<Duration> acceptTimeout;`, 32 bytes on
// 64-bit): reach it there. The assumption is pinned to that release and that size at compile
// time, so a Cap'n Proto that changes it fails the build instead of misreading memory; and
// checked at run time (the context holds our certificate).
static_assert(CAPNP_VERSION == 9002,
              "sslContextOf() reads kj::TlsContext's first member as laid out in Cap'n Proto "
              "0.9.2: check the layout of this release's kj/compat/tls.h, then update this pin");
static_assert(std::is_standard_layout_v<kj::TlsContext> &&
                  sizeof(kj::TlsContext) == sizeof(void*) + sizeof(kj::Maybe<kj::Timer&>) +
                                                sizeof(kj::Maybe<kj::Duration>),
              "kj::TlsContext's layout changed: revisit sslContextOf()");
SSL_CTX* sslContextOf(kj::TlsContext& context) {
  return *reinterpret_cast<SSL_CTX**>(&context);
}

// "OpenSSL error; message = error:0A000086:SSL routines::certificate verify failed" ->
// "certificate verify failed" (each line of several).
std::string shortReason(const kj::Exception& e) {
  std::string text = e.getDescription().cStr();
  const std::string prefix = "OpenSSL error; message = ";
  if (text.rfind(prefix, 0) == 0) text = text.substr(prefix.size());
  std::string out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    if (line.rfind("error:", 0) == 0) {
      size_t colons = line.rfind("::");
      if (colons != std::string::npos) line = line.substr(colons + 2);
    }
    if (!line.empty()) out += (out.empty() ? "" : "; ") + line;
    start = end + 1;
  }
  return out.empty() ? text : out;
}

bool mentionsKeyMismatch(const std::string& reason) {
  // What OpenSSL says when the peer's certificate is not ours (certificate verify failed) or
  // when the peer refused ours (the alerts), and kj-tls's own check.
  static const char* const kSigns[] = {
      "certificate verify failed", "unknown ca",       "bad certificate",
      "certificate required",      "certificate unknown", "peer did not return a certificate",
      "certificate is not trusted", "decrypt error"};
  for (const char* sign : kSigns) {
    if (reason.find(sign) != std::string::npos) return true;
  }
  return false;
}

constexpr char kMismatchPrefix[] = "TLS: the peer does not hold this cluster key";
constexpr char kHandshakeFailedPrefix[] = "TLS handshake failed: ";

kj::Exception translate(kj::Exception&& e) {
  if (e.getType() == kj::Exception::Type::DISCONNECTED) {
    return kj::Exception(kj::Exception::Type::DISCONNECTED, __FILE__, __LINE__,
                         kj::str(kHandshakeFailedPrefix, e.getDescription()));
  }
  std::string reason = shortReason(e);
  if (mentionsKeyMismatch(reason)) {
    return kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__,
                         kj::str(kMismatchPrefix, " (", reason.c_str(), ")"));
  }
  return kj::Exception(kj::Exception::Type::DISCONNECTED, __FILE__, __LINE__,
                       kj::str(kHandshakeFailedPrefix, reason.c_str()));
}

}  // namespace

Result<TlsIdentity> deriveTlsIdentity(const ClusterKey& key) {
  if (key.bytes.empty()) return Error{"TLS identity: the cluster key is empty"};
  Result<std::array<uint8_t, kSeedBytes>> seed = deriveSeed(key);
  if (!seed.ok()) return seed.error();
  PkeyPtr pkey(EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr, seed->data(), seed->size()));
  OPENSSL_cleanse(seed->data(), seed->size());
  if (!pkey) return opensslFailure("Ed25519 key");

  TlsIdentity identity;
  int size = i2d_PrivateKey(pkey.get(), nullptr);
  if (size <= 0) return opensslFailure("i2d_PrivateKey");
  identity.privateKeyDer.resize(size_t(size));
  uint8_t* out = identity.privateKeyDer.data();
  if (i2d_PrivateKey(pkey.get(), &out) != size) return opensslFailure("i2d_PrivateKey");
  Result<std::vector<uint8_t>> cert = selfSignedCertificate(pkey.get());
  if (!cert.ok()) return cert.error();
  identity.certificateDer = std::move(*cert);
  return identity;
}

Result<std::unique_ptr<SecureChannel>> SecureChannel::create(const ClusterKey& key) {
  Result<TlsIdentity> identity = deriveTlsIdentity(key);
  if (!identity.ok()) return identity.error();
  std::unique_ptr<SecureChannel> channel(new SecureChannel());
  channel->certificateDer_ = identity->certificateDer;
  kj::Maybe<kj::Exception> failure = kj::runCatchingExceptions([&]() {
    auto keyBytes = kj::arrayPtr(identity->privateKeyDer.data(), identity->privateKeyDer.size());
    auto certBytes = kj::arrayPtr(identity->certificateDer.data(), identity->certificateDer.size());
    kj::TlsKeypair keypair{kj::TlsPrivateKey(keyBytes), kj::TlsCertificate(certBytes)};
    kj::TlsCertificate trusted(certBytes);
    kj::TlsContext::Options options;
    options.useSystemTrustStore = false;
    options.trustedCertificates = kj::arrayPtr(&trusted, 1);
    options.verifyClients = true;
    options.minVersion = kj::TlsVersion::TLS_1_2;  // raised to 1.3 below
    options.defaultKeypair = keypair;
    // The context keeps its own references to the key and certificates.
    channel->context_ = std::make_unique<kj::TlsContext>(kj::mv(options));
  });
  OPENSSL_cleanse(identity->privateKeyDer.data(), identity->privateKeyDer.size());
  KJ_IF_MAYBE (e, failure) {
    return Error{std::string("TLS context: ") + e->getDescription().cStr()};
  }

  SSL_CTX* ctx = sslContextOf(*channel->context_);
  // The run-time half of the layout check: this is the context that holds our certificate.
  X509* own = SSL_CTX_get0_certificate(ctx);
  PL_CHECK_MSG(own != nullptr, "kj::TlsContext holds no certificate: layout changed?");
  std::vector<uint8_t> ownDer(size_t(std::max(i2d_X509(own, nullptr), 0)));
  uint8_t* out = ownDer.data();
  PL_CHECK_MSG(!ownDer.empty() && i2d_X509(own, &out) == int(ownDer.size()) &&
                   ownDer == channel->certificateDer_,
               "kj::TlsContext's SSL_CTX does not hold our certificate: layout changed?");
  // Only TLS 1.3; both roles verify the peer during the handshake (a client aborts before it
  // sends anything of its own to a server without the key); no session tickets (nothing resumes).
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_ciphersuites(ctx, kTls13Suites) != 1 || SSL_CTX_set_num_tickets(ctx, 0) != 1) {
    return opensslFailure("TLS 1.3 settings");
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  return channel;
}

SecureChannel::~SecureChannel() = default;

kj::Promise<kj::Own<kj::AsyncIoStream>> SecureChannel::wrapClient(
    kj::Own<kj::AsyncIoStream> stream) {
  return kj::evalNow([&]() { return context_->wrapClient(kj::mv(stream), kTlsPeerName); })
      .catch_([](kj::Exception&& e) -> kj::Promise<kj::Own<kj::AsyncIoStream>> {
        return translate(kj::mv(e));
      });
}

kj::Promise<kj::Own<kj::AsyncIoStream>> SecureChannel::wrapServer(
    kj::Own<kj::AsyncIoStream> stream) {
  return kj::evalNow([&]() { return context_->wrapServer(kj::mv(stream)); })
      .catch_([](kj::Exception&& e) -> kj::Promise<kj::Own<kj::AsyncIoStream>> {
        return translate(kj::mv(e));
      });
}

bool isTlsKeyMismatch(const kj::Exception& e) {
  return e.getType() == kj::Exception::Type::FAILED &&
         std::string(e.getDescription().cStr()).rfind(kMismatchPrefix, 0) == 0;
}

std::string tlsFailureReason(const kj::Exception& e) {
  std::string text = e.getDescription().cStr();
  const std::string mismatch = std::string(kMismatchPrefix) + " (";
  if (text.rfind(mismatch, 0) == 0 && text.back() == ')') {
    return text.substr(mismatch.size(), text.size() - mismatch.size() - 1);
  }
  const std::string failed = kHandshakeFailedPrefix;
  if (text.rfind(failed, 0) == 0) return text.substr(failed.size());
  return text;
}

}  // namespace pl
