// Teardown's leftover check (tools/chaos/leftovers.cc): what the kernel is
// still deleting is waited for, within a bound; what outlives it is
// reported.
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tools/chaos/leftovers.h"

namespace ps::chaos {
namespace {

// A veth the kernel deletes `after` from now, as `ip link` would list it.
auto LinkGoneAfter(absl::Duration after) {
  const absl::Time gone = absl::Now() + after;
  return [gone]() -> std::vector<std::string> {
    if (absl::Now() >= gone) return {};
    return {"network link pc4242w0"};
  };
}

// Seen on a loaded machine: the veths of a deleted namespace still listed
// more than 3 s after the delete, gone a second later.
TEST(ChaosLeftovers, ALinkTheKernelIsStillDeletingIsWaitedForNotReported) {
  const absl::Time start = absl::Now();
  EXPECT_THAT(LeftAfterWaiting(LinkGoneAfter(absl::Seconds(4))),
              testing::IsEmpty());
  EXPECT_LT(absl::Now() - start, absl::Seconds(5))
      << "it stops polling once the link is gone";
}

TEST(ChaosLeftovers, ALinkThatOutlivesTheBoundIsReported) {
  const absl::Time start = absl::Now();
  EXPECT_THAT(
      LeftAfterWaiting(LinkGoneAfter(absl::Hours(1)), absl::Milliseconds(300)),
      testing::ElementsAre("network link pc4242w0"));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(300));
}

TEST(ChaosLeftovers, NothingLeftIsReportedAtOnce) {
  const absl::Time start = absl::Now();
  EXPECT_THAT(LeftAfterWaiting([] { return std::vector<std::string>(); }),
              testing::IsEmpty());
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));
}

}  // namespace
}  // namespace ps::chaos
