#include "server/replication/replica_options.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "server/replication/vote_store.h"

namespace ps::server {

absl::Status ValidateReplicaOptions(const ReplicaOptions& options) {
  if (options.witness &&
      (options.peers.size() < 3 || options.replica_index == 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--replica_witness needs --replicas of 3 or more and a "
        "--replica_index other than 0 (replica 0 starts as the primary, and a "
        "witness holds no θ to lead with); got --replicas=",
        std::max<size_t>(options.peers.size(), 1),
        " --replica_index=", options.replica_index));
  }
  if (options.peers.size() <= 1) {
    if (options.replica_index != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--replica_index=", options.replica_index,
          " needs --replica_peers listing every replica of the shard"));
    }
    return absl::OkStatus();
  }
  if (options.replica_index >= options.peers.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--replica_index=", options.replica_index,
        " but --replica_peers lists ", options.peers.size(),
        " replicas (indexes 0 to ", options.peers.size() - 1, ")"));
  }
  for (const std::string& peer : options.peers) {
    if (peer.empty()) {
      return absl::InvalidArgumentError(
          "--replica_peers has an empty address; list host:port of every "
          "replica, comma-separated");
    }
  }
  if (options.rpc_deadline <= absl::ZeroDuration() ||
      options.drop_after <= absl::ZeroDuration() ||
      options.heartbeat_every <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("replication timeouts must be positive");
  }
  if (options.failover_timeout <= options.heartbeat_every ||
      options.failover_timeout >= options.drop_after) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--failover_timeout=", absl::FormatDuration(options.failover_timeout),
        " must be longer than the replicas' heartbeat (",
        absl::FormatDuration(options.heartbeat_every),
        ") and shorter than the time after which a primary drops a silent "
        "backup (",
        absl::FormatDuration(options.drop_after), ")"));
  }
  // A store that cannot be read stops the server at start-up, rather than
  // a replica that may vote twice.
  if (!options.state_dir.empty()) {
    return VoteStore::Open(options.state_dir, options.replica_index).status();
  }
  return absl::OkStatus();
}

}  // namespace ps::server
