// checkDaemonTrusted / checkDaemonAt (transport/control_client.h): a render hands its job only
// to a daemon it can trust. Plain listening Unix sockets stand in for daemons; as root, a child
// process that drops to another uid plays the fake daemon at a /tmp-like path (issue 13).

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>

#include "transport/control_client.h"

namespace pl {
namespace {

namespace fs = std::filesystem;

// A listening socket at `path` (connections wait in its backlog); -1 on failure.
int listenAt(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 8) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

class TempDir {
 public:
  TempDir() {
    char name[] = "/tmp/pl-trust-XXXXXX";
    path_ = ::mkdtemp(name);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(ControlTrustTest, ThisUsersOwnFolderAndDaemonAreTrusted) {
  TempDir dir;
  const std::string folder = dir.path() + "/peerlight";
  ASSERT_EQ(::mkdir(folder.c_str(), 0700), 0);
  const int fd = listenAt(folder + "/node.sock");
  ASSERT_GE(fd, 0);
  Status s = checkDaemonAt(folder + "/node.sock");
  EXPECT_TRUE(s.ok()) << s.error().message;
  ::close(fd);
}

TEST(ControlTrustTest, AFolderOthersMayWriteOrALinkedFolderIsRefusedNamingThePathAndUids) {
  TempDir dir;
  const std::string folder = dir.path() + "/open";
  ASSERT_EQ(::mkdir(folder.c_str(), 0700), 0);
  ASSERT_EQ(::chmod(folder.c_str(), 0777), 0);
  int fd = listenAt(folder + "/node.sock");
  ASSERT_GE(fd, 0);
  Status s = checkDaemonAt(folder + "/node.sock");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find(folder + "/node.sock"), std::string::npos) << s.error().message;
  EXPECT_NE(s.error().message.find("writable by others"), std::string::npos) << s.error().message;
  EXPECT_NE(s.error().message.find("this user's uid " + std::to_string(::geteuid())),
            std::string::npos)
      << s.error().message;
  ::close(fd);

  // The socket's folder is a link to a real one: refused.
  const std::string real = dir.path() + "/real";
  ASSERT_EQ(::mkdir(real.c_str(), 0700), 0);
  fd = listenAt(real + "/node.sock");
  ASSERT_GE(fd, 0);
  fs::create_directory_symlink(real, dir.path() + "/linked");
  s = checkDaemonAt(dir.path() + "/linked/node.sock");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("not a real folder"), std::string::npos) << s.error().message;
  ::close(fd);
}

// The attack of issue 13: another local user creates /tmp/peerlight-<victim uid> first and
// listens there. The victim's render must not trust it.
TEST(ControlTrustTest, AnotherUsersFakeDaemonAtTheTmpPathIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (to play another user)";
  TempDir dir;
  ASSERT_EQ(::chmod(dir.path().c_str(), 01777), 0);  // like /tmp
  const std::string folder = dir.path() + "/peerlight-0";
  const std::string path = folder + "/node.sock";
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t child = ::fork();
  if (child == 0) {
    // The other user: nobody.
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) _exit(2);
    if (::mkdir(folder.c_str(), 0700) != 0) _exit(3);
    const int fd = listenAt(path);
    if (fd < 0) _exit(4);
    (void)!::write(ready[1], "x", 1);
    ::sleep(30);
    _exit(0);
  }
  char c = 0;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  Status s = checkDaemonAt(path);
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  ::close(ready[0]);
  ::close(ready[1]);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("daemon uid 65534"), std::string::npos) << s.error().message;
  EXPECT_NE(s.error().message.find("belongs to uid 65534"), std::string::npos)
      << s.error().message;
}

}  // namespace
}  // namespace pl
