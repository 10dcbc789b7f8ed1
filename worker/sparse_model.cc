#include "worker/sparse_model.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "Eigen/Core"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/evaluation.h"
#include "common/optimizer.h"

namespace ps::worker {
namespace {

using VectorMap = Eigen::Map<Eigen::VectorXf>;
using ConstVectorMap = Eigen::Map<const Eigen::VectorXf>;

// fm's factors start small and random: at zero their gradient, which is
// proportional to the other factors, would be zero for ever. 0.01 keeps
// the initial pairwise term (26 fields: ~325 pairs of 8 products of 1e-4)
// far below the linear term. The one table also starts w at this
// distribution instead of at zero, which costs nothing measurable.
constexpr char kFmInitializer[] = "normal(0.01)";

// The table's optimizer unless the user picks another (README: sparse
// models, optimizer defaults). A row's gradient is a mean over the round's
// examples (512 in sync with 2 workers at 256), so one click moves a rare
// id's gradient by about 1/512 = 0.002: with ε = 0.001 that one example
// takes ~2/3 of a full step α, with ε = 0.01 a sixth, and a rare id needs
// several clicks to move far, while a frequent id's √G passes ε within a
// few dozen rounds. ε plays the part of TensorFlow's Adagrad
// initial_accumulator_value (0.1 there, on per-example gradients).
constexpr char kTableOptimizer[] = "adagrad(epsilon=0.01)";

// Mis-sized spans are caller bugs that would otherwise read or write out of
// bounds; the signatures return no Status, so stop loudly in every build.
void Require(bool condition, const char* message) {
  if (condition) return;
  std::fprintf(stderr, "ps::worker::SparseModel: %s\n", message);
  std::abort();
}

// log(1 + e^z) without overflow for large |z|.
double Softplus(double z) {
  return std::max(z, 0.0) + std::log1p(std::exp(-std::abs(z)));
}

double Sigmoid(double z) { return 1.0 / (1.0 + std::exp(-z)); }

// Writes to slots[i] the place of ids[i] among the distinct ids in order of
// first sight, and appends to `distinct` each distinct id with its place.
// An open-addressing table at most half full, allocated per batch (its
// keys left uninitialized: a place of kNone marks an empty entry).
void NumberByFirstSight(absl::Span<const uint64_t> ids,
                        absl::Span<uint32_t> slots,
                        std::vector<std::pair<uint64_t, uint32_t>>& distinct) {
  constexpr uint32_t kNone = ~uint32_t{0};
  int bits = 4;
  while ((size_t{1} << bits) < 2 * ids.size()) ++bits;
  const size_t mask = (size_t{1} << bits) - 1;
  std::unique_ptr<uint64_t[]> keys(new uint64_t[mask + 1]);
  std::vector<uint32_t> places(mask + 1, kNone);
  for (size_t i = 0; i < ids.size(); ++i) {
    // Fibonacci hashing: the product's top bits mix every bit of the id.
    size_t at = (ids[i] * 0x9e3779b97f4a7c15) >> (64 - bits);
    while (places[at] != kNone && keys[at] != ids[i]) at = (at + 1) & mask;
    if (places[at] == kNone) {
      keys[at] = ids[i];
      places[at] = static_cast<uint32_t>(distinct.size());
      distinct.emplace_back(ids[i], places[at]);
    }
    slots[i] = places[at];
  }
}

// Sorts pairs of distinct ids by id: a least-significant-digit radix sort,
// a byte a pass, skipping the bytes all ids share (small ids need 3 passes,
// hashed ones 8). Cheaper than std::sort's comparisons from a few hundred
// ids; the same order, the ids being distinct.
void SortByDistinctId(std::vector<std::pair<uint64_t, uint32_t>>& pairs) {
  const size_t n = pairs.size();
  if (n < 256) {
    std::sort(pairs.begin(), pairs.end());
    return;
  }
  std::vector<std::array<uint32_t, 256>> counts(8);
  for (std::array<uint32_t, 256>& c : counts) c.fill(0);
  for (const auto& [id, place] : pairs) {
    for (int d = 0; d < 8; ++d) ++counts[d][(id >> (8 * d)) & 0xff];
  }
  std::vector<std::pair<uint64_t, uint32_t>> other(n);
  for (int d = 0; d < 8; ++d) {
    std::array<uint32_t, 256>& c = counts[d];
    if (c[(pairs[0].first >> (8 * d)) & 0xff] == n) continue;
    uint32_t start = 0;
    for (uint32_t& count : c) {
      const uint32_t here = count;
      count = start;
      start += here;
    }
    for (const auto& pair : pairs) {
      other[c[(pair.first >> (8 * d)) & 0xff]++] = pair;
    }
    pairs.swap(other);
  }
}

// Examples sit at random places of a data set far bigger than the cache:
// while example r is copied, the offsets of example r + 16 and the features
// of example r + 8 (whose offsets came 8 examples ago) are fetched, so that
// their cache misses overlap instead of stalling one after the other.
void PrefetchExamples(const common::SparseDataset& data,
                      absl::Span<const int64_t> rows, size_t r) {
  constexpr size_t kFeaturesAhead = 8;
  constexpr size_t kOffsetsAhead = 16;
  const auto valid = [&](size_t at) {
    return at < rows.size() && rows[at] >= 0 && rows[at] < data.size();
  };
  if (valid(r + kOffsetsAhead)) {
    __builtin_prefetch(&data.offsets[rows[r + kOffsetsAhead]]);
  }
  if (valid(r + kFeaturesAhead)) {
    const uint64_t begin = data.offsets[rows[r + kFeaturesAhead]];
    const uint64_t end = data.offsets[rows[r + kFeaturesAhead] + 1];
    for (uint64_t k = begin; k < end; k += 64 / sizeof(uint64_t)) {
      __builtin_prefetch(&data.ids[k]);
    }
    if (!data.values.empty() && begin < end) {
      __builtin_prefetch(&data.values[begin]);
    }
  }
}

}  // namespace

absl::StatusOr<CsrBatch> MakeCsrBatch(const common::SparseDataset& data,
                                      absl::Span<const int64_t> rows) {
  if (rows.empty()) {
    return absl::InvalidArgumentError("a batch needs at least one example");
  }
  CsrBatch batch;
  batch.offsets.reserve(rows.size() + 1);
  batch.labels.reserve(rows.size());
  for (size_t r = 0; r < rows.size(); ++r) {
    const int64_t row = rows[r];
    if (row < 0 || row >= data.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "example ", row, " is not in a data set of ", data.size(), " rows"));
    }
    PrefetchExamples(data, rows, r);
    const uint64_t begin = data.offsets[row];
    const uint64_t end = data.offsets[row + 1];
    if (batch.ids.size() + (end - begin) >
        std::numeric_limits<uint32_t>::max()) {
      return absl::InvalidArgumentError(
          "a batch holds at most 2^32 - 1 features");
    }
    for (uint64_t k = begin; k < end; ++k) {
      batch.ids.push_back(data.ids[k]);
      batch.values.push_back(data.value(k));
    }
    batch.offsets.push_back(static_cast<uint32_t>(batch.ids.size()));
    batch.labels.push_back(data.labels[row]);
  }
  // Ids repeat (Zipf: a few common ids fill most features), so a hash
  // table finds the distinct ones and only those are sorted: each
  // feature's slot is its id's place in order of first sight, then
  // renumbered.
  std::vector<std::pair<uint64_t, uint32_t>> distinct;
  batch.slots.resize(batch.ids.size());
  NumberByFirstSight(batch.ids, absl::MakeSpan(batch.slots), distinct);
  SortByDistinctId(distinct);
  std::vector<uint32_t> renumbered(distinct.size());
  batch.ids.resize(distinct.size());
  for (uint32_t place = 0; place < distinct.size(); ++place) {
    batch.ids[place] = distinct[place].first;
    renumbered[distinct[place].second] = place;
  }
  for (uint32_t& slot : batch.slots) slot = renumbered[slot];
  return batch;
}

absl::StatusOr<SparseModel> SparseModel::Create(absl::string_view name,
                                                uint32_t fm_dim) {
  if (name == "logreg") return SparseModel("logreg", 0);
  if (name == "fm") {
    if (fm_dim == 0) {
      return absl::InvalidArgumentError("fm needs fm_dim >= 1 latent factors");
    }
    return SparseModel("fm", fm_dim);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("no sparse model \"", name, "\": logreg or fm"));
}

SparseModel::SparseModel(std::string name, uint32_t fm_dim)
    : name_(std::move(name)),
      fm_dim_(fm_dim),
      tables_({{"weights", 1 + fm_dim, fm_dim == 0 ? "zeros" : kFmInitializer,
                kTableOptimizer, /*lr_schedule=*/""}}),
      dense_tensors_({{"bias", {1}, /*exempt_from_regularization=*/true}}) {}

absl::Status SparseModel::SetTableOptimizer(absl::string_view spec) {
  if (!spec.empty()) {
    if (absl::Status parsed = common::ParseOptimizerSpec(spec).status();
        !parsed.ok()) {
      return parsed;
    }
  }
  tables_[0].optimizer = std::string(spec);
  return absl::OkStatus();
}

void SparseModel::CheckShapes(const CsrBatch& batch,
                              absl::Span<const float> dense,
                              absl::Span<const float> rows) const {
  Require(dense.size() == 1, "dense must hold the bias, 1 float");
  Require(rows.size() == batch.ids.size() * row_dim(),
          "rows must hold ids x row_dim() floats");
  Require(batch.offsets.size() == batch.labels.size() + 1 &&
              batch.slots.size() == batch.offsets.back() &&
              batch.values.size() == batch.slots.size(),
          "the batch's offsets, slots and values must agree");
  Require(batch.size() > 0, "the batch must not be empty");
}

void SparseModel::Logits(const CsrBatch& batch, absl::Span<const float> dense,
                         absl::Span<const float> rows,
                         absl::Span<float> logits) {
  CheckShapes(batch, dense, rows);
  Require(logits.size() == static_cast<size_t>(batch.size()),
          "logits must hold one float per example");
  const uint32_t dim = row_dim();
  const uint32_t k = fm_dim_;
  factor_sums_.resize(static_cast<size_t>(batch.size()) * k);
  for (int64_t e = 0; e < batch.size(); ++e) {
    VectorMap sum(factor_sums_.data() + e * k, k);
    sum.setZero();
    float linear = 0;
    float squares = 0;  // Σ_j Σ_f (v_{j,f}·x_j)²
    for (uint32_t i = batch.offsets[e]; i < batch.offsets[e + 1]; ++i) {
      const float* row = rows.data() + uint64_t{batch.slots[i]} * dim;
      const float x = batch.values[i];
      linear += x * row[0];
      if (k == 0) continue;
      const ConstVectorMap factors(row + 1, k);
      sum += x * factors;
      squares += x * x * factors.squaredNorm();
    }
    logits[e] = dense[0] + linear + 0.5f * (sum.squaredNorm() - squares);
  }
}

double SparseModel::LossAndGradient(const CsrBatch& batch,
                                    absl::Span<const float> dense,
                                    absl::Span<const float> rows,
                                    absl::Span<float> dense_gradient,
                                    absl::Span<float> row_gradients) {
  Require(dense_gradient.size() == dense.size(),
          "dense_gradient must be dense's size");
  Require(row_gradients.size() == rows.size(),
          "row_gradients must be rows' size");
  logits_.resize(batch.size());
  Logits(batch, dense, rows, absl::MakeSpan(logits_));

  const uint32_t dim = row_dim();
  const uint32_t k = fm_dim_;
  const double inverse_size = 1.0 / static_cast<double>(batch.size());
  std::fill(row_gradients.begin(), row_gradients.end(), 0.0f);
  double loss_sum = 0;
  double bias_gradient = 0;
  for (int64_t e = 0; e < batch.size(); ++e) {
    const double z = logits_[e];
    const int32_t y = batch.labels[e];
    loss_sum += Softplus(z) - y * z;
    // dLoss/dz of the mean: (σ(z) − y) / n.
    const double dz = (Sigmoid(z) - y) * inverse_size;
    bias_gradient += dz;
    const ConstVectorMap sum(factor_sums_.data() + e * k, k);
    for (uint32_t i = batch.offsets[e]; i < batch.offsets[e + 1]; ++i) {
      const uint64_t at = uint64_t{batch.slots[i]} * dim;
      const float x = batch.values[i];
      const float dz_x = static_cast<float>(dz) * x;
      row_gradients[at] += dz_x;
      if (k == 0) continue;
      // d(pairwise)/dv_j = x_j·(Σ_j' v_j'·x_j' − v_j·x_j).
      const ConstVectorMap factors(rows.data() + at + 1, k);
      VectorMap(row_gradients.data() + at + 1, k) += dz_x * (sum - x * factors);
    }
  }
  dense_gradient[0] = static_cast<float>(bias_gradient);
  return loss_sum * inverse_size;
}

absl::StatusOr<SparseEvaluation> SparseModel::Evaluate(
    const CsrBatch& batch, absl::Span<const float> dense,
    absl::Span<const float> rows) {
  logits_.resize(batch.size());
  Logits(batch, dense, rows, absl::MakeSpan(logits_));
  std::vector<double> probabilities(logits_.size());
  for (size_t e = 0; e < logits_.size(); ++e) {
    probabilities[e] = Sigmoid(logits_[e]);
  }
  SparseEvaluation evaluation;
  absl::StatusOr<double> auc = common::RocAuc(probabilities, batch.labels);
  if (!auc.ok()) return auc.status();
  evaluation.auc = *auc;
  absl::StatusOr<double> logloss = common::LogLoss(probabilities, batch.labels);
  if (!logloss.ok()) return logloss.status();
  evaluation.logloss = *logloss;
  return evaluation;
}

}  // namespace ps::worker
