#pragma once
// The cluster key and the Gate's challenge-response (transport/protocol.capnp, Gate).
//
// The key is a file of secret bytes (16 .. 1024 of them, used as they are; a fresh one is 32
// random bytes). Where it lives: --key-file F, else $PEERLIGHT_KEY_FILE, else
// ~/.config/peerlight/cluster.key. A missing key file is created on first use: parent
// directories with mode 0700, the file with mode 0600 (O_EXCL, so two processes starting at
// once agree on one key). Keys are generated, never typed: a key file that holds only
// printable characters is refused (a passphrase could be guessed offline from the key's
// fingerprint); a passphrase becomes a key through scrypt with a salt for the cluster
// (deriveClusterKey(), `peerlight key --passphrase`). A key file that others may read or
// change, that belongs to another user or that is reached through a link is refused.
//
// Proofs are HMAC-SHA256 (OpenSSL libcrypto) over a label and both nonces, so the key never
// travels and a recorded exchange cannot be replayed with fresh nonces:
//   nodeProof    = HMAC(key, "peerlight node"    || primaryNonce || nodeNonce)
//   primaryProof = HMAC(key, "peerlight primary" || nodeNonce    || primaryNonce)
//
// Threads: all functions are thread-safe.

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/util/status.h"

namespace pl {

constexpr size_t kNonceBytes = 32;
constexpr size_t kProofBytes = 32;
constexpr size_t kNewClusterKeyBytes = 32;
constexpr size_t kMinClusterKeyBytes = 16;
constexpr size_t kMaxClusterKeyBytes = 1024;
constexpr size_t kMinPassphraseChars = 8;
constexpr size_t kClusterSaltBytes = 16;
// scrypt's cost: 32 MiB and about 0.1 s per guess on one core of this project's VM.
constexpr uint64_t kScryptN = uint64_t(1) << 15;
constexpr uint64_t kScryptR = 8;
constexpr uint64_t kScryptP = 1;
constexpr uint64_t kScryptMaxMemory = uint64_t(64) << 20;

using Nonce = std::array<uint8_t, kNonceBytes>;
using Proof = std::array<uint8_t, kProofBytes>;

struct ClusterKey {
  std::vector<uint8_t> bytes;  // the secret; never logged or sent
};

// The key file to use: `explicitPath` when not empty, else $PEERLIGHT_KEY_FILE when set and not
// empty, else $HOME/.config/peerlight/cluster.key. Fails only when none of these is known.
Result<std::string> clusterKeyPath(const std::string& explicitPath = "");

// Reads the key file at `path`; when it does not exist and `createIfMissing`, creates it (see
// above) and logs one Info line naming it. Errors name the file and the reason (unreadable, too
// short, too long, cannot create).
Result<ClusterKey> loadClusterKey(const std::string& path, bool createIfMissing = true);

// kNewClusterKeyBytes random bytes.
ClusterKey newClusterKey();
// The key a passphrase gives in the cluster that `salt` (kClusterSaltBytes) names: scrypt
// (OpenSSL 3) with kScryptN/R/P. Errors: a passphrase shorter than kMinPassphraseChars, a salt
// of another size.
Result<ClusterKey> deriveClusterKey(std::string_view passphrase, std::span<const uint8_t> salt);
// Writes a key file (see above for modes); `replace` false: fails when the file exists.
Status writeClusterKey(const std::string& path, const ClusterKey& key, bool replace);

// A short public name of the key for discovery and messages: the first 8 bytes of SHA-256 of
// the key, as 16 lowercase hex digits. Two machines with the same fingerprint share the key.
std::string keyFingerprint(const ClusterKey& key);

// Cryptographically random bytes (OpenSSL RAND_bytes; aborts if the generator fails, which
// only happens on a broken system).
Nonce randomNonce();
void randomBytes(uint8_t* out, size_t size);
// `bytes` random bytes as lowercase hex (node ids).
std::string randomHex(size_t bytes);

Proof nodeProof(const ClusterKey& key, std::span<const uint8_t> primaryNonce,
                std::span<const uint8_t> nodeNonce);
Proof primaryProof(const ClusterKey& key, std::span<const uint8_t> nodeNonce,
                   std::span<const uint8_t> primaryNonce);

// Constant-time comparison (CRYPTO_memcmp); false when the sizes differ.
bool proofMatches(std::span<const uint8_t> expected, std::span<const uint8_t> received);

}  // namespace pl
