// ps_bench: figures for the parameter server, each beside a limit measured
// in the same run.
//   ps_bench transfer   push / pull / push+pull against raw gRPC calls and
//                       memcpy, per payload size and cluster shape
//   ps_bench train      samples/s, time to accuracy and peak RSS of a local
//                       cluster training Fashion-MNIST
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "bench/measure.h"
#include "bench/train.h"
#include "bench/transfer.h"
#include "common/cli.h"
#include "common/dataset.h"
#include "common/gradient_codec.h"
#include "common/rpc/channel.h"
#include "deploy/local/launcher_security_flags.h"
#include "spdlog/spdlog.h"
#include "worker/parameter_client.h"

ABSL_FLAG(std::string, workers, "",
          "Comma-separated worker counts to run, e.g. 1,2,4. Default: 1 for "
          "transfer, 2 for train.");
ABSL_FLAG(std::string, servers, "",
          "Comma-separated server counts to run, e.g. 1,2,4. Default: 1 for "
          "transfer, 2 for train.");
ABSL_FLAG(uint32_t, replicas, 1,
          "train: with R > 1 each set runs without replicas and then with R "
          "ps_server processes per shard, in turns for --rounds rounds; each "
          "replicated run reports its samples/s over the run before it and "
          "the bytes its primaries sent to backups per push, and a summary "
          "the medians of both and their ratio. 1 to 8.");
ABSL_FLAG(bool, replica_witness, false,
          "train --replicas=R > 1: the replicated runs also give each shard "
          "a witness (ps_local --replica_witness), whose cost they then "
          "include.");
ABSL_FLAG(std::string, sizes, "1K,64K,1M,16M",
          "transfer: model sizes in floats (K = 1024, M = 1024²).");
ABSL_FLAG(std::string, ops, "",
          "transfer: the ops to measure beside the echo, of sink, source, "
          "echostream (raw gRPC calls), push, pull, push+pull and pushpull; "
          "each of ours brings its raw twin. Default: all.");
ABSL_FLAG(std::string, max_message_bytes, "4M",
          "transfer: comma-separated ClientOptions::max_message_bytes values "
          "to run, each with its own servers (K = 1024, M = 1024² bytes): a "
          "shard above it is pushed and pulled in chunks of at most this "
          "size, e.g. 4M,1G for streamed beside single messages.");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(1),
          "transfer: time spent on each figure.");
ABSL_FLAG(uint32_t, min_ops, 3,
          "transfer: each client repeats an op at least this often.");
ABSL_FLAG(uint32_t, rounds, 5,
          "transfer: the ops take turns this many times (load drift hits "
          "all alike); train --replicas=R > 1: the runs without and with "
          "replicas do.");
ABSL_FLAG(std::string, models, "softmax",
          "train: softmax, mlp (Fashion-MNIST), logreg, fm (--train, "
          "--test).");
ABSL_FLAG(std::string, modes, "async,sync", "train: async, sync and/or ssp.");
ABSL_FLAG(std::string, compression, "none",
          "train: comma-separated ps_worker --compression values to run, "
          "each in turn, e.g. none,fp16,bf16,topk:0.01.");
ABSL_FLAG(uint32_t, epochs, 5, "train: passes over the training set.");
ABSL_FLAG(uint32_t, batch_size, 64, "train: per-worker mini-batch size.");
ABSL_FLAG(double, target_accuracy, 0.83,
          "train: time to accuracy is to the first evaluation at or above "
          "this.");
ABSL_FLAG(uint64_t, seed, 1, "train: seed of θ and the shuffles.");
ABSL_FLAG(double, eval_every, 0.25,
          "train: evaluate every this fraction of an epoch.");
ABSL_FLAG(std::string, data_dir, ps::common::kDefaultFashionMnistDir,
          "train: directory of Fashion-MNIST's gzip IDX files.");
ABSL_FLAG(std::string, train, "",
          "train --models=logreg,fm: the LIBSVM training set (ps_datagen ctr "
          "--out=DIR writes DIR/train.libsvm).");
ABSL_FLAG(std::string, test, "",
          "train --models=logreg,fm: the LIBSVM test set.");
ABSL_FLAG(std::string, server_flags, "",
          "train: extra flags for every ps_server, space-separated.");
ABSL_FLAG(std::string, worker_flags, "",
          "train: extra flags for every ps_worker, space-separated.");
ABSL_FLAG(std::string, json, "",
          "Append one JSON line per figure to this file; '-' prints them to "
          "stdout instead of the tables.");
ABSL_FLAG(std::string, out_dir, "out/ps_bench",
          "Where port files, logs and metrics go.");
ABSL_FLAG(std::string, port_file, "", "echo_server: where to write its port.");
ABSL_FLAG(std::string, log_level, "warn",
          "trace, debug, info, warn, error, critical or off.");

namespace {

using ps::common::Die;

std::vector<uint32_t> Counts(const std::string& flag, const std::string& name,
                             uint32_t fallback) {
  if (flag.empty()) return {fallback};
  std::vector<uint32_t> counts;
  for (absl::string_view part : absl::StrSplit(flag, ',')) {
    uint32_t n = 0;
    if (!absl::SimpleAtoi(part, &n) || n < 1 || n > 64) {
      Die(absl::StrCat("--", name, "='", flag,
                       "' must list counts from 1 to 64, e.g. 1,2,4"));
    }
    counts.push_back(n);
  }
  return counts;
}

// Tables to stdout unless JSON goes there; JSON lines to --json.
class Output {
 public:
  Output() : json_path_(absl::GetFlag(FLAGS_json)) {
    if (!json_path_.empty() && json_path_ != "-") {
      json_ = std::fopen(json_path_.c_str(), "a");
      if (json_ == nullptr)
        Die(absl::StrCat("cannot append to --json=", json_path_));
    } else if (json_path_ == "-") {
      json_ = stdout;
    }
  }
  ~Output() {
    if (json_ != nullptr && json_ != stdout) std::fclose(json_);
  }
  std::FILE* table() const { return json_path_ == "-" ? nullptr : stdout; }
  void Json(const std::string& lines) {
    if (json_ == nullptr) return;
    std::fputs(lines.c_str(), json_);
    std::fflush(json_);
  }

 private:
  std::string json_path_;
  std::FILE* json_ = nullptr;
};

int RunTransferMode(const std::string& out_dir,
                    const ps::launch::JobSecurity& security) {
  ps::bench::TransferOptions options;
  options.out_dir = out_dir;
  options.security = security;
  options.duration = absl::GetFlag(FLAGS_duration);
  options.min_ops = absl::GetFlag(FLAGS_min_ops);
  options.rounds = std::max<uint32_t>(1, absl::GetFlag(FLAGS_rounds));
  for (absl::string_view op :
       absl::StrSplit(absl::GetFlag(FLAGS_ops), ',', absl::SkipEmpty())) {
    options.ops.emplace_back(op);
  }
  ps::common::DieIfError(ps::bench::ValidateTransferOps(options.ops), "--ops");
  for (absl::string_view size :
       absl::StrSplit(absl::GetFlag(FLAGS_sizes), ',')) {
    absl::StatusOr<uint64_t> floats = ps::bench::ParseSize(std::string(size));
    ps::common::DieIfError(floats.status(), "--sizes");
    options.sizes.push_back(*floats);
  }
  std::vector<uint64_t> message_limits;
  for (absl::string_view limit :
       absl::StrSplit(absl::GetFlag(FLAGS_max_message_bytes), ',')) {
    absl::StatusOr<uint64_t> bytes = ps::bench::ParseSize(std::string(limit));
    ps::common::DieIfError(bytes.status(), "--max_message_bytes");
    if (*bytes < ps::worker::ClientOptions::kMinMessageBytes) {
      Die(absl::StrCat("--max_message_bytes: ", limit,
                       " is below the smallest message, 64K"));
    }
    message_limits.push_back(*bytes);
  }
  Output output;
  for (uint32_t servers : Counts(absl::GetFlag(FLAGS_servers), "servers", 1)) {
    for (uint32_t workers :
         Counts(absl::GetFlag(FLAGS_workers), "workers", 1)) {
      for (uint64_t limit : message_limits) {
        options.servers = servers;
        options.workers = workers;
        options.max_message_bytes = limit;
        if (output.table())
          ps::bench::PrintTransferHeader(options, output.table());
        absl::Status done = ps::bench::RunTransfer(
            options, [&](const ps::bench::TransferResult& result) {
              if (output.table()) {
                ps::bench::PrintTransferResult(result, output.table());
              }
              output.Json(ps::bench::TransferJsonLines(result));
            });
        if (!done.ok()) {
          std::fprintf(stderr, "ps_bench transfer: %s\n",
                       std::string(done.message()).c_str());
          return 1;
        }
      }
    }
  }
  return 0;
}

int RunTrainMode(const std::string& out_dir,
                 const ps::launch::JobSecurity& security) {
  ps::bench::TrainBenchOptions options;
  options.out_dir = out_dir;
  options.security = security;
  options.epochs = absl::GetFlag(FLAGS_epochs);
  options.batch_size = absl::GetFlag(FLAGS_batch_size);
  options.target_accuracy = absl::GetFlag(FLAGS_target_accuracy);
  options.seed = absl::GetFlag(FLAGS_seed);
  options.eval_every = absl::GetFlag(FLAGS_eval_every);
  options.data_dir = absl::GetFlag(FLAGS_data_dir);
  options.train = absl::GetFlag(FLAGS_train);
  options.test = absl::GetFlag(FLAGS_test);
  options.server_flags =
      absl::StrSplit(absl::GetFlag(FLAGS_server_flags), ' ', absl::SkipEmpty());
  options.worker_flags =
      absl::StrSplit(absl::GetFlag(FLAGS_worker_flags), ' ', absl::SkipEmpty());
  for (absl::string_view model :
       absl::StrSplit(absl::GetFlag(FLAGS_models), ',')) {
    if ((model == "logreg" || model == "fm") &&
        (options.train.empty() || options.test.empty())) {
      Die(absl::StrCat("--models=", model,
                       " needs --train=FILE and --test=FILE (LIBSVM; "
                       "ps_datagen ctr --out=DIR writes them)"));
    }
  }
  for (absl::string_view compression :
       absl::StrSplit(absl::GetFlag(FLAGS_compression), ',')) {
    ps::common::DieIfError(ps::common::ParseCompression(compression).status(),
                           "--compression");
  }
  const uint32_t replicas_flag = absl::GetFlag(FLAGS_replicas);
  if (replicas_flag < 1 || replicas_flag > 8) {
    Die(absl::StrCat("--replicas=", replicas_flag,
                     " must be 1 to 8 (1: no replicas)"));
  }
  // Without replicas first: the replicated run's reference, in this run;
  // in turns, so load that drifts on a shared machine hits both alike.
  std::vector<uint32_t> replica_counts = {1};
  uint32_t rounds = 1;
  if (replicas_flag > 1) {
    replica_counts.push_back(replicas_flag);
    rounds = std::max<uint32_t>(1, absl::GetFlag(FLAGS_rounds));
  }
  Output output;
  if (output.table()) ps::bench::PrintTrainHeader(output.table());
  for (absl::string_view model :
       absl::StrSplit(absl::GetFlag(FLAGS_models), ',')) {
    for (absl::string_view compression :
         absl::StrSplit(absl::GetFlag(FLAGS_compression), ',')) {
      for (absl::string_view mode :
           absl::StrSplit(absl::GetFlag(FLAGS_modes), ',')) {
        for (uint32_t servers :
             Counts(absl::GetFlag(FLAGS_servers), "servers", 2)) {
          for (uint32_t workers :
               Counts(absl::GetFlag(FLAGS_workers), "workers", 2)) {
            // This set's runs, by replica count.
            std::vector<ps::bench::TrainBenchResult> runs[2];
            for (uint32_t round = 0; round < rounds; ++round) {
              for (size_t i = 0; i < replica_counts.size(); ++i) {
                options.model = std::string(model);
                options.mode = std::string(mode);
                options.compression = std::string(compression);
                options.servers = servers;
                options.workers = workers;
                options.replicas = replica_counts[i];
                options.replica_witness = absl::GetFlag(FLAGS_replica_witness);
                absl::StatusOr<ps::bench::TrainBenchResult> result =
                    ps::bench::RunTrainBench(options);
                if (!result.ok()) {
                  std::fprintf(stderr, "ps_bench train: %s %s: %s\n",
                               options.model.c_str(), options.mode.c_str(),
                               std::string(result.status().message()).c_str());
                  return 1;
                }
                // Over the unreplicated run just before it.
                if (i > 0 && runs[0].back().samples_per_s > 0) {
                  result->vs_unreplicated =
                      result->samples_per_s / runs[0].back().samples_per_s;
                }
                if (output.table()) {
                  ps::bench::PrintTrainResult(*result, output.table());
                }
                output.Json(ps::bench::TrainJsonLine(*result));
                runs[i].push_back(*std::move(result));
              }
            }
            if (replica_counts.size() > 1) {
              const ps::bench::ReplicaComparison comparison =
                  ps::bench::CompareReplicas(runs[0], runs[1]);
              if (output.table()) {
                ps::bench::PrintReplicaComparison(comparison, output.table());
              }
              output.Json(ps::bench::ReplicaComparisonJsonLine(comparison));
            }
          }
        }
      }
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // The sub-mode is the first argument; the rest are flags.
  std::string mode = argc > 1 ? argv[1] : "";
  if (mode.empty() || mode[0] == '-') {
    mode.clear();
  } else {
    argv[1] = argv[0];
    ++argv;
    --argc;
  }
  ps::common::InitProgram(
      argc, argv,
      "ps_bench transfer|train [--workers=1,2,4] [--servers=1,2,4] "
      "[--sizes=1K,64K,1M,16M] [--models=softmax,mlp] [--modes=async,sync] "
      "[--compression=none,fp16,bf16,topk:0.01] "
      "[--json=FILE|-]");
  ps::common::SetLogLevelOrDie(absl::GetFlag(FLAGS_log_level));
  ps::rpc::RouteGrpcLogsToSpdlog();
  const ps::launch::JobSecurity security =
      ps::launch::JobSecurityFromFlagsOrDie();
  if (mode == "echo_server") {
    if (absl::GetFlag(FLAGS_port_file).empty()) Die("--port_file is required");
    return ps::bench::RunEchoServer(absl::GetFlag(FLAGS_port_file),
                                    ps::launch::ServerSecurityOf(security));
  }
  if (mode != "transfer" && mode != "train") {
    Die("the first argument must be transfer or train (see --help)");
  }
  const std::string out_dir =
      absl::StrCat(absl::GetFlag(FLAGS_out_dir), "/", mode);
  if (std::system(absl::StrCat("mkdir -p '", out_dir, "'").c_str()) != 0) {
    Die(absl::StrCat("cannot create ", out_dir));
  }
  return mode == "transfer" ? RunTransferMode(out_dir, security)
                            : RunTrainMode(out_dir, security);
}
