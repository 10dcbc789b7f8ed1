// The parked pulls' list on its own: tickets, deadlines, the policy's
// verdict, and shutdown; it hands callbacks back and never runs one.
#include "server/pull_wait_list.h"

#include <algorithm>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ps::server {
namespace {

using ::testing::UnorderedElementsAre;

const absl::Time kStart = absl::UnixEpoch() + absl::Hours(1);

class PullWaitListTest : public ::testing::Test {
 protected:
  // A parked pull for `min_version` at SSP `clock` whose callback counts
  // its runs.
  PullWaitList::Parked Pull(uint64_t min_version, uint64_t clock = 0,
                            absl::Time expires = absl::InfiniteFuture()) {
    PullArgs args;
    args.min_version = min_version;
    args.clock = clock;
    return {args, expires,
            [this](absl::StatusOr<PullResult>) { ++callbacks_run_; }};
  }

  static std::vector<uint64_t> MinVersions(
      const std::vector<PullWaitList::Parked>& pulls) {
    std::vector<uint64_t> versions;
    for (const PullWaitList::Parked& p : pulls) {
      versions.push_back(p.args.min_version);
    }
    return versions;
  }

  PullWaitList list_;
  int callbacks_run_ = 0;
};

TEST_F(PullWaitListTest, TakeHandsBackATicketsCallbackOnce) {
  ASSERT_TRUE(list_.Park(1, Pull(1)));
  ASSERT_TRUE(list_.Park(2, Pull(1)));

  PullWaitList::Done done = list_.Take(1);
  ASSERT_TRUE(done);
  EXPECT_FALSE(list_.Take(1)) << "a ticket ends once";
  EXPECT_EQ(list_.size(), 1u);
  EXPECT_EQ(callbacks_run_, 0) << "the list never runs a callback itself";
  done(PullResult{});
  EXPECT_EQ(callbacks_run_, 1);
}

TEST_F(PullWaitListTest, TakeExpiredTakesOnlyPullsWhoseDeadlinePassed) {
  ASSERT_TRUE(list_.Park(1, Pull(1, 0, kStart + absl::Seconds(1))));
  ASSERT_TRUE(list_.Park(2, Pull(2, 0, kStart + absl::Seconds(10))));

  EXPECT_TRUE(list_.TakeExpired(kStart).empty());
  // A deadline that is exactly now has passed.
  EXPECT_THAT(MinVersions(list_.TakeExpired(kStart + absl::Seconds(1))),
              UnorderedElementsAre(1u));
  EXPECT_EQ(list_.size(), 1u);
  EXPECT_EQ(callbacks_run_, 0);
}

TEST_F(PullWaitListTest, TakeAnswerableTakesThePullsTheVersionReached) {
  ShardOptions options;
  options.mode = ConsistencyMode::kAsync;
  const ConsistencyPolicy policy(options);
  const Membership members(0, 1, 1, absl::Seconds(5));
  for (uint64_t v = 1; v <= 3; ++v) ASSERT_TRUE(list_.Park(v, Pull(v)));

  EXPECT_THAT(MinVersions(list_.TakeAnswerable(policy, 2, members)),
              UnorderedElementsAre(1u, 2u));
  EXPECT_EQ(list_.size(), 1u);
  EXPECT_THAT(MinVersions(list_.TakeAnswerable(policy, 3, members)),
              UnorderedElementsAre(3u));
  EXPECT_EQ(callbacks_run_, 0);
}

TEST_F(PullWaitListTest, AnSspPullWaitsForTheSlowestLiveWorker) {
  ShardOptions options;
  options.mode = ConsistencyMode::kSsp;
  options.staleness = 1;
  const ConsistencyPolicy policy(options);
  Membership members(0, 2, 2, absl::Seconds(5));
  ASSERT_TRUE(members.Register(0, 1, kStart).ok());
  ASSERT_TRUE(members.Register(1, 1, kStart).ok());
  members.at(0).clock = 3;
  members.at(1).clock = 1;
  // Worker 0 at clock 3 may read only once the slowest is at clock 2.
  ASSERT_TRUE(list_.Park(7, Pull(0, 3)));

  EXPECT_TRUE(list_.TakeAnswerable(policy, 5, members).empty());
  members.at(1).clock = 2;
  EXPECT_EQ(list_.TakeAnswerable(policy, 5, members).size(), 1u);
}

TEST_F(PullWaitListTest, CloseHandsBackEveryPullAndParksNoMore) {
  ASSERT_TRUE(list_.Park(1, Pull(1)));
  ASSERT_TRUE(list_.Park(2, Pull(2)));

  EXPECT_EQ(list_.Close().size(), 2u);
  EXPECT_EQ(list_.size(), 0u);
  EXPECT_FALSE(list_.Park(3, Pull(3)));
  EXPECT_EQ(list_.size(), 0u);
  EXPECT_EQ(callbacks_run_, 0);
}

}  // namespace
}  // namespace ps::server
