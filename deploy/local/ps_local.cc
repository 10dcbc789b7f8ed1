// ps_local: starts S servers and W workers on loopback, streams progress,
// and stops everything it started. Exits 0 only when training finished.
#include <sys/stat.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/cli.h"
#include "common/dataset.h"
#include "common/stop_signal.h"
#include "common/subprocess.h"

ABSL_FLAG(uint32_t, servers, 2, "Number of server shards to start.");
ABSL_FLAG(uint32_t, workers, 2, "Number of workers to start.");
ABSL_FLAG(std::string, mode, "sync", "sync, ssp or async.");
ABSL_FLAG(std::string, model, "softmax", "softmax or mlp.");
ABSL_FLAG(uint32_t, epochs, 5, "Passes over the training set.");
ABSL_FLAG(std::string, out_dir, "out/ps_local",
          "Where metrics.jsonl and every process's log go.");
ABSL_FLAG(uint32_t, batch_size, 64, "Per-worker mini-batch size.");
ABSL_FLAG(uint64_t, seed, 1, "Seed of the initial θ and the shuffles.");
ABSL_FLAG(double, eval_every, 0.25, "Evaluate every this fraction of an epoch.");
ABSL_FLAG(std::string, data_dir, ps::common::kDefaultFashionMnistDir,
          "Directory holding Fashion-MNIST's gzip IDX files.");
ABSL_FLAG(std::string, lr, "0.1", "Server learning rate α.");
ABSL_FLAG(std::string, l2, "1e-4", "Server L2 weight decay λ₂.");
ABSL_FLAG(std::string, l1, "0", "Server L1 strength λ₁.");
ABSL_FLAG(std::string, server_flags, "",
          "Extra flags for every ps_server, space-separated.");
ABSL_FLAG(std::string, worker_flags, "",
          "Extra flags for every ps_worker, space-separated.");
ABSL_FLAG(std::string, bin_dir, "",
          "Where ps_server and ps_worker are; default: beside ps_local.");
ABSL_FLAG(absl::Duration, timeout, absl::Hours(1),
          "Stop everything and fail after this long.");
ABSL_FLAG(bool, quiet, false, "Print only the summary line.");

namespace {

using ps::common::Die;
using ps::common::Subprocess;

// A number field of one of our own metrics lines (flat JSON, no nesting).
std::optional<double> JsonNumber(const std::string& line,
                                 const std::string& key) {
  const std::string needle = absl::StrCat("\"", key, "\":");
  const size_t at = line.find(needle);
  if (at == std::string::npos) return std::nullopt;
  const char* begin = line.c_str() + at + needle.size();
  char* end = nullptr;
  const double value = std::strtod(begin, &end);
  if (end == begin) return std::nullopt;
  return value;
}

std::string ProgressLine(const std::string& json) {
  return absl::StrFormat(
      "epoch %5.2f  step %6.0f  test accuracy %6.2f%%  test loss %.4f  "
      "%8.0f samples/s  %6.1f s",
      JsonNumber(json, "epoch").value_or(0), JsonNumber(json, "step").value_or(0),
      100 * JsonNumber(json, "test_accuracy").value_or(0),
      JsonNumber(json, "test_loss").value_or(0),
      JsonNumber(json, "samples_per_s").value_or(0),
      JsonNumber(json, "time_s").value_or(0));
}

// Reads the lines appended to a file since the last call.
class LineTailer {
 public:
  explicit LineTailer(std::string path) : path_(std::move(path)) {}
  std::vector<std::string> NewLines() {
    std::ifstream in(path_);
    std::vector<std::string> lines;
    if (!in) return lines;
    in.seekg(static_cast<std::streamoff>(offset_));
    std::string line;
    while (std::getline(in, line)) {
      if (in.eof()) break;  // a line still being written
      offset_ += line.size() + 1;
      lines.push_back(line);
    }
    return lines;
  }

 private:
  std::string path_;
  size_t offset_ = 0;
};

std::string LastLines(const std::string& path, int count) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  const size_t from = lines.size() > static_cast<size_t>(count)
                          ? lines.size() - count
                          : 0;
  std::string out;
  for (size_t i = from; i < lines.size(); ++i) {
    absl::StrAppend(&out, "    ", lines[i], "\n");
  }
  return out;
}

std::vector<std::string> SplitFlags(const std::string& flags) {
  return absl::StrSplit(flags, ' ', absl::SkipEmpty());
}

struct Child {
  std::string name;  // "server 1", "worker 0"
  std::string log;
  Subprocess process;
};

int Fail(std::vector<Child>& children, const std::string& message) {
  std::fprintf(stderr, "ps_local: %s\n", message.c_str());
  for (Child& child : children) child.process.Stop(absl::Seconds(3));
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  ps::common::InitProgram(
      argc, argv,
      "ps_local --servers=S --workers=W --mode=sync|async --model=softmax|mlp "
      "--epochs=N --out_dir=DIR");
  const uint32_t num_servers = absl::GetFlag(FLAGS_servers);
  const uint32_t num_workers = absl::GetFlag(FLAGS_workers);
  if (num_servers < 1 || num_servers > 64) Die("--servers must be 1 to 64");
  if (num_workers < 1 || num_workers > 64) Die("--workers must be 1 to 64");
  const std::string mode = absl::GetFlag(FLAGS_mode);
  if (mode != "sync" && mode != "async" && mode != "ssp") {
    Die(absl::StrCat("--mode='", mode, "' is not sync, ssp or async"));
  }
  const std::string out_dir = absl::GetFlag(FLAGS_out_dir);
  if (out_dir.empty()) Die("--out_dir must not be empty");
  if (std::system(absl::StrCat("mkdir -p '", out_dir, "'").c_str()) != 0 ||
      access(out_dir.c_str(), W_OK) != 0) {
    Die(absl::StrCat("cannot create or write --out_dir=", out_dir));
  }
  std::string bin_dir = absl::GetFlag(FLAGS_bin_dir);
  if (bin_dir.empty()) bin_dir = ps::common::ExecutableDir();
  const bool quiet = absl::GetFlag(FLAGS_quiet);
  const std::string metrics_path = absl::StrCat(out_dir, "/metrics.jsonl");
  std::remove(metrics_path.c_str());

  ps::common::CatchStopSignals();

  const absl::Time start = absl::Now();
  const absl::Time give_up = start + absl::GetFlag(FLAGS_timeout);
  std::vector<Child> children;

  // Servers bind port 0 and report the port they got: no race for ports.
  std::vector<std::string> port_files;
  for (uint32_t i = 0; i < num_servers; ++i) {
    const std::string port_file = absl::StrCat(out_dir, "/server-", i, ".port");
    std::remove(port_file.c_str());
    port_files.push_back(port_file);
    std::vector<std::string> args = {
        absl::StrCat(bin_dir, "/ps_server"),
        "--listen=127.0.0.1:0",
        absl::StrCat("--port_file=", port_file),
        absl::StrCat("--shard_index=", i),
        absl::StrCat("--num_shards=", num_servers),
        absl::StrCat("--num_workers=", num_workers),
        absl::StrCat("--mode=", mode),
        absl::StrCat("--lr=", absl::GetFlag(FLAGS_lr)),
        absl::StrCat("--l2=", absl::GetFlag(FLAGS_l2)),
        absl::StrCat("--l1=", absl::GetFlag(FLAGS_l1))};
    for (std::string& flag : SplitFlags(absl::GetFlag(FLAGS_server_flags))) {
      args.push_back(std::move(flag));
    }
    const std::string log = absl::StrCat(out_dir, "/server-", i, ".log");
    std::remove(log.c_str());
    absl::StatusOr<Subprocess> process = Subprocess::Spawn(args, log);
    if (!process.ok()) {
      return Fail(children, std::string(process.status().message()));
    }
    children.push_back({absl::StrCat("server ", i), log, std::move(*process)});
  }

  std::vector<std::string> addresses(num_servers);
  for (uint32_t i = 0; i < num_servers; ++i) {
    while (true) {
      std::ifstream in(port_files[i]);
      int port = 0;
      if (in >> port && port > 0) {
        addresses[i] = absl::StrCat("127.0.0.1:", port);
        break;
      }
      if (auto status = children[i].process.Poll()) {
        return Fail(children,
                    absl::StrCat(children[i].name, " ",
                                 ps::common::DescribeWaitStatus(*status),
                                 " before serving; its log ", children[i].log,
                                 " ends:\n", LastLines(children[i].log, 10)));
      }
      if (ps::common::StopSignalReceived()) return Fail(children, "interrupted");
      if (absl::Now() > start + absl::Seconds(30)) {
        return Fail(children, absl::StrCat(children[i].name,
                                           " did not start serving within 30 s"));
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
  }
  const std::string servers = absl::StrJoin(addresses, ",");

  for (uint32_t rank = 0; rank < num_workers; ++rank) {
    std::vector<std::string> args = {
        absl::StrCat(bin_dir, "/ps_worker"),
        absl::StrCat("--servers=", servers),
        absl::StrCat("--rank=", rank),
        absl::StrCat("--num_workers=", num_workers),
        absl::StrCat("--model=", absl::GetFlag(FLAGS_model)),
        absl::StrCat("--epochs=", absl::GetFlag(FLAGS_epochs)),
        absl::StrCat("--batch_size=", absl::GetFlag(FLAGS_batch_size)),
        absl::StrCat("--seed=", absl::GetFlag(FLAGS_seed)),
        absl::StrCat("--eval_every=", absl::GetFlag(FLAGS_eval_every)),
        absl::StrCat("--data_dir=", absl::GetFlag(FLAGS_data_dir)),
        absl::StrCat("--metrics_out=", metrics_path)};
    for (std::string& flag : SplitFlags(absl::GetFlag(FLAGS_worker_flags))) {
      args.push_back(std::move(flag));
    }
    const std::string log = absl::StrCat(out_dir, "/worker-", rank, ".log");
    std::remove(log.c_str());
    absl::StatusOr<Subprocess> process = Subprocess::Spawn(args, log);
    if (!process.ok()) {
      return Fail(children, std::string(process.status().message()));
    }
    children.push_back(
        {absl::StrCat("worker ", rank), log, std::move(*process)});
  }
  if (!quiet) {
    std::printf("ps_local: %u servers (%s) and %u workers, %s mode, model %s, "
                "%u epochs; logs in %s\n",
                num_servers, servers.c_str(), num_workers, mode.c_str(),
                absl::GetFlag(FLAGS_model).c_str(), absl::GetFlag(FLAGS_epochs),
                out_dir.c_str());
    std::fflush(stdout);
  }

  LineTailer metrics(metrics_path);
  std::string last_metrics;
  uint32_t workers_done = 0;
  while (workers_done < num_workers) {
    for (std::string& line : metrics.NewLines()) {
      if (!quiet) std::printf("%s\n", ProgressLine(line).c_str());
      std::fflush(stdout);
      last_metrics = std::move(line);
    }
    if (const int signal = ps::common::StopSignalReceived(); signal != 0) {
      return Fail(children, absl::StrCat("interrupted by ", strsignal(signal),
                                         "; stopped every process"));
    }
    if (absl::Now() > give_up) {
      return Fail(children, "--timeout reached; stopped every process");
    }
    workers_done = 0;
    for (Child& child : children) {
      const std::optional<int> status = child.process.Poll();
      const bool is_worker = child.name.rfind("worker", 0) == 0;
      if (!status) continue;
      if (is_worker && ps::common::ExitedCleanly(*status)) {
        ++workers_done;
        continue;
      }
      return Fail(children,
                  absl::StrCat(child.name, " ",
                               ps::common::DescribeWaitStatus(*status),
                               "; its log ", child.log, " ends:\n",
                               LastLines(child.log, 10)));
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  for (std::string& line : metrics.NewLines()) {
    if (!quiet) std::printf("%s\n", ProgressLine(line).c_str());
    last_metrics = std::move(line);
  }
  for (Child& child : children) {
    const int status = child.process.Stop(absl::Seconds(10));
    if (!ps::common::ExitedCleanly(status)) {
      std::fprintf(stderr, "ps_local: %s %s while stopping\n",
                   child.name.c_str(),
                   ps::common::DescribeWaitStatus(status).c_str());
    }
  }
  if (last_metrics.empty()) {
    std::fprintf(stderr, "ps_local: training finished but %s has no "
                 "evaluation\n", metrics_path.c_str());
    return 1;
  }
  std::printf(
      "ps_local: done in %.1f s: test accuracy %.2f%% after %.2f epochs "
      "(%s, %s, %u servers x %u workers), %.0f samples/s; metrics in %s\n",
      absl::ToDoubleSeconds(absl::Now() - start),
      100 * JsonNumber(last_metrics, "test_accuracy").value_or(0),
      JsonNumber(last_metrics, "epoch").value_or(0), mode.c_str(),
      absl::GetFlag(FLAGS_model).c_str(), num_servers, num_workers,
      JsonNumber(last_metrics, "samples_per_s").value_or(0),
      metrics_path.c_str());
  return 0;
}
