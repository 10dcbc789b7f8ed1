#include "common/rpc/health.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/rpc/channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/support/byte_buffer.h"

namespace ps::rpc {
namespace {

// grpc.health.v1.HealthCheckResponse.ServingStatus; Debian ships no
// health.proto, and the message is one varint field, so we read it by hand.
constexpr int kServing = 1;
constexpr const char* kStatusNames[] = {"UNKNOWN", "SERVING", "NOT_SERVING",
                                        "SERVICE_UNKNOWN"};

}  // namespace

absl::Status CheckServing(const std::string& target, absl::Duration deadline) {
  grpc::GenericStub stub(CreateChannel(target));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + deadline));
  // An empty HealthCheckRequest asks about the whole server.
  grpc::ByteBuffer request(nullptr, 0), response;
  absl::Notification done;
  grpc::Status status;
  stub.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(),
                 &request, &response, [&](grpc::Status s) {
                   status = std::move(s);
                   done.Notify();
                 });
  done.WaitForNotification();
  if (!status.ok()) {
    return absl::UnavailableError(absl::StrCat(
        target, " did not answer the health check: ", status.error_message()));
  }
  std::vector<grpc::Slice> slices;
  std::string bytes;
  if (response.Dump(&slices).ok()) {
    for (const grpc::Slice& slice : slices) {
      bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
    }
  }
  // Field 1, varint: tag byte 0x08 then the value (absent means UNKNOWN).
  int serving_status = 0;
  if (bytes.size() == 2 && bytes[0] == 0x08 && bytes[1] >= 0 && bytes[1] <= 3) {
    serving_status = bytes[1];
  }
  if (serving_status == kServing) return absl::OkStatus();
  return absl::UnavailableError(
      absl::StrCat(target, " answers ", kStatusNames[serving_status]));
}

}  // namespace ps::rpc
