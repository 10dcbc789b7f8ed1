// θ's dense slice on its own: updates applied from a request's bytes match
// the formula, and an update that would overflow θ is refused untouched.
#include "server/dense_slice.h"

#include <cmath>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/float_bytes.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ps::server {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

common::UpdateOptions Sgd(float learning_rate) {
  common::UpdateOptions update;
  update.learning_rate = learning_rate;
  return update;
}

// Keys [10, 10 + n) of a one-tensor model of 10 + n keys.
void Declare(DenseSlice& slice, std::vector<float> theta) {
  const uint64_t n = theta.size();
  slice.Declare({{"w", {static_cast<int64_t>(10 + n)}, false}}, {10, 10 + n},
                std::move(theta));
}

// `values` as float32 bytes in pieces of `piece` floats, as a request's
// slices arrive.
absl::Cord InPieces(const std::vector<float>& values, size_t piece) {
  absl::Cord cord;
  for (size_t i = 0; i < values.size(); i += piece) {
    std::string bytes;
    common::FloatsToBytes(absl::MakeConstSpan(values).subspan(
                              i, std::min(piece, values.size() - i)),
                          &bytes);
    cord.Append(bytes);
  }
  return cord;
}

// θ and a gradient of n keys, with values of both signs and zeros.
void MakeThetaAndGradient(size_t n, std::vector<float>& theta,
                          std::vector<float>& gradient) {
  theta.resize(n);
  gradient.resize(n);
  for (size_t i = 0; i < n; ++i) {
    theta[i] = static_cast<float>(i % 7);
    gradient[i] = static_cast<float>(i % 5) - 2.0f;
  }
}

TEST(DenseSlice, AnUpdateFromBytesInPiecesIsTheFormulaOnEveryKey) {
  // More keys than one cache-sized chunk, in pieces that straddle chunks.
  constexpr size_t kKeys = 10000;
  std::vector<float> theta, gradient;
  MakeThetaAndGradient(kKeys, theta, gradient);
  DenseSlice slice(Sgd(0.5f));
  Declare(slice, theta);

  const absl::Cord bytes = InPieces(gradient, 333);
  absl::StatusOr<DenseSlice::CheckedGradient> checked =
      slice.CheckBytes(bytes, 0);
  ASSERT_TRUE(checked.ok()) << checked.status();
  slice.ApplyBytes(bytes, *checked, 0);

  for (size_t i = 0; i < kKeys; ++i) {
    ASSERT_EQ(slice.theta()[i], theta[i] - 0.5f * gradient[i]) << "key " << i;
  }
}

TEST(DenseSlice, TheLargestMagnitudeIsFoundAtEveryPositionAndLength) {
  // Lengths around the scan's blocks of 16, the extreme at each position.
  for (size_t n = 1; n <= 50; ++n) {
    for (size_t at = 0; at < n; ++at) {
      std::vector<float> values(n);
      for (size_t i = 0; i < n; ++i) {
        values[i] = (i % 2 == 0 ? 1.0f : -1.0f) * static_cast<float>(i % 9);
      }
      values[at] = -100.0f;
      ASSERT_EQ(LargestMagnitude(values), 100.0) << n << " " << at;
      values[at] = NAN;
      ASSERT_TRUE(std::isinf(LargestMagnitude(values))) << n << " " << at;
      values[at] = INFINITY;
      ASSERT_TRUE(std::isinf(LargestMagnitude(values))) << n << " " << at;
    }
  }
  EXPECT_EQ(LargestMagnitude({}), 0.0);
}

TEST(DenseSlice, ANonFiniteGradientIsRefusedNamingItsKey) {
  DenseSlice slice(Sgd(1.0f));
  Declare(slice, {1, 2, 3});
  const absl::Cord bytes = InPieces({0, NAN, 0}, 3);
  absl::StatusOr<DenseSlice::CheckedGradient> checked =
      slice.CheckBytes(bytes, 0);
  EXPECT_EQ(checked.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(checked.status().message(), HasSubstr("key 11 is nan"));
  EXPECT_THAT(slice.CheckFinite(std::vector<float>{0, 0, INFINITY}).message(),
              HasSubstr("key 12 is inf"));
  EXPECT_THAT(slice.theta(), ElementsAre(1, 2, 3));
}

// `values` as float32 bytes in chunks of `piece_bytes` bytes, so that
// floats straddle chunks as they straddle a request's slices. External
// pieces of more than 511 bytes: a Cord copies smaller ones together.
absl::Cord InBytePieces(const std::vector<float>& values, size_t piece_bytes) {
  auto bytes = std::make_shared<std::string>();
  common::FloatsToBytes(values, bytes.get());
  absl::Cord cord;
  for (size_t i = 0; i < bytes->size(); i += piece_bytes) {
    cord.Append(absl::MakeCordFromExternal(
        absl::string_view(*bytes).substr(i, piece_bytes),
        [bytes](absl::string_view) {}));
  }
  const size_t chunks =
      std::distance(cord.Chunks().begin(), cord.Chunks().end());
  EXPECT_EQ(chunks, (bytes->size() + piece_bytes - 1) / piece_bytes);
  return cord;
}

// Odd piece sizes, so that the float holding byte 3 × piece − 1 straddles
// the third and fourth chunks.
constexpr size_t kOddPieces[] = {513, 1023, 4097, 16381};
size_t StraddlingFloat(size_t piece_bytes) {
  return (3 * piece_bytes - 1) / sizeof(float);
}

TEST(DenseSlice, FloatsSplitBetweenChunksAreCheckedAndApplied) {
  constexpr size_t kKeys = 20000;
  std::vector<float> theta, gradient;
  MakeThetaAndGradient(kKeys, theta, gradient);
  for (size_t piece : kOddPieces) {
    // The largest magnitude is the straddling float: the check must see it.
    std::vector<float> g = gradient;
    g[StraddlingFloat(piece)] = -1e30f;
    DenseSlice slice(Sgd(0.5f));
    Declare(slice, theta);
    const absl::Cord bytes = InBytePieces(g, piece);
    absl::StatusOr<DenseSlice::CheckedGradient> checked =
        slice.CheckBytes(bytes, 0);
    ASSERT_TRUE(checked.ok()) << checked.status();
    EXPECT_EQ(checked->largest, 1e30f) << "pieces of " << piece;
    slice.ApplyBytes(bytes, *checked, 0);
    for (size_t i = 0; i < kKeys; ++i) {
      ASSERT_EQ(slice.theta()[i], theta[i] - 0.5f * g[i])
          << "key " << i << ", pieces of " << piece << " bytes";
    }
  }
}

TEST(DenseSlice, ANonFiniteFloatSplitBetweenChunksIsRefusedNamingItsKey) {
  const std::vector<float> theta(20000, 1.0f);
  for (size_t piece : kOddPieces) {
    std::vector<float> gradient(theta.size(), 0.25f);
    const size_t bad = StraddlingFloat(piece);
    gradient[bad] = INFINITY;
    gradient[bad + 700] = NAN;  // after the first: not the one named
    DenseSlice slice(Sgd(1.0f));
    Declare(slice, theta);
    absl::StatusOr<DenseSlice::CheckedGradient> checked =
        slice.CheckBytes(InBytePieces(gradient, piece), 0);
    EXPECT_EQ(checked.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(checked.status().message(),
                HasSubstr(absl::StrCat("key ", 10 + bad, " is inf")))
        << "pieces of " << piece << " bytes";
    EXPECT_EQ(slice.theta(), theta);
  }
}

TEST(DenseSlice, AGradientThatWouldOverflowThetaIsRefusedAndThetaKept) {
  DenseSlice slice(Sgd(1.0f));
  Declare(slice, {1, 3e38f});
  // Each value is finite; θ − g is not for the second key.
  const std::vector<float> gradient = {0, -3e38f};
  absl::StatusOr<DenseSlice::CheckedGradient> checked =
      slice.CheckBytes(InPieces(gradient, 2), 0);
  EXPECT_EQ(checked.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(checked.status().message(),
              HasSubstr("would make the value of key 11 inf"));

  const std::optional<DenseSlice::NonFiniteResult> bad =
      slice.ApplyIfFinite(gradient, 0);
  ASSERT_TRUE(bad.has_value());
  EXPECT_EQ(bad->offset, 1u);
  EXPECT_TRUE(std::isinf(bad->value));
  EXPECT_THAT(slice.theta(), ElementsAre(1, 3e38f));
}

TEST(DenseSlice, AFiniteMeanIsApplied) {
  DenseSlice slice(Sgd(0.5f));
  Declare(slice, {1, 2});
  EXPECT_FALSE(slice.ApplyIfFinite(std::vector<float>{2, 2}, 0).has_value());
  EXPECT_THAT(slice.theta(), ElementsAre(0, 1));
  std::string read;
  slice.Read({11, 12}, &read);
  std::vector<float> second(1);
  ASSERT_TRUE(common::BytesToFloats(absl::string_view(read),
                                    absl::MakeSpan(second), "θ")
                  .ok());
  EXPECT_THAT(second, ElementsAre(1));
}

}  // namespace
}  // namespace ps::server
