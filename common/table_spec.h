#ifndef PS_COMMON_TABLE_SPEC_H_
#define PS_COMMON_TABLE_SPEC_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/tensor_spec.h"

namespace ps::common {

// A row's initial value: zeros, uniform(a) (each value uniform in [−a, a])
// or normal(σ) (each value normal with mean 0 and deviation σ).
struct RowInitializer {
  enum class Kind { kZeros, kUniform, kNormal };
  Kind kind = Kind::kZeros;
  float scale = 0;  // a or σ
};

// "zeros", "uniform(A)" or "normal(SIGMA)" with A, SIGMA > 0;
// INVALID_ARGUMENT quoting the text otherwise.
absl::StatusOr<RowInitializer> ParseRowInitializer(absl::string_view text);

// A sparse table of the model: rows of `dim` floats keyed by any uint64
// feature id, on shard ShardOfId(id, S). Its index in the declaration seeds
// its rows' initial values. Empty optimizer or schedule: the server's.
struct TableSpec {
  std::string name;
  uint32_t dim = 0;
  std::string initializer = "zeros";  // ParseRowInitializer's syntax
  std::string optimizer;    // ParseOptimizerSpec's syntax; empty: the server's
  std::string lr_schedule;  // ParseLrSchedule's syntax; empty: the server's

  std::string ToString() const;  // "emb{dim=8, normal(0.01), adagrad, …}"
  friend bool operator==(const TableSpec& a, const TableSpec& b) {
    return a.name == b.name && a.dim == b.dim &&
           a.initializer == b.initializer && a.optimizer == b.optimizer &&
           a.lr_schedule == b.lr_schedule;
  }
};

// The widest row a table may declare.
inline constexpr uint32_t kMaxTableDim = 1 << 16;

// A model of `tensors` and `tables`: at least one of either; tensors as
// ValidateTensorSpecs wants them (when there are any); tables with
// non-empty names unique among tensors and tables, dim in [1, kMaxTableDim],
// and initializer, optimizer and schedule that parse.
absl::Status ValidateModelSpecs(const std::vector<TensorSpec>& tensors,
                                const std::vector<TableSpec>& tables);

// Empty when `a` and `b` declare the same tables; otherwise one sentence
// naming the first difference.
std::string DescribeTableDifference(const std::vector<TableSpec>& a,
                                    const std::vector<TableSpec>& b);

}  // namespace ps::common

#endif  // PS_COMMON_TABLE_SPEC_H_
