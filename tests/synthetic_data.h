#ifndef PS_TESTS_SYNTHETIC_DATA_H_
#define PS_TESTS_SYNTHETIC_DATA_H_

#include <cstdint>
#include <random>

#include "common/dataset.h"

namespace ps::testing {

// Gaussian blobs, one per class, for unit tests only (the real workload is
// Fashion-MNIST). Learnable to high accuracy by a linear model.
inline common::Dataset GaussianBlobs(int64_t examples, int dim, int classes,
                                     uint64_t seed) {
  // The centres depend only on the shape, so train and test sets drawn with
  // different seeds pose the same task.
  std::mt19937_64 rng(1000 + dim * 31 + classes);
  auto uniform = [&rng] {
    return static_cast<float>((rng() >> 11) * (1.0 / 9007199254740992.0));
  };
  common::RowMatrix centers(classes, dim);
  for (int c = 0; c < classes; ++c) {
    for (int d = 0; d < dim; ++d) centers(c, d) = 2.0f * uniform() - 1.0f;
  }
  rng.seed(seed);
  common::Dataset data;
  data.num_classes = classes;
  data.features.resize(examples, dim);
  data.labels.resize(examples);
  for (int64_t i = 0; i < examples; ++i) {
    const int label = static_cast<int>(rng() % classes);
    data.labels[i] = label;
    for (int d = 0; d < dim; ++d) {
      data.features(i, d) = centers(label, d) + 0.3f * (uniform() - 0.5f);
    }
  }
  return data;
}

inline common::TrainTestData SyntheticTrainTest(int dim, int classes) {
  common::TrainTestData data;
  data.train = GaussianBlobs(1200, dim, classes, 1);
  data.test = GaussianBlobs(300, dim, classes, 2);
  return data;
}

}  // namespace ps::testing

#endif  // PS_TESTS_SYNTHETIC_DATA_H_
