#include "common/subprocess.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"

namespace ps::common {

namespace {

// This process's environment with `overrides` ("NAME=VALUE") set on top.
std::vector<std::string> EnvironmentWith(
    const std::vector<std::string>& overrides) {
  std::vector<std::string> result;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    const absl::string_view variable(*entry);
    const absl::string_view name = variable.substr(0, variable.find('='));
    const bool overridden = std::any_of(
        overrides.begin(), overrides.end(), [&](const std::string& o) {
          return absl::StartsWith(o, absl::StrCat(name, "="));
        });
    if (!overridden) result.emplace_back(variable);
  }
  result.insert(result.end(), overrides.begin(), overrides.end());
  return result;
}

}  // namespace

std::string FindExecutable(const std::string& name) {
  if (name.find('/') != std::string::npos) {
    return access(name.c_str(), X_OK) == 0 ? name : "";
  }
  const char* path = std::getenv("PATH");
  for (absl::string_view dir :
       absl::StrSplit(path != nullptr ? path : "/usr/bin:/bin", ':')) {
    std::string candidate = absl::StrCat(dir.empty() ? "." : dir, "/", name);
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

absl::StatusOr<Subprocess> Subprocess::Spawn(
    const std::vector<std::string>& argv, const std::string& log_path,
    const std::vector<std::string>& env) {
  if (argv.empty()) return absl::InvalidArgumentError("empty command line");
  const std::string program = FindExecutable(argv[0]);
  if (program.empty()) {
    return absl::NotFoundError(absl::StrCat(
        "cannot execute ", argv[0], ": ",
        argv[0].find('/') == std::string::npos ? "not found in $PATH"
                                               : std::strerror(errno)));
  }
  // Built before fork: the child may only make async-signal-safe calls.
  const std::vector<std::string> environment = EnvironmentWith(env);
  std::vector<char*> envp;
  for (const std::string& variable : environment) {
    envp.push_back(const_cast<char*>(variable.c_str()));
  }
  envp.push_back(nullptr);
  int log_fd = -1;
  if (!log_path.empty()) {
    log_fd =
        open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) {
      return absl::UnavailableError(absl::StrCat(
          "cannot open log file ", log_path, ": ", std::strerror(errno)));
    }
  }
  std::vector<char*> args;
  for (const std::string& arg : argv)
    args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  const pid_t parent = getpid();
  // Closed by the child's exec (or written to when exec fails): Spawn
  // returns only after it, so no VmHWM is ever read from the forked copy
  // of this process that the child is until then.
  int exec_pipe[2];
  if (pipe2(exec_pipe, O_CLOEXEC) != 0) {
    if (log_fd >= 0) close(log_fd);
    return absl::ResourceExhaustedError(
        absl::StrCat("pipe2 failed: ", std::strerror(errno)));
  }

  const pid_t pid = fork();
  if (pid < 0) {
    if (log_fd >= 0) close(log_fd);
    close(exec_pipe[0]);
    close(exec_pipe[1]);
    return absl::ResourceExhaustedError(
        absl::StrCat("fork failed: ", std::strerror(errno)));
  }
  if (pid == 0) {
    // Child: only async-signal-safe calls until exec.
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);  // the parent died before prctl
    if (log_fd >= 0) {
      dup2(log_fd, STDOUT_FILENO);
      dup2(log_fd, STDERR_FILENO);
    }
    execve(program.c_str(), args.data(), envp.data());
    const char message[] = "exec failed\n";
    (void)!write(STDERR_FILENO, message, sizeof(message) - 1);
    (void)!write(exec_pipe[1], "x", 1);
    _exit(127);
  }
  if (log_fd >= 0) close(log_fd);
  close(exec_pipe[1]);
  char exec_failed;
  while (read(exec_pipe[0], &exec_failed, 1) < 0 && errno == EINTR) {
  }
  close(exec_pipe[0]);
  Subprocess process;
  process.pid_ = pid;
  return process;
}

Subprocess::Subprocess(Subprocess&& other) noexcept
    : pid_(other.pid_),
      wait_status_(other.wait_status_),
      peak_rss_bytes_(other.peak_rss_bytes_) {
  other.pid_ = -1;
}

Subprocess& Subprocess::operator=(Subprocess&& other) noexcept {
  if (this != &other) {
    if (running()) Stop(absl::ZeroDuration());
    pid_ = other.pid_;
    wait_status_ = other.wait_status_;
    peak_rss_bytes_ = other.peak_rss_bytes_;
    other.pid_ = -1;
  }
  return *this;
}

Subprocess::~Subprocess() {
  if (running()) Stop(absl::ZeroDuration());
}

bool Subprocess::Reap(bool block) {
  int status = 0;
  if (waitpid(pid_, &status, block ? 0 : WNOHANG) != pid_) return false;
  wait_status_ = status;
  return true;
}

void Subprocess::SamplePeakRss() {
  std::ifstream status(absl::StrCat("/proc/", pid_, "/status"));
  std::string line;
  while (std::getline(status, line)) {
    int64_t kib = 0;
    if (std::sscanf(line.c_str(), "VmHWM: %" SCNd64 " kB", &kib) == 1) {
      peak_rss_bytes_ = std::max(peak_rss_bytes_.value_or(0), kib * 1024);
      return;
    }
  }
}

std::optional<int> Subprocess::Poll() {
  if (wait_status_ || pid_ <= 0) return wait_status_;
  SamplePeakRss();
  Reap(/*block=*/false);
  return wait_status_;
}

void Subprocess::Signal(int signal) {
  if (running()) kill(pid_, signal);
}

std::optional<int> Subprocess::WaitFor(absl::Duration timeout) {
  const absl::Time give_up = absl::Now() + timeout;
  while (!Poll()) {
    if (absl::Now() >= give_up) return std::nullopt;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return wait_status_;
}

int Subprocess::Stop(absl::Duration grace) {
  if (!running()) return wait_status_.value_or(0);
  SamplePeakRss();
  if (grace > absl::ZeroDuration()) {
    Signal(SIGTERM);
    if (WaitFor(grace)) return *wait_status_;
  }
  Signal(SIGKILL);
  Reap(/*block=*/true);
  return wait_status_.value_or(0);
}

std::string DescribeWaitStatus(int wait_status) {
  if (WIFEXITED(wait_status)) {
    return absl::StrCat("exited with status ", WEXITSTATUS(wait_status));
  }
  if (WIFSIGNALED(wait_status)) {
    return absl::StrCat("killed by signal ", WTERMSIG(wait_status), " (",
                        strsignal(WTERMSIG(wait_status)), ")");
  }
  return absl::StrCat("ended with wait status ", wait_status);
}

bool ExitedCleanly(int wait_status) {
  return WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0;
}

std::string ExecutableDir() {
  char path[4096];
  const ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
  if (n <= 0) return ".";
  std::string exe(path, static_cast<size_t>(n));
  const size_t slash = exe.rfind('/');
  return slash == std::string::npos ? "." : exe.substr(0, slash);
}

}  // namespace ps::common
