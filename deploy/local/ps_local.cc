// ps_local: starts S servers and W workers on loopback, streams progress,
// and stops everything it started. Exits 0 only when training finished.
#include <sys/stat.h>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/cli.h"
#include "common/consistency_mode.h"
#include "common/dataset.h"
#include "common/json.h"
#include "common/stop_signal.h"
#include "deploy/local/launcher.h"
#include "deploy/local/launcher_security_flags.h"

ABSL_FLAG(uint32_t, servers, 2, "Number of server shards to start.");
ABSL_FLAG(uint32_t, workers, 2, "Number of workers to start.");
ABSL_FLAG(uint32_t, replicas, 1,
          "ps_server processes per shard (primary-backup replication): "
          "replica 0 is each shard's first primary; workers are told every "
          "replica and follow the primary. 1: not replicated.");
ABSL_FLAG(bool, replica_witness, false,
          "With --replicas=2 (or more): each shard gets one more ps_server, "
          "replica number --replicas, that holds no θ and only votes "
          "(ps_server --replica_witness), so a network partition between "
          "the two cannot give the shard two primaries. Workers are not "
          "told of it.");
ABSL_FLAG(std::string, mode, "sync", "sync, ssp or async.");
ABSL_FLAG(std::string, model, "softmax",
          "softmax or mlp (Fashion-MNIST), logreg or fm (sparse, on --train "
          "and --test).");
ABSL_FLAG(uint32_t, epochs, 5, "Passes over the training set.");
ABSL_FLAG(std::string, out_dir, "out/ps_local",
          "Where metrics.jsonl and every process's log go.");
ABSL_FLAG(uint32_t, batch_size, 64, "Per-worker mini-batch size.");
ABSL_FLAG(uint64_t, seed, 1, "Seed of the initial θ and the shuffles.");
ABSL_FLAG(double, eval_every, 0.25,
          "Evaluate every this fraction of an epoch.");
ABSL_FLAG(std::string, compression, "",
          "How workers push dense gradients: none, fp16, bf16 or "
          "topk:RATIO (ps_worker --compression). Default: ps_worker's, none "
          "(and no flag for a --worker_command).");
ABSL_FLAG(std::optional<uint64_t>, max_message_bytes, std::nullopt,
          "Workers push and pull a shard bigger than this many bytes as a "
          "stream of chunks of at most this size (ps_worker "
          "--max_message_bytes). Default: ps_worker's, 4 MiB.");
ABSL_FLAG(std::optional<uint32_t>, data_partitions, std::nullopt,
          "Partitions per epoch that workers lease from shard 0 (0: each "
          "worker trains part --rank of --workers; ps_worker "
          "--data_partitions). Default: ps_worker's.");
ABSL_FLAG(uint32_t, kfold, 0,
          "k-fold cross-validation: run K jobs, job I holding out fold I of "
          "the training set's partitions (ps_worker --kfold=K --fold=I), each "
          "in DIR/fold-I; then print each fold's final validation and test "
          "accuracy and their mean ± sample standard deviation, and write "
          "DIR/kfold.json. 0: one job, no folds.");
ABSL_FLAG(uint32_t, parallel_jobs, 1,
          "With --kfold: run this many folds' jobs side by side, each with "
          "its own servers and ports.");
ABSL_FLAG(std::string, data_dir, ps::common::kDefaultFashionMnistDir,
          "Directory holding Fashion-MNIST's gzip IDX files.");
ABSL_FLAG(std::string, data_format, "",
          "idx or libsvm. Default: libsvm for logreg and fm, else idx.");
ABSL_FLAG(std::string, train, "",
          "logreg and fm: the training set, LIBSVM (ps_datagen ctr writes "
          "one). Required for them.");
ABSL_FLAG(std::string, test, "",
          "logreg and fm: the test set, LIBSVM. Required for them.");
ABSL_FLAG(std::string, lr, "0.1", "Server learning rate α.");
ABSL_FLAG(std::string, l2, "1e-4", "Server L2 weight decay λ₂.");
ABSL_FLAG(std::string, l1, "0", "Server L1 strength λ₁.");
ABSL_FLAG(std::string, server_flags, "",
          "Extra flags for every ps_server, space-separated.");
ABSL_FLAG(std::string, worker_flags, "",
          "Extra flags for every ps_worker, space-separated.");
ABSL_FLAG(std::string, worker_command, "",
          "Run this command (split like a shell, no shell) with the flags "
          "ps_worker would get, instead of ps_worker; R1-R2:CMD for those "
          "ranks only. Repeatable.");
ABSL_FLAG(std::string, bin_dir, "",
          "Where ps_server and ps_worker are; default: beside ps_local.");
ABSL_FLAG(absl::Duration, timeout, absl::Hours(1),
          "Stop everything and fail after this long.");
ABSL_FLAG(int32_t, metrics_base_port, 0,
          "If > 0, Prometheus metrics: server i on 127.0.0.1:(PORT+i), "
          "ps_worker rank r on 127.0.0.1:(PORT+servers+r). 0: none.");
ABSL_FLAG(bool, quiet, false, "Print only the summary line.");

namespace {

using ps::common::Die;

// More would only compete for the machine's cores: each replica applies
// every push.
constexpr uint32_t kMaxReplicas = 8;

// A field of a metrics line; 0 when it is missing.
double Metric(const ps::common::Json& metrics, const char* key) {
  return ps::common::NumberField(metrics, key).value_or(0);
}

std::string ProgressLine(const std::string& line) {
  const ps::common::Json m = ps::common::ParseJsonObject(line);
  if (m.contains("test_auc")) {
    return absl::StrFormat(
        "epoch %5.2f  step %6.0f  test AUC %.4f  log-loss %.4f  "
        "%8.0f samples/s  %6.1f s",
        Metric(m, "epoch"), Metric(m, "step"), Metric(m, "test_auc"),
        Metric(m, "test_logloss"), Metric(m, "samples_per_s"),
        Metric(m, "time_s"));
  }
  std::string progress = absl::StrFormat(
      "epoch %5.2f  step %6.0f  test accuracy %6.2f%%  test loss %.4f  "
      "%8.0f samples/s  %6.1f s",
      Metric(m, "epoch"), Metric(m, "step"), 100 * Metric(m, "test_accuracy"),
      Metric(m, "test_loss"), Metric(m, "samples_per_s"), Metric(m, "time_s"));
  if (m.contains("val_accuracy")) {
    absl::StrAppendFormat(&progress, "  validation accuracy %6.2f%%",
                          100 * Metric(m, "val_accuracy"));
  }
  return progress;
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

std::vector<std::string> SplitFlags(const std::string& flags) {
  return absl::StrSplit(flags, ' ', absl::SkipEmpty());
}

// --worker_command's values, each checked before anything starts.
std::vector<ps::launch::WorkerProgram> WorkerProgramsOrDie(
    const std::vector<std::string>& values, uint32_t num_workers) {
  absl::StatusOr<std::vector<ps::launch::WorkerProgram>> programs =
      ps::launch::ParseWorkerPrograms(values, num_workers);
  if (!programs.ok()) Die(programs.status().message());
  for (const ps::launch::WorkerProgram& program : *programs) {
    if (ps::common::FindExecutable(program.command[0]).empty()) {
      Die(absl::StrCat("--worker_command: cannot find ", program.command[0],
                       " (not a path, and not in $PATH)"));
    }
  }
  return *std::move(programs);
}

// PYTHONPATH=DIR, then whatever PYTHONPATH this process has.
std::string PythonPathWith(const std::string& dir) {
  const char* inherited = std::getenv("PYTHONPATH");
  return absl::StrCat("PYTHONPATH=", dir,
                      inherited != nullptr && *inherited != '\0'
                          ? absl::StrCat(":", inherited)
                          : "");
}

// One training job of the run: its cluster and what its rank 0 writes.
struct Job {
  // With --kfold, the fold it holds out; the only job of a run otherwise.
  std::optional<uint32_t> fold;
  std::string out_dir;
  std::string metrics_path;
  std::unique_ptr<ps::launch::LocalCluster> cluster;
  std::unique_ptr<LineTailer> metrics;
  std::string last_metrics;

  // Starts its lines when jobs share the terminal.
  std::string Prefix() const {
    return fold.has_value() ? absl::StrCat("fold ", *fold, ": ") : "";
  }
};

// Says why, then stops what runs (workers first, so they can leave) and
// says what that did.
int Fail(const std::vector<Job*>& running, const std::string& message) {
  std::fprintf(stderr, "ps_local: %s\n", message.c_str());
  std::fflush(stderr);
  for (Job* job : running) {
    const ps::launch::StopReport stopped =
        job->cluster->Stop(absl::Seconds(10));
    const std::string prefix = job->Prefix();
    for (const std::string& problem : stopped.problems) {
      std::fprintf(stderr, "ps_local: %s%s\n", prefix.c_str(), problem.c_str());
    }
    std::fprintf(stderr,
                 "ps_local: %sstopped %u running worker%s, then %u "
                 "running server%s%s\n",
                 prefix.c_str(), stopped.workers_stopped,
                 stopped.workers_stopped == 1 ? "" : "s",
                 stopped.servers_stopped,
                 stopped.servers_stopped == 1 ? "" : "s",
                 stopped.problems.empty() ? "; every process has ended cleanly"
                                          : "; every process has ended");
  }
  return 1;
}

// Mean and sample standard deviation (n - 1; 0 for one value).
std::pair<double, double> MeanAndStd(const std::vector<double>& values) {
  double sum = 0;
  for (double v : values) sum += v;
  const double mean = values.empty() ? 0 : sum / values.size();
  double squares = 0;
  for (double v : values) squares += (v - mean) * (v - mean);
  const double std_dev =
      values.size() > 1 ? std::sqrt(squares / (values.size() - 1)) : 0;
  return {mean, std_dev};
}

// The k-fold summary: a line per fold, their mean ± std, and DIR/kfold.json.
int ReportFolds(const std::vector<Job>& jobs, const std::string& out_dir,
                double seconds) {
  ps::common::Json folds = ps::common::Json::array();
  std::vector<double> val, test;
  for (const Job& job : jobs) {
    const ps::common::Json last = ps::common::ParseJsonObject(job.last_metrics);
    if (!last.contains("val_accuracy")) {
      std::fprintf(stderr,
                   "ps_local: fold %u's last evaluation in %s has no "
                   "val_accuracy\n",
                   *job.fold, job.metrics_path.c_str());
      return 1;
    }
    val.push_back(Metric(last, "val_accuracy"));
    test.push_back(Metric(last, "test_accuracy"));
    folds.push_back({{"fold", *job.fold},
                     {"val_accuracy", val.back()},
                     {"test_accuracy", test.back()}});
    std::printf(
        "ps_local: fold %u: validation accuracy %.2f%%, test accuracy "
        "%.2f%% after %.2f epochs\n",
        *job.fold, 100 * val.back(), 100 * test.back(), Metric(last, "epoch"));
  }
  const auto [val_mean, val_std] = MeanAndStd(val);
  const auto [test_mean, test_std] = MeanAndStd(test);
  const ps::common::Json summary = {
      {"folds", folds},
      {"mean_val_accuracy", ps::common::RoundTo(val_mean, 6)},
      {"std_val_accuracy", ps::common::RoundTo(val_std, 6)}};
  const std::string path = absl::StrCat(out_dir, "/kfold.json");
  if (absl::Status written =
          ps::common::WriteFileAtomically(path, summary.dump() + "\n");
      !written.ok()) {
    std::fprintf(stderr, "ps_local: cannot write %s: %s\n", path.c_str(),
                 std::string(written.message()).c_str());
    return 1;
  }
  std::printf(
      "ps_local: %zu folds done in %.1f s: validation accuracy %.2f%% ± "
      "%.2f%%, test accuracy %.2f%% ± %.2f%% (mean ± sample std); %s\n",
      jobs.size(), seconds, 100 * val_mean, 100 * val_std, 100 * test_mean,
      100 * test_std, path.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  ps::common::InitProgram(
      argc, argv,
      "ps_local --servers=S --workers=W --mode=sync|ssp|async "
      "--model=softmax|mlp|logreg|fm [--train=FILE --test=FILE] "
      "--epochs=N --out_dir=DIR");
  const uint32_t num_servers = absl::GetFlag(FLAGS_servers);
  const uint32_t num_workers = absl::GetFlag(FLAGS_workers);
  if (num_servers < 1 || num_servers > 64) Die("--servers must be 1 to 64");
  if (num_workers < 1 || num_workers > 64) Die("--workers must be 1 to 64");
  const uint32_t replicas = absl::GetFlag(FLAGS_replicas);
  if (replicas < 1 || replicas > kMaxReplicas) {
    Die(absl::StrCat("--replicas must be 1 to ", kMaxReplicas, " (got ",
                     replicas, "; 1: not replicated)"));
  }
  const bool witness = absl::GetFlag(FLAGS_replica_witness);
  if (witness && replicas < 2) {
    Die("--replica_witness needs --replicas of 2 or more (it votes between "
        "replicas that hold θ)");
  }
  // Server processes per shard, the witness included.
  const uint32_t per_shard = replicas + (witness ? 1 : 0);
  const std::string mode = absl::GetFlag(FLAGS_mode);
  if (!ps::common::ParseConsistencyMode(mode).ok()) {
    Die(absl::StrCat("--mode='", mode, "' is not sync, ssp or async"));
  }
  const std::string model = absl::GetFlag(FLAGS_model);
  const bool sparse = model == "logreg" || model == "fm";
  std::string data_format = absl::GetFlag(FLAGS_data_format);
  if (data_format.empty()) data_format = sparse ? "libsvm" : "idx";
  // The files may come as ps_local's flags or in --worker_flags.
  const std::string worker_flags = absl::GetFlag(FLAGS_worker_flags);
  const auto given = [&worker_flags](const std::string& flag) {
    return !absl::GetFlag(flag == "train" ? FLAGS_train : FLAGS_test).empty() ||
           absl::StrContains(worker_flags, absl::StrCat("--", flag, "="));
  };
  if (sparse && (!given("train") || !given("test"))) {
    Die(absl::StrCat("--model=", model,
                     " needs --train=FILE and --test=FILE in LIBSVM format "
                     "(ps_datagen ctr --out=DIR writes DIR/train.libsvm and "
                     "DIR/test.libsvm)"));
  }
  const int32_t metrics_base_port = absl::GetFlag(FLAGS_metrics_base_port);
  const uint32_t metrics_ports = num_servers * per_shard + num_workers;
  if (metrics_base_port < 0 || metrics_base_port + metrics_ports > 65536) {
    Die(absl::StrCat("--metrics_base_port=", metrics_base_port,
                     " leaves no room for ", metrics_ports,
                     " ports below 65536 (0 turns metrics off)"));
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
  const ps::launch::JobSecurity security =
      ps::launch::JobSecurityFromFlagsOrDie();
  const uint32_t kfold = absl::GetFlag(FLAGS_kfold);
  const uint32_t parallel_jobs = absl::GetFlag(FLAGS_parallel_jobs);
  if (kfold == 1) Die("--kfold=1 is no cross-validation: give 2 or more");
  if (kfold > 0 && sparse) {
    Die("--kfold is for the dense models (softmax, mlp)");
  }
  if (parallel_jobs < 1) Die("--parallel_jobs must be at least 1");
  if (parallel_jobs > 1 && kfold == 0) {
    Die("--parallel_jobs runs the folds of --kfold side by side: give --kfold");
  }
  if (const std::optional<uint32_t> partitions =
          absl::GetFlag(FLAGS_data_partitions);
      kfold > 0 && partitions.has_value() && *partitions != 0 &&
      *partitions < kfold) {
    Die(absl::StrCat("--kfold=", kfold, " needs --data_partitions >= ", kfold,
                     ": each fold holds out at least one partition"));
  }
  if (parallel_jobs > 1 && metrics_base_port > 0) {
    Die("--metrics_base_port with --parallel_jobs > 1: the jobs' metrics "
        "ports would collide");
  }

  ps::common::CatchStopSignals();

  const absl::Time start = absl::Now();
  const absl::Time give_up = start + absl::GetFlag(FLAGS_timeout);
  ps::launch::LocalClusterOptions cluster_options;
  cluster_options.bin_dir = bin_dir;
  cluster_options.num_servers = num_servers;
  cluster_options.num_workers = num_workers;
  cluster_options.replicas = replicas;
  cluster_options.replica_witness = witness;
  cluster_options.metrics_base_port = metrics_base_port;
  ps::launch::ServerFlags& server = cluster_options.server_flags;
  server.mode = mode;
  server.lr = absl::GetFlag(FLAGS_lr);
  server.l2 = absl::GetFlag(FLAGS_l2);
  server.l1 = absl::GetFlag(FLAGS_l1);
  server.security = security;
  server.extra = SplitFlags(absl::GetFlag(FLAGS_server_flags));
  ps::launch::WorkerFlags& worker = cluster_options.worker_flags;
  worker.model = absl::GetFlag(FLAGS_model);
  worker.epochs = absl::GetFlag(FLAGS_epochs);
  worker.batch_size = absl::GetFlag(FLAGS_batch_size);
  worker.seed = absl::GetFlag(FLAGS_seed);
  worker.eval_every = absl::GetFlag(FLAGS_eval_every);
  worker.compression = absl::GetFlag(FLAGS_compression);
  worker.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  worker.data_partitions = absl::GetFlag(FLAGS_data_partitions);
  worker.data_dir = absl::GetFlag(FLAGS_data_dir);
  worker.data_format = data_format;
  worker.train = absl::GetFlag(FLAGS_train);
  worker.test = absl::GetFlag(FLAGS_test);
  worker.security = security;
  worker.extra = SplitFlags(absl::GetFlag(FLAGS_worker_flags));
  cluster_options.worker_programs = WorkerProgramsOrDie(
      ps::common::FlagValues("worker_command"), num_workers);
  // So a Python worker imports the pyps of this build (build/python).
  cluster_options.worker_env = {PythonPathWith(
      std::filesystem::path(ps::common::ExecutableDir() + "/../python")
          .lexically_normal()
          .string())};

  // One job, in DIR; or a job per fold, in DIR/fold-I.
  std::vector<Job> jobs(std::max<uint32_t>(kfold, 1));
  for (uint32_t i = 0; i < jobs.size(); ++i) {
    Job& job = jobs[i];
    job.out_dir = out_dir;
    if (kfold > 0) {
      job.fold = i;
      job.out_dir = absl::StrCat(out_dir, "/fold-", i);
      std::error_code error;
      std::filesystem::create_directories(job.out_dir, error);
      if (error || access(job.out_dir.c_str(), W_OK) != 0) {
        Die(absl::StrCat("cannot create or write ", job.out_dir));
      }
    }
    job.metrics_path = absl::StrCat(job.out_dir, "/metrics.jsonl");
    std::remove(job.metrics_path.c_str());
    job.metrics = std::make_unique<LineTailer>(job.metrics_path);
  }
  if (kfold > 0) std::remove(absl::StrCat(out_dir, "/kfold.json").c_str());

  std::vector<Job*> running;
  size_t next_job = 0;
  // Prints the job's new metrics lines; the last is its result.
  const auto show_progress = [quiet](Job& job) {
    for (std::string& line : job.metrics->NewLines()) {
      if (!quiet) {
        std::printf("%s%s\n", job.Prefix().c_str(), ProgressLine(line).c_str());
      }
      std::fflush(stdout);
      job.last_metrics = std::move(line);
    }
  };
  while (next_job < jobs.size() || !running.empty()) {
    while (running.size() < parallel_jobs && next_job < jobs.size()) {
      Job& job = jobs[next_job++];
      ps::launch::LocalClusterOptions options = cluster_options;
      options.out_dir = job.out_dir;
      options.worker_flags.metrics_out = job.metrics_path;
      if (job.fold.has_value()) {
        options.worker_flags.kfold = kfold;
        options.worker_flags.fold = *job.fold;
      }
      job.cluster = std::make_unique<ps::launch::LocalCluster>(options);
      running.push_back(&job);
      if (absl::Status started = job.cluster->StartServers(
              [] { return ps::common::StopSignalReceived() != 0; });
          !started.ok()) {
        return Fail(running, job.Prefix() + std::string(started.message()));
      }
      if (absl::Status started = job.cluster->StartWorkers(); !started.ok()) {
        return Fail(running, job.Prefix() + std::string(started.message()));
      }
      if (quiet) continue;
      std::printf(
          "ps_local: %s%u servers (%s) and %u workers, %s mode, model %s, "
          "%u epochs; logs in %s\n",
          job.Prefix().c_str(), num_servers,
          absl::StrJoin(job.cluster->addresses(), ",").c_str(), num_workers,
          mode.c_str(), absl::GetFlag(FLAGS_model).c_str(),
          absl::GetFlag(FLAGS_epochs), job.out_dir.c_str());
      if (replicas > 1) {
        std::vector<std::string> shards;
        for (const std::vector<std::string>& shard :
             job.cluster->replica_addresses()) {
          shards.push_back(absl::StrJoin(shard, ","));
        }
        std::printf(
            "ps_local: %s%u replicas per shard%s, primary first (%s); logs "
            "server-I-replica-R.log\n",
            job.Prefix().c_str(), replicas,
            witness ? absl::StrCat(" and a witness (replica ", replicas, ")")
                          .c_str()
                    : "",
            absl::StrJoin(shards, "; ").c_str());
      }
      if (metrics_base_port > 0) {
        const int first_worker =
            metrics_base_port + static_cast<int>(num_servers);
        std::printf(
            "ps_local: /metrics of servers on 127.0.0.1:%d-%d, of workers on "
            "127.0.0.1:%d-%d\n",
            metrics_base_port, first_worker - 1, first_worker,
            first_worker + static_cast<int>(num_workers) - 1);
        if (replicas > 1) {
          const int first_backup = first_worker + static_cast<int>(num_workers);
          std::printf(
              "ps_local: /metrics of backup replicas on 127.0.0.1:%d-%d "
              "(replica R of server I: %d + (R-1)*%u + I)\n",
              first_backup,
              first_backup + static_cast<int>((per_shard - 1) * num_servers) -
                  1,
              first_backup, num_servers);
        }
      }
      std::fflush(stdout);
    }

    for (size_t i = 0; i < running.size();) {
      Job& job = *running[i];
      show_progress(job);
      absl::StatusOr<uint32_t> done = job.cluster->PollWorkers();
      if (!done.ok()) {
        return Fail(running,
                    job.Prefix() + std::string(done.status().message()));
      }
      if (*done < num_workers) {
        ++i;
        continue;
      }
      show_progress(job);
      for (const std::string& problem :
           job.cluster->Stop(absl::Seconds(10)).problems) {
        std::fprintf(stderr, "ps_local: %s%s while stopping\n",
                     job.Prefix().c_str(), problem.c_str());
      }
      running.erase(running.begin() + static_cast<std::ptrdiff_t>(i));
      if (job.last_metrics.empty()) {
        return Fail(running,
                    absl::StrCat(job.Prefix(), "training finished but ",
                                 job.metrics_path, " has no evaluation"));
      }
    }
    if (const int signal = ps::common::StopSignalReceived(); signal != 0) {
      return Fail(running, absl::StrCat("interrupted by ", strsignal(signal),
                                        "; stopping the workers, then the "
                                        "servers"));
    }
    if (absl::Now() > give_up) {
      return Fail(running,
                  "--timeout reached; stopping the workers, then "
                  "the servers");
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  if (kfold > 0) {
    return ReportFolds(jobs, out_dir,
                       absl::ToDoubleSeconds(absl::Now() - start));
  }
  const std::string& metrics_path = jobs[0].metrics_path;
  const std::string& last_metrics = jobs[0].last_metrics;
  const ps::common::Json last = ps::common::ParseJsonObject(last_metrics);
  if (last.contains("test_auc")) {
    std::printf(
        "ps_local: done in %.1f s: test AUC %.4f, log-loss %.4f after %.2f "
        "epochs (%s, %s, %u servers x %u workers), %.0f samples/s; metrics "
        "in %s\n",
        absl::ToDoubleSeconds(absl::Now() - start), Metric(last, "test_auc"),
        Metric(last, "test_logloss"), Metric(last, "epoch"), mode.c_str(),
        model.c_str(), num_servers, num_workers, Metric(last, "samples_per_s"),
        metrics_path.c_str());
    return 0;
  }
  std::printf(
      "ps_local: done in %.1f s: test accuracy %.2f%% after %.2f epochs "
      "(%s, %s, %u servers x %u workers), %.0f samples/s; metrics in %s\n",
      absl::ToDoubleSeconds(absl::Now() - start),
      100 * Metric(last, "test_accuracy"), Metric(last, "epoch"), mode.c_str(),
      absl::GetFlag(FLAGS_model).c_str(), num_servers, num_workers,
      Metric(last, "samples_per_s"), metrics_path.c_str());
  return 0;
}
