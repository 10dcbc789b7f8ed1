#include "common/subprocess.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/wait.h"

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
  ASSERT_TRUE(test_support::WaitUntil([&] {
    std::ifstream cmdline(absl::StrCat("/proc/", child->pid(), "/cmdline"));
    std::string program;
    std::getline(cmdline, program, '\0');
    return program == "/bin/sleep";
  }));
  EXPECT_FALSE(child->Poll().has_value());
  child->Stop(absl::Seconds(2));
  ASSERT_TRUE(child->peak_rss_bytes().has_value());
  EXPECT_GT(*child->peak_rss_bytes(), 0);
  EXPECT_LT(*child->peak_rss_bytes(), 32 * kMiB);
  EXPECT_EQ(ballast[12345], 1);
}

TEST(Subprocess, APollRightAfterSpawnSeesTheExecutedChildNotTheForkedCopy) {
  // ps_bench polls its servers at once: a VmHWM read before exec was the
  // forked copy of the benchmark's own 600 MiB, reported as a server's.
  std::vector<char> ballast(256 * kMiB);
  std::memset(ballast.data(), 1, ballast.size());
  for (int i = 0; i < 5; ++i) {
    absl::StatusOr<Subprocess> child =
        Subprocess::Spawn({"/bin/sleep", "5"}, "");
    ASSERT_TRUE(child.ok()) << child.status();
    EXPECT_FALSE(child->Poll().has_value());
    child->Stop(absl::Seconds(2));
    ASSERT_TRUE(child->peak_rss_bytes().has_value());
    EXPECT_LT(*child->peak_rss_bytes(), 32 * kMiB) << "spawn " << i;
  }
  EXPECT_EQ(ballast[12345], 1);
}

TEST(Subprocess, FindsAProgramInPathAndSetsTheEnvironmentItIsGiven) {
  const std::string log = ::testing::TempDir() + "/subprocess_env.log";
  std::remove(log.c_str());
  setenv("PS_SUBPROCESS_INHERITED", "kept", 1);
  absl::StatusOr<Subprocess> child = Subprocess::Spawn(
      {"sh", "-c", "echo \"$PS_SUBPROCESS_SET $PS_SUBPROCESS_INHERITED\""}, log,
      {"PS_SUBPROCESS_SET=given"});
  unsetenv("PS_SUBPROCESS_INHERITED");
  ASSERT_TRUE(child.ok()) << child.status();
  std::optional<int> status = child->WaitFor(absl::Seconds(30));
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(ExitedCleanly(*status));
  std::ifstream in(log);
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "given kept");
  EXPECT_FALSE(Subprocess::Spawn({"no_such_program_here"}, "").ok());
}

}  // namespace
}  // namespace ps::common
