#include "worker/trainer.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <numeric>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/key_range.h"
#include "spdlog/spdlog.h"

namespace ps::worker {
namespace {

double NowSeconds() { return absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch()); }

// Fisher–Yates with our own index draw: std::shuffle's algorithm is left to
// the library, which would make runs differ between toolchains.
void Shuffle(std::vector<int64_t>& items, uint64_t seed) {
  std::mt19937_64 rng(seed);
  for (size_t i = items.size(); i > 1; --i) {
    const size_t j = static_cast<size_t>(rng() % i);
    std::swap(items[i - 1], items[j]);
  }
}

// A distinct, reproducible stream per (seed, rank, epoch).
uint64_t MixSeed(uint64_t seed, uint64_t rank, uint64_t epoch) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ull ^ (rank + 1) * 0xBF58476D1CE4E5B9ull ^
               (epoch + 1) * 0x94D049BB133111EBull;
  x ^= x >> 31;
  return x;
}

}  // namespace

absl::Status ValidateTrainerOptions(const TrainerOptions& o,
                                    int64_t train_size) {
  if (o.num_workers == 0) {
    return absl::InvalidArgumentError("--num_workers must be at least 1");
  }
  if (o.rank >= o.num_workers) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--rank=", o.rank, " must be below --num_workers=", o.num_workers));
  }
  if (o.batch_size == 0) {
    return absl::InvalidArgumentError("--batch_size must be at least 1");
  }
  if (o.epochs == 0) {
    return absl::InvalidArgumentError("--epochs must be at least 1");
  }
  if (!(o.eval_every > 0)) {
    return absl::InvalidArgumentError("--eval_every must be > 0");
  }
  const int64_t shard = train_size / o.num_workers;
  if (shard < static_cast<int64_t>(o.batch_size)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "each worker's shard holds ", shard, " examples, fewer than one batch "
        "of --batch_size=", o.batch_size));
  }
  return absl::OkStatus();
}

Trainer::Trainer(TrainerOptions options, Model* model, ParameterClient* client,
                 const common::TrainTestData* data)
    : options_(std::move(options)),
      model_(model),
      client_(client),
      data_(data) {}

absl::Status Trainer::Run() {
  const common::Dataset& train = data_->train;
  if (absl::Status valid = ValidateTrainerOptions(options_, train.size());
      !valid.ok()) {
    return valid;
  }
  const uint32_t rank = options_.rank;
  const uint32_t workers = options_.num_workers;
  const uint32_t batch = options_.batch_size;

  theta_ = model_->InitialParams(options_.seed);
  absl::StatusOr<ClusterInfo> cluster = client_->Init(model_->tensors(), theta_);
  if (!cluster.ok()) return cluster.status();
  if (cluster->expected_workers != workers) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the servers expect ", cluster->expected_workers,
        " workers but this worker was started with --num_workers=", workers));
  }
  mode_ = cluster->mode;
  const bool sync = mode_ == "sync";

  // An epoch is one pass over each worker's whole shard, the last batch
  // holding what is left. Every worker takes the same number of steps (shards
  // differ by at most one example), so no sync round waits for a worker that
  // ran out of data; the round's mean weighs each batch by its size.
  const common::KeyRange mine = common::BalancedPart(train.size(), workers, rank);
  const uint64_t smallest_shard = train.size() / workers;
  const uint64_t steps_per_epoch = (smallest_shard + batch - 1) / batch;
  const uint64_t total_steps = steps_per_epoch * options_.epochs;
  std::vector<int64_t> order(mine.size());
  std::iota(order.begin(), order.end(), static_cast<int64_t>(mine.begin));
  spdlog::info("worker {}/{}: {} mode, examples {}, {} steps of {} per epoch, "
               "{} epochs, {} server shards",
               rank, workers, cluster->mode, mine.ToString(), steps_per_epoch,
               batch, options_.epochs, client_->num_shards());

  std::vector<float> gradient(theta_.size());
  common::RowMatrix x(batch, train.features.cols());
  std::vector<int32_t> labels(batch);
  double next_eval = options_.eval_every;
  double loss_sum = 0;
  uint64_t loss_count = 0;
  start_seconds_ = NowSeconds();

  for (uint64_t step = 0; step < total_steps; ++step) {
    const uint64_t epoch = step / steps_per_epoch;
    const uint64_t in_epoch = step % steps_per_epoch;
    if (in_epoch == 0) Shuffle(order, MixSeed(options_.seed, rank, epoch));

    // Sync: wait for the round this step belongs to. Async: any θ will do.
    absl::StatusOr<PullInfo> pulled =
        client_->Pull(sync ? step : 0, absl::MakeSpan(theta_));
    if (!pulled.ok()) return pulled.status();

    const double epochs_done = static_cast<double>(step) / steps_per_epoch;
    if (rank == 0 && epochs_done >= next_eval) {
      absl::Status evaluated =
          Evaluate(step, pulled->version, pulled->samples_applied,
                   loss_count ? loss_sum / loss_count : 0);
      if (!evaluated.ok()) return evaluated;
      loss_sum = 0;
      loss_count = 0;
      while (epochs_done >= next_eval) {
        next_eval += options_.eval_every;
      }
    }

    const uint64_t first = in_epoch * batch;
    const uint32_t rows =
        static_cast<uint32_t>(std::min<uint64_t>(batch, order.size() - first));
    for (uint32_t b = 0; b < rows; ++b) {
      const int64_t example = order[first + b];
      x.row(b) = train.features.row(example);
      labels[b] = train.labels[example];
    }
    loss_sum += model_->LossAndGradient(
        theta_, x.topRows(rows), absl::MakeConstSpan(labels).first(rows),
        absl::MakeSpan(gradient));
    ++loss_count;
    if (absl::Status pushed =
            client_->Push(step, pulled->version, rows, gradient);
        !pushed.ok()) {
      return pushed;
    }
  }

  // The final θ: every round closed (sync), or every worker's pushes applied
  // (async). A worker that died leaves the async count short; the pull's
  // deadline bounds that wait and rank 0 then evaluates what there is.
  const uint64_t final_version = sync ? total_steps : total_steps * workers;
  absl::StatusOr<PullInfo> last =
      client_->Pull(final_version, absl::MakeSpan(theta_));
  if (!last.ok() && rank == 0) {
    spdlog::warn("final θ not reached ({}); evaluating the latest",
                 last.status().ToString());
    last = client_->Pull(0, absl::MakeSpan(theta_));
  }
  if (!last.ok()) return last.status();
  if (rank == 0) {
    return Evaluate(total_steps, last->version, last->samples_applied,
                    loss_count ? loss_sum / loss_count : 0);
  }
  return absl::OkStatus();
}

absl::Status Trainer::Evaluate(uint64_t step, uint64_t version,
                               uint64_t samples_applied, double train_loss) {
  const double elapsed = NowSeconds() - start_seconds_;
  last_evaluation_ = model_->Evaluate(theta_, data_->test);
  const double epoch =
      static_cast<double>(samples_applied) / data_->train.size();
  const double samples_per_s = elapsed > 0 ? samples_applied / elapsed : 0;
  const std::string line = absl::StrFormat(
      "{\"time_s\":%.3f,\"epoch\":%.4f,\"step\":%d,\"version\":%d,"
      "\"test_accuracy\":%.4f,\"test_loss\":%.5f,\"train_loss\":%.5f,"
      "\"samples_per_s\":%.1f,\"samples\":%d,\"model\":\"%s\",\"mode\":\"%s\","
      "\"workers\":%d,\"servers\":%d}",
      elapsed, epoch, step, version, last_evaluation_.accuracy,
      last_evaluation_.mean_loss, train_loss, samples_per_s, samples_applied,
      options_.model_name, mode_, options_.num_workers, client_->num_shards());
  spdlog::info("epoch {:.2f} step {} test accuracy {:.4f} loss {:.4f} "
               "({:.0f} samples/s)",
               epoch, step, last_evaluation_.accuracy,
               last_evaluation_.mean_loss, samples_per_s);
  if (options_.metrics_out.empty()) return absl::OkStatus();
  std::ofstream out(options_.metrics_out, std::ios::app);
  out << line << "\n";
  out.flush();
  if (!out) {
    return absl::UnavailableError(
        absl::StrCat("cannot append to --metrics_out=", options_.metrics_out));
  }
  return absl::OkStatus();
}

}  // namespace ps::worker
