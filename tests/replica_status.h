#ifndef PS_TESTS_REPLICA_STATUS_H_
#define PS_TESTS_REPLICA_STATUS_H_

// A replica's ps.v1.Replication/ReplicaStatus and a server's Status, for
// tests of replicated shards on real processes.
#include <optional>
#include <string>

#include "absl/time/clock.h"
#include "common/rpc/channel.h"
#include "grpcpp/client_context.h"
#include "gtest/gtest.h"
#include "ps/v1/parameter_server.grpc.pb.h"
#include "ps/v1/replication.grpc.pb.h"

namespace ps::test_support {

// The answer of the replica at `address`; nullopt when it does not answer
// within 2 s (killed, stopped).
inline std::optional<ps::v1::ReplicaStatusResponse> ReplicaStatus(
    const std::string& address) {
  auto stub = ps::v1::Replication::NewStub(rpc::CreateChannel(address));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
  ps::v1::ReplicaStatusResponse status;
  if (!stub->ReplicaStatus(&context, ps::v1::ReplicaStatusRequest(), &status)
           .ok()) {
    return std::nullopt;
  }
  return status;
}

// The Status of the server at `address`, a test failure (and an empty
// answer) when it does not answer within `deadline`.
inline ps::v1::StatusResponse ShardStatus(const std::string& address,
                                          absl::Duration deadline) {
  auto stub = ps::v1::ParameterServer::NewStub(rpc::CreateChannel(address));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + deadline));
  ps::v1::StatusResponse status;
  const grpc::Status answered =
      stub->Status(&context, ps::v1::StatusRequest(), &status);
  EXPECT_TRUE(answered.ok()) << address << ": " << answered.error_message();
  return status;
}

}  // namespace ps::test_support

#endif  // PS_TESTS_REPLICA_STATUS_H_
