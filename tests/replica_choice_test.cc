// The worker's rule for which replica of a shard its next call goes to.
#include "worker/replica_choice.h"

#include "common/error_info.h"
#include "common/rpc/convert.h"
#include "gtest/gtest.h"

namespace ps::worker {
namespace {

const std::vector<std::string> kReplicas = {"a:1", "b:2", "c:3"};

grpc::Status NotPrimary(const std::string& primary) {
  return rpc::ToGrpcStatus(common::WithErrorInfo(
      absl::FailedPreconditionError("a backup"),
      common::ErrorInfo{common::kNotPrimary,
                        common::kErrorDomain,
                        {{"primary", primary}, {"term", "2"}}}));
}

TEST(ChooseReplica, ABackupNamingAnotherReplicaRedirectsThereAtOnce) {
  const ReplicaChoice choice =
      ChooseReplica(kReplicas, 0, std::nullopt, NotPrimary("c:3"));
  EXPECT_EQ(choice.next, 2u);
  EXPECT_TRUE(choice.redirected);
  EXPECT_FALSE(choice.awaiting_failover);
}

TEST(ChooseReplica, ABackupNamingTheReplicaThatDidNotAnswerIsAskedAgain) {
  // Replica 0 died; replica 1 has not taken over yet and still names it.
  const ReplicaChoice choice =
      ChooseReplica(kReplicas, 1, 0, NotPrimary("a:1"));
  EXPECT_EQ(choice.next, 1u);
  EXPECT_FALSE(choice.redirected);
  EXPECT_TRUE(choice.awaiting_failover);
  EXPECT_EQ(choice.status.error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST(ChooseReplica, ABackupNamingNoKnownReplicaIsRetriedWithBackoff) {
  const ReplicaChoice choice =
      ChooseReplica(kReplicas, 1, std::nullopt, NotPrimary("elsewhere:9"));
  EXPECT_EQ(choice.next, 1u);
  EXPECT_FALSE(choice.redirected);
  EXPECT_FALSE(choice.awaiting_failover);
  EXPECT_EQ(choice.status.error_code(), grpc::StatusCode::UNAVAILABLE);
}

// A backup that knows no primary is left for the next replica, unless a
// failover is under way (a replica did not answer lately): one cut off from
// a live primary must not hold the worker.
TEST(ChooseReplica, ABackupNamingNoPrimaryIsLeftUnlessAFailoverIsUnderWay) {
  const ReplicaChoice cut_off =
      ChooseReplica(kReplicas, 2, std::nullopt, NotPrimary(""));
  EXPECT_EQ(cut_off.next, 0u);  // wraps
  EXPECT_FALSE(cut_off.redirected);
  EXPECT_EQ(cut_off.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  const ReplicaChoice electing = ChooseReplica(kReplicas, 1, 0, NotPrimary(""));
  EXPECT_EQ(electing.next, 1u);
  EXPECT_EQ(electing.status.error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST(ChooseReplica, AReplicaThatDoesNotAnswerIsLeftForTheNextOne) {
  for (grpc::StatusCode code :
       {grpc::StatusCode::UNAVAILABLE, grpc::StatusCode::DEADLINE_EXCEEDED}) {
    const ReplicaChoice choice =
        ChooseReplica(kReplicas, 2, std::nullopt, grpc::Status(code, "gone"));
    EXPECT_EQ(choice.next, 0u);  // wraps
    EXPECT_FALSE(choice.redirected);
    EXPECT_EQ(choice.status.error_code(), code);
  }
}

TEST(ChooseReplica, OtherErrorsAndSuccessStayOnTheReplica) {
  EXPECT_EQ(ChooseReplica(kReplicas, 1, std::nullopt, grpc::Status::OK).next,
            1u);
  const ReplicaChoice bad = ChooseReplica(
      kReplicas, 1, std::nullopt,
      grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "bad request"));
  EXPECT_EQ(bad.next, 1u);
  EXPECT_EQ(bad.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST(ChooseReplica, AShardWithOneServerNeverMoves) {
  const ReplicaChoice choice =
      ChooseReplica({"a:1"}, 0, std::nullopt, NotPrimary("b:2"));
  EXPECT_EQ(choice.next, 0u);
  EXPECT_FALSE(choice.redirected);
  // Refused as before: a worker not told the replicas cannot follow.
  EXPECT_EQ(choice.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
}

}  // namespace
}  // namespace ps::worker
