// `peerlight key`: a random key, or a passphrase's key through scrypt with the cluster's salt.
// Two machines given the same passphrase and salt get the same key (the same fingerprint);
// another salt gives another; an existing key is kept unless --force; a typed key file is
// refused by the commands that use keys, naming `peerlight key`.

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <regex>

#include "tests/integration/process.h"

namespace pl {
namespace {

using testing::Process;
using testing::TempDir;
using namespace std::chrono_literals;

const std::string kBinary = PEERLIGHT_BINARY;

// Runs `peerlight key ARGS` with `stdinText`; returns (status, stdout, stderr).
struct KeyRun {
  int status;
  std::string out, err;
};
KeyRun key(const TempDir& dir, const std::string& tag, std::vector<std::string> args,
        const std::string& stdinText = "") {
  std::vector<std::string> argv = {kBinary, "key"};
  argv.insert(argv.end(), args.begin(), args.end());
  Process p(argv, dir.file(tag + ".out"), dir.file(tag + ".err"), {"HOME=" + dir.path()},
            /*pipeStdin=*/true);
  p.writeStdin(stdinText);
  p.closeStdin();
  const int status = p.wait(60s).value_or(-1);
  return {status, p.out(), p.err()};
}

std::string fingerprintIn(const std::string& out) {
  std::smatch m;
  return std::regex_search(out, m, std::regex("fingerprint ([0-9a-f]{16})")) ? m[1].str() : "";
}

TEST(KeyCommand, PassphraseKeysAgreeWithinAClusterAndRandomKeysAreKept) {
  TempDir dir;
  ASSERT_TRUE(dir.ok());
  // The first machine: a new salt is made and printed.
  KeyRun first = key(dir, "first", {"--key-file", dir.file("a.key"), "--passphrase"},
                  "the cluster passphrase\n");
  ASSERT_EQ(first.status, 0) << first.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(first.out, m, std::regex("salt ([0-9a-f]{32})"))) << first.out;
  const std::string salt = m[1].str();
  // Another machine, with that salt and the same passphrase: the same key.
  KeyRun second = key(dir, "second",
                   {"--key-file", dir.file("b.key"), "--passphrase", "--salt", salt},
                   "the cluster passphrase\n");
  ASSERT_EQ(second.status, 0) << second.err;
  EXPECT_EQ(fingerprintIn(first.out), fingerprintIn(second.out));
  EXPECT_FALSE(fingerprintIn(first.out).empty());
  // Another salt: another cluster, another key.
  KeyRun third = key(dir, "third",
                  {"--key-file", dir.file("c.key"), "--passphrase", "--salt",
                   std::string(32, '0')},
                  "the cluster passphrase\n");
  ASSERT_EQ(third.status, 0) << third.err;
  EXPECT_NE(fingerprintIn(first.out), fingerprintIn(third.out));
  struct stat st {};
  ASSERT_EQ(::stat(dir.file("b.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  // Bad input: a short passphrase, a bad salt; an existing key is kept without --force.
  EXPECT_EQ(key(dir, "short", {"--key-file", dir.file("d.key"), "--passphrase"}, "short\n")
                .status,
            2);
  EXPECT_EQ(key(dir, "salt", {"--key-file", dir.file("d.key"), "--passphrase", "--salt", "xyz"},
                "the cluster passphrase\n")
                .status,
            2);
  KeyRun kept = key(dir, "kept", {"--key-file", dir.file("a.key")});
  EXPECT_NE(kept.status, 0);
  EXPECT_NE(kept.err.find("--force"), std::string::npos) << kept.err;
  KeyRun replaced = key(dir, "replaced", {"--key-file", dir.file("a.key"), "--force"});
  EXPECT_EQ(replaced.status, 0) << replaced.err;
  EXPECT_NE(fingerprintIn(replaced.out), fingerprintIn(first.out));

  // A typed key file: `peerlight nodes` refuses it and says how to make a key.
  {
    std::ofstream(dir.file("typed.key")) << "hunter2hunter2hunter2\n";
  }
  ::chmod(dir.file("typed.key").c_str(), 0600);
  Process nodes({kBinary, "nodes", "--key-file", dir.file("typed.key"), "--no-mdns", "--peer",
                 "127.0.0.1:1", "--wait", "0"},
                dir.file("nodes.out"), dir.file("nodes.err"), {"HOME=" + dir.path()});
  nodes.wait(30s);
  EXPECT_NE(nodes.err().find("peerlight key"), std::string::npos) << nodes.err();
}

}  // namespace
}  // namespace pl
