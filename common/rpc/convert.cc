#include "common/rpc/convert.h"

#include <string>

namespace ps::rpc {

// absl::StatusCode and grpc::StatusCode share their numbering (both follow
// google.rpc.Code), so the conversion is a cast.
grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
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
