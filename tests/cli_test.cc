#include "common/cli.h"

#include <cstdlib>
#include <filesystem>
#include <string>

#include "gtest/gtest.h"

namespace ps::common {
namespace {

TEST(OrdinalFromHostname, ReadsTheStatefulSetSuffix) {
  EXPECT_EQ(*OrdinalFromHostname("ps-server-0"), 0u);
  EXPECT_EQ(*OrdinalFromHostname("ps-server-12"), 12u);
  for (const char* bad : {"ps-server", "ps-server-", "ps-server-x", "laptop",
                          "ps-server-+1", "ps-server-1a", ""}) {
    EXPECT_FALSE(OrdinalFromHostname(bad).ok()) << bad;
  }
}

class ResolveIndexTest : public ::testing::Test {
 protected:
  void SetUp() override { ::unsetenv("PS_TEST_INDEX"); }
  void TearDown() override { ::unsetenv("PS_TEST_INDEX"); }
};

TEST_F(ResolveIndexTest, FlagWinsOverEnvironment) {
  ::setenv("PS_TEST_INDEX", "1", 1);
  EXPECT_EQ(*ResolveIndex(2, "rank", 3, "PS_TEST_INDEX", false), 2u);
}

TEST_F(ResolveIndexTest, EnvironmentWhenNoFlag) {
  ::setenv("PS_TEST_INDEX", "1", 1);
  EXPECT_EQ(*ResolveIndex(-1, "rank", 3, "PS_TEST_INDEX", false), 1u);
}

TEST_F(ResolveIndexTest, SingleSlotNeedsNothing) {
  EXPECT_EQ(*ResolveIndex(-1, "rank", 1, "PS_TEST_INDEX", false), 0u);
}

TEST_F(ResolveIndexTest, RejectsMissingOutOfRangeAndGarbage) {
  absl::StatusOr<uint32_t> missing =
      ResolveIndex(-1, "rank", 3, "PS_TEST_INDEX", false);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("--rank is not set"),
            std::string::npos)
      << missing.status();
  absl::StatusOr<uint32_t> outside = ResolveIndex(3, "rank", 3, "", false);
  ASSERT_FALSE(outside.ok());
  EXPECT_NE(outside.status().message().find("outside [0, 3)"),
            std::string::npos)
      << outside.status();
  ::setenv("PS_TEST_INDEX", "two", 1);
  absl::StatusOr<uint32_t> garbage =
      ResolveIndex(-1, "rank", 3, "PS_TEST_INDEX", false);
  ASSERT_FALSE(garbage.ok());
  EXPECT_NE(garbage.status().message().find("$PS_TEST_INDEX='two'"),
            std::string::npos)
      << garbage.status();
}

TEST_F(ResolveIndexTest, HostnameOrdinalWhenAllowed) {
  // This machine's hostname decides which answer is right.
  absl::StatusOr<uint32_t> ordinal = OrdinalFromHostname(Hostname());
  absl::StatusOr<uint32_t> index = ResolveIndex(-1, "shard_index", 1000, "",
                                                /*use_hostname=*/true);
  ASSERT_EQ(index.ok(), ordinal.ok() && *ordinal < 1000) << index.status();
  if (index.ok()) {
    EXPECT_EQ(*index, *ordinal);
  }
}

TEST(WriteFileAtomically, ReplacesTheWholeFileAndLeavesNoTemp) {
  const std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) / "cli_test_atomic";
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "file").string();
  ASSERT_TRUE(WriteFileAtomically(path, "first, longer contents").ok());
  ASSERT_TRUE(WriteFileAtomically(path, "second").ok());
  EXPECT_EQ(ReadWholeFile(path), "second");
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  std::filesystem::remove_all(dir);
}

TEST(ReadWholeFile, ReadsEveryByteAndNothingForAFileThatIsNotThere) {
  const std::string path = ::testing::TempDir() + "/cli_test_read";
  const std::string bytes("a\0b\r\n\xff", 6);
  ASSERT_TRUE(WriteFileAtomically(path, bytes).ok());
  EXPECT_EQ(ReadWholeFile(path), bytes);
  std::filesystem::remove(path);
  EXPECT_EQ(ReadWholeFile(path), std::nullopt);
}

TEST(WriteFileAtomically, MissingDirectoryIsAnError) {
  absl::Status status = WriteFileAtomically("/nonexistent-dir/x/file", "x");
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("/nonexistent-dir/x/file.tmp"),
            std::string::npos)
      << status;
}

}  // namespace
}  // namespace ps::common
