// Every binary's --version names the project version and the git commit it
// was built from (CMake reads both at configure time).
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/job.h"

namespace ps {
namespace {

using test_support::ExitedWith;
using test_support::FreshDir;
using test_support::Outcome;
using test_support::RunBinary;
using ::testing::HasSubstr;

class Version : public ::testing::TestWithParam<std::string> {};

TEST_P(Version, NamesTheProjectVersionAndTheCommit) {
  const std::string dir = FreshDir(absl::StrCat("version_", GetParam()));
  Outcome outcome = RunBinary({GetParam(), "--version"}, dir + "/version.out",
                              absl::Seconds(30));
  ASSERT_TRUE(ExitedWith(outcome, 0)) << outcome.output;
  EXPECT_EQ(outcome.output, absl::StrCat(GetParam(), " ", PS_VERSION,
                                         " (commit ", PS_GIT_COMMIT, ")\n"));
  // These tests build from a git checkout, where the commit is known.
  const std::string commit = PS_GIT_COMMIT;
  EXPECT_EQ(commit.size(), 40u) << commit;
  for (char c : commit) EXPECT_TRUE(absl::ascii_isxdigit(c)) << commit;
}

INSTANTIATE_TEST_SUITE_P(Binaries, Version,
                         ::testing::Values("ps_server", "ps_worker", "psctl",
                                           "ps_local", "ps_chaos", "ps_bench",
                                           "ps_datagen"));

}  // namespace
}  // namespace ps
