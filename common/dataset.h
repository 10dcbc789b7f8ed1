#ifndef PS_COMMON_DATASET_H_
#define PS_COMMON_DATASET_H_

#include <cstdint>
#include <string>
#include <vector>

#include "Eigen/Core"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/key_range.h"

namespace ps::common {

using RowMatrix =
    Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Labelled examples held in memory: one row of features per example.
struct Dataset {
  RowMatrix features;           // pixels scaled to [0, 1] for image data
  std::vector<int32_t> labels;  // class index of each row, in [0, num_classes)
  int num_classes = 0;

  int64_t size() const { return static_cast<int64_t>(labels.size()); }
};

// Where Debian's dataset-fashion-mnist package installs the gzip IDX files.
inline constexpr char kDefaultFashionMnistDir[] =
    "/usr/share/datasets/fashion-mnist";

// Reads a gzip-compressed (or plain) IDX image file (magic 0x00000803, uint8
// pixels) and its IDX label file (magic 0x00000801). Every defect -- missing
// file, truncated or corrupt gzip, wrong magic, mismatched counts, a label
// >= num_classes, trailing bytes -- is an error naming the file and the fault.
absl::StatusOr<Dataset> ReadIdxDataset(const std::string& images_path,
                                       const std::string& labels_path,
                                       int num_classes);

struct TrainTestData {
  Dataset train;
  Dataset test;
  // Examples of `train` held out for validation (ps_worker --kfold): copied
  // here, and never trained. Empty: no validation.
  Dataset validation;
};

// The rows of `from` in `ranges`, in order: a copy.
Dataset SelectExamples(const Dataset& from, absl::Span<const KeyRange> ranges);

// train-{images-idx3,labels-idx1}-ubyte.gz and t10k-... from `dir`.
absl::StatusOr<TrainTestData> LoadFashionMnist(const std::string& dir);

}  // namespace ps::common

#endif  // PS_COMMON_DATASET_H_
