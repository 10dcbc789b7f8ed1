#include "common/gradient_codec.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ps::common {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// The reference: every non-negative finite fp16 from its definition
// (m · 2^-24 below 2^-14, (1 + m/1024) · 2^(e-15) above), in bit order,
// which is also value order.
std::vector<double> AllNonNegativeHalves() {
  std::vector<double> values;
  for (int e = 0; e < 31; ++e) {
    for (int m = 0; m < 1024; ++m) {
      values.push_back(e == 0 ? std::ldexp(m, -24)
                              : std::ldexp(1.0 + m / 1024.0, e - 15));
    }
  }
  return values;
}

// Nearest fp16 bits to a non-negative finite x up to 65504 by search,
// ties to the even bit pattern.
uint16_t NearestHalf(const std::vector<double>& halves, double x) {
  size_t above =
      std::lower_bound(halves.begin(), halves.end(), x) - halves.begin();
  if (above == halves.size()) return static_cast<uint16_t>(above - 1);
  if (above == 0 || halves[above] == x) return static_cast<uint16_t>(above);
  const double up = halves[above] - x, down = x - halves[above - 1];
  if (up < down) return static_cast<uint16_t>(above);
  if (down < up) return static_cast<uint16_t>(above - 1);
  return static_cast<uint16_t>(above % 2 == 0 ? above : above - 1);
}

float FloatFromBits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

TEST(GradientCodec, Fp16RoundsToNearestEvenLikeAnExhaustiveSearch) {
  const std::vector<double> halves = AllNonNegativeHalves();
  std::mt19937 random(7);
  // Random float bit patterns over fp16's range (normal and subnormal),
  // plus every exact midpoint between neighbouring halves (ties), and the
  // points just either side of them.
  std::vector<float> inputs;
  std::uniform_int_distribution<uint32_t> bits(0x30000000, 0x477FE000);
  for (int i = 0; i < 200000; ++i)
    inputs.push_back(FloatFromBits(bits(random)));
  for (size_t i = 0; i + 1 < halves.size(); ++i) {
    const float mid = static_cast<float>((halves[i] + halves[i + 1]) / 2);
    inputs.push_back(mid);
    inputs.push_back(std::nextafter(mid, 0.0f));
    inputs.push_back(std::nextafter(mid, 1e9f));
  }
  for (float x : inputs) {
    const uint16_t expected = NearestHalf(halves, x);
    ASSERT_EQ(FloatToHalf(x), expected) << "x = " << x;
    ASSERT_EQ(FloatToHalf(-x), expected | 0x8000) << "x = " << -x;
    ASSERT_EQ(HalfToFloat(expected), static_cast<float>(halves[expected]));
  }
}

TEST(GradientCodec, Fp16TiesGoToTheEvenNeighbour) {
  // 1 + 2^-11 lies halfway between 1 (0x3C00, even) and 1 + 2^-10 (odd).
  EXPECT_EQ(FloatToHalf(1.0f + 0x1p-11f), 0x3C00);
  // 1 + 3·2^-11 lies halfway between 0x3C01 (odd) and 0x3C02 (even).
  EXPECT_EQ(FloatToHalf(1.0f + 3 * 0x1p-11f), 0x3C02);
  // Subnormal tie: 2^-25 between 0 and 2^-24 goes to 0; 3·2^-25 to 2·2^-24.
  EXPECT_EQ(FloatToHalf(0x1p-25f), 0x0000);
  EXPECT_EQ(FloatToHalf(3 * 0x1p-25f), 0x0002);
}

TEST(GradientCodec, Fp16SubnormalsAreExact) {
  for (uint16_t m = 1; m < 1024; ++m) {
    const float value = static_cast<float>(m) * 0x1p-24f;
    EXPECT_EQ(FloatToHalf(value), m);
    EXPECT_EQ(HalfToFloat(m), value);
  }
  // The largest subnormal rounds up into the smallest normal.
  EXPECT_EQ(FloatToHalf(1023.75f * 0x1p-24f), 0x0400);
  EXPECT_EQ(HalfToFloat(0x0400), 0x1p-14f);
  EXPECT_EQ(FloatToHalf(1e-30f), 0x0000);
  EXPECT_EQ(FloatToHalf(-1e-30f), 0x8000);
}

TEST(GradientCodec, Fp16SaturatesFiniteOverflowAndKeepsInfinityAndNaN) {
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7BFF);
  EXPECT_EQ(FloatToHalf(65519.0f), 0x7BFF);  // rounds down to 65504
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7BFF);  // would round to infinity
  EXPECT_EQ(FloatToHalf(1e30f), 0x7BFF);
  EXPECT_EQ(FloatToHalf(-3e38f), 0xFBFF);
  EXPECT_EQ(HalfToFloat(0x7BFF), kMaxHalf);
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(FloatToHalf(inf), 0x7C00);
  EXPECT_EQ(FloatToHalf(-inf), 0xFC00);
  EXPECT_TRUE(std::isinf(HalfToFloat(0x7C00)));
  EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(std::nanf("")))));
}

// bf16 reference: the two neighbours by truncation, the nearer chosen in
// double, ties to the even one.
uint16_t NearestBfloat16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  const uint16_t down = static_cast<uint16_t>(bits >> 16);
  const uint16_t up = down + 1;
  const double d = std::fabs(x - static_cast<double>(Bfloat16ToFloat(down)));
  const double u = std::fabs(static_cast<double>(Bfloat16ToFloat(up)) - x);
  if (d < u) return down;
  if (u < d) return up;
  return down % 2 == 0 ? down : up;
}

TEST(GradientCodec, Bf16RoundsToNearestEven) {
  std::mt19937 random(11);
  std::uniform_int_distribution<uint32_t> bits(0, 0x7F7EFFFF);
  for (int i = 0; i < 200000; ++i) {
    const uint32_t b = bits(random);
    const float x = FloatFromBits(b);
    ASSERT_EQ(FloatToBfloat16(x), NearestBfloat16(x)) << "bits " << b;
    ASSERT_EQ(FloatToBfloat16(-x), NearestBfloat16(x) | 0x8000);
  }
  EXPECT_EQ(FloatToBfloat16(FloatFromBits(0x3F808000)), 0x3F80);  // tie, even
  EXPECT_EQ(FloatToBfloat16(FloatFromBits(0x3F818000)), 0x3F82);  // tie, even
  EXPECT_EQ(Bfloat16ToFloat(0x3F80), 1.0f);
}

TEST(GradientCodec, Bf16SaturatesFiniteOverflowAndKeepsInfinityAndNaN) {
  const float largest = std::numeric_limits<float>::max();
  EXPECT_EQ(FloatToBfloat16(largest), 0x7F7F);
  EXPECT_EQ(FloatToBfloat16(-largest), 0xFF7F);
  EXPECT_EQ(FloatToBfloat16(std::numeric_limits<float>::infinity()), 0x7F80);
  EXPECT_TRUE(std::isnan(Bfloat16ToFloat(FloatToBfloat16(std::nanf("")))));
  // Subnormal floats keep their top bits.
  EXPECT_EQ(Bfloat16ToFloat(FloatToBfloat16(0x1p-130f)), 0x1p-130f);
}

TEST(GradientCodec, TopKKeepsTheLargestMagnitudesInIndexOrder) {
  const std::vector<float> values = {0.1f, -5.0f, 3.0f, 0.0f, -0.2f, 4.0f};
  EXPECT_THAT(SelectTopK(values, 3), ElementsAre(1, 2, 5));
  EXPECT_THAT(SelectTopK(values, 1), ElementsAre(1));
  EXPECT_THAT(SelectTopK(values, 10), ElementsAre(0, 1, 2, 3, 4, 5));
}

TEST(GradientCodec, TopKBreaksTiesTowardTheLowerIndex) {
  const std::vector<float> values = {1.0f, -2.0f, 2.0f, -1.0f, 2.0f, 1.0f};
  EXPECT_THAT(SelectTopK(values, 2), ElementsAre(1, 2));
  EXPECT_THAT(SelectTopK(values, 4), ElementsAre(0, 1, 2, 4));
  // Many equal magnitudes: always the first k, whatever the partition does.
  std::vector<float> flat(1000, 0.5f);
  for (size_t i = 0; i < flat.size(); i += 2) flat[i] = -0.5f;
  const std::vector<uint32_t> chosen = SelectTopK(flat, 17);
  ASSERT_EQ(chosen.size(), 17u);
  for (uint32_t i = 0; i < 17; ++i) EXPECT_EQ(chosen[i], i);
}

TEST(GradientCodec, TopKCountRoundsUpAndKeepsAtLeastOne) {
  EXPECT_EQ(TopKCount(1000, 0.01), 10u);
  EXPECT_EQ(TopKCount(1001, 0.01), 11u);
  EXPECT_EQ(TopKCount(10, 0.01), 1u);
  EXPECT_EQ(TopKCount(10, 1.0), 10u);
  EXPECT_EQ(TopKCount(0, 0.5), 0u);
}

TEST(GradientCodec, ParsesCompressionSpecs) {
  EXPECT_EQ(ParseCompression("")->kind, CompressionKind::kNone);
  EXPECT_EQ(ParseCompression("none")->kind, CompressionKind::kNone);
  EXPECT_EQ(ParseCompression("fp16")->kind, CompressionKind::kFp16);
  EXPECT_EQ(ParseCompression("bf16")->kind, CompressionKind::kBf16);
  absl::StatusOr<Compression> topk = ParseCompression("topk:0.01");
  ASSERT_TRUE(topk.ok());
  EXPECT_EQ(topk->kind, CompressionKind::kTopK);
  EXPECT_EQ(topk->ratio, 0.01);
  EXPECT_EQ(topk->ToString(), "topk:0.01");
  EXPECT_THAT(ParseCompression("topk:0").status().message(),
              HasSubstr("(0, 1]"));
  EXPECT_THAT(ParseCompression("topk:2").status().message(),
              HasSubstr("(0, 1]"));
  EXPECT_THAT(ParseCompression("int8").status().message(),
              HasSubstr("expected none, fp16, bf16 or topk:RATIO"));
}

std::string Bytes(const std::vector<uint32_t>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}
std::string Bytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}

TEST(GradientCodec, DecodesEachKind) {
  std::vector<float> out(4);
  std::string fp16;
  EncodeDense(CompressionKind::kFp16, {1.0f, -2.5f, 0.1f, 0.0f}, &fp16);
  EXPECT_EQ(fp16.size(), 8u);
  ASSERT_TRUE(
      DecodePart(CompressionKind::kFp16, fp16, "", absl::MakeSpan(out), "p")
          .ok());
  EXPECT_THAT(out,
              ElementsAre(1.0f, -2.5f, HalfToFloat(FloatToHalf(0.1f)), 0.0f));
  ASSERT_TRUE(
      DecodePart(CompressionKind::kTopK, Bytes(std::vector<float>{7.0f, -1.0f}),
                 Bytes(std::vector<uint32_t>{1, 3}), absl::MakeSpan(out), "p")
          .ok());
  EXPECT_THAT(out, ElementsAre(0.0f, 7.0f, 0.0f, -1.0f));
}

TEST(GradientCodec, RefusesMalformedParts) {
  std::vector<float> out(4);
  auto topk = [&](std::vector<uint32_t> indices, std::vector<float> values) {
    return DecodePart(CompressionKind::kTopK, Bytes(values), Bytes(indices),
                      absl::MakeSpan(out), "part 0 (topk)");
  };
  EXPECT_THAT(topk({1, 4}, {1, 1}).message(),
              HasSubstr("part 0 (topk): index 4 is outside its 4 keys"));
  EXPECT_THAT(topk({2, 1}, {1, 1}).message(), HasSubstr("strictly increasing"));
  EXPECT_THAT(topk({1, 1}, {1, 1}).message(), HasSubstr("strictly increasing"));
  EXPECT_THAT(topk({1, 2}, {1}).message(), HasSubstr("one float32 per index"));
  EXPECT_THAT(topk({0, 1, 2, 3, 0}, {1, 1, 1, 1, 1}).message(),
              HasSubstr("5 indices for its 4 keys"));
  EXPECT_THAT(topk({1}, {std::nanf("")}).message(),
              HasSubstr("must be finite"));
  EXPECT_EQ(topk({1}, {std::nanf("")}).code(),
            absl::StatusCode::kInvalidArgument);
  std::string fp16;
  EncodeDense(CompressionKind::kFp16, {1, 2, 3}, &fp16);
  EXPECT_THAT(
      DecodePart(CompressionKind::kFp16, fp16, "", absl::MakeSpan(out), "p")
          .message(),
      HasSubstr("holds 6 bytes of values but its 4 keys need 8"));
  EncodeDense(CompressionKind::kFp16,
              {1, std::numeric_limits<float>::infinity(), 3, 4}, &fp16);
  EXPECT_THAT(
      DecodePart(CompressionKind::kFp16, fp16, "", absl::MakeSpan(out), "p")
          .message(),
      HasSubstr("the value at offset 1 is inf"));
}

}  // namespace
}  // namespace ps::common
