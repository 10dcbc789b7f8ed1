#include "server/ps_server.h"

#include "absl/strings/str_cat.h"
#include "common/rpc/channel.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"
#include "spdlog/spdlog.h"

namespace ps::server {

absl::StatusOr<std::unique_ptr<PsServer>> PsServer::Start(
    const ServerOptions& options) {
  if (absl::Status valid = ValidateShardOptions(options.shard); !valid.ok()) {
    return valid;
  }
  if (absl::Status valid = ValidateReplicaOptions(options.replica);
      !valid.ok()) {
    return valid;
  }
  const bool replicated = options.replica.replicated();
  if (replicated && (!options.security.tls_cert.empty() ||
                     !options.security.auth_token_file.empty())) {
    return absl::InvalidArgumentError(
        "--replica_peers with TLS or a token is not supported yet: replicas "
        "talk plaintext");
  }
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
      rpc::MakeServerCredentials(options.security);
  if (!credentials.ok()) return credentials.status();
  std::unique_ptr<PsServer> server(new PsServer);
  ShardOptions shard_options = options.shard;
  if (replicated) {
    server->clock_ = std::make_unique<ReplayClock>();
    shard_options.clock = server->clock_->AsClock();
  }
  server->shard_ = std::make_unique<ParameterShard>(shard_options);
  if (!options.checkpoint_dir.empty()) {
    absl::StatusOr<std::unique_ptr<Checkpointer>> checkpointer =
        Checkpointer::Open(options.checkpoint_dir, options.checkpoint_keep,
                           options.shard.shard_index, options.shard.num_shards);
    if (!checkpointer.ok()) return checkpointer.status();
    server->checkpointer_ = std::move(*checkpointer);
    // A backup's state is the primary's, copied when it joins.
    const bool backup = replicated && options.replica.replica_index != 0;
    if (absl::Status restored =
            backup ? absl::OkStatus() : server->Restore(options);
        !restored.ok()) {
      return restored;
    }
  }
  if (replicated) {
    server->replicator_ = std::make_unique<Replicator>(
        options.replica, server->shard_.get(), server->clock_.get());
  }
  server->metrics_ = std::make_unique<ServerMetrics>(
      server->shard_.get(), server->checkpointer_.get(),
      options.shard.shard_index, server->replicator_.get());
  server->shard_->SetObserver(server->metrics_.get());
  server->service_ = std::make_unique<ParameterService>(
      server->shard_.get(), server->checkpointer_.get(), server->metrics_.get(),
      options.max_pull_wait, server->replicator_.get());
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  rpc::ConfigureServerBuilder(builder);
  // No request is larger than a shard's θ and its fields: gRPC refuses a
  // larger one from its length prefix, before reading it.
  builder.SetMaxReceiveMessageSize(
      MaxRequestBytes(options.shard.max_keys_per_shard));
  builder.AddListeningPort(options.listen, *credentials, &server->port_);
  builder.RegisterService(server->service_.get());
  if (replicated) builder.RegisterService(server->replicator_.get());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(absl::StrCat(
        "cannot listen on ", options.listen,
        ": the address is malformed, not local, or the port is in use"));
  }
  if (replicated) server->replicator_->Start(server->port_);
  if (!options.metrics_listen.empty()) {
    absl::StatusOr<std::unique_ptr<common::metrics::MetricsEndpoint>> endpoint =
        common::metrics::MetricsEndpoint::Start(options.metrics_listen,
                                                &server->metrics_->registry());
    if (!endpoint.ok()) {
      return absl::Status(
          endpoint.status().code(),
          absl::StrCat("--metrics_listen: ", endpoint.status().message()));
    }
    server->metrics_endpoint_ = std::move(*endpoint);
  }
  if (server->checkpointer_ != nullptr &&
      options.checkpoint_every < absl::InfiniteDuration()) {
    server->checkpoint_thread_ =
        std::thread([s = server.get(), every = options.checkpoint_every] {
          s->CheckpointLoop(every);
        });
  }
  return server;
}

absl::Status PsServer::Restore(const ServerOptions& options) {
  absl::StatusOr<std::optional<common::ThetaFile>> latest =
      checkpointer_->LoadLatest(options.shard.update, options.shard.optimizer,
                                options.shard.lr_schedule);
  if (latest.ok() && !latest->has_value()) {
    spdlog::info("no checkpoint in {}: starting with a fresh model",
                 checkpointer_->dir());
    return absl::OkStatus();
  }
  absl::Status restored = latest.status();
  if (restored.ok()) {
    // Other rules on the same θ change what every push does (a mode switch
    // under running workers used to drop all their pushes as stale): only
    // on purpose. Not a reason to start fresh either.
    if (std::string change = DescribeRuleChange(**latest, options.shard);
        !change.empty()) {
      if (!options.allow_config_change) {
        return absl::FailedPreconditionError(absl::StrCat(
            "the checkpoint in ", checkpointer_->dir(),
            " was written with other settings (", change,
            "): start with the settings it was written with, or give "
            "--allow_config_change to go on under the new ones"));
      }
      spdlog::warn(
          "restoring under changed settings, as "
          "--allow_config_change says: {}",
          change);
    }
  }
  if (restored.ok()) {
    const uint64_t version = (*latest)->version;
    const uint64_t keys = (*latest)->values.size();
    restored = shard_->Restore(std::move(**latest));
    if (restored.ok()) {
      restored_version_ = version;
      spdlog::info("restored version {} ({} keys) from {}", version, keys,
                   checkpointer_->dir());
      return absl::OkStatus();
    }
  }
  if (options.allow_fresh_start) {
    spdlog::error(
        "cannot restore from {} ({}); starting with a fresh model "
        "as --allow_fresh_start says",
        checkpointer_->dir(), restored.ToString());
    return absl::OkStatus();
  }
  return absl::DataLossError(absl::StrCat(
      "cannot restore from ", checkpointer_->dir(), ": ", restored.message(),
      " (--allow_fresh_start starts a fresh model instead)"));
}

void PsServer::CheckpointLoop(absl::Duration every) {
  uint64_t saved_version = restored_version_.value_or(0);
  bool saved_once = restored_version_.has_value();
  while (!stop_checkpoints_.WaitForNotificationWithTimeout(every)) {
    const ShardStatus status = shard_->Status();
    if (!status.initialized ||
        (saved_once && status.version == saved_version)) {
      continue;
    }
    absl::StatusOr<SavedCheckpoint> saved =
        checkpointer_->Save(*shard_, "periodic");
    if (!saved.ok()) {
      spdlog::error("periodic checkpoint failed: {}",
                    saved.status().ToString());
      continue;
    }
    saved_version = saved->version;
    saved_once = true;
  }
}

absl::Status PsServer::Drain() {
  shard_->StopTakingPushes();
  server_->GetHealthCheckService()->SetServingStatus(false);
  if (checkpointer_ == nullptr) return absl::OkStatus();
  if (!shard_->Status().initialized) {
    spdlog::info("no model declared yet: nothing to checkpoint");
    return absl::OkStatus();
  }
  return checkpointer_->Save(*shard_, "final").status();
}

void PsServer::Shutdown(absl::Duration grace) {
  if (shut_down_) return;
  shut_down_ = true;
  metrics_endpoint_.reset();
  stop_checkpoints_.Notify();
  if (checkpoint_thread_.joinable()) checkpoint_thread_.join();
  // Writes waiting for backups end (UNAVAILABLE: workers retry elsewhere).
  if (replicator_ != nullptr) replicator_->Stop();
  shard_->EndParkedPulls();
  service_->EndStreams();
  server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
  server_->Wait();
  // The metrics go before the shard (members are destroyed in reverse).
  shard_->SetObserver(nullptr);
}

PsServer::~PsServer() {
  if (server_ != nullptr) Shutdown();
}

}  // namespace ps::server
