// Error reasons: carried by absl::Status in a process, and as
// google.rpc.Status details across gRPC.
#include "common/error_info.h"

#include "common/rpc/convert.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "gtest/gtest.h"

namespace ps {
namespace {

TEST(ErrorInfo, AReasonSurvivesTheTripThroughGrpc) {
  const absl::Status sent = common::RegistrationRequiredError(
      "worker 3 let its lease expire", {{"shard", "2"}});
  const grpc::Status on_the_wire = rpc::ToGrpcStatus(sent);
  EXPECT_EQ(on_the_wire.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(on_the_wire.error_message(), "worker 3 let its lease expire");

  const absl::Status received = rpc::FromGrpcStatus(on_the_wire);
  EXPECT_EQ(received.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(received.message(), "worker 3 let its lease expire");
  EXPECT_TRUE(common::HasErrorReason(received, common::kRegistrationRequired));
  const common::ErrorInfo expected{
      common::kRegistrationRequired, "ps.v1", {{"shard", "2"}}};
  EXPECT_EQ(common::GetErrorInfo(received), expected);
}

TEST(ErrorInfo, TheDetailsAreGooglesWireFormat) {
  const grpc::Status on_the_wire = rpc::ToGrpcStatus(
      common::RegistrationRequiredError("again", {{"shard", "0"}}));
  google::rpc::Status details;
  ASSERT_TRUE(details.ParseFromString(on_the_wire.error_details()));
  EXPECT_EQ(details.code(), 9);  // FAILED_PRECONDITION
  EXPECT_EQ(details.message(), "again");
  ASSERT_EQ(details.details_size(), 1);
  EXPECT_EQ(details.details(0).type_url(),
            "type.googleapis.com/google.rpc.ErrorInfo");
  google::rpc::ErrorInfo info;
  ASSERT_TRUE(details.details(0).UnpackTo(&info));
  EXPECT_EQ(info.reason(), "REGISTRATION_REQUIRED");
  EXPECT_EQ(info.domain(), "ps.v1");
  EXPECT_EQ(info.metadata().at("shard"), "0");
}

TEST(ErrorInfo, AMessageThatMentionsRegistrationIsNotAReason) {
  const absl::Status worded =
      absl::FailedPreconditionError("please re-register");
  EXPECT_FALSE(common::HasErrorReason(worded, common::kRegistrationRequired));
  EXPECT_FALSE(
      common::HasErrorReason(rpc::FromGrpcStatus(rpc::ToGrpcStatus(worded)),
                             common::kRegistrationRequired));
  EXPECT_TRUE(rpc::ToGrpcStatus(worded).error_details().empty());
}

TEST(ErrorInfo, AnotherDomainsReasonIsNotOurs) {
  const absl::Status foreign =
      common::WithErrorInfo(absl::FailedPreconditionError("x"),
                            {common::kRegistrationRequired, "example.com", {}});
  EXPECT_FALSE(common::HasErrorReason(foreign, common::kRegistrationRequired));
}

TEST(ErrorInfo, UnreadableDetailsLeaveTheCodeAndMessage) {
  const absl::Status received = rpc::FromGrpcStatus(grpc::Status(
      grpc::StatusCode::FAILED_PRECONDITION, "text", "\xff\xff not a proto"));
  EXPECT_EQ(received.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(received.message(), "text");
  EXPECT_FALSE(common::GetErrorInfo(received).has_value());
}

}  // namespace
}  // namespace ps
