#ifndef PS_TESTS_JOB_H_
#define PS_TESTS_JOB_H_

// A job of real ps_server and ps_worker processes on loopback, started as a
// user would start them, for tests that kill, pause and restart them.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/json.h"
#include "common/rpc/channel.h"
#include "common/subprocess.h"
#include "deploy/local/daemon_flags.h"
#include "deploy/local/launcher.h"
#include "gtest/gtest.h"
#include "ps/v1/parameter_server.grpc.pb.h"
#include "tests/wait.h"

namespace ps::test_support {

// Where the binaries under test are (ctest sets PS_BIN_DIR).
inline std::string BinDir() {
  const char* dir = std::getenv("PS_BIN_DIR");
  return dir != nullptr ? dir : "build/bin";
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// An empty directory of this test process's own: TempDir/ps_<name>_<pid>.
inline std::string FreshDir(const std::string& name) {
  std::string dir =
      absl::StrCat(::testing::TempDir(), "/ps_", name, "_", getpid());
  EXPECT_EQ(
      std::system(
          absl::StrCat("rm -rf '", dir, "' && mkdir -p '", dir, "'").c_str()),
      0);
  return dir;
}

// The number at "key" of one JSON object; -1 (and a test failure) when
// the key is missing or not a number.
inline double Field(const std::string& json, const std::string& key) {
  const std::optional<double> value =
      common::NumberField(common::ParseJsonObject(json), key);
  EXPECT_TRUE(value.has_value()) << key << " missing in " << json;
  return value.value_or(-1);
}

struct Outcome {
  int wait_status = -1;
  std::string output;  // stdout and stderr
};

// Runs BinDir()/argv[0] to completion (bounded: a hang fails the test,
// never CI).
inline Outcome RunBinary(std::vector<std::string> argv, const std::string& log,
                         absl::Duration timeout = absl::Seconds(300)) {
  argv[0] = absl::StrCat(BinDir(), "/", argv[0]);
  std::remove(log.c_str());  // the output of this run only
  absl::StatusOr<common::Subprocess> process =
      common::Subprocess::Spawn(argv, log);
  EXPECT_TRUE(process.ok()) << process.status();
  Outcome outcome;
  if (!process.ok()) return outcome;
  std::optional<int> status = process->WaitFor(timeout);
  EXPECT_TRUE(status.has_value()) << argv[0] << " did not finish in time";
  outcome.wait_status = status ? *status : process->Stop(absl::Seconds(1));
  outcome.output = ReadFile(log);
  return outcome;
}

// A size line of /proc/PID/status in bytes: "VmRSS" (resident now) or
// "VmHWM" (its peak); -1 when unreadable.
inline int64_t ProcStatusBytes(pid_t pid, const std::string& field) {
  std::istringstream status(ReadFile(absl::StrCat("/proc/", pid, "/status")));
  const std::string format = field + ": %lld kB";
  std::string line;
  while (std::getline(status, line)) {
    long long kib = 0;
    if (std::sscanf(line.c_str(), format.c_str(), &kib) == 1) {
      return static_cast<int64_t>(kib) * 1024;
    }
  }
  return -1;
}

// Waits (at most 30 s) until a server wrote its --port_file, which it does
// once it serves; false (and why, with the end of `log`, in the test log) if
// it ended or never did.
inline bool WaitForPortFile(common::Subprocess& server,
                            const std::string& port_file,
                            const std::string& log) {
  absl::StatusOr<int> port = launch::WaitForPortFile(
      port_file, "the server", log, server, absl::Now() + absl::Seconds(30));
  EXPECT_TRUE(port.ok()) << port.status();
  return port.ok();
}

// A socket listening on a free loopback port until destroyed: a port in
// use, or one that accepts connections and never speaks.
class LoopbackListener {
 public:
  LoopbackListener() : fd_(socket(AF_INET, SOCK_STREAM, 0)) {
    sockaddr_in address = {};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&address), length), 0);
    EXPECT_EQ(listen(fd_, 16), 0);
    EXPECT_EQ(getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length),
              0);
    port_ = ntohs(address.sin_port);
  }
  ~LoopbackListener() { close(fd_); }
  LoopbackListener(const LoopbackListener&) = delete;
  LoopbackListener& operator=(const LoopbackListener&) = delete;

  int port() const { return port_; }

 private:
  int fd_;
  int port_ = 0;
};

// Writes a checkpoint on the server at `address`; its bytes ("" and a
// failure when it cannot).
inline std::string CheckpointBytes(const std::string& address) {
  auto stub = ps::v1::ParameterServer::NewStub(rpc::CreateChannel(address));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  ps::v1::CheckpointResponse saved;
  const grpc::Status status =
      stub->Checkpoint(&context, ps::v1::CheckpointRequest(), &saved);
  EXPECT_TRUE(status.ok()) << address << ": " << status.error_message();
  return status.ok() ? ReadFile(saved.path()) : "";
}

inline bool ExitedWith(const Outcome& outcome, int code) {
  return WIFEXITED(outcome.wait_status) &&
         WEXITSTATUS(outcome.wait_status) == code;
}

// One server and W workers started as processes, as a user would start them.
class Job {
 public:
  Job(const std::string& name, std::vector<std::string> server_flags,
      uint32_t workers, std::vector<std::string> worker_flags)
      : dir_(FreshDir(absl::StrCat("fault_", name))),
        bin_(BinDir()),
        num_workers_(workers),
        worker_flags_(std::move(worker_flags)) {
    server_flags_.port_file = dir_ + "/port";
    server_flags_.num_workers = workers;
    server_flags_.extra = std::move(server_flags);
    StartServer("127.0.0.1:0");
    address_ = absl::StrCat("127.0.0.1:", ReadFile(dir_ + "/port"));
    for (uint32_t rank = 0; rank < workers; ++rank) StartWorker(rank);
  }

  // Starts the server again with the same flags on the same port, as an
  // operator (or a restart policy) would after it died.
  void RestartServer() { StartServer(address_); }

  common::Subprocess& server() { return *server_; }
  const std::string& dir() const { return dir_; }
  const std::string& address() const { return address_; }

  void StartWorker(uint32_t rank) { StartWorker(rank, worker_flags_); }
  // A worker with flags of its own instead of the job's.
  void StartWorker(uint32_t rank, std::vector<std::string> worker_flags) {
    launch::WorkerFlags flags;
    flags.servers = {address_};
    flags.rank = rank;
    flags.num_workers = num_workers_;
    flags.metrics_out = dir_ + "/metrics.jsonl";
    flags.extra = std::move(worker_flags);
    const std::vector<std::string> argv = launch::WorkerCommand(bin_, flags);
    auto worker = common::Subprocess::Spawn(
        argv, absl::StrCat(dir_, "/worker-", rank, ".log"));
    EXPECT_TRUE(worker.ok()) << worker.status();
    if (workers_.size() <= rank) workers_.resize(rank + 1);
    workers_[rank] = std::make_unique<common::Subprocess>(std::move(*worker));
  }

  common::Subprocess& worker(uint32_t rank) { return *workers_[rank]; }

  // Rank 0's evaluations so far.
  std::vector<std::string> Metrics() const {
    return absl::StrSplit(ReadFile(dir_ + "/metrics.jsonl"), '\n',
                          absl::SkipEmpty());
  }

  // Waits until rank 0 has evaluated at or past `epoch`.
  bool WaitForEpoch(double epoch) const {
    return WaitUntil(
        [&] {
          const std::vector<std::string> lines = Metrics();
          return !lines.empty() && Field(lines.back(), "epoch") >= epoch;
        },
        absl::Seconds(120));
  }

  // Waits until the server no longer counts `rank` as live: its lease
  // expired (after a kill) or it left (after SIGTERM).
  bool WaitUntilGone(uint32_t rank) const {
    return WaitUntil([&] {
      const ps::v1::StatusResponse status = Status();
      return status.workers_size() > static_cast<int>(rank) &&
             status.workers(rank).state() != ps::v1::WORKER_STATE_LIVE;
    });
  }

  // Whether `rank` ended by itself with status 0 within the time allowed.
  bool Finishes(uint32_t rank) {
    std::optional<int> status = workers_[rank]->WaitFor(absl::Seconds(180));
    return status.has_value() && common::ExitedCleanly(*status);
  }

  // The longest step in the evaluation intervals that end after `epoch`
  // (the first interval also holds the wait for every worker to start).
  double LongestStepAfter(double epoch) const {
    double longest = 0;
    for (const std::string& line : Metrics()) {
      if (Field(line, "epoch") > epoch) {
        longest = std::max(longest, Field(line, "max_step_s"));
      }
    }
    return longest;
  }

  double FinalAccuracy() const {
    std::vector<std::string> lines = Metrics();
    return lines.empty() ? -1 : Field(lines.back(), "test_accuracy");
  }

  // The mean of the last `n` evaluations: steadier than the last alone,
  // which swings by about half a point between evaluations.
  double RecentAccuracy(size_t n) const {
    std::vector<std::string> lines = Metrics();
    double sum = 0;
    size_t count = 0;
    for (size_t i = lines.size() > n ? lines.size() - n : 0; i < lines.size();
         ++i, ++count) {
      sum += Field(lines[i], "test_accuracy");
    }
    return count ? sum / count : -1;
  }

  ps::v1::StatusResponse Status() const {
    auto stub = ps::v1::ParameterServer::NewStub(rpc::CreateChannel(address_));
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    ps::v1::StatusResponse status;
    EXPECT_TRUE(stub->Status(&context, ps::v1::StatusRequest(), &status).ok());
    return status;
  }

  std::string Log(const std::string& name) const {
    return ReadFile(absl::StrCat(dir_, "/", name, ".log"));
  }

 private:
  // Waits until the server wrote its port: it serves from then on.
  void StartServer(const std::string& listen) {
    std::remove((dir_ + "/port").c_str());
    launch::ServerFlags flags = server_flags_;
    flags.listen = listen;
    const std::vector<std::string> argv = launch::ServerCommand(bin_, flags);
    // server.log, then server-2.log, … for each restart.
    ++server_starts_;
    const std::string log =
        server_starts_ == 1
            ? dir_ + "/server.log"
            : absl::StrCat(dir_, "/server-", server_starts_, ".log");
    auto server = common::Subprocess::Spawn(argv, log);
    EXPECT_TRUE(server.ok()) << server.status();
    server_ = std::make_unique<common::Subprocess>(std::move(*server));
    WaitForPortFile(*server_, dir_ + "/port", log);
  }

  std::string dir_;
  std::string bin_;
  std::string address_;
  uint32_t num_workers_;
  std::vector<std::string> worker_flags_;
  launch::ServerFlags server_flags_;
  uint32_t server_starts_ = 0;
  std::unique_ptr<common::Subprocess> server_;
  std::vector<std::unique_ptr<common::Subprocess>> workers_;
};

}  // namespace ps::test_support

#endif  // PS_TESTS_JOB_H_
