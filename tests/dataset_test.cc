#include "common/dataset.h"

#include <stdlib.h>
#include <sys/resource.h>
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ps::common {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

using Bytes = std::vector<unsigned char>;

void AppendBigEndian(uint32_t value, Bytes* out) {
  for (int shift = 24; shift >= 0; shift -= 8) {
    out->push_back(static_cast<unsigned char>(value >> shift));
  }
}

Bytes ImageFile(uint32_t count, uint32_t rows, uint32_t cols,
                const Bytes& pixels, uint32_t magic = 0x00000803) {
  Bytes out;
  AppendBigEndian(magic, &out);
  AppendBigEndian(count, &out);
  AppendBigEndian(rows, &out);
  AppendBigEndian(cols, &out);
  out.insert(out.end(), pixels.begin(), pixels.end());
  return out;
}

Bytes LabelFile(const Bytes& labels, uint32_t magic = 0x00000801) {
  Bytes out;
  AppendBigEndian(magic, &out);
  AppendBigEndian(static_cast<uint32_t>(labels.size()), &out);
  out.insert(out.end(), labels.begin(), labels.end());
  return out;
}

// Three 2x3 images covering the extremes of the pixel range.
const Bytes kPixels = {0,   1,   2,  127, 128, 254,  //
                       255, 0,   17, 34,  51,  68,   //
                       200, 100, 50, 25,  12,  6};
const Bytes kLabels = {2, 0, 9};

class DatasetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = testing::TempDir() + "dataset_test_XXXXXX";
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Path(const std::string& name) const {
    return (dir_ / name).string();
  }

  std::string WritePlain(const std::string& name, const Bytes& bytes) {
    const std::string path = Path(name);
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
    EXPECT_TRUE(out.good()) << path;
    return path;
  }

  std::string WriteGzip(const std::string& name, const Bytes& bytes) {
    const std::string path = Path(name);
    gzFile file = gzopen(path.c_str(), "wb");
    EXPECT_NE(file, nullptr) << path;
    if (file == nullptr) return path;
    EXPECT_EQ(gzwrite(file, bytes.data(), static_cast<unsigned>(bytes.size())),
              static_cast<int>(bytes.size()));
    EXPECT_EQ(gzclose(file), Z_OK);
    return path;
  }

  Bytes ReadRaw(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return Bytes(std::istreambuf_iterator<char>(in),
                 std::istreambuf_iterator<char>());
  }

  std::string ValidImages() {
    return WriteGzip("images.gz", ImageFile(3, 2, 3, kPixels));
  }
  std::string ValidLabels() {
    return WriteGzip("labels.gz", LabelFile(kLabels));
  }

  std::filesystem::path dir_;
};

void ExpectMatchesSyntheticData(const Dataset& data) {
  ASSERT_EQ(data.size(), 3);
  ASSERT_EQ(data.features.rows(), 3);
  ASSERT_EQ(data.features.cols(), 6);
  EXPECT_EQ(data.num_classes, 10);
  EXPECT_EQ(data.labels, (std::vector<int32_t>{2, 0, 9}));
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 6; ++j) {
      EXPECT_EQ(data.features(i, j),
                static_cast<float>(kPixels[i * 6 + j]) / 255.0f)
          << "row " << i << " column " << j;
    }
  }
  EXPECT_EQ(data.features(0, 0), 0.0f);
  EXPECT_EQ(data.features(1, 0), 1.0f);
}

TEST_F(DatasetTest, ReadsGzipFilesExactly) {
  absl::StatusOr<Dataset> data =
      ReadIdxDataset(ValidImages(), ValidLabels(), 10);
  ASSERT_TRUE(data.ok()) << data.status();
  ExpectMatchesSyntheticData(*data);
}

TEST_F(DatasetTest, ReadsUncompressedFilesExactly) {
  absl::StatusOr<Dataset> data =
      ReadIdxDataset(WritePlain("images", ImageFile(3, 2, 3, kPixels)),
                     WritePlain("labels", LabelFile(kLabels)), 10);
  ASSERT_TRUE(data.ok()) << data.status();
  ExpectMatchesSyntheticData(*data);
}

TEST_F(DatasetTest, WrongImageMagicNamesFileAndBothValues) {
  const std::string images =
      WriteGzip("images.gz", ImageFile(3, 2, 3, kPixels, 0x00000801));
  absl::StatusOr<Dataset> data = ReadIdxDataset(images, ValidLabels(), 10);
  EXPECT_EQ(data.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(data.status().message(),
              AllOf(HasSubstr(images), HasSubstr("0x00000801"),
                    HasSubstr("0x00000803")));
}

TEST_F(DatasetTest, WrongLabelMagicNamesFileAndBothValues) {
  const std::string labels =
      WriteGzip("labels.gz", LabelFile(kLabels, 0x00000803));
  absl::StatusOr<Dataset> data = ReadIdxDataset(ValidImages(), labels, 10);
  EXPECT_EQ(data.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(data.status().message(),
              AllOf(HasSubstr(labels), HasSubstr("0x00000803"),
                    HasSubstr("0x00000801")));
}

TEST_F(DatasetTest, GzipCutAtAnyOffsetIsAnError) {
  const std::string labels = ValidLabels();
  const Bytes whole = ReadRaw(ValidImages());
  ASSERT_GT(whole.size(), 18u);  // gzip header and trailer at least
  for (size_t cut = 0; cut < whole.size(); ++cut) {
    const std::string images =
        WritePlain("cut.gz", Bytes(whole.begin(), whole.begin() + cut));
    absl::StatusOr<Dataset> data = ReadIdxDataset(images, labels, 10);
    EXPECT_FALSE(data.ok()) << "cut at " << cut << " of " << whole.size();
    EXPECT_THAT(data.status().message(), HasSubstr(images)) << "cut " << cut;
  }
}

TEST_F(DatasetTest, LabelGzipCutAtAnyOffsetIsAnError) {
  const std::string images = ValidImages();
  const Bytes whole = ReadRaw(ValidLabels());
  for (size_t cut = 0; cut < whole.size(); ++cut) {
    const std::string labels =
        WritePlain("cut.gz", Bytes(whole.begin(), whole.begin() + cut));
    absl::StatusOr<Dataset> data = ReadIdxDataset(images, labels, 10);
    EXPECT_FALSE(data.ok()) << "cut at " << cut << " of " << whole.size();
    EXPECT_THAT(data.status().message(), HasSubstr(labels)) << "cut " << cut;
  }
}

// Large enough that the payload is inflated straight into the caller's
// buffer, which is where gzread() misses a file cut inside the trailer.
TEST_F(DatasetTest, LargeGzipCutInsideTrailerIsAnError) {
  constexpr uint32_t kCount = 6000;
  Bytes pixels(kCount * 28 * 28);
  std::mt19937 random(42);  // incompressible pixels: a large .gz file
  for (unsigned char& p : pixels) p = static_cast<unsigned char>(random());
  Bytes labels_bytes(kCount);
  for (uint32_t i = 0; i < kCount; ++i) labels_bytes[i] = i % 10;
  const std::string labels = WriteGzip("labels.gz", LabelFile(labels_bytes));
  const Bytes whole =
      ReadRaw(WriteGzip("images.gz", ImageFile(kCount, 28, 28, pixels)));
  ASSERT_TRUE(ReadIdxDataset(Path("images.gz"), labels, 10).ok());

  for (size_t from_end : {1, 4, 5, 8, 9, 100, 100000}) {
    const size_t cut = whole.size() - from_end;
    const std::string images =
        WritePlain("cut.gz", Bytes(whole.begin(), whole.begin() + cut));
    absl::StatusOr<Dataset> data = ReadIdxDataset(images, labels, 10);
    EXPECT_EQ(data.status().code(), absl::StatusCode::kDataLoss)
        << "cut " << from_end << " bytes from the end: " << data.status();
    EXPECT_THAT(data.status().message(), HasSubstr(images));
  }
}

TEST_F(DatasetTest, ConcatenatedGzipMembersReadAsOneFile) {
  // gzip -d accepts `cat a.gz b.gz`; so do we.
  const Bytes all = ImageFile(3, 2, 3, kPixels);
  const Bytes first =
      ReadRaw(WriteGzip("a.gz", Bytes(all.begin(), all.begin() + 10)));
  Bytes both = ReadRaw(WriteGzip("b.gz", Bytes(all.begin() + 10, all.end())));
  both.insert(both.begin(), first.begin(), first.end());
  absl::StatusOr<Dataset> data =
      ReadIdxDataset(WritePlain("images.gz", both), ValidLabels(), 10);
  ASSERT_TRUE(data.ok()) << data.status();
  ExpectMatchesSyntheticData(*data);
}

TEST_F(DatasetTest, GarbageAfterGzipStreamIsAnError) {
  Bytes gz = ReadRaw(ValidImages());
  gz.push_back(0);
  const std::string images = WritePlain("images.gz", gz);
  absl::StatusOr<Dataset> data = ReadIdxDataset(images, ValidLabels(), 10);
  EXPECT_EQ(data.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(data.status().message(),
              AllOf(HasSubstr(images), HasSubstr("trailing bytes")));
}

TEST_F(DatasetTest, TruncatedPlainFileReportsTruncation) {
  Bytes bytes = ImageFile(3, 2, 3, kPixels);
  bytes.resize(bytes.size() - 1);
  const std::string images = WritePlain("images", bytes);
  absl::StatusOr<Dataset> data = ReadIdxDataset(images, ValidLabels(), 10);
  EXPECT_EQ(data.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(data.status().message(),
              AllOf(HasSubstr(images), HasSubstr("truncated")));
}

TEST_F(DatasetTest, CorruptGzipDataIsAnError) {
  Bytes gz = ReadRaw(ValidImages());
  gz[gz.size() / 2] ^= 0x5a;
  const std::string images = WritePlain("corrupt.gz", gz);
  absl::StatusOr<Dataset> data = ReadIdxDataset(images, ValidLabels(), 10);
  EXPECT_FALSE(data.ok());
  EXPECT_THAT(data.status().message(), HasSubstr(images));
}

TEST_F(DatasetTest, ImageAndLabelCountMismatchIsAnError) {
  const std::string labels = WriteGzip("labels.gz", LabelFile({1, 2}));
  absl::StatusOr<Dataset> data = ReadIdxDataset(ValidImages(), labels, 10);
  EXPECT_EQ(data.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(data.status().message(),
              AllOf(HasSubstr("3 images"), HasSubstr("2 labels")));
}

TEST_F(DatasetTest, LabelNotBelowNumClassesIsAnError) {
  const std::string labels = WriteGzip("labels.gz", LabelFile({2, 10, 1}));
  absl::StatusOr<Dataset> data = ReadIdxDataset(ValidImages(), labels, 10);
  EXPECT_EQ(data.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(
      data.status().message(),
      AllOf(HasSubstr(labels), HasSubstr("label 10"), HasSubstr("example 1")));
  // The same file is fine with more classes.
  EXPECT_TRUE(ReadIdxDataset(ValidImages(), labels, 11).ok());
}

TEST_F(DatasetTest, MissingFileIsNotFoundAndNamesPath) {
  const std::string missing = Path("no-such-file.gz");
  absl::StatusOr<Dataset> data = ReadIdxDataset(missing, ValidLabels(), 10);
  EXPECT_EQ(data.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(data.status().message(), HasSubstr(missing));

  data = ReadIdxDataset(ValidImages(), missing, 10);
  EXPECT_EQ(data.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(data.status().message(), HasSubstr(missing));
}

TEST_F(DatasetTest, TrailingBytesAfterPayloadAreAnError) {
  Bytes pixels = kPixels;
  pixels.push_back(0);
  const std::string images = WriteGzip("images.gz", ImageFile(3, 2, 3, pixels));
  absl::StatusOr<Dataset> data = ReadIdxDataset(images, ValidLabels(), 10);
  EXPECT_EQ(data.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(data.status().message(),
              AllOf(HasSubstr(images), HasSubstr("trailing bytes")));

  Bytes labels_bytes = LabelFile(kLabels);
  labels_bytes.push_back(1);
  const std::string labels = WritePlain("labels", labels_bytes);
  data = ReadIdxDataset(ValidImages(), labels, 10);
  EXPECT_EQ(data.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(data.status().message(),
              AllOf(HasSubstr(labels), HasSubstr("trailing bytes")));
}

TEST_F(DatasetTest, ZeroDimensionIsAnError) {
  const std::string images = WriteGzip("images.gz", ImageFile(3, 0, 3, {}));
  absl::StatusOr<Dataset> data = ReadIdxDataset(images, ValidLabels(), 10);
  EXPECT_EQ(data.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(data.status().message(), HasSubstr(images));
}

TEST_F(DatasetTest, HugeDeclaredSizeFailsBeforeAllocating) {
  // 2^31 - 1 images of 28x28 would be terabytes.
  const std::string images =
      WriteGzip("images.gz", ImageFile(0x7fffffff, 28, 28, {}));
  absl::StatusOr<Dataset> data = ReadIdxDataset(images, ValidLabels(), 10);
  EXPECT_EQ(data.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(data.status().message(), HasSubstr(images));

  const std::string wide =
      WriteGzip("wide.gz", ImageFile(1, 0xffffffff, 0xffffffff, {}));
  data = ReadIdxDataset(wide, ValidLabels(), 10);
  EXPECT_EQ(data.status().code(), absl::StatusCode::kInvalidArgument);
}

// In a child process: reads the pair, prints the peak RSS it grew by and
// the error, and exits 0 only for DATA_LOSS at under 64 MiB.
void ExitZeroIfReadingFailsCheaply(const std::string& images,
                                   const std::string& labels) {
  struct rusage before;
  struct rusage after;
  getrusage(RUSAGE_SELF, &before);
  absl::StatusOr<Dataset> data = ReadIdxDataset(images, labels, 10);
  getrusage(RUSAGE_SELF, &after);
  const long grown_mib = (after.ru_maxrss - before.ru_maxrss) / 1024;
  std::fprintf(stderr, "grew %ld MiB: %s\n", grown_mib,
               data.status().ToString().c_str());
  const bool cheap_and_clear =
      data.status().code() == absl::StatusCode::kDataLoss && grown_mib < 64;
  std::exit(cheap_and_clear ? 0 : 1);
}

// A 58-byte gzip pair whose headers declare 2^31 one-pixel images and as
// many labels, within every per-header cap: the files cannot hold that much,
// so reading must fail before allocating gigabytes (run in a child process
// to measure its peak RSS alone).
TEST_F(DatasetTest, ATinyFileDeclaringHugeCountsFailsBeforeAllocating) {
  const std::string images =
      WriteGzip("images.gz", ImageFile(0x80000000u, 1, 1, {}));
  Bytes label_header;
  AppendBigEndian(0x00000801, &label_header);
  AppendBigEndian(0x80000000u, &label_header);
  const std::string labels = WriteGzip("labels.gz", label_header);
  ASSERT_LT(ReadRaw(images).size() + ReadRaw(labels).size(), 80u);
  EXPECT_EXIT(ExitZeroIfReadingFailsCheaply(images, labels),
              ::testing::ExitedWithCode(0), "cannot hold");
}

TEST_F(DatasetTest, NonPositiveNumClassesIsAnError) {
  absl::StatusOr<Dataset> data =
      ReadIdxDataset(ValidImages(), ValidLabels(), 0);
  EXPECT_EQ(data.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(FashionMnist, LoadsInstalledFilesWithExpectedShapes) {
  // The dataset package is a test dependency: absence is a failure.
  absl::StatusOr<TrainTestData> data =
      LoadFashionMnist(kDefaultFashionMnistDir);
  ASSERT_TRUE(data.ok()) << data.status();

  const Dataset& train = data->train;
  const Dataset& test = data->test;
  EXPECT_EQ(train.size(), 60000);
  EXPECT_EQ(test.size(), 10000);
  EXPECT_EQ(train.features.rows(), 60000);
  EXPECT_EQ(test.features.rows(), 10000);
  EXPECT_EQ(train.features.cols(), 784);
  EXPECT_EQ(test.features.cols(), 784);
  EXPECT_EQ(train.num_classes, 10);
  EXPECT_EQ(test.num_classes, 10);
  for (const Dataset* d : {&train, &test}) {
    std::vector<int64_t> per_class(10, 0);
    for (int32_t label : d->labels) {
      ASSERT_GE(label, 0);
      ASSERT_LT(label, 10);
      ++per_class[label];
    }
    // Fashion-MNIST is balanced: 6000 / 1000 examples of every class.
    for (int64_t n : per_class) EXPECT_EQ(n, d->size() / 10);
    EXPECT_GE(d->features.minCoeff(), 0.0f);
    EXPECT_LE(d->features.maxCoeff(), 1.0f);
    EXPECT_EQ(d->features.maxCoeff(), 1.0f);
  }
}

TEST(FashionMnist, MissingDirectoryIsAnErrorNamingTheFile) {
  absl::StatusOr<TrainTestData> data = LoadFashionMnist("/nonexistent/dir");
  EXPECT_EQ(data.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(data.status().message(),
              HasSubstr("/nonexistent/dir/train-images-idx3-ubyte.gz"));
}

}  // namespace
}  // namespace ps::common
