#include "common/rpc/convert.h"

#include <optional>
#include <string>

#include "common/error_info.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"

namespace ps::rpc {

// absl::StatusCode and grpc::StatusCode share their numbering (both follow
// google.rpc.Code), so the code converts by a cast.
grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  const auto code = static_cast<grpc::StatusCode>(status.code());
  std::string message(status.message());
  const std::optional<common::ErrorInfo> info = common::GetErrorInfo(status);
  if (!info.has_value()) return grpc::Status(code, std::move(message));
  google::rpc::ErrorInfo detail;
  detail.set_reason(info->reason);
  detail.set_domain(info->domain);
  detail.mutable_metadata()->insert(info->metadata.begin(),
                                    info->metadata.end());
  google::rpc::Status details;
  details.set_code(static_cast<int32_t>(code));
  details.set_message(message);
  google::protobuf::Any* any = details.add_details();
  any->set_type_url(kErrorInfoTypeUrl);
  any->set_value(detail.SerializeAsString());
  return grpc::Status(code, std::move(message), details.SerializeAsString());
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  absl::Status converted(static_cast<absl::StatusCode>(status.error_code()),
                         status.error_message());
  google::rpc::Status details;
  if (status.error_details().empty() ||
      !details.ParseFromString(status.error_details())) {
    return converted;
  }
  for (const google::protobuf::Any& any : details.details()) {
    google::rpc::ErrorInfo detail;
    if (any.type_url() != kErrorInfoTypeUrl ||
        !detail.ParseFromString(any.value())) {
      continue;
    }
    common::ErrorInfo info{
        detail.reason(),
        detail.domain(),
        {detail.metadata().begin(), detail.metadata().end()}};
    return common::WithErrorInfo(std::move(converted), info);
  }
  return converted;
}

ps::v1::ConsistencyMode ToProto(common::ConsistencyMode mode) {
  switch (mode) {
    case common::ConsistencyMode::kSync:
      return ps::v1::MODE_SYNC;
    case common::ConsistencyMode::kAsync:
      return ps::v1::MODE_ASYNC;
    case common::ConsistencyMode::kSsp:
      return ps::v1::MODE_SSP;
  }
  return ps::v1::MODE_UNSPECIFIED;
}

ps::v1::WorkerState ToProto(common::WorkerState state) {
  switch (state) {
    case common::WorkerState::kLive:
      return ps::v1::WORKER_STATE_LIVE;
    case common::WorkerState::kExpired:
      return ps::v1::WORKER_STATE_EXPIRED;
    case common::WorkerState::kLeft:
      return ps::v1::WORKER_STATE_LEFT;
  }
  return ps::v1::WORKER_STATE_UNSPECIFIED;
}

ps::v1::GradientEncoding ToProto(common::CompressionKind kind) {
  switch (kind) {
    case common::CompressionKind::kNone:
      return ps::v1::ENCODING_FLOAT32;
    case common::CompressionKind::kFp16:
      return ps::v1::ENCODING_FP16;
    case common::CompressionKind::kBf16:
      return ps::v1::ENCODING_BF16;
    case common::CompressionKind::kTopK:
      return ps::v1::ENCODING_TOPK;
  }
  return ps::v1::ENCODING_FLOAT32;
}

std::optional<common::CompressionKind> FromProto(
    ps::v1::GradientEncoding encoding) {
  switch (encoding) {
    case ps::v1::ENCODING_FLOAT32:
      return common::CompressionKind::kNone;
    case ps::v1::ENCODING_FP16:
      return common::CompressionKind::kFp16;
    case ps::v1::ENCODING_BF16:
      return common::CompressionKind::kBf16;
    case ps::v1::ENCODING_TOPK:
      return common::CompressionKind::kTopK;
    default:
      return std::nullopt;
  }
}

std::string ModeName(ps::v1::ConsistencyMode mode) {
  switch (mode) {
    case ps::v1::MODE_SYNC:
      return std::string(
          common::ConsistencyModeName(common::ConsistencyMode::kSync));
    case ps::v1::MODE_ASYNC:
      return std::string(
          common::ConsistencyModeName(common::ConsistencyMode::kAsync));
    case ps::v1::MODE_SSP:
      return std::string(
          common::ConsistencyModeName(common::ConsistencyMode::kSsp));
    default:
      return "unspecified";
  }
}

std::string WorkerStateName(ps::v1::WorkerState state) {
  switch (state) {
    case ps::v1::WORKER_STATE_LIVE:
      return std::string(common::WorkerStateName(common::WorkerState::kLive));
    case ps::v1::WORKER_STATE_EXPIRED:
      return std::string(
          common::WorkerStateName(common::WorkerState::kExpired));
    case ps::v1::WORKER_STATE_LEFT:
      return std::string(common::WorkerStateName(common::WorkerState::kLeft));
    default:
      return "unspecified";
  }
}

common::PartitionPlan FromProto(const ps::v1::PartitionPlan& proto) {
  return {proto.train_size(), proto.partitions(), proto.epochs(),
          proto.seed(),       proto.kfold(),      proto.fold()};
}

void ToProto(const common::PartitionPlan& plan, ps::v1::PartitionPlan* proto) {
  proto->set_train_size(plan.train_size);
  proto->set_partitions(plan.partitions);
  proto->set_epochs(plan.epochs);
  proto->set_seed(plan.seed);
  proto->set_kfold(plan.kfold);
  proto->set_fold(plan.fold);
}

void ToProto(const common::WorkerRecord& worker, uint64_t staleness,
             absl::Duration since_heartbeat, ps::v1::WorkerStatus* proto) {
  proto->set_worker_id(worker.worker_id);
  proto->set_incarnation(worker.incarnation);
  proto->set_last_seq(worker.last_seq);
  proto->set_last_step(worker.last_step);
  proto->set_pushes(worker.pushes);
  proto->set_state(ToProto(worker.state));
  proto->set_clock(worker.clock);
  proto->set_staleness(staleness);
  proto->set_seconds_since_heartbeat(absl::ToDoubleSeconds(since_heartbeat));
  proto->set_registrations(worker.registrations);
  proto->set_finished(worker.finished);
  proto->set_idle(worker.idle);
}

common::TensorSpec FromProto(const ps::v1::TensorSpec& proto) {
  common::TensorSpec spec;
  spec.name = proto.name();
  spec.shape.assign(proto.shape().begin(), proto.shape().end());
  spec.exempt_from_regularization = proto.exempt_from_regularization();
  spec.optimizer = proto.optimizer();
  spec.lr_schedule = proto.lr_schedule();
  spec.compression = proto.compression();
  return spec;
}

void ToProto(const common::TensorSpec& spec, ps::v1::TensorSpec* proto) {
  proto->set_name(spec.name);
  proto->mutable_shape()->Assign(spec.shape.begin(), spec.shape.end());
  proto->set_exempt_from_regularization(spec.exempt_from_regularization);
  proto->set_optimizer(spec.optimizer);
  proto->set_lr_schedule(spec.lr_schedule);
  proto->set_compression(spec.compression);
}

std::vector<common::TensorSpec> FromProto(
    const google::protobuf::RepeatedPtrField<ps::v1::TensorSpec>& protos) {
  std::vector<common::TensorSpec> specs;
  specs.reserve(protos.size());
  for (const auto& proto : protos) specs.push_back(FromProto(proto));
  return specs;
}

void ToProto(const std::vector<common::TensorSpec>& specs,
             google::protobuf::RepeatedPtrField<ps::v1::TensorSpec>* protos) {
  protos->Clear();
  for (const auto& spec : specs) ToProto(spec, protos->Add());
}

common::TableSpec FromProto(const ps::v1::TableSpec& proto) {
  common::TableSpec spec;
  spec.name = proto.name();
  spec.dim = proto.dim();
  // Unset on the wire reads as zeros, the common default.
  if (!proto.initializer().empty()) spec.initializer = proto.initializer();
  spec.optimizer = proto.optimizer();
  spec.lr_schedule = proto.lr_schedule();
  return spec;
}

void ToProto(const common::TableSpec& spec, ps::v1::TableSpec* proto) {
  proto->set_name(spec.name);
  proto->set_dim(spec.dim);
  proto->set_initializer(spec.initializer);
  proto->set_optimizer(spec.optimizer);
  proto->set_lr_schedule(spec.lr_schedule);
}

std::vector<common::TableSpec> FromProto(
    const google::protobuf::RepeatedPtrField<ps::v1::TableSpec>& protos) {
  std::vector<common::TableSpec> specs;
  specs.reserve(protos.size());
  for (const auto& proto : protos) specs.push_back(FromProto(proto));
  return specs;
}

void ToProto(const std::vector<common::TableSpec>& specs,
             google::protobuf::RepeatedPtrField<ps::v1::TableSpec>* protos) {
  protos->Clear();
  for (const auto& spec : specs) ToProto(spec, protos->Add());
}

}  // namespace ps::rpc
