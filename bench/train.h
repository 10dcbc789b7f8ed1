#ifndef PS_BENCH_TRAIN_H_
#define PS_BENCH_TRAIN_H_

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "deploy/local/daemon_flags.h"

namespace ps::bench {

struct TrainBenchOptions {
  // Where ps_server and ps_worker are. Default: beside this executable
  std::string bin_dir;
  // metrics.jsonl and every process's log; must exist.
  std::string out_dir;
  // Default: softmax, async, 2 servers x 2 workers, batch 64, 5 epochs
  std::string model = "softmax";
  std::string mode = "async";
  uint32_t servers = 2;
  uint32_t workers = 2;
  // ps_server processes per shard (ps_local --replicas). Default: 1
  uint32_t replicas = 1;
  // With replicas: each shard also gets a witness (ps_local
  // --replica_witness). Default: false
  bool replica_witness = false;
  uint32_t batch_size = 64;
  uint32_t epochs = 5;
  uint64_t seed = 1;
  double eval_every = 0.25;
  // ps_worker --compression (none, fp16, bf16, topk:RATIO). Default: none
  std::string compression = "none";
  std::string data_dir;
  // logreg and fm: the LIBSVM training and test sets (ps_datagen ctr).
  std::string train;
  std::string test;
  // Passed verbatim to every ps_server and ps_worker after the flags
  // above (--table_memory_limit, --fm_dim, say). Default: none
  std::vector<std::string> server_flags;
  std::vector<std::string> worker_flags;
  // Time to accuracy is measured to the first evaluation at or above this.
  // Default: 0.83
  double target_accuracy = 0.83;
  // Stop everything and fail after this long. Default: 10 min
  absl::Duration timeout = absl::Minutes(10);
  // The job's credentials. Default: none, plaintext
  launch::JobSecurity security;
};

struct ProcessPeak {
  std::string name;  // "server 0", "worker 1"
  int64_t peak_rss_bytes = 0;
};

struct TrainBenchResult {
  TrainBenchOptions options;
  double samples_per_s = 0;   // the last evaluation's, all workers
  double train_seconds = 0;   // since training started, as rank 0 saw it
  double wall_seconds = 0;    // including start-up and data loading
  double final_accuracy = 0;  // softmax, mlp
  double final_auc = 0;       // logreg, fm
  // Mean bytes of one worker's push requests per step, all shards (rank
  // 0's); the pulls' answers carry θ, uncompressed, whatever this is.
  double push_bytes_per_step = 0;
  // Replicas: bytes the primaries sent to their backups per push they
  // applied (every shard's, at the end); 0 without replicas.
  double replication_bytes_per_push = 0;
  // samples/s over that of the same set without replicas in this run;
  // 0 when there was none.
  double vs_unreplicated = 0;
  // First evaluation at or above the target; negative when none was.
  double seconds_to_target = -1;
  double epoch_at_target = -1;
  std::vector<ProcessPeak> peaks;
};

// Trains on a local cluster (ps_local's, from deploy/local/launcher) and
// reads rank 0's metrics for throughput and time to accuracy.
absl::StatusOr<TrainBenchResult> RunTrainBench(
    const TrainBenchOptions& options);

void PrintTrainHeader(std::FILE* out);
void PrintTrainResult(const TrainBenchResult& result, std::FILE* out);
std::string TrainJsonLine(const TrainBenchResult& result);

// One set's runs without replicas and with them, taken in turns
// (ps_bench train --replicas=R --rounds=N): load that drifts on a shared
// machine hits both alike, and the medians compare them.
struct ReplicaComparison {
  // The replicated runs' options.
  TrainBenchOptions options;
  // samples/s of each round's run without replicas, and with them.
  std::vector<double> unreplicated;
  std::vector<double> replicated;
  double median_unreplicated = 0;
  double median_replicated = 0;
  // median_replicated / median_unreplicated.
  double ratio = 0;
  // The median over the replicated runs.
  double replication_bytes_per_push = 0;
};

// The comparison of rounds of unreplicated and replicated runs of one set
// (the same count of each, at least one).
ReplicaComparison CompareReplicas(
    const std::vector<TrainBenchResult>& unreplicated,
    const std::vector<TrainBenchResult>& replicated);
void PrintReplicaComparison(const ReplicaComparison& comparison,
                            std::FILE* out);
std::string ReplicaComparisonJsonLine(const ReplicaComparison& comparison);

}  // namespace ps::bench

#endif  // PS_BENCH_TRAIN_H_
