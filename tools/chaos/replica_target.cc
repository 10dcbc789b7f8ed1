#include "tools/chaos/replica_target.h"

#include <memory>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/parallel.h"
#include "common/rpc/channel.h"
#include "grpcpp/client_context.h"
#include "ps/v1/replication.grpc.pb.h"

namespace ps::chaos {

absl::StatusOr<uint32_t> PickPrimary(const std::vector<ReplicaView>& replicas,
                                     uint32_t shard) {
  std::optional<uint32_t> primary;
  for (uint32_t r = 0; r < replicas.size(); ++r) {
    const ReplicaView& view = replicas[r];
    if (!view.answered || !view.primary) continue;
    if (!primary.has_value() || view.term > replicas[*primary].term) {
      primary = r;
    }
  }
  if (primary.has_value()) return *primary;
  uint32_t answered = 0;
  for (const ReplicaView& view : replicas) answered += view.answered ? 1 : 0;
  return absl::UnavailableError(absl::StrCat(
      "no replica of server ", shard, " says it is the primary (", answered,
      " of ", replicas.size(), " answered ReplicaStatus)"));
}

std::vector<ReplicaView> AskReplicas(const std::vector<std::string>& addresses,
                                     absl::Duration deadline) {
  std::vector<ReplicaView> views(addresses.size());
  common::ParallelFor(addresses.size(), [&](size_t i) {
    std::unique_ptr<ps::v1::Replication::Stub> stub =
        ps::v1::Replication::NewStub(rpc::CreateChannel(addresses[i]));
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + deadline));
    ps::v1::ReplicaStatusResponse status;
    if (!stub->ReplicaStatus(&context, ps::v1::ReplicaStatusRequest(), &status)
             .ok()) {
      return;
    }
    views[i] = {true, status.role() == ps::v1::PRIMARY, status.term()};
  });
  return views;
}

}  // namespace ps::chaos
