// The one place where common types become protocol messages.
#include "common/rpc/convert.h"

#include "gtest/gtest.h"

namespace ps::rpc {
namespace {

TEST(Convert, AWorkerRecordBecomesItsStatusWithEveryField) {
  common::WorkerRecord worker;
  worker.worker_id = 3;
  worker.incarnation = 77;
  worker.last_seq = 12;
  worker.last_step = 11;
  worker.pushes = 12;
  worker.clock = 12;
  worker.state = common::WorkerState::kLeft;
  worker.finished = true;
  worker.registrations = 2;
  ps::v1::WorkerStatus proto;
  ToProto(worker, 4, absl::Milliseconds(1500), &proto);
  EXPECT_EQ(proto.worker_id(), 3u);
  EXPECT_EQ(proto.incarnation(), 77u);
  EXPECT_EQ(proto.last_seq(), 12u);
  EXPECT_EQ(proto.last_step(), 11u);
  EXPECT_EQ(proto.pushes(), 12u);
  EXPECT_EQ(proto.clock(), 12u);
  EXPECT_EQ(proto.state(), ps::v1::WORKER_STATE_LEFT);
  EXPECT_TRUE(proto.finished());
  EXPECT_EQ(proto.registrations(), 2u);
  EXPECT_EQ(proto.staleness(), 4u);
  EXPECT_DOUBLE_EQ(proto.seconds_since_heartbeat(), 1.5);
}

TEST(Convert, ModesAndStatesHaveTheirWordsAndEnums) {
  EXPECT_EQ(ToProto(common::ConsistencyMode::kSync), ps::v1::MODE_SYNC);
  EXPECT_EQ(ToProto(common::ConsistencyMode::kAsync), ps::v1::MODE_ASYNC);
  EXPECT_EQ(ToProto(common::ConsistencyMode::kSsp), ps::v1::MODE_SSP);
  EXPECT_EQ(ModeName(ps::v1::MODE_SSP), "ssp");
  EXPECT_EQ(ModeName(ps::v1::MODE_UNSPECIFIED), "unspecified");
  EXPECT_EQ(ToProto(common::WorkerState::kExpired),
            ps::v1::WORKER_STATE_EXPIRED);
  EXPECT_EQ(WorkerStateName(ps::v1::WORKER_STATE_LIVE), "live");
  EXPECT_EQ(WorkerStateName(ps::v1::WORKER_STATE_LEFT), "left");
}

}  // namespace
}  // namespace ps::rpc
