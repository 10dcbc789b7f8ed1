#include "server/wire_messages.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/gradient_codec.h"
#include "common/rpc/convert.h"
#include "common/rpc/wire_format.h"

namespace ps::server {
namespace {

using ps::v1::InitRequest;
using ps::v1::PullResponse;
using ps::v1::PushPullRequest;
using ps::v1::PushPullResponse;
using ps::v1::PushRequest;

absl::Status Malformed(const google::protobuf::MessageLite& message) {
  return absl::InvalidArgumentError(absl::StrCat(
      "the request is not a valid ", message.GetTypeName(), " message"));
}

// The request's bytes, with the buffer's own hold on them dropped: gRPC
// owns the buffer and destroys it only after the call, and what is still
// needed is held by the Cord.
absl::Cord TakeWire(const grpc::ByteBuffer* request) {
  absl::Cord wire = rpc::CordOf(*request);
  const_cast<grpc::ByteBuffer*>(request)->Clear();
  return wire;
}

}  // namespace

PullResponse PullHead(PullResult& pulled) {
  PullResponse head;
  head.set_version(pulled.version);
  head.set_key_begin(pulled.keys.begin);
  head.set_key_end(pulled.keys.end);
  head.set_samples_applied(pulled.samples_applied);
  head.set_mode(rpc::ToProto(pulled.mode));
  head.set_waited_us(static_cast<uint64_t>(
      std::max<int64_t>(0, absl::ToInt64Microseconds(pulled.waited))));
  for (SparseRows& rows : pulled.sparse) {
    ps::v1::SparseRows* proto = head.add_sparse();
    proto->set_table(std::move(rows.table));
    proto->set_keys(std::move(rows.keys));
    proto->set_values(std::move(rows.values));
  }
  return head;
}

std::vector<SparseRows> SparseRowsFromProto(
    const google::protobuf::RepeatedPtrField<ps::v1::SparseRows>& protos) {
  std::vector<SparseRows> rows;
  rows.reserve(protos.size());
  for (const ps::v1::SparseRows& proto : protos) {
    rows.push_back({proto.table(), proto.keys(), proto.values()});
  }
  return rows;
}

ps::v1::LeaveRequest::Reason LeaveReasonToProto(LeaveReason reason) {
  switch (reason) {
    case LeaveReason::kFinished:
      return ps::v1::LeaveRequest::FINISHED;
    case LeaveReason::kStartFailed:
      return ps::v1::LeaveRequest::START_FAILED;
    case LeaveReason::kIdle:
      return ps::v1::LeaveRequest::IDLE;
    case LeaveReason::kStopped:
      break;
  }
  return ps::v1::LeaveRequest::STOPPED;
}

LeaveReason LeaveReasonFromProto(ps::v1::LeaveRequest::Reason reason) {
  switch (reason) {
    case ps::v1::LeaveRequest::FINISHED:
      return LeaveReason::kFinished;
    case ps::v1::LeaveRequest::START_FAILED:
      return LeaveReason::kStartFailed;
    case ps::v1::LeaveRequest::IDLE:
      return LeaveReason::kIdle;
    default:
      return LeaveReason::kStopped;
  }
}

PushArgs PushArgsFromProto(const ps::v1::PushRequest& request,
                           absl::Cord gradient) {
  PushArgs args;
  args.worker_id = request.worker_id();
  args.incarnation = request.incarnation();
  args.seq = request.seq();
  args.step = request.step();
  args.base_version = request.base_version();
  args.batch_size = request.batch_size();
  args.keys = {request.key_begin(), request.key_end()};
  args.gradient = std::move(gradient);
  args.sparse = SparseRowsFromProto(request.sparse());
  if (request.has_completes()) {
    args.completes = PartitionRef{request.completes().epoch(),
                                  request.completes().partition()};
  }
  return args;
}

InitArgs InitArgsFromProto(const ps::v1::InitRequest& request,
                           absl::Cord values) {
  InitArgs args;
  args.worker_id = request.worker_id();
  args.shard_index = request.shard_index();
  args.num_shards = request.num_shards();
  args.tensors = rpc::FromProto(request.tensors());
  args.tables = rpc::FromProto(request.tables());
  args.model_seed = request.model_seed();
  args.values = std::move(values);
  return args;
}

absl::StatusOr<absl::Cord> DecodeCompressedGradient(
    const google::protobuf::RepeatedPtrField<ps::v1::GradientPart>& parts,
    const common::KeyRange& keys, GradientBufferPool& buffers) {
  uint64_t covered = 0;
  for (const ps::v1::GradientPart& part : parts) {
    if (part.num_keys() > keys.size() - covered) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the compressed gradient's parts cover more than the shard's ",
          keys.size(), " keys ", keys.ToString()));
    }
    covered += part.num_keys();
  }
  if (covered != keys.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the compressed gradient's parts cover ", covered,
        " keys but the shard owns ", keys.size(), " ", keys.ToString()));
  }
  std::unique_ptr<std::vector<float>> decoded = buffers.Take(keys.size());
  uint64_t offset = 0;
  for (int i = 0; i < parts.size(); ++i) {
    const ps::v1::GradientPart& part = parts[i];
    const std::optional<common::CompressionKind> kind =
        rpc::FromProto(part.encoding());
    const std::string what =
        absl::StrCat("part ", i, " of the compressed gradient (keys from ",
                     keys.begin + offset, ", ",
                     ps::v1::GradientEncoding_Name(part.encoding()), ")");
    if (!kind.has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": unknown encoding ", part.encoding()));
    }
    if (absl::Status s = common::DecodePart(
            *kind, part.values(), part.indices(),
            absl::MakeSpan(*decoded).subspan(offset, part.num_keys()), what);
        !s.ok()) {
      return s;
    }
    offset += part.num_keys();
  }
  return buffers.Wrap(std::move(decoded));
}

grpc::ByteBuffer EncodePullResponse(PullResult pulled) {
  return rpc::SerializeApart(PullHead(pulled),
                             {PullResponse::kValuesFieldNumber},
                             std::move(pulled.values));
}

grpc::ByteBuffer EncodePushPullResponse(const ps::v1::PushResponse& pushed,
                                        PullResult pulled) {
  PushPullResponse head;
  *head.mutable_push() = pushed;
  *head.mutable_pull() = PullHead(pulled);
  return rpc::SerializeApart(
      head,
      {PushPullResponse::kPullFieldNumber, PullResponse::kValuesFieldNumber},
      std::move(pulled.values));
}

absl::Status ParseRequest(const grpc::ByteBuffer* request,
                          google::protobuf::MessageLite* message) {
  if (!message->ParseFromString(std::string(TakeWire(request)))) {
    return Malformed(*message);
  }
  return absl::OkStatus();
}

absl::Status ParsePushRequest(const grpc::ByteBuffer* request,
                              ReceivedPush* push) {
  if (!rpc::ParseApart(TakeWire(request), {PushRequest::kGradientFieldNumber},
                       &push->fields, &push->gradient)) {
    return Malformed(push->fields);
  }
  return absl::OkStatus();
}

absl::Status ParseInitRequest(const grpc::ByteBuffer* request,
                              InitRequest* fields, absl::Cord* values) {
  if (!rpc::ParseApart(TakeWire(request), {InitRequest::kValuesFieldNumber},
                       fields, values)) {
    return Malformed(*fields);
  }
  return absl::OkStatus();
}

ps::v1::InitResponse InitResponseOf(const InitResult& result) {
  ps::v1::InitResponse answer;
  answer.set_created(result.created);
  answer.set_version(result.version);
  answer.set_key_begin(result.keys.begin);
  answer.set_key_end(result.keys.end);
  answer.set_mode(rpc::ToProto(result.mode));
  answer.set_expected_workers(result.expected_workers);
  return answer;
}

absl::Status ParsePushPullRequest(const grpc::ByteBuffer* request,
                                  ReceivedPush* push,
                                  ps::v1::PullRequest* pull) {
  PushPullRequest fields;
  if (!rpc::ParseApart(TakeWire(request),
                       {PushPullRequest::kPushFieldNumber,
                        PushRequest::kGradientFieldNumber},
                       &fields, &push->gradient)) {
    return Malformed(fields);
  }
  push->fields = std::move(*fields.mutable_push());
  *pull = fields.pull();
  return absl::OkStatus();
}

}  // namespace ps::server
