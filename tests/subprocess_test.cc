#include "common/subprocess.h"

#include <cstring>
#include <vector>

#include "gtest/gtest.h"

namespace ps::common {
namespace {

constexpr int64_t kMiB = 1 << 20;

TEST(Subprocess, PeakRssIsTheChildsOwnNotTheParentsItWasForkedFrom) {
  // The parent holds 256 MiB of touched memory when it forks: wait4's
  // ru_maxrss would report that for the child, which stays small.
  std::vector<char> ballast(256 * kMiB);
  std::memset(ballast.data(), 1, ballast.size());
  absl::StatusOr<Subprocess> child = Subprocess::Spawn({"/bin/sleep", "5"}, "");
  ASSERT_TRUE(child.ok()) << child.status();
  // Running once exec has replaced the forked copy.
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_FALSE(child->Poll().has_value());
  child->Stop(absl::Seconds(2));
  ASSERT_TRUE(child->peak_rss_bytes().has_value());
  EXPECT_GT(*child->peak_rss_bytes(), 0);
  EXPECT_LT(*child->peak_rss_bytes(), 32 * kMiB);
  EXPECT_EQ(ballast[12345], 1);
}

}  // namespace
}  // namespace ps::common
