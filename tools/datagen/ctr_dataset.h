#ifndef PS_TOOLS_DATAGEN_CTR_DATASET_H_
#define PS_TOOLS_DATAGEN_CTR_DATASET_H_

// A synthetic click-through-rate data set whose best achievable AUC is
// known, for the sparse models (ps_datagen ctr).
//
// Each row has one categorical feature per field. Field f's value is a rank
// k in [1, V], V = ids / fields, drawn from Zipf(1.1) (rank 1 most common),
// and its feature id is SplitMix64(f << 40 | k): distinct (field, rank)
// pairs get distinct uint64 ids. The label is drawn from the ground truth
//
//   p = sigmoid(b + Σ_f w(f, k_f) + Σ_{f<g<kInteractingFields}
//                                     c_fg·<v(f, k_f), v(g, k_g)>)
//
// a logistic model whose signal lives where a learner can find it, as in
// real logs where a rare value says little:
// - every value has a weight w, uniform, seeded by --seed and the feature id
//   alone, scaled by 1 / (1 + (k-1)/kHeadRanks)²: a field's first ranks,
//   each in thousands of rows of a million, carry most of the linear
//   signal, and the millions of tail values are near-noise;
// - the first kInteractingFields fields interact pairwise, through latent
//   vectors of kLatentDim dimensions on their values of rank 1 to
//   kInteractingRanks (the rest have v = 0): each a uniform vector, less
//   the field's mean vector under Zipf, so the interactions have no main
//   effects that a linear model could pick up; c_fg scales each cross of
//   two fields to the same mean square, so that every seed spreads the
//   interactions over all crosses (a factorization machine of dimension
//   kInteractingFields or more can still represent them: with 2 values a
//   field, each field's vectors lie on one line).
// The linear sum is scaled to standard deviation kLinearLogitStd (a Bayes
// AUC near 0.8, as real CTR sets' best models reach), the interactions to
// --interaction_strength times that, and b is set so the mean p is 3%; all
// from a pilot sample of the same generator. test.prob holds each test
// row's p, so the AUC of test.prob against the test labels is the Bayes
// AUC: what a perfect model would score on this test set. The summary also
// gives the AUC of the linear part alone: about the best a linear model can
// reach, since the interactions have no main effects.
#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/json.h"

namespace ps::datagen {

inline constexpr double kZipfExponent = 1.1;
inline constexpr double kPositiveRate = 0.03;
inline constexpr double kLinearLogitStd = 1.2;
// A value of rank k has a weight 1 / (1 + (k-1)/kHeadRanks)² the head's.
inline constexpr double kHeadRanks = 8;
// Fields 0 .. kInteractingFields-1 interact pairwise through latent vectors
// of kLatentDim dimensions on their values of rank 1 .. kInteractingRanks:
// the two most frequent, each in 6-13% of rows, so that each cross of two
// such values (0.4-1.6% of rows) is seen thousands of times in an epoch.
// Spread over 4 ranks, crosses seen a few hundred times, one epoch of fm
// learnt less of the same interaction (bench/README.md, issue 15's bars).
inline constexpr uint32_t kInteractingFields = 4;
inline constexpr uint64_t kInteractingRanks = 2;
inline constexpr int kLatentDim = 4;
// The highest --interaction_strength accepted.
inline constexpr double kMaxInteractionStrength = 10;

struct CtrOptions {
  // Training rows; the test set has rows / 10. Default: 1,000,000.
  uint64_t rows = 1000000;
  // Categorical fields per row, one feature each. Default: 26 (Criteo's).
  uint32_t fields = 26;
  // Distinct values over all fields, ids / fields in each. Default: 10M.
  uint64_t ids = 10000000;
  // Seeds the ground truth's weights and every row. Default: 1.
  uint64_t seed = 1;
  // The interactions' logit standard deviation over the linear part's;
  // 0: none, the linear part is the whole truth. Default: 0.18.
  double interaction_strength = 0.18;
  // Where train.libsvm, test.libsvm, test.prob and summary.json go,
  // created if missing. Required.
  std::string out_dir;
};

// What a generated data set turned out to be.
struct CtrSummary {
  uint64_t train_rows = 0;
  uint64_t test_rows = 0;
  double train_positive_rate = 0;
  double test_positive_rate = 0;
  // test.prob against the test labels; nullopt when the test set lacks a
  // class (a tiny --rows).
  std::optional<double> bayes_auc;
  // The AUC of the ground truth's logit without its interactions: about the
  // best a linear model (logistic regression) can do; a model of pairwise
  // interactions (FM) can approach bayes_auc.
  std::optional<double> linear_auc;
  double bayes_logloss = 0;
  double bias = 0;  // b in the ground truth

  // summary.json's content: the options and the figures above.
  common::Json ToJson(const CtrOptions& options) const;
};

// A count flag's value: digits with an optional k, M or G suffix (10M is
// 10,000,000). `flag` names it in the error.
absl::StatusOr<uint64_t> ParseCount(absl::string_view flag,
                                    absl::string_view text);

// Errors name the flag at fault and its allowed range.
absl::Status CheckCtrOptions(const CtrOptions& options);

// Writes the data set into options.out_dir. The same options give
// byte-identical files on every run of the same build.
absl::StatusOr<CtrSummary> WriteCtrDataset(const CtrOptions& options);

}  // namespace ps::datagen

#endif  // PS_TOOLS_DATAGEN_CTR_DATASET_H_
