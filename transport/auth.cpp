#include "transport/auth.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstdio>
#include <cstring>

#include "core/util/check.h"
#include "core/util/log.h"

namespace pl {
namespace {

std::string errnoText() { return std::strerror(errno); }

std::string toHex(const uint8_t* bytes, size_t size) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out(size * 2, '0');
  for (size_t i = 0; i < size; ++i) {
    out[2 * i] = kDigits[bytes[i] >> 4];
    out[2 * i + 1] = kDigits[bytes[i] & 15];
  }
  return out;
}

// mkdir -p with mode 0700 for the directories it creates.
Status makeParentDirs(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos || slash == 0) return Status();
  std::string dir = path.substr(0, slash);
  for (size_t pos = 1; pos <= dir.size(); ++pos) {
    if (pos != dir.size() && dir[pos] != '/') continue;
    std::string prefix = dir.substr(0, pos);
    if (::mkdir(prefix.c_str(), 0700) != 0 && errno != EEXIST) {
      return Error{"cluster key: cannot create directory " + prefix + ": " + errnoText()};
    }
  }
  return Status();
}

Proof hmacProof(const ClusterKey& key, const char* label, std::span<const uint8_t> first,
                std::span<const uint8_t> second) {
  std::vector<uint8_t> message;
  size_t labelSize = std::strlen(label);
  message.reserve(labelSize + first.size() + second.size());
  message.insert(message.end(), label, label + labelSize);
  message.insert(message.end(), first.begin(), first.end());
  message.insert(message.end(), second.begin(), second.end());
  Proof proof{};
  unsigned int size = 0;
  const uint8_t* ok = HMAC(EVP_sha256(), key.bytes.data(), int(key.bytes.size()), message.data(),
                           message.size(), proof.data(), &size);
  PL_CHECK_MSG(ok != nullptr && size == kProofBytes, "HMAC-SHA256 failed");
  return proof;
}

}  // namespace

Result<std::string> clusterKeyPath(const std::string& explicitPath) {
  if (!explicitPath.empty()) return explicitPath;
  if (const char* env = std::getenv("PEERLIGHT_KEY_FILE"); env != nullptr && *env != '\0') {
    return std::string(env);
  }
  const char* home = std::getenv("HOME");
  if (home == nullptr || *home == '\0') {
    return Error{"cluster key: no --key-file, no PEERLIGHT_KEY_FILE and no HOME to find "
                 "~/.config/peerlight/cluster.key"};
  }
  return std::string(home) + "/.config/peerlight/cluster.key";
}

namespace {

// Writes `key` to `path` (mode 0600, parent folders 0700): to a temporary file first, then
// link()ed into place when `replace` is false (EEXIST when the file exists: another process
// won a race, or a key is there already) or renamed over it when true. Nobody ever sees a
// half-written key file.
Status writeKeyFile(const std::string& path, const ClusterKey& key, bool replace) {
  if (Status made = makeParentDirs(path); !made.ok()) return made.error();
  // A name of its own (a stale file of a crashed run, another thread: never this one).
  std::string temp = path + ".new." + randomHex(8);
  int out = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (out < 0) return Error{"cluster key: cannot create " + temp + ": " + errnoText()};
  ssize_t written = ::write(out, key.bytes.data(), key.bytes.size());
  std::string why = written < 0 ? errnoText() : "short write";
  int synced = ::fsync(out);
  if (synced != 0) why = errnoText();
  int closed = ::close(out);
  if (written != ssize_t(key.bytes.size()) || synced != 0 || closed != 0) {
    ::unlink(temp.c_str());
    return Error{"cluster key: cannot write " + temp + ": " + why};
  }
  const int placed = replace ? ::rename(temp.c_str(), path.c_str())
                             : ::link(temp.c_str(), path.c_str());
  const int placeErrno = errno;
  ::unlink(temp.c_str());
  if (placed == 0) {
    // The folder's entry is durable too: after a power loss the key is the one we announced.
    const size_t slash = path.rfind('/');
    const std::string folder = slash == std::string::npos ? "." : path.substr(0, slash + 1);
    int dir = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir >= 0) {
      ::fsync(dir);
      ::close(dir);
    }
    return Status();
  }
  errno = placeErrno;
  if (errno == EEXIST) return Error{"cluster key: " + path + " exists already"};
  return Error{"cluster key: cannot create " + path + ": " + errnoText()};
}

// Only printable characters: a passphrase typed into the file, not a generated key (32 random
// bytes are all printable with probability (95/256)^32, about 1e-14).
bool looksTyped(const std::vector<uint8_t>& bytes) {
  for (uint8_t b : bytes)
    if (!((b >= 0x20 && b < 0x7f) || b == '\t' || b == '\n' || b == '\r')) return false;
  return true;
}

}  // namespace

Status writeClusterKey(const std::string& path, const ClusterKey& key, bool replace) {
  if (key.bytes.size() < kMinClusterKeyBytes || key.bytes.size() > kMaxClusterKeyBytes)
    return Error{"cluster key: a key has " + std::to_string(kMinClusterKeyBytes) + " to " +
                 std::to_string(kMaxClusterKeyBytes) + " bytes"};
  return writeKeyFile(path, key, replace);
}

ClusterKey newClusterKey() {
  ClusterKey key;
  key.bytes.resize(kNewClusterKeyBytes);
  randomBytes(key.bytes.data(), key.bytes.size());
  return key;
}

Result<ClusterKey> deriveClusterKey(std::string_view passphrase, std::span<const uint8_t> salt) {
  if (passphrase.size() < kMinPassphraseChars)
    return Error{"passphrase: at least " + std::to_string(kMinPassphraseChars) + " characters"};
  if (salt.size() != kClusterSaltBytes)
    return Error{"salt: " + std::to_string(kClusterSaltBytes) + " bytes (" +
                 std::to_string(2 * kClusterSaltBytes) + " hex digits)"};
  // The salt names the cluster, with a label of ours: one passphrase gives each cluster its
  // own key, and precomputed tables for other uses of scrypt do not apply.
  std::vector<uint8_t> label = {'p', 'e', 'e', 'r', 'l', 'i', 'g', 'h', 't', ' ', 'c', 'l',
                                'u', 's', 't', 'e', 'r', ' ', 'k', 'e', 'y', ' ', 'v', '1'};
  label.insert(label.end(), salt.begin(), salt.end());
  ClusterKey key;
  key.bytes.resize(kNewClusterKeyBytes);
  if (EVP_PBE_scrypt(passphrase.data(), passphrase.size(), label.data(), label.size(),
                     kScryptN, kScryptR, kScryptP, kScryptMaxMemory, key.bytes.data(),
                     key.bytes.size()) != 1)
    return Error{"passphrase: scrypt failed (out of memory?)"};
  return key;
}

Result<ClusterKey> loadClusterKey(const std::string& path, bool createIfMissing) {
  // Never through a link (whoever controls the link decides which key this node trusts).
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0 && errno == ELOOP)
    return Error{"cluster key: " + path + " is a symbolic link; name the key file itself"};
  if (fd < 0 && errno == ENOENT && createIfMissing) {
    ClusterKey key = newClusterKey();
    Status written = writeKeyFile(path, key, /*replace=*/false);
    if (written.ok()) {
      PL_LOG_INFO("created a new cluster key in %s (fingerprint %s); copy this file to the "
                  "machines that should join the cluster",
                  path.c_str(), keyFingerprint(key).c_str());
      return key;
    }
    if (written.error().message.find("exists already") == std::string::npos)
      return written.error();
    // Another process created it just now.
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  }
  if (fd < 0) return Error{"cluster key: cannot open " + path + ": " + errnoText()};

  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return Error{"cluster key: cannot stat " + path + ": " + errnoText()};
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return Error{"cluster key: " + path + " is not a regular file"};
  }
  if (st.st_size < off_t(kMinClusterKeyBytes) || st.st_size > off_t(kMaxClusterKeyBytes)) {
    ::close(fd);
    return Error{"cluster key: " + path + " holds " + std::to_string(st.st_size) +
                 " bytes; a key has " + std::to_string(kMinClusterKeyBytes) + " to " +
                 std::to_string(kMaxClusterKeyBytes)};
  }
  // A key others may read is no secret; one another user owns may be theirs to change.
  if (st.st_uid != ::geteuid()) {
    ::close(fd);
    return Error{"cluster key: " + path + " belongs to uid " + std::to_string(st.st_uid) +
                 ", not to this user (uid " + std::to_string(::geteuid()) + "); use a key file of your own"};
  }
  if ((st.st_mode & 077) != 0) {
    ::close(fd);
    char mode[8];
    std::snprintf(mode, sizeof mode, "%03o", unsigned(st.st_mode & 0777));
    return Error{"cluster key: " + path + " may be read or changed by other users (mode " + mode +
                 "); chmod 600 it"};
  }
  ClusterKey key;
  key.bytes.resize(size_t(st.st_size));
  size_t got = 0;
  while (got < key.bytes.size()) {
    ssize_t n = ::read(fd, key.bytes.data() + got, key.bytes.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += size_t(n);
  }
  ::close(fd);
  if (got != key.bytes.size()) return Error{"cluster key: cannot read " + path};
  if (looksTyped(key.bytes))
    return Error{"cluster key: " + path + " holds only printable characters, like a typed "
                 "passphrase, which can be guessed offline from the key's fingerprint (mDNS "
                 "announces it); make a key with `peerlight key`, or derive one from a "
                 "passphrase with `peerlight key --passphrase` (scrypt, with a salt for the "
                 "cluster)"};
  return key;
}

std::string keyFingerprint(const ClusterKey& key) {
  uint8_t digest[SHA256_DIGEST_LENGTH];
  SHA256(key.bytes.data(), key.bytes.size(), digest);
  return toHex(digest, 8);
}

void randomBytes(uint8_t* out, size_t size) {
  PL_CHECK_MSG(RAND_bytes(out, int(size)) == 1, "OpenSSL RAND_bytes failed");
}

Nonce randomNonce() {
  Nonce nonce;
  randomBytes(nonce.data(), nonce.size());
  return nonce;
}

std::string randomHex(size_t bytes) {
  std::vector<uint8_t> raw(bytes);
  randomBytes(raw.data(), raw.size());
  return toHex(raw.data(), raw.size());
}

Proof nodeProof(const ClusterKey& key, std::span<const uint8_t> primaryNonce,
                std::span<const uint8_t> nodeNonce) {
  return hmacProof(key, "peerlight node", primaryNonce, nodeNonce);
}

Proof primaryProof(const ClusterKey& key, std::span<const uint8_t> nodeNonce,
                   std::span<const uint8_t> primaryNonce) {
  return hmacProof(key, "peerlight primary", nodeNonce, primaryNonce);
}

bool proofMatches(std::span<const uint8_t> expected, std::span<const uint8_t> received) {
  if (expected.size() != received.size()) return false;
  return CRYPTO_memcmp(expected.data(), received.data(), expected.size()) == 0;
}

}  // namespace pl
