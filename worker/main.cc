// ps_worker: trains on its shard of the data against the parameter servers.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "common/cli.h"
#include "common/dataset.h"
#include "common/gradient_codec.h"
#include "common/json.h"
#include "common/libsvm.h"
#include "common/log_format.h"
#include "common/metrics/http_endpoint.h"
#include "common/rpc/channel.h"
#include "common/rpc/client_security_flags.h"
#include "common/rpc/fault_injection.h"
#include "common/stop_signal.h"
#include "common/theta_file.h"
#include "spdlog/spdlog.h"
#include "worker/matrix_product.h"
#include "worker/model.h"
#include "worker/parameter_client.h"
#include "worker/sparse_model.h"
#include "worker/trainer.h"
#include "worker/training_task.h"
#include "worker/worker_metrics.h"

ABSL_FLAG(std::string, servers, "",
          "Comma-separated host:port of every server, in shard order.");
ABSL_FLAG(int32_t, rank, -1,
          "This worker's rank in [0, num_workers). Default: "
          "$JOB_COMPLETION_INDEX (Kubernetes Indexed Job), or 0 with one "
          "worker.");
ABSL_FLAG(uint32_t, num_workers, 1, "Number of workers in the job.");
ABSL_FLAG(uint32_t, data_partitions, 64,
          "Cut the training set into this many partitions per epoch and "
          "lease them from shard 0 one at a time (a worker whose lease "
          "expires gives its partitions back; a joiner of any rank takes "
          "partitions at once). 0: train part --rank of --num_workers.");
ABSL_FLAG(uint32_t, kfold, 0,
          "k-fold cross-validation: partition p of --data_partitions is in "
          "fold p mod K, and the partitions of fold --fold are held out (never "
          "trained; evaluated as val_accuracy and val_loss). Needs "
          "--data_partitions >= K; with --data_partitions=0 the training set "
          "is cut into K partitions, one per fold. 0: no folds.");
ABSL_FLAG(int32_t, fold, -1, "With --kfold=K: the fold held out, 0 to K-1.");
ABSL_FLAG(std::string, model, "",
          "softmax or mlp (dense, on Fashion-MNIST), or logreg or fm (sparse, "
          "on --data_format=libsvm). Default: logreg with "
          "--data_format=libsvm, else the model of --init_from's file, else "
          "softmax.");
ABSL_FLAG(uint32_t, fm_dim, 8, "--model=fm: latent factors per feature id.");
ABSL_FLAG(std::string, table_optimizer, "default",
          "--model=logreg|fm: the optimizer of the table of feature rows, "
          "in --optimizer's syntax (e.g. 'ftrl(ftrl_beta=0.004)'). default: "
          "the model's own (README: sparse models); server: the servers' "
          "--optimizer.");
ABSL_FLAG(std::string, compression, "none",
          "How dense gradients are pushed, for every tensor whose "
          "declaration does not say: none (float32), fp16, bf16 (2 bytes a "
          "value, rounded to nearest even) or topk:RATIO (the RATIO largest "
          "coordinates of each tensor, the rest kept and added to the next "
          "step). README: compression.");
ABSL_FLAG(uint32_t, batch_size, 64, "Examples per mini-batch on this worker.");
ABSL_FLAG(uint32_t, epochs, 1, "Passes over the training set.");
ABSL_FLAG(uint64_t, seed, 1, "Seed of the initial θ and of the shuffles.");
ABSL_FLAG(std::string, data_dir, ps::common::kDefaultFashionMnistDir,
          "Directory holding Fashion-MNIST's gzip IDX files.");
ABSL_FLAG(std::string, data_format, "idx",
          "idx: Fashion-MNIST from --data_dir, for softmax and mlp. libsvm: "
          "--train and --test, sparse rows for logreg and fm (read whole at "
          "start-up: a corrupt line stops the worker naming it).");
ABSL_FLAG(std::string, train, "",
          "--data_format=libsvm: the training set, LIBSVM lines "
          "(label id[:value] ...).");
ABSL_FLAG(std::string, test, "",
          "--data_format=libsvm: the test set, in the same format.");
ABSL_FLAG(double, eval_every, 0.25,
          "Rank 0 evaluates on the test set every this fraction of an epoch.");
ABSL_FLAG(std::string, metrics_out, "",
          "Rank 0 appends one JSON line per evaluation to this file.");
ABSL_FLAG(absl::Duration, rpc_deadline, absl::Seconds(30),
          "Deadline of one RPC attempt, e.g. 30s.");
ABSL_FLAG(uint64_t, max_message_bytes,
          ps::worker::ClientOptions::kDefaultMaxMessageBytes,
          "A shard whose dense values are more bytes than this is pushed and "
          "pulled as a stream of chunks of at most this size (at least "
          "65536), so no message holds a second copy of its θ.");
ABSL_FLAG(bool, pushpull_stream, true,
          "Send each step's PushPull on one long-lived stream per shard "
          "(false: a unary call each step). A stream that fails falls back to "
          "the unary call for that step; off with --inject_faults.");
ABSL_FLAG(std::string, matrix_kernels, "auto",
          "Instruction set of the dense models' matrix products: auto (the "
          "best this CPU runs), avx512, avx2 or baseline (the build's own "
          "flags). Naming one pins it, e.g. when comparing runs on "
          "different CPUs.");
ABSL_FLAG(absl::Duration, max_retry_time, absl::Seconds(120),
          "Give up on a server after retrying this long, and exit non-zero.");
ABSL_FLAG(std::string, init_from, "",
          "Start from the θ in this file (psctl export writes one) instead of "
          "seeded random values.");
ABSL_FLAG(bool, evaluate_only, false,
          "Evaluate the θ of --init_from on the test set, print one JSON line "
          "and exit; no servers needed.");
ABSL_FLAG(std::string, inject_faults, "",
          "Experiments only: inject RPC faults, e.g. "
          "'seed=7,delay=1ms..5ms,drop=0.01,error=UNAVAILABLE:0.05', or "
          "'@FILE' holding such a spec, re-read when it changes "
          "(common/rpc/fault_injection.h). Empty: none, at no cost.");
ABSL_FLAG(absl::Duration, stop_grace, absl::Seconds(5),
          "On SIGTERM or SIGINT the worker finishes its step, leaves the job "
          "and exits with 128+signal; if that takes longer than this (a "
          "server is down, say), it exits at once. Keep it below the "
          "orchestrator's grace period (Docker: 10 s, Kubernetes: 30 s).");
ABSL_FLAG(std::string, metrics_listen, "",
          "Serve Prometheus metrics on GET /metrics at this HOST:PORT (port 0 "
          "picks a free one, logged). Empty: no metrics endpoint.");
ABSL_FLAG(std::string, log_level, "info",
          "trace, debug, info, warn, error, critical or off.");
ABSL_FLAG(std::string, log_format, "text",
          "text (a line for a person) or json (one object a line: time, "
          "level, daemon, rank, message; for log pipelines).");

namespace {

// Reads --train and --test whole, so a corrupt line stops the worker at
// start-up naming its file and line.
ps::common::SparseDataset LoadLibsvmOrDie(const std::string& flag,
                                          const std::string& path) {
  if (path.empty()) {
    ps::common::Die("--data_format=libsvm needs --train=FILE and --test=FILE");
  }
  absl::StatusOr<ps::common::SparseDataset> data = ps::common::ReadLibsvm(path);
  ps::common::DieIfError(data.status(), flag);
  return std::move(*data);
}

// Runs `trainer` to the end: the worker's exit code.
int Train(ps::worker::Trainer& trainer, uint32_t rank) {
  if (absl::Status trained = trainer.Run(); !trained.ok()) {
    if (const int signal = ps::common::StopSignalReceived(); signal != 0) {
      spdlog::warn("received {}: {}", strsignal(signal),
                   std::string(trained.message()));
      return 128 + signal;
    }
    if (!trainer.started() && (absl::IsFailedPrecondition(trained) ||
                               absl::IsInvalidArgument(trained))) {
      // The servers answered, and this worker cannot be one of theirs.
      ps::common::Die(absl::StrCat("cannot start: ", trained.message()));
    }
    spdlog::error("training failed: {}", trained.ToString());
    return 1;
  }
  if (!trainer.found_job_complete()) {
    spdlog::info("worker {} finished", rank);
  }
  return 0;
}

// logreg or fm on --train and --test: the exit code.
int TrainSparse(ps::worker::TrainerOptions options,
                const ps::worker::ClientOptions& client_options) {
  using ps::common::Die;
  using ps::common::DieIfError;
  if (absl::GetFlag(FLAGS_data_format) != "libsvm") {
    Die(absl::StrCat("--model=", options.model_name,
                     " trains on sparse rows: give --data_format=libsvm "
                     "--train=FILE --test=FILE"));
  }
  if (!absl::GetFlag(FLAGS_init_from).empty() ||
      absl::GetFlag(FLAGS_evaluate_only)) {
    Die("--init_from and --evaluate_only are for the dense models; a "
        "sparse model's rows live on the servers (their checkpoints)");
  }
  absl::StatusOr<ps::worker::SparseModel> model =
      ps::worker::SparseModel::Create(options.model_name,
                                      absl::GetFlag(FLAGS_fm_dim));
  DieIfError(model.status(), "--model");
  if (const std::string spec = absl::GetFlag(FLAGS_table_optimizer);
      spec != "default") {
    DieIfError(model->SetTableOptimizer(spec == "server" ? "" : spec),
               "--table_optimizer");
  }
  const ps::common::SparseDataset train =
      LoadLibsvmOrDie("--train", absl::GetFlag(FLAGS_train));
  const ps::common::SparseDataset test =
      LoadLibsvmOrDie("--test", absl::GetFlag(FLAGS_test));
  DieIfError(ps::worker::ValidateTrainerOptions(options, train.size()),
             "invalid options");
  absl::StatusOr<std::unique_ptr<ps::worker::TrainingTask>> task =
      ps::worker::NewSparseTask(*model, &train, &test);
  DieIfError(task.status(), absl::StrCat("--test=", absl::GetFlag(FLAGS_test)));
  absl::StatusOr<std::unique_ptr<ps::worker::ParameterClient>> client =
      ps::worker::ParameterClient::Connect(client_options);
  DieIfError(client.status(), "--servers");
  const uint32_t rank = options.rank;
  ps::worker::Trainer trainer(std::move(options), std::move(*task),
                              client->get());
  return Train(trainer, rank);
}

}  // namespace

int main(int argc, char** argv) {
  using ps::common::Die;
  using ps::common::DieIfError;
  ps::common::InitProgram(
      argc, argv,
      "ps_worker --servers=host:port,... --rank=R --num_workers=W "
      "[--model=softmax|mlp|logreg|fm] [--epochs=N] [--metrics_out=FILE]");
  ps::common::SetLogLevelOrDie(absl::GetFlag(FLAGS_log_level));
  const uint32_t kfold = absl::GetFlag(FLAGS_kfold);
  const int32_t fold = absl::GetFlag(FLAGS_fold);
  if (fold >= 0 && kfold == 0) {
    Die(absl::StrCat("--fold=", fold, " needs --kfold=K, the number of folds"));
  }
  if (kfold > 0 && fold < 0) {
    Die(absl::StrCat("--kfold=", kfold, " needs --fold=I, the fold (0 to ",
                     kfold - 1, ") to hold out"));
  }
  // k-fold holds out partitions: without a count given, one per fold.
  uint32_t data_partitions = absl::GetFlag(FLAGS_data_partitions);
  if (kfold > 0 && data_partitions == 0) data_partitions = kfold;
  // With partitions a --rank given may be any worker id the servers accept
  // (they refuse one beyond their --max_workers): a joiner.
  absl::StatusOr<uint32_t> rank = ps::common::ResolveIndex(
      absl::GetFlag(FLAGS_rank), "rank",
      data_partitions > 0 && absl::GetFlag(FLAGS_rank) >= 0
          ? UINT32_MAX
          : absl::GetFlag(FLAGS_num_workers),
      "JOB_COMPLETION_INDEX", /*use_hostname=*/false);
  DieIfError(rank.status(), "cannot tell this worker's rank");
  // Before anything logs, so every line has the chosen format.
  ps::common::SetLogFormatOrDie(absl::GetFlag(FLAGS_log_format),
                                {"ps_worker", {{"rank", *rank}}});
  ps::rpc::RouteGrpcLogsToSpdlog();
  ps::rpc::InstallClientSecurityFromFlags();
  ps::common::DieIfError(
      ps::rpc::InstallFaultInjection(absl::GetFlag(FLAGS_inject_faults)),
      "--inject_faults");
  DieIfError(ps::worker::UseMatrixKernels(absl::GetFlag(FLAGS_matrix_kernels)),
             "--matrix_kernels");
  if (absl::GetFlag(FLAGS_stop_grace) <= absl::ZeroDuration()) {
    Die("--stop_grace must be > 0");
  }
  ps::common::CatchStopSignals(absl::GetFlag(FLAGS_stop_grace));

  ps::worker::ClientOptions client_options;
  client_options.servers = absl::StrSplit(absl::GetFlag(FLAGS_servers), ',');
  if (absl::GetFlag(FLAGS_servers).empty() &&
      !absl::GetFlag(FLAGS_evaluate_only)) {
    Die("--servers is required: host:port of every server, in shard order");
  }
  client_options.worker_id = *rank;
  absl::StatusOr<ps::common::Compression> compression =
      ps::common::ParseCompression(absl::GetFlag(FLAGS_compression));
  DieIfError(compression.status(), "--compression");
  client_options.compression = *compression;
  client_options.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  if (client_options.max_message_bytes <
      ps::worker::ClientOptions::kMinMessageBytes) {
    Die(absl::StrCat("--max_message_bytes=", client_options.max_message_bytes,
                     " is below the smallest message, 65536 bytes"));
  }
  client_options.pushpull_stream = absl::GetFlag(FLAGS_pushpull_stream);
  client_options.retry.rpc_deadline = absl::GetFlag(FLAGS_rpc_deadline);
  client_options.retry.max_retry_time = absl::GetFlag(FLAGS_max_retry_time);
  if (client_options.retry.rpc_deadline <= absl::ZeroDuration() ||
      client_options.retry.max_retry_time <= absl::ZeroDuration()) {
    Die("--rpc_deadline and --max_retry_time must be > 0");
  }
  if (client_options.retry.rpc_deadline > client_options.retry.max_retry_time) {
    spdlog::warn(
        "--rpc_deadline={} is longer than --max_retry_time={}: a "
        "server that does not answer is given one attempt of {}, "
        "not retried",
        absl::FormatDuration(client_options.retry.rpc_deadline),
        absl::FormatDuration(client_options.retry.max_retry_time),
        absl::FormatDuration(client_options.retry.rpc_deadline));
  }

  // Started before the data loads, so a bad address fails at once.
  ps::worker::WorkerMetrics metrics(*rank);
  std::unique_ptr<ps::common::metrics::MetricsEndpoint> metrics_endpoint;
  if (const std::string listen = absl::GetFlag(FLAGS_metrics_listen);
      !listen.empty()) {
    DieIfError(ps::common::metrics::ParseListenAddress(listen).status(),
               "--metrics_listen");
    absl::StatusOr<std::unique_ptr<ps::common::metrics::MetricsEndpoint>>
        endpoint = ps::common::metrics::MetricsEndpoint::Start(
            listen, &metrics.registry());
    DieIfError(endpoint.status(), "--metrics_listen");
    metrics_endpoint = std::move(*endpoint);
    spdlog::info("metrics on port {} (GET /metrics)", metrics_endpoint->port());
  }
  client_options.retry.on_retry = [&metrics](grpc::StatusCode code) {
    metrics.CountRetry(code);
  };

  ps::worker::TrainerOptions options;
  options.metrics = &metrics;
  options.rank = *rank;
  options.num_workers = absl::GetFlag(FLAGS_num_workers);
  options.data_partitions = data_partitions;
  options.kfold = kfold;
  options.fold = fold < 0 ? 0 : static_cast<uint32_t>(fold);
  options.batch_size = absl::GetFlag(FLAGS_batch_size);
  options.epochs = absl::GetFlag(FLAGS_epochs);
  options.seed = absl::GetFlag(FLAGS_seed);
  options.eval_every = absl::GetFlag(FLAGS_eval_every);
  options.metrics_out =
      options.rank == 0 ? absl::GetFlag(FLAGS_metrics_out) : "";
  options.wait_for_others = client_options.retry.max_retry_time;
  options.stop_requested = [] { return ps::common::StopSignalReceived() != 0; };

  const std::string init_from = absl::GetFlag(FLAGS_init_from);
  std::optional<ps::common::ThetaFile> init_file;
  if (!init_from.empty()) {
    absl::StatusOr<ps::common::ThetaFile> file =
        ps::common::ReadThetaFile(init_from);
    DieIfError(file.status(), "--init_from");
    init_file = std::move(*file);
  }
  options.model_name = absl::GetFlag(FLAGS_model);
  const std::string data_format = absl::GetFlag(FLAGS_data_format);
  if (options.model_name.empty() && data_format == "libsvm") {
    options.model_name = "logreg";
  }
  if (options.model_name == "logreg" || options.model_name == "fm") {
    if (options.kfold > 0) {
      Die("--kfold is for the dense models (softmax, mlp): the sparse ones "
          "have no validation scores yet");
    }
    return TrainSparse(std::move(options), client_options);
  }
  if (data_format == "libsvm") {
    Die("--data_format=libsvm is for the sparse models: --model=logreg or "
        "--model=fm");
  }
  if (data_format != "idx") {
    Die(absl::StrCat("--data_format: '", data_format,
                     "' is not idx or libsvm"));
  }
  if (!absl::GetFlag(FLAGS_train).empty() ||
      !absl::GetFlag(FLAGS_test).empty()) {
    Die("--train and --test are for --data_format=libsvm; idx reads "
        "--data_dir");
  }
  if (options.model_name.empty() && init_file.has_value()) {
    absl::StatusOr<std::string> named =
        ps::worker::ModelNamed(init_file->tensors, 784, 10);
    DieIfError(named.status(),
               absl::StrCat("--model is not given and --init_from=", init_from,
                            " does not hold a model it knows"));
    options.model_name = *named;
  } else if (options.model_name.empty()) {
    options.model_name = "softmax";
  }
  absl::StatusOr<std::unique_ptr<ps::worker::Model>> model =
      ps::worker::CreateModel(options.model_name, 784, 10);
  DieIfError(model.status(), "--model");

  absl::StatusOr<ps::common::TrainTestData> data =
      ps::common::LoadFashionMnist(absl::GetFlag(FLAGS_data_dir));
  DieIfError(data.status(), "cannot load the training data");
  if (data->train.features.cols() != 784 || data->train.num_classes != 10) {
    Die("--data_dir does not hold 28x28 images in 10 classes");
  }
  if (init_file.has_value()) {
    ps::common::ThetaFile* file = &*init_file;
    // The file declares its tensors; --model requests its own.
    if (std::string diff =
            ps::common::DescribeDifference(file->tensors, (*model)->tensors());
        !diff.empty()) {
      Die(absl::StrCat("--init_from=", init_from,
                       " holds another model than "
                       "--model=",
                       options.model_name, ": ", diff));
    }
    if (file->keys.begin != 0 ||
        file->values.size() != (*model)->num_params()) {
      Die(absl::StrCat("--init_from=", init_from, " holds keys ",
                       file->keys.ToString(),
                       ", not the whole model: it is "
                       "one shard's checkpoint; psctl export writes a whole "
                       "model"));
    }
    options.initial_theta = std::move(file->values);
  }
  if (absl::GetFlag(FLAGS_evaluate_only)) {
    if (options.initial_theta.empty()) {
      Die("--evaluate_only needs --init_from=FILE (psctl export writes one)");
    }
    const ps::worker::Evaluation evaluation =
        (*model)->Evaluate(options.initial_theta, data->test);
    const ps::common::Json line = {
        {"test_accuracy", ps::common::RoundTo(evaluation.accuracy, 4)},
        {"test_loss", ps::common::RoundTo(evaluation.mean_loss, 5)},
        {"examples", data->test.size()}};
    std::printf("%s\n", line.dump().c_str());
    return 0;
  }
  DieIfError(ps::worker::ValidateTrainerOptions(options, data->train.size()),
             "invalid options");
  if (options.kfold > 0) {
    data->validation = ps::common::SelectExamples(
        data->train, ps::common::HeldOutExamples(ps::worker::PartitionPlanOf(
                         options, data->train.size())));
    spdlog::info("fold {} of {}: {} of {} training examples held out",
                 options.fold, options.kfold, data->validation.size(),
                 data->train.size());
  }

  absl::StatusOr<std::unique_ptr<ps::worker::ParameterClient>> client =
      ps::worker::ParameterClient::Connect(client_options);
  DieIfError(client.status(), "--servers");

  ps::worker::Trainer trainer(options, model->get(), client->get(), &*data);
  return Train(trainer, options.rank);
}
