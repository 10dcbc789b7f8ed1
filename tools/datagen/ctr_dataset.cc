#include "tools/datagen/ctr_dataset.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <memory>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/cli.h"
#include "common/evaluation.h"
#include "common/splitmix64.h"

namespace ps::datagen {
namespace {

using common::SplitMix64;
using common::SplitMix64Stream;

// The latent vectors' streams differ from the weights' of the same id.
constexpr uint64_t kLatentKey = 0x6c6174656e74;  // "latent"
// Rows of the pilot sample that sets the scales and the bias.
constexpr uint64_t kPilotRows = 20000;
constexpr uint32_t kMaxFields = 1000;
// Ranks fit below bit 40 of the value SplitMix64 turns into an id.
constexpr uint64_t kMaxIdsPerField = (uint64_t{1} << 40) - 1;
// The test set's truth (20 bytes a row) is held in memory: 2 GB at most.
constexpr uint64_t kMaxRows = 1000000000;

// Each kind of row draws from its own streams.
enum class Stream : uint64_t { kTrain = 1, kTest = 2, kPilot = 3 };

// Zipf(exponent) over ranks 1..n in O(1) per draw and no table: the
// rejection-inversion method of Hörmann and Derflinger (1996), as in Apache
// Commons' RejectionInversionZipfSampler.
class ZipfSampler {
 public:
  ZipfSampler(uint64_t n, double exponent)
      : n_(static_cast<double>(n)),
        exponent_(exponent),
        h_integral_x1_(HIntegral(1.5) - 1),
        h_integral_n_(HIntegral(n_ + 0.5)),
        s_(2 - HIntegralInverse(HIntegral(2.5) - H(2))) {}

  uint64_t Sample(SplitMix64Stream& random) const {
    while (true) {
      const double u =
          h_integral_n_ + random.NextUnit() * (h_integral_x1_ - h_integral_n_);
      const double x = HIntegralInverse(u);
      const double k = std::clamp(std::floor(x + 0.5), 1.0, n_);
      if (k - x <= s_ || u >= HIntegral(k + 0.5) - H(k)) {
        return static_cast<uint64_t>(k);
      }
    }
  }

 private:
  double H(double x) const { return std::exp(-exponent_ * std::log(x)); }
  // ∫ H = (x^(1-e) - 1) / (1-e), written to stay exact as e → 1.
  double HIntegral(double x) const {
    const double log_x = std::log(x);
    return Helper2((1 - exponent_) * log_x) * log_x;
  }
  double HIntegralInverse(double x) const {
    double t = x * (1 - exponent_);
    if (t < -1) t = -1;  // rounding can take it just past the limit
    return std::exp(Helper1(t) * x);
  }
  // log1p(x) / x and expm1(x) / x, with their limits near 0.
  static double Helper1(double x) {
    return std::abs(x) > 1e-8 ? std::log1p(x) / x
                              : 1 - x * (0.5 - x * (1.0 / 3 - 0.25 * x));
  }
  static double Helper2(double x) {
    return std::abs(x) > 1e-8
               ? std::expm1(x) / x
               : 1 + x * 0.5 * (1 + x * (1.0 / 3) * (1 + 0.25 * x));
  }

  double n_;
  double exponent_;
  double h_integral_x1_;
  double h_integral_n_;
  double s_;
};

// Uniform with mean 0 and variance 1.
double Centered(SplitMix64Stream& random) {
  return std::sqrt(3.0) * (2 * random.NextUnit() - 1);
}

double Sigmoid(double x) { return 1 / (1 + std::exp(-x)); }

// The header's 1 / (1 + (k-1)/kHeadRanks)²: squared, so that the hundreds of
// thousands of values seen a few times in an epoch weigh little in all
// (falling as 1/k, their weights summed to a signal no epoch could learn).
double TailWeight(double rank) {
  const double r = 1 + (rank - 1) / kHeadRanks;
  return 1 / (r * r);
}

using Latent = std::array<double, kLatentDim>;

// One drawn row, before the label.
struct Row {
  std::vector<uint64_t> ids;  // one per field, in field order
  double linear = 0;          // Σ w, unscaled
  // The interacting fields' latent vectors, 0 past kInteractingRanks.
  std::array<Latent, kInteractingFields> latent{};
  double interaction = 0;  // Σ <v, v'>, unscaled
};

// The ground truth of the header comment: draws rows and their logits.
class GroundTruth {
 public:
  explicit GroundTruth(const CtrOptions& options)
      : fields_(options.fields),
        interaction_strength_(options.interaction_strength),
        zipf_(options.ids / options.fields, kZipfExponent),
        rows_key_(SplitMix64(options.seed ^ 0x726f7773)),      // "rows"
        weights_key_(SplitMix64(options.seed ^ 0x77656967)) {  // "weig"
    DrawLatentVectors(options.ids / options.fields);
    ScalePairs(options.ids / options.fields);
    Calibrate();
  }

  // Fills `row` with row `index` of `stream`; returns its stream, from which
  // the label is drawn next.
  SplitMix64Stream Draw(Stream stream, uint64_t index, Row& row) const {
    SplitMix64Stream random(
        rows_key_ ^ SplitMix64((static_cast<uint64_t>(stream) << 56) ^ index));
    row.ids.resize(fields_);
    row.linear = 0;
    row.latent = {};
    for (uint32_t f = 0; f < fields_; ++f) {
      const uint64_t rank = zipf_.Sample(random);
      const uint64_t id = SplitMix64((uint64_t{f} << 40) | rank);
      row.ids[f] = id;
      const double k = static_cast<double>(rank);
      SplitMix64Stream weights(weights_key_ ^ id);
      row.linear += Centered(weights) * TailWeight(k);
      if (f < kInteractingFields && rank <= kInteractingRanks) {
        row.latent[f] = latent_[f][rank - 1];
      }
    }
    row.interaction = Interaction(row);
    return random;
  }

  double Probability(const Row& row) const {
    return Sigmoid(bias_ + linear_scale_ * row.linear +
                   interaction_scale_ * row.interaction);
  }

  // The logit without its interactions: about the best ranking a logistic
  // regression can represent, the interactions having no main effects on
  // the logit.
  double LinearLogit(const Row& row) const {
    return bias_ + linear_scale_ * row.linear;
  }

  double bias() const { return bias_; }

 private:
  // The head values' latent vectors: uniform, seeded by --seed and the
  // feature id, less their mean under the Zipf law restricted to the head,
  // so that a field's mean vector over all its values is exactly 0 (the tail
  // has none): the interactions have no main effects.
  void DrawLatentVectors(uint64_t ids_per_field) {
    const uint64_t head = std::min<uint64_t>(ids_per_field, kInteractingRanks);
    for (uint32_t f = 0; f < std::min(fields_, kInteractingFields); ++f) {
      Latent mean{};
      double total = 0;
      for (uint64_t rank = 1; rank <= head; ++rank) {
        SplitMix64Stream latent(weights_key_ ^ kLatentKey ^
                                SplitMix64((uint64_t{f} << 40) | rank));
        const double share =
            std::pow(static_cast<double>(rank), -kZipfExponent);
        total += share;
        for (int j = 0; j < kLatentDim; ++j) {
          latent_[f][rank - 1][j] = Centered(latent);
          mean[j] += share * latent_[f][rank - 1][j];
        }
      }
      for (uint64_t rank = 1; rank <= head; ++rank) {
        for (int j = 0; j < kLatentDim; ++j) {
          latent_[f][rank - 1][j] -= mean[j] / total;
        }
      }
    }
  }

  // Σ_{f<g} c_fg·<v_f, v_g> over the interacting fields.
  double Interaction(const Row& row) const {
    double sum = 0;
    for (uint32_t f = 0; f < kInteractingFields; ++f) {
      for (uint32_t g = f + 1; g < kInteractingFields; ++g) {
        double dot = 0;
        for (int j = 0; j < kLatentDim; ++j) {
          dot += row.latent[f][j] * row.latent[g][j];
        }
        sum += pair_scale_[f][g] * dot;
      }
    }
    return sum;
  }

  // c_fg = 1 / the root mean square of <v_f, v_g> under the Zipf law, so
  // that every cross of two interacting fields carries the same share of
  // the interactions: with the vectors' random directions alone, one seed
  // put 70% of them in one cross and another spread them over four.
  void ScalePairs(uint64_t ids_per_field) {
    const uint64_t head = std::min<uint64_t>(ids_per_field, kInteractingRanks);
    for (uint32_t f = 0; f < std::min(fields_, kInteractingFields); ++f) {
      for (uint32_t g = f + 1; g < std::min(fields_, kInteractingFields); ++g) {
        double mean_square = 0;
        for (uint64_t a = 1; a <= head; ++a) {
          for (uint64_t b = 1; b <= head; ++b) {
            double dot = 0;
            for (int j = 0; j < kLatentDim; ++j) {
              dot += latent_[f][a - 1][j] * latent_[g][b - 1][j];
            }
            mean_square +=
                std::pow(static_cast<double>(a * b), -kZipfExponent) * dot *
                dot;
          }
        }
        pair_scale_[f][g] = mean_square > 0 ? 1 / std::sqrt(mean_square) : 0;
      }
    }
  }

  // Sets the scales and the bias from a pilot sample (see the header).
  void Calibrate() {
    std::vector<double> linear(kPilotRows);
    std::vector<double> interaction(kPilotRows);
    Row row;
    for (uint64_t i = 0; i < kPilotRows; ++i) {
      Draw(Stream::kPilot, i, row);
      linear[i] = row.linear;
      interaction[i] = row.interaction;
    }
    linear_scale_ = ScaleToStd(linear, kLinearLogitStd);
    interaction_scale_ =
        ScaleToStd(interaction, interaction_strength_ * kLinearLogitStd);
    // The mean probability grows with the bias: bisect for kPositiveRate.
    double low = -30;
    double high = 30;
    for (int step = 0; step < 60; ++step) {
      const double mid = 0.5 * (low + high);
      double sum = 0;
      for (uint64_t i = 0; i < kPilotRows; ++i) {
        sum += Sigmoid(mid + linear_scale_ * linear[i] +
                       interaction_scale_ * interaction[i]);
      }
      (sum / kPilotRows < kPositiveRate ? low : high) = mid;
    }
    bias_ = 0.5 * (low + high);
  }

  // What multiplies `values` to give them standard deviation `target`; 0
  // for constant values (one field has no interactions; one value per field
  // makes every row the same), whose variance rounding leaves a little above
  // zero, which must not be scaled up to `target`.
  static double ScaleToStd(const std::vector<double>& values, double target) {
    double mean = 0;
    for (double v : values) mean += v;
    mean /= static_cast<double>(values.size());
    double variance = 0;
    for (double v : values) variance += (v - mean) * (v - mean);
    variance /= static_cast<double>(values.size());
    const double deviation = std::sqrt(variance);
    return deviation > 1e-9 * (std::abs(mean) + 1) ? target / deviation : 0;
  }

  uint32_t fields_;
  double interaction_strength_;
  ZipfSampler zipf_;
  uint64_t rows_key_;
  uint64_t weights_key_;
  // latent_[f][k-1]: field f's value of rank k's latent vector.
  std::array<std::array<Latent, kInteractingRanks>, kInteractingFields>
      latent_{};
  // pair_scale_[f][g], f < g: ScalePairs' c_fg.
  std::array<std::array<double, kInteractingFields>, kInteractingFields>
      pair_scale_{};
  double linear_scale_ = 0;
  double interaction_scale_ = 0;
  double bias_ = 0;
};

struct FileCloser {
  void operator()(std::FILE* file) const { std::fclose(file); }
};

// A file written through a large buffer; every failure names the file.
class OutputFile {
 public:
  absl::Status Open(const std::string& path) {
    path_ = path;
    errno = 0;
    file_.reset(std::fopen(path.c_str(), "wb"));
    if (file_ == nullptr) {
      return absl::ErrnoToStatus(errno != 0 ? errno : EIO,
                                 absl::StrCat("cannot create '", path, "'"));
    }
    buffer_.reserve(kBufferBytes + 4096);
    return absl::OkStatus();
  }

  std::string& buffer() { return buffer_; }

  // Writes the buffer out once it is full.
  absl::Status MaybeFlush() {
    return buffer_.size() >= kBufferBytes ? Flush() : absl::OkStatus();
  }

  absl::Status Close() {
    absl::Status status = Flush();
    errno = 0;
    if (std::fclose(file_.release()) != 0 && status.ok()) {
      status = absl::ErrnoToStatus(errno != 0 ? errno : EIO,
                                   absl::StrCat("cannot write '", path_, "'"));
    }
    return status;
  }

 private:
  static constexpr size_t kBufferBytes = size_t{1} << 20;

  absl::Status Flush() {
    errno = 0;
    if (std::fwrite(buffer_.data(), 1, buffer_.size(), file_.get()) !=
        buffer_.size()) {
      return absl::ErrnoToStatus(errno != 0 ? errno : EIO,
                                 absl::StrCat("cannot write '", path_, "'"));
    }
    buffer_.clear();
    return absl::OkStatus();
  }

  std::string path_;
  std::unique_ptr<std::FILE, FileCloser> file_;
  std::string buffer_;
};

// What WriteRows keeps of each test row, for the summary's figures.
struct RowTruth {
  std::vector<int32_t> labels;
  std::vector<double> probabilities;  // p
  std::vector<double> linear_logits;  // GroundTruth::LinearLogit
};

// Writes `rows` rows of `stream` as LIBSVM lines to `path`, and each row's
// truth to `kept` unless null (the training set, which may not fit in
// memory). Returns how many rows are positive.
absl::StatusOr<uint64_t> WriteRows(const GroundTruth& truth, Stream stream,
                                   uint64_t rows, const std::string& path,
                                   RowTruth* kept) {
  OutputFile data;
  absl::Status status = data.Open(path);
  if (!status.ok()) return status;
  uint64_t positives = 0;
  Row row;
  for (uint64_t i = 0; i < rows; ++i) {
    SplitMix64Stream random = truth.Draw(stream, i, row);
    const double p = truth.Probability(row);
    const int32_t label = random.NextUnit() < p ? 1 : 0;
    positives += label;
    if (kept != nullptr) {
      kept->labels.push_back(label);
      kept->probabilities.push_back(p);
      kept->linear_logits.push_back(truth.LinearLogit(row));
    }
    std::string& line = data.buffer();
    line.push_back(label == 1 ? '1' : '0');
    for (uint64_t id : row.ids) absl::StrAppend(&line, " ", id);
    line.push_back('\n');
    status = data.MaybeFlush();
    if (!status.ok()) return status;
  }
  status = data.Close();
  if (!status.ok()) return status;
  return positives;
}

// One probability a line, in the shortest text that reads back exactly.
absl::Status WriteProbabilities(const std::vector<double>& probabilities,
                                const std::string& path) {
  OutputFile out;
  absl::Status status = out.Open(path);
  if (!status.ok()) return status;
  std::array<char, 32> text;
  for (double p : probabilities) {
    const std::to_chars_result end =
        std::to_chars(text.data(), text.data() + text.size(), p);
    out.buffer().append(text.data(), end.ptr);
    out.buffer().push_back('\n');
    status = out.MaybeFlush();
    if (!status.ok()) return status;
  }
  return out.Close();
}

}  // namespace

absl::StatusOr<uint64_t> ParseCount(absl::string_view flag,
                                    absl::string_view text) {
  uint64_t multiplier = 1;
  absl::string_view digits = text;
  if (!digits.empty()) {
    switch (digits.back()) {
      case 'k':
      case 'K':
        multiplier = 1000;
        break;
      case 'M':
        multiplier = 1000000;
        break;
      case 'G':
        multiplier = 1000000000;
        break;
      default:
        break;
    }
    if (multiplier != 1) digits.remove_suffix(1);
  }
  uint64_t value = 0;
  const std::from_chars_result parsed =
      std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (digits.empty() || parsed.ptr != digits.data() + digits.size() ||
      parsed.ec != std::errc() ||
      value > std::numeric_limits<uint64_t>::max() / multiplier) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, "=", text,
                     " is not a count: digits with an optional "
                     "k, M or G suffix, as in 10M (10,000,000)"));
  }
  return value * multiplier;
}

absl::Status CheckCtrOptions(const CtrOptions& options) {
  if (options.rows < 10 || options.rows > kMaxRows) {
    return absl::InvalidArgumentError(
        absl::StrCat("--rows=", options.rows, " is outside [10, ", kMaxRows,
                     "]: the test set (rows/10) needs a row, and its truth is "
                     "held in memory"));
  }
  if (options.fields < 1 || options.fields > kMaxFields) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--fields=", options.fields, " is outside [1, ", kMaxFields, "]"));
  }
  if (options.ids < options.fields ||
      options.ids / options.fields > kMaxIdsPerField) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--ids=", options.ids, " must be at least --fields (", options.fields,
        ": one value per field) and at most ", kMaxIdsPerField, " per field"));
  }
  if (!(options.interaction_strength >= 0 &&
        options.interaction_strength <= kMaxInteractionStrength)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--interaction_strength=", options.interaction_strength,
        " is outside [0, ", kMaxInteractionStrength,
        "]: the interactions' logit standard deviation over the linear "
        "part's"));
  }
  if (options.out_dir.empty()) {
    return absl::InvalidArgumentError(
        "--out is required: the directory to write the data set to");
  }
  return absl::OkStatus();
}

namespace {

common::Json RoundedOrNull(const std::optional<double>& value) {
  return value.has_value() ? common::Json(common::RoundTo(*value, 6))
                           : common::Json(nullptr);
}

}  // namespace

common::Json CtrSummary::ToJson(const CtrOptions& options) const {
  return common::Json{
      {"rows", train_rows},
      {"test_rows", test_rows},
      {"fields", options.fields},
      {"ids", options.ids},
      {"ids_per_field", options.ids / options.fields},
      {"seed", options.seed},
      {"zipf_exponent", kZipfExponent},
      {"linear_logit_std", kLinearLogitStd},
      {"head_ranks", kHeadRanks},
      {"interacting_fields", std::min(options.fields, kInteractingFields)},
      {"interacting_ranks", kInteractingRanks},
      {"latent_dim", kLatentDim},
      {"interaction_strength", options.interaction_strength},
      {"train_positive_rate", common::RoundTo(train_positive_rate, 6)},
      {"test_positive_rate", common::RoundTo(test_positive_rate, 6)},
      {"bayes_auc", RoundedOrNull(bayes_auc)},
      {"linear_auc", RoundedOrNull(linear_auc)},
      {"bayes_logloss", common::RoundTo(bayes_logloss, 6)},
      {"bias", common::RoundTo(bias, 6)}};
}

absl::StatusOr<CtrSummary> WriteCtrDataset(const CtrOptions& options) {
  absl::Status status = CheckCtrOptions(options);
  if (!status.ok()) return status;
  std::error_code error;
  std::filesystem::create_directories(options.out_dir, error);
  if (error) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot create --out=", options.out_dir, ": ", error.message()));
  }
  const std::string dir = options.out_dir + "/";
  const GroundTruth truth(options);
  CtrSummary summary;
  summary.bias = truth.bias();
  // summary.json comes last: a directory without it holds an unfinished run.
  summary.train_rows = options.rows;
  summary.test_rows = options.rows / 10;

  absl::StatusOr<uint64_t> positives = WriteRows(
      truth, Stream::kTrain, summary.train_rows, dir + "train.libsvm", nullptr);
  if (!positives.ok()) return positives.status();
  summary.train_positive_rate =
      static_cast<double>(*positives) / static_cast<double>(summary.train_rows);

  RowTruth rows;
  positives = WriteRows(truth, Stream::kTest, summary.test_rows,
                        dir + "test.libsvm", &rows);
  if (!positives.ok()) return positives.status();
  summary.test_positive_rate =
      static_cast<double>(*positives) / static_cast<double>(summary.test_rows);
  status = WriteProbabilities(rows.probabilities, dir + "test.prob");
  if (!status.ok()) return status;

  // Both AUCs are undefined (nullopt) when the test set lacks a class.
  absl::StatusOr<double> auc = common::RocAuc(rows.probabilities, rows.labels);
  if (auc.ok()) summary.bayes_auc = *auc;
  auc = common::RocAuc(rows.linear_logits, rows.labels);
  if (auc.ok()) summary.linear_auc = *auc;
  absl::StatusOr<double> logloss =
      common::LogLoss(rows.probabilities, rows.labels);
  if (!logloss.ok()) return logloss.status();
  summary.bayes_logloss = *logloss;

  status = common::WriteFileAtomically(dir + "summary.json",
                                       summary.ToJson(options).dump() + "\n");
  if (!status.ok()) return status;
  return summary;
}

}  // namespace ps::datagen
