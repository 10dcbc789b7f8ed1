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
    common::ErrorInfo info{detail.reason(), detail.domain(),
                           {detail.metadata().begin(), detail.metadata().end()}};
    return common::WithErrorInfo(std::move(converted), info);
  }
  return converted;
}

common::TensorSpec FromProto(const ps::v1::TensorSpec& proto) {
  common::TensorSpec spec;
  spec.name = proto.name();
  spec.shape.assign(proto.shape().begin(), proto.shape().end());
  spec.exempt_from_regularization = proto.exempt_from_regularization();
  return spec;
}

void ToProto(const common::TensorSpec& spec, ps::v1::TensorSpec* proto) {
  proto->set_name(spec.name);
  proto->mutable_shape()->Assign(spec.shape.begin(), spec.shape.end());
  proto->set_exempt_from_regularization(spec.exempt_from_regularization);
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

}  // namespace ps::rpc
