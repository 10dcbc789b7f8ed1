#ifndef PS_COMMON_RPC_CONVERT_H_
#define PS_COMMON_RPC_CONVERT_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/consistency_mode.h"
#include "common/data_partition.h"
#include "common/gradient_codec.h"
#include "common/table_spec.h"
#include "common/tensor_spec.h"
#include "common/worker_record.h"
#include "grpcpp/support/status.h"
#include "ps/v1/parameter_server.pb.h"

// The one place where gRPC/proto types and common types meet.
namespace ps::rpc {

// The status's ErrorInfo (common/error_info.h) travels as a serialized
// google.rpc.Status{code, message, details: [Any(ErrorInfo)]} in the
// grpc::Status's error_details (the grpc-status-details-bin trailer), and
// comes back from it.
grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

// The type_url of a packed google.rpc.ErrorInfo.
inline constexpr char kErrorInfoTypeUrl[] =
    "type.googleapis.com/google.rpc.ErrorInfo";

ps::v1::ConsistencyMode ToProto(common::ConsistencyMode mode);
ps::v1::WorkerState ToProto(common::WorkerState state);
ps::v1::GradientEncoding ToProto(common::CompressionKind kind);
// nullopt for an encoding this build does not know.
std::optional<common::CompressionKind> FromProto(
    ps::v1::GradientEncoding encoding);
// The words a person reads ("sync", "live", …), as the server's names say
// them; "unspecified" for a server that did not say.
std::string ModeName(ps::v1::ConsistencyMode mode);
std::string WorkerStateName(ps::v1::WorkerState state);

// A worker as Status reports it: its record, how many clocks it is behind
// the fastest live worker, and how long ago it last heartbeat.
void ToProto(const common::WorkerRecord& worker, uint64_t staleness,
             absl::Duration since_heartbeat, ps::v1::WorkerStatus* proto);

common::PartitionPlan FromProto(const ps::v1::PartitionPlan& proto);
void ToProto(const common::PartitionPlan& plan, ps::v1::PartitionPlan* proto);

common::TensorSpec FromProto(const ps::v1::TensorSpec& proto);
void ToProto(const common::TensorSpec& spec, ps::v1::TensorSpec* proto);

std::vector<common::TensorSpec> FromProto(
    const google::protobuf::RepeatedPtrField<ps::v1::TensorSpec>& protos);
void ToProto(const std::vector<common::TensorSpec>& specs,
             google::protobuf::RepeatedPtrField<ps::v1::TensorSpec>* protos);

common::TableSpec FromProto(const ps::v1::TableSpec& proto);
void ToProto(const common::TableSpec& spec, ps::v1::TableSpec* proto);
std::vector<common::TableSpec> FromProto(
    const google::protobuf::RepeatedPtrField<ps::v1::TableSpec>& protos);
void ToProto(const std::vector<common::TableSpec>& specs,
             google::protobuf::RepeatedPtrField<ps::v1::TableSpec>* protos);

}  // namespace ps::rpc

#endif  // PS_COMMON_RPC_CONVERT_H_
