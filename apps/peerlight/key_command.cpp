// `peerlight key [--key-file F] [--passphrase [--salt HEX]] [--force]`: makes the cluster key
// file (transport/auth.h). Keys are generated: 32 random bytes, or, from a passphrase, scrypt
// with a salt that names the cluster (a new one is printed; the other machines pass it with
// --salt and the same passphrase to get the same key). The key's fingerprint is printed, never
// the key. An existing key file is kept unless --force.

#include <termios.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "apps/peerlight/cli_util.h"
#include "apps/peerlight/commands.h"
#include "transport/auth.h"

namespace pl::app {

namespace {

struct KeyArgs {
  std::string keyFile;
  bool passphrase = false;
  std::string salt;  // hex; empty: a new one
  bool force = false;
};

// The terminal's settings while echo is off, put back on every way out (SIGINT, SIGTERM and
// SIGHUP included: the handler restores them, then dies of the signal).
struct termios gSavedTerminal {};
volatile sig_atomic_t gEchoOff = 0;

void restoreTerminal() {
  if (gEchoOff) ::tcsetattr(STDIN_FILENO, TCSANOW, &gSavedTerminal);
  gEchoOff = 0;
}

void restoreAndDie(int sig) {
  restoreTerminal();
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

// One line from stdin; with a terminal, prompted on stderr and not echoed.
std::string readPassphrase() {
  const bool tty = ::isatty(STDIN_FILENO) != 0 && ::tcgetattr(STDIN_FILENO, &gSavedTerminal) == 0;
  if (tty) {
    std::fprintf(stderr, "passphrase: ");
    std::fflush(stderr);
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) std::signal(sig, restoreAndDie);
    struct termios quiet = gSavedTerminal;
    quiet.c_lflag &= tcflag_t(~ECHO);
    gEchoOff = 1;
    ::tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
  }
  std::string line;
  std::getline(std::cin, line);
  if (tty) {
    restoreTerminal();
    std::fprintf(stderr, "\n");
  }
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return line;
}

bool parseHex(const std::string& hex, std::vector<uint8_t>* out) {
  if (hex.size() % 2 != 0) return false;
  out->clear();
  for (size_t i = 0; i < hex.size(); i += 2) {
    int value = 0;
    for (size_t j = i; j < i + 2; ++j) {
      const char c = hex[j];
      const int digit = c >= '0' && c <= '9'   ? c - '0'
                        : c >= 'a' && c <= 'f' ? c - 'a' + 10
                        : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                               : -1;
      if (digit < 0) return false;
      value = value * 16 + digit;
    }
    out->push_back(uint8_t(value));
  }
  return true;
}

void runKey(const KeyArgs& args) {
  Result<std::string> path = clusterKeyPath(args.keyFile);
  if (!path.ok()) failUsage(path.error().message);
  ClusterKey key;
  std::string salt;
  if (args.passphrase) {
    std::vector<uint8_t> saltBytes;
    if (args.salt.empty()) {
      saltBytes.resize(kClusterSaltBytes);
      randomBytes(saltBytes.data(), saltBytes.size());
    } else if (!parseHex(args.salt, &saltBytes) || saltBytes.size() != kClusterSaltBytes) {
      failUsage("--salt " + args.salt + ": " + std::to_string(2 * kClusterSaltBytes) +
                " hex digits (the salt `peerlight key --passphrase` printed on the cluster's "
                "first machine)");
    }
    static const char* kHex = "0123456789abcdef";
    for (uint8_t b : saltBytes) {
      salt += kHex[b >> 4];
      salt += kHex[b & 15];
    }
    Result<ClusterKey> derived = deriveClusterKey(readPassphrase(), saltBytes);
    if (!derived.ok()) failUsage(derived.error().message);
    key = std::move(derived).value();
  } else {
    if (!args.salt.empty()) failUsage("--salt goes with --passphrase");
    key = newClusterKey();
  }
  if (Status s = writeClusterKey(*path, key, args.force); !s.ok())
    fail(s.error().message + (args.force ? "" : " (--force replaces it)"), 1);
  std::printf("cluster key %s (fingerprint %s)\n", path->c_str(), keyFingerprint(key).c_str());
  if (args.passphrase && args.salt.empty())
    std::printf("salt %s: on the cluster's other machines, run\n  peerlight key --passphrase "
                "--salt %s\nwith the same passphrase\n",
                salt.c_str(), salt.c_str());
  else if (!args.passphrase)
    std::printf("copy this file to the cluster's other machines (mode 0600)\n");
}

}  // namespace

void addKeyCommand(CLI::App& app) {
  auto args = std::make_shared<KeyArgs>();
  CLI::App* cmd = app.add_subcommand(
      "key", "Make the cluster key file: random, or from a passphrase (scrypt, with a salt "
             "for the cluster)");
  cmd->add_option("--key-file", args->keyFile,
                  "Where (default: $PEERLIGHT_KEY_FILE, else ~/.config/peerlight/cluster.key)");
  cmd->add_flag("--passphrase", args->passphrase,
                "Derive the key from a passphrase read from stdin (at least 8 characters)");
  cmd->add_option("--salt", args->salt,
                  "The cluster's salt (32 hex digits) printed on its first machine; without "
                  "it, a new cluster's salt is made and printed")
      ->type_name("HEX");
  cmd->add_flag("--force", args->force, "Replace an existing key file");
  cmd->callback([args] { runKey(*args); });
}

}  // namespace pl::app
