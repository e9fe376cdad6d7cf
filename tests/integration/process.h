#pragma once
// Child processes for integration tests: spawned with their stdout and stderr in files, waited
// for with hard timeouts, and always killed (SIGKILL) and reaped when the guard goes away, also
// when a test fails half-way. Also a temporary directory that removes itself.

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <sys/stat.h>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace pl::testing {

inline std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it at destruction.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base && *base ? base : "/tmp") + "/peerlight-it-XXXXXX";
    std::vector<char> buf(pattern.begin(), pattern.end());
    buf.push_back('\0');
    if (mkdtemp(buf.data()) != nullptr) path_ = buf.data();
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  bool ok() const { return !path_.empty(); }
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// One child process. Owns it: the destructor kills (SIGKILL) and reaps it if still there.
class Process {
 public:
  Process() = default;
  // Starts argv[0] (a path) with stdout and stderr appended to the given files; extraEnv
  // ("NAME=value") is added to this process's environment. ok() is false if spawning failed.
  // Its stdin is /dev/null, or with `pipeStdin` a pipe that writeStdin() feeds and closeStdin()
  // (or the destructor) closes.
  Process(const std::vector<std::string>& argv, const std::string& stdoutPath,
          const std::string& stderrPath, const std::vector<std::string>& extraEnv = {},
          bool pipeStdin = false)
      : stdoutPath_(stdoutPath), stderrPath_(stderrPath) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    int pipeFds[2] = {-1, -1};
    if (pipeStdin && ::pipe2(pipeFds, O_CLOEXEC) == 0) {
      posix_spawn_file_actions_adddup2(&actions, pipeFds[0], STDIN_FILENO);
      stdin_ = pipeFds[1];
    } else {
      posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    }
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, stdoutPath.c_str(),
                                     O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, stderrPath.c_str(),
                                     O_WRONLY | O_CREAT | O_APPEND, 0644);
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    // extraEnv replaces inherited variables of the same name (getenv finds the first).
    std::vector<std::string> envStrings;
    for (char** e = environ; *e; ++e) {
      std::string entry = *e;
      std::string name = entry.substr(0, entry.find('='));
      bool replaced = false;
      for (const std::string& x : extraEnv) replaced |= x.rfind(name + "=", 0) == 0;
      if (!replaced) envStrings.push_back(std::move(entry));
    }
    for (const std::string& e : extraEnv) envStrings.push_back(e);
    std::vector<char*> env;
    for (std::string& e : envStrings) env.push_back(e.data());
    env.push_back(nullptr);
    pid_t pid = -1;
    if (posix_spawn(&pid, args[0], &actions, nullptr, args.data(), env.data()) == 0) pid_ = pid;
    posix_spawn_file_actions_destroy(&actions);
    if (pipeFds[0] >= 0) ::close(pipeFds[0]);
  }
  ~Process() {
    closeStdin();
    kill();
  }

  // With pipeStdin: writes `text` whole to the child's stdin (false when the pipe is closed or
  // the child is gone).
  bool writeStdin(const std::string& text) {
    ::signal(SIGPIPE, SIG_IGN);  // a child that died fails the write instead
    size_t done = 0;
    while (stdin_ >= 0 && done < text.size()) {
      ssize_t n = ::write(stdin_, text.data() + done, text.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      done += size_t(n);
    }
    return stdin_ >= 0;
  }
  void closeStdin() {
    if (stdin_ >= 0) ::close(stdin_);
    stdin_ = -1;
  }
  Process(Process&& other) noexcept { *this = std::move(other); }
  Process& operator=(Process&& other) noexcept {
    if (this != &other) {
      kill();
      pid_ = other.pid_;
      exitStatus_ = other.exitStatus_;
      stdoutPath_ = std::move(other.stdoutPath_);
      stderrPath_ = std::move(other.stderrPath_);
      closeStdin();
      stdin_ = other.stdin_;
      other.stdin_ = -1;
      other.pid_ = -1;
    }
    return *this;
  }

  bool ok() const { return pid_ > 0 || exitStatus_.has_value(); }
  pid_t pid() const { return pid_; }
  bool running() {
    poll();
    return pid_ > 0;
  }

  void signal(int sig) {
    if (pid_ > 0) ::kill(pid_, sig);
  }
  // SIGKILL (also wakes a stopped process) and reap. Idempotent.
  void kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    exitStatus_ = status;
    pid_ = -1;
  }

  // The exit code (0..255), or 128 + signal, or nothing if it did not end within timeout (it
  // is then killed).
  std::optional<int> wait(std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      poll();
      if (pid_ <= 0) return code();
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    kill();
    return std::nullopt;
  }

  std::string out() const { return readFile(stdoutPath_); }
  std::string err() const { return readFile(stderrPath_); }

  // Waits until stdout contains `needle`; returns the text from it to the end of its line.
  std::optional<std::string> waitForOutput(const std::string& needle,
                                           std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      std::string text = out();
      size_t at = text.find(needle);
      if (at != std::string::npos) {
        size_t end = text.find('\n', at);
        if (end != std::string::npos) return text.substr(at, end - at);
      }
      if (!running()) return std::nullopt;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return std::nullopt;
  }

  // Once it has ended (running() false): the exit code (0..255) or 128 + signal.
  std::optional<int> code() const {
    if (!exitStatus_) return std::nullopt;
    if (WIFEXITED(*exitStatus_)) return WEXITSTATUS(*exitStatus_);
    if (WIFSIGNALED(*exitStatus_)) return 128 + WTERMSIG(*exitStatus_);
    return -1;
  }

 private:
  void poll() {
    if (pid_ <= 0) return;
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      exitStatus_ = status;
      pid_ = -1;
    }
  }

  pid_t pid_ = -1;
  int stdin_ = -1;  // write end of the child's stdin pipe (pipeStdin)
  std::optional<int> exitStatus_;
  std::string stdoutPath_, stderrPath_;
};

// A 32-byte cluster key, reproducible from `seed`, written with mode 0600.
inline void writeKey(const std::string& path, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string bytes(32, '\0');
  for (char& c : bytes) c = char(rng() & 0xff);
  std::ofstream(path, std::ios::binary) << bytes;
  ::chmod(path.c_str(), 0600);
}

inline double secondsSince(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// True while `pid` exists and is not a zombie.
inline bool alive(pid_t pid) {
  std::string stat = readFile("/proc/" + std::to_string(pid) + "/stat");
  if (stat.empty()) return false;
  size_t paren = stat.rfind(')');
  return paren == std::string::npos || paren + 2 >= stat.size() || stat[paren + 2] != 'Z';
}

// Polls `ready` every 10 ms until it is true or `timeout` passes.
template <typename Fn>
bool waitUntil(Fn ready, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (ready()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return ready();
}

}  // namespace pl::testing
