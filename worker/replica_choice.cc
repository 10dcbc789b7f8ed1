#include "worker/replica_choice.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/error_info.h"
#include "common/rpc/convert.h"
#include "common/rpc/retry.h"

namespace ps::worker {

ReplicaChoice ChooseReplica(const std::vector<std::string>& replicas,
                            uint32_t tried, std::optional<uint32_t> unreachable,
                            const grpc::Status& status) {
  const uint32_t count = static_cast<uint32_t>(replicas.size());
  if (status.ok() || count < 2) return {tried, false, false, status};
  const absl::Status refused = rpc::FromGrpcStatus(status);
  if (common::HasErrorReason(refused, common::kNotPrimary)) {
    std::optional<common::ErrorInfo> info = common::GetErrorInfo(refused);
    const std::string& named = info->metadata["primary"];
    const uint32_t primary = static_cast<uint32_t>(
        std::find(replicas.begin(), replicas.end(), named) - replicas.begin());
    if (primary < count && primary != tried && primary != unreachable) {
      return {primary, true, false, status};
    }
    // A backup that knows no primary while none of the others was found
    // unreachable lately may be the one cut off (a partition, or a lost
    // election): the next replica may lead.
    const uint32_t next =
        named.empty() && !unreachable.has_value() ? (tried + 1) % count : tried;
    return {next, false, primary == unreachable,
            grpc::Status(grpc::StatusCode::UNAVAILABLE,
                         absl::StrCat(replicas[tried], " is a backup naming ",
                                      named.empty() ? "no primary" : named,
                                      named.empty() || primary >= count
                                          ? ""
                                          : ", which did not answer",
                                      ": waiting for the shard's failover"))};
  }
  if (rpc::IsRetryable(status)) {
    return {(tried + 1) % count, false, false, status};
  }
  return {tried, false, false, status};
}

}  // namespace ps::worker
