#ifndef PS_WORKER_SPARSE_MODEL_H_
#define PS_WORKER_SPARSE_MODEL_H_

// The sparse click-through-rate models, over mini-batches of CSR rows
// (common::SparseDataset) whose feature ids key rows of embedding tables:
//
//   logreg  p = σ(b + Σ_j x_j·w_j)
//   fm      p = σ(b + Σ_j x_j·w_j + Σ_{j<j'} <v_j, v_j'>·x_j·x_j')
//           (Rendle 2010), the pairwise sum computed in O(k·nnz) as
//           ½ Σ_f ((Σ_j v_{j,f}·x_j)² − Σ_j v_{j,f}²·x_j²)
//
// j runs over an example's features as written: an id written twice is two
// features (so in fm it interacts with itself once), and both occurrences'
// gradients add up in the id's row. w_j and v_j are the row of id_j in the
// table "weights": 1 float for logreg, 1 + fm_dim for fm (w first, then
// v). The loss is the mean log-loss of the batch.
//
// The worker pulls the batch's unique ids (CsrBatch::ids), computes, and
// pushes the mean gradient of each pulled row and of the bias, as the dense
// path pushes a mean. A model keeps scratch buffers, so one instance is not
// safe for concurrent calls.
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/libsvm.h"
#include "common/table_spec.h"
#include "common/tensor_spec.h"

namespace ps::worker {

// A mini-batch of CSR rows with the bookkeeping from each feature to the
// pulled row of its id.
struct CsrBatch {
  // The batch's distinct feature ids, ascending: the keys to pull, and the
  // order of the rows pulled and of the row gradients.
  std::vector<uint64_t> ids;
  // Example e's features are [offsets[e], offsets[e + 1]) of slots/values;
  // slots[i] is the index in `ids` of feature i's id.
  std::vector<uint32_t> offsets = {0};
  std::vector<uint32_t> slots;
  std::vector<float> values;
  std::vector<int32_t> labels;  // 0 or 1, one per example

  int64_t size() const { return static_cast<int64_t>(labels.size()); }
};

// The examples `rows` of `data` (indices, repeats allowed) as a batch.
// INVALID_ARGUMENT on an index out of range or an empty list.
absl::StatusOr<CsrBatch> MakeCsrBatch(const common::SparseDataset& data,
                                      absl::Span<const int64_t> rows);

struct SparseEvaluation {
  double auc = 0;      // test_auc
  double logloss = 0;  // test_logloss
};

class SparseModel {
 public:
  // "logreg", or "fm" with fm_dim ≥ 1 latent factors per id.
  static absl::StatusOr<SparseModel> Create(absl::string_view name,
                                            uint32_t fm_dim);

  const std::string& name() const { return name_; }
  uint32_t fm_dim() const { return fm_dim_; }
  // The one table "weights", 1 + fm_dim floats a row. One table rather than
  // "weights" and "factors": a batch then pulls and pushes each id once,
  // half the keys (and shard lookups) of two tables with the same ids.
  const std::vector<common::TableSpec>& tables() const { return tables_; }
  // The bias b: a dense tensor of 1 float, not a row under a reserved id,
  // because every uint64 is a valid (hashed) feature id, so no id can be
  // reserved, and because one row touched by every batch would make its
  // shard the hot spot of every push; as a dense tensor it is also exempt
  // from regularization, as biases are.
  const std::vector<common::TensorSpec>& dense_tensors() const {
    return dense_tensors_;
  }
  uint32_t row_dim() const { return tables_[0].dim; }
  // Replaces the table's optimizer (ParseOptimizerSpec's syntax; empty: the
  // servers' --optimizer). INVALID_ARGUMENT when it does not parse.
  absl::Status SetTableOptimizer(absl::string_view spec);

  // The mean log-loss of `batch` given the bias (`dense`, 1 float) and the
  // rows pulled for batch.ids (`rows`, ids × row_dim() floats in ids'
  // order). Writes the mean gradient of the bias to `dense_gradient` and of
  // each row to `row_gradients` (same shapes); a row's gradient sums every
  // occurrence of its id in the batch, divided by the batch size.
  double LossAndGradient(const CsrBatch& batch, absl::Span<const float> dense,
                         absl::Span<const float> rows,
                         absl::Span<float> dense_gradient,
                         absl::Span<float> row_gradients);

  // The logit b + linear + pairwise of each example (batch.size() floats).
  void Logits(const CsrBatch& batch, absl::Span<const float> dense,
              absl::Span<const float> rows, absl::Span<float> logits);

  // Predicted probabilities over `batch` (a whole test set, say) scored by
  // common/evaluation.h: AUC and mean log-loss. Errors when the AUC is
  // undefined (a set without both classes).
  absl::StatusOr<SparseEvaluation> Evaluate(const CsrBatch& batch,
                                            absl::Span<const float> dense,
                                            absl::Span<const float> rows);

 private:
  SparseModel(std::string name, uint32_t fm_dim);

  void CheckShapes(const CsrBatch& batch, absl::Span<const float> dense,
                   absl::Span<const float> rows) const;

  std::string name_;
  uint32_t fm_dim_;
  std::vector<common::TableSpec> tables_;
  std::vector<common::TensorSpec> dense_tensors_;
  // Per example of the last Logits: Σ_j v_j·x_j (fm_dim floats), which the
  // factors' gradient reuses.
  std::vector<float> factor_sums_;
  std::vector<float> logits_;
};

}  // namespace ps::worker

#endif  // PS_WORKER_SPARSE_MODEL_H_
