#ifndef PS_WORKER_MODEL_H_
#define PS_WORKER_MODEL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "Eigen/Core"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/dataset.h"
#include "common/tensor_spec.h"

namespace ps::worker {

struct Evaluation {
  double mean_loss = 0;  // mean cross-entropy over the examples
  double accuracy = 0;   // fraction classified correctly
};

// A differentiable classifier over a flat parameter vector θ laid out as
// the concatenation of tensors(). Implementations keep scratch buffers, so
// one instance is not safe for concurrent calls.
class Model {
 public:
  virtual ~Model() = default;

  // In key-space order; biases are exempt from regularization.
  virtual const std::vector<common::TensorSpec>& tensors() const = 0;
  uint64_t num_params() const { return common::NumKeys(tensors()); }

  // Seeded initial θ: identical bytes for the same seed on every worker.
  virtual std::vector<float> InitialParams(uint64_t seed) const = 0;

  // Mean cross-entropy of the batch; writes its mean gradient to `grad`
  // (num_params() floats).
  virtual float LossAndGradient(absl::Span<const float> params,
                                const Eigen::Ref<const common::RowMatrix>& x,
                                absl::Span<const int32_t> labels,
                                absl::Span<float> grad) = 0;

  // A fresh model of the same kind and shape, with scratch of its own: for
  // evaluating on another thread while this one trains.
  virtual std::unique_ptr<Model> Clone() const = 0;

  // Loss and accuracy over a whole dataset, in chunks to bound memory.
  virtual Evaluation Evaluate(absl::Span<const float> params,
                              const common::Dataset& data) = 0;
};

// "softmax": multinomial logistic regression input_dim -> num_classes.
// "mlp": input_dim -> 128 ReLU -> num_classes.
absl::StatusOr<std::unique_ptr<Model>> CreateModel(std::string_view name,
                                                   int input_dim,
                                                   int num_classes);

// The name of the model CreateModel makes with exactly these tensor
// declarations (a file written by psctl export, say); NOT_FOUND when no
// model has them.
absl::StatusOr<std::string> ModelNamed(
    const std::vector<common::TensorSpec>& tensors, int input_dim,
    int num_classes);

}  // namespace ps::worker

#endif  // PS_WORKER_MODEL_H_
