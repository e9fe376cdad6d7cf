#pragma once
// The cluster key and the Gate's challenge-response (transport/protocol.capnp, Gate).
//
// The key is a file of secret bytes (16 .. 1024 of them, used as they are; a fresh one is 32
// random bytes). Where it lives: --key-file F, else $PEERLIGHT_KEY_FILE, else
// ~/.config/peerlight/cluster.key. A missing key file is created on first use: parent
// directories with mode 0700, the file with mode 0600 (O_EXCL, so two processes starting at
// once agree on one key). A key file that group or others may read is used, with a warning.
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
#include <vector>

#include "core/util/status.h"

namespace pl {

constexpr size_t kNonceBytes = 32;
constexpr size_t kProofBytes = 32;
constexpr size_t kNewClusterKeyBytes = 32;
constexpr size_t kMinClusterKeyBytes = 16;
constexpr size_t kMaxClusterKeyBytes = 1024;

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
