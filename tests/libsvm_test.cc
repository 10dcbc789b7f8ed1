#include "common/libsvm.h"

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ps::common {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

std::string WriteTempFile(const std::string& name, const std::string& text) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/", name);
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

// The message ParseLibsvm gives `text`, which must fail.
std::string ErrorOf(const std::string& text) {
  absl::StatusOr<SparseDataset> data = ParseLibsvm(text, "data.libsvm");
  EXPECT_FALSE(data.ok()) << text;
  if (data.ok()) return "";
  EXPECT_EQ(data.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(data.status().message());
}

TEST(Libsvm, ReadsLabelsIdsAndValuesIntoCsrRows) {
  const std::string text =
      "# a comment line\n"
      "1 7:0.5 3 18446744073709551615:2\n"
      "\n"
      "   \t \n"
      "-1 0:1 0:1   # repeated id, trailing comment\n"
      "+1\r\n"
      "0\t42:-1.25e-3";  // no final newline
  absl::StatusOr<SparseDataset> data = ParseLibsvm(text, "data.libsvm");
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->size(), 4);
  EXPECT_THAT(data->labels, ElementsAre(1, 0, 1, 0));
  EXPECT_THAT(data->offsets, ElementsAre(0, 3, 5, 5, 6));
  EXPECT_THAT(data->ids, ElementsAre(7, 3, 18446744073709551615u, 0, 0, 42));
  EXPECT_THAT(data->values,
              ElementsAre(0.5f, 1.0f, 2.0f, 1.0f, 1.0f, -1.25e-3f));
}

TEST(Libsvm, KeepsNoValuesWhenEveryValueIsOne) {
  absl::StatusOr<SparseDataset> data =
      ParseLibsvm("1 5 9:1\n0 12:1.0 3\n", "ones.libsvm");
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_THAT(data->ids, ElementsAre(5, 9, 12, 3));
  EXPECT_THAT(data->values, IsEmpty());
  EXPECT_EQ(data->value(2), 1.0f);
}

TEST(Libsvm, ReadsAFileAcrossItsReadChunksAsParseDoesItsText) {
  // Over 4 MiB, so lines straddle the reader's chunk boundaries.
  std::string text;
  for (uint64_t row = 0; text.size() < (uint64_t{9} << 20); ++row) {
    absl::StrAppend(&text, row % 3 == 0 ? "1" : "0");
    for (uint64_t k = 0; k < 12; ++k) {
      absl::StrAppend(&text, " ", row * 1000003 + k * 7919,
                      row % 5 == 0 ? ":0.25" : "");
    }
    absl::StrAppend(&text, "\n");
  }
  const std::string path = WriteTempFile("chunks.libsvm", text);
  absl::StatusOr<SparseDataset> read = ReadLibsvm(path);
  ASSERT_TRUE(read.ok()) << read.status();
  absl::StatusOr<SparseDataset> parsed = ParseLibsvm(text, path);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_GT(read->size(), 50000);
  EXPECT_EQ(read->offsets, parsed->offsets);
  EXPECT_EQ(read->ids, parsed->ids);
  EXPECT_EQ(read->values, parsed->values);
  EXPECT_EQ(read->labels, parsed->labels);
  EXPECT_EQ(read->ids[12], 1000003u);
  EXPECT_EQ(read->value(12), 1.0f);
  EXPECT_EQ(read->value(0), 0.25f);
}

TEST(Libsvm, NamesTheFileAndLineOfACorruptLine) {
  const std::string path =
      WriteTempFile("corrupt.libsvm", "# header\n1 4:1\n\n0 4:1 x:2\n1 5\n");
  absl::StatusOr<SparseDataset> data = ReadLibsvm(path);
  ASSERT_FALSE(data.ok());
  EXPECT_EQ(data.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(data.status().message(),
            absl::StrCat("'", path,
                         "' line 4: id 'x' of feature 'x:2' is "
                         "not a non-negative integer"));
}

TEST(Libsvm, RefusesAMissingLabel) {
  EXPECT_EQ(ErrorOf("1 3:1\n3:1 4:1\n"),
            "'data.libsvm' line 2: missing label: the line starts with the "
            "feature '3:1'");
}

TEST(Libsvm, RefusesALabelOtherThanZeroOneOrPlusMinusOne) {
  EXPECT_THAT(ErrorOf("2 3:1\n"),
              HasSubstr("line 1: label '2' is not 0, 1, -1 or +1"));
  EXPECT_THAT(ErrorOf("0.5 3:1\n"), HasSubstr("label '0.5' is not"));
  EXPECT_THAT(ErrorOf("yes 3:1\n"), HasSubstr("label 'yes' is not"));
}

TEST(Libsvm, RefusesAnIdThatIsNotANumber) {
  EXPECT_THAT(ErrorOf("1 -3:1\n"),
              HasSubstr("id '-3' of feature '-3:1' is not a non-negative "
                        "integer"));
  EXPECT_THAT(ErrorOf("1 3.5\n"), HasSubstr("id '3.5' of feature '3.5'"));
  EXPECT_THAT(ErrorOf("1 :2\n"),
              HasSubstr("feature ':2' has no id before ':'"));
}

TEST(Libsvm, RefusesAnIdBeyondTheUint64Range) {
  EXPECT_THAT(ErrorOf("1 18446744073709551616:1\n"),
              HasSubstr("line 1: id '18446744073709551616' is out of the "
                        "uint64 range (at most 18446744073709551615)"));
  EXPECT_THAT(ErrorOf("1 99999999999999999999999\n"),
              HasSubstr("out of the uint64 range"));
}

TEST(Libsvm, RefusesAValueThatIsNotAFiniteFloat) {
  for (const char* value : {"abc", "", "nan", "inf", "1e99", "1.5x", "+"}) {
    EXPECT_THAT(ErrorOf(absl::StrCat("0 1:1\n1 3:", value, "\n")),
                HasSubstr(absl::StrCat("line 2: value '", value,
                                       "' of feature '3:", value,
                                       "' is not a finite float")));
  }
}

TEST(Libsvm, SaysWhenTheFileCannotBeOpened) {
  absl::StatusOr<SparseDataset> data =
      ReadLibsvm(absl::StrCat(::testing::TempDir(), "/no-such.libsvm"));
  ASSERT_FALSE(data.ok());
  EXPECT_EQ(data.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(data.status().message(), HasSubstr("cannot open"));
}

TEST(Libsvm, ReadsAnEmptyFileAsNoRows) {
  absl::StatusOr<SparseDataset> data =
      ReadLibsvm(WriteTempFile("empty.libsvm", ""));
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->size(), 0);
  EXPECT_THAT(data->offsets, ElementsAre(0));
}

}  // namespace
}  // namespace ps::common
